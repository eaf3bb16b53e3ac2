"""Time each CIFAR-10-C corruption on a batch of CIFAR-10 test images.

    python bench/corruptions_timing.py [--n 1000] [--severity 3] [--out F]

Prints one line per corruption: the first call (trace + compile + run) and
the median of --repeats later calls (run only), in seconds, and writes the
numbers as JSON to --out. Reads the first n test images of
../shared/data/cifar10/cifar10_jpeg.npz (falls back to uniform noise
images if absent, said in the output); frost uses $JAXADV_FROST_DIR or an
installed imagecorruptions' photographs and is skipped without them.
"""

import argparse
import io
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxadv import corruptions  # pylint: disable=g-import-not-at-top
from jaxadv.corruptions import weather  # pylint: disable=g-import-not-at-top

NPZ = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared', 'data',
    'cifar10', 'cifar10_jpeg.npz',
)  # fmt: skip


def cifar_test_images(n):
  """(n, 32, 32, 3) float32 in [0, 1], or None without the data file."""
  if not os.path.isfile(NPZ):
    return None
  from PIL import Image  # pylint: disable=g-import-not-at-top

  data = np.load(NPZ)
  jpeg, offsets = data['test_jpeg'], data['test_offsets']
  # The test split is grouped by class: take every (10000 // n)-th image.
  idx = np.linspace(0, len(offsets) - 2, n).astype(int)
  imgs = [
      np.asarray(Image.open(io.BytesIO(jpeg[offsets[i] : offsets[i + 1]])))
      for i in idx
  ]
  return np.stack(imgs).astype(np.float32) / 255.0


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--n', type=int, default=1000)
  ap.add_argument('--severity', type=int, default=3)
  ap.add_argument('--repeats', type=int, default=3)
  ap.add_argument('--out', default='')
  args = ap.parse_args()
  x = cifar_test_images(args.n)
  source = 'CIFAR-10 test images'
  if x is None:
    source = 'uniform noise images (no ../shared/data)'
    x = np.random.default_rng(0).uniform(size=(args.n, 32, 32, 3))
  x = jax.device_put(np.asarray(x, np.float32))
  print(
      f'{args.n} {source}, severity {args.severity}, '
      f'{jax.devices()[0].device_kind}'
  )
  try:
    frost_dir = weather.find_frost_dir()
  except ValueError:
    frost_dir = None
  key = jax.random.key(0)
  results = {}
  for name in corruptions.CORRUPTIONS:
    if name == 'frost' and frost_dir is None:
      print(f'{name:18s} skipped: no frost photographs')
      continue
    kw = {'frost_dir': frost_dir} if name == 'frost' else {}
    t0 = time.perf_counter()
    corruptions.corrupt(name, args.severity, key, x, **kw).block_until_ready()
    first = time.perf_counter() - t0
    runs = []
    for r in range(args.repeats):
      k = jax.random.fold_in(key, r + 1)
      t0 = time.perf_counter()
      corruptions.corrupt(name, args.severity, k, x, **kw).block_until_ready()
      runs.append(time.perf_counter() - t0)
    results[name] = {'first_s': first, 'run_s': float(np.median(runs))}
    print(
        f'{name:18s} first call {first:6.2f} s   run {np.median(runs):6.3f} s'
        f'   ({args.n / np.median(runs):8.0f} images/s)'
    )
  if args.out:
    with open(args.out, 'w') as f:
      json.dump({'n': args.n, 'severity': args.severity, 'source': source,
                 'device': jax.devices()[0].device_kind,
                 'results': results}, f, indent=1)  # fmt: skip


if __name__ == '__main__':
  main()
