"""Saliency maps (input gradients) of several trained models on the same
test images, in one PNG: GREAT's Figure 4 (left).

  python -m jaxadv.tools.saliency --workdirs runs/a,runs/b --labels A,B \
      --num_images 3 --out runs/saliency.png

Saliency of image x for model f: |d CE(f(x), y) / dx|, the maximum over
colour channels, scaled to [0, 1] per image and model (inference-mode
BatchNorm). The images are a seeded random draw from the test split.
"""

import argparse
import os
import sys

import jax
import numpy as np

from jaxadv import data
from jaxadv import evaluation
from jaxadv.tools import common as tool_args
from jaxadv import runs
from jaxadv.methods import common


def saliency(state, images, labels):
  """float (n, H, W) in [0, 1]: per image, max over channels of |grad_x CE|,
  divided by its maximum."""
  f = state.logits_fn()
  x = data.to_float(np.asarray(images))

  def loss(v):
    return common.cross_entropy(f(v), labels).sum()

  g = np.abs(np.asarray(jax.jit(jax.grad(loss))(x))).max(-1)
  return g / np.maximum(g.reshape(len(g), -1).max(1)[:, None, None], 1e-12)


def plot(images, maps, labels, path):
  """Rows: images; columns: the image, then each model's saliency map."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  n, m = len(images), len(maps)
  fig, axes = plt.subplots(
      n, m + 1, figsize=(1.8 * (m + 1), 1.9 * n), squeeze=False
  )
  for i in range(n):
    img = np.asarray(images[i])
    axes[i, 0].imshow(
        img[..., 0] if img.shape[-1] == 1 else img,
        cmap='gray' if img.shape[-1] == 1 else None,
    )
    for j, label in enumerate(labels):
      axes[i, j + 1].imshow(maps[j][i], cmap='hot', vmin=0, vmax=1)
      if i == 0:
        axes[i, j + 1].set_title(label, fontsize=9)
    if i == 0:
      axes[i, 0].set_title('image', fontsize=9)
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--workdirs', required=True)
  p.add_argument('--labels', default='')
  p.add_argument('--num_images', type=int, default=3)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--out', required=True, help='PNG path')
  args = p.parse_args(argv)
  try:
    workdirs = tool_args.parse_list(args.workdirs)
    labels = tool_args.workdir_labels(args.labels, workdirs)
    if args.num_images < 1:
      raise ValueError('--num_images must be >= 1')
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  maps, images = [], None
  for w in workdirs:
    run = runs.load_run(w)
    if images is None:
      images, y = evaluation.subset(
          run.dataset.test_images,
          run.dataset.test_labels,
          args.num_images,
          args.seed,
      )
    maps.append(saliency(run.state, images, y))
  plot(images, maps, labels, args.out)
  print(f'wrote {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
