"""Seeing what robust models learned (Goodwin et al. 2020, section IV-C;
Engstrom et al. 2019): PNG grids of one or several runs side by side.

  python main.py --mode viz --config configs/viz.py --workdir A \
      --config.viz.compare=B,C

writes into <A>/viz (or config.viz.out):
  saliency.png       |grad_x CE| of each run on the same test images
  features.png       direct feature visualization: from a seed (test images
                     and one noise image), gradient ascent on one node of the
                     representation layer (the penultimate activations), 5
                     random nodes per seed, the same nodes for every run
  interpolation.png  representation-space interpolation between two test
                     images (eq. 14), several lambda
  large_perturbations.png  targeted L2 PGD with a large eps and many steps
  robustness.png     robust accuracy vs eps of every run on one plot (the
                     sweep tool's plot)
  viz.json           the numbers behind the pictures (activations before and
                     after, interpolation distances, accuracies)

Importable: `representation_fn`, `maximize_nodes`, `interpolate`,
`large_perturbations`.

Where this departs from the paper: its eq. 14 reads lambda f(x1) - (1 -
lambda) f(x2), which does not interpolate (its endpoints are not f(x1) and
f(x2)); this code matches lambda f(x1) + (1 - lambda) f(x2). Steps are L2
gradient steps of fixed length projected onto the pixel box [0, 1] (the
robustness library's L2 PGD with an eps too large to bind), in
lax.fori_loop.
"""

import json
import os

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from jaxadv import attacks
from jaxadv import data
from jaxadv.attacks import projections
from jaxadv.errors import ConfigError
from jaxadv.tools import saliency as saliency_lib
from jaxadv.tools import sweep as sweep_lib


def representation_fn(state):
  """x in [0, 1] -> (logits, representation (b, D)) of a run's main network
  in inference mode (the model's features=True output)."""
  variables = state.variables()
  return lambda x: state.apply_fn(variables, x, train=False, features=True)


def _l2_ascent(objective, x0, steps, step_size):
  """`steps` L2-normalized gradient steps of length `step_size` per example
  maximizing objective(x) -> (b,), each projected onto [0, 1]."""

  def body(_, x):
    g = jax.grad(lambda v: objective(v).sum())(x)
    g = g / jnp.maximum(projections.l2_norm(g), 1e-12)
    return jnp.clip(x + step_size * g, 0.0, 1.0)

  return lax.fori_loop(0, steps, body, x0)


def maximize_nodes(rep_fn, seeds, nodes, *, steps=200, step_size=0.25):
  """Direct feature visualization: for each seed image (n, H, W, C) in
  [0, 1] and node index (n,), the image reached by maximizing that node of
  the representation from the seed. Returns (images, activation at the seed
  (n,), activation at the result (n,))."""
  seeds, nodes = jnp.asarray(seeds, jnp.float32), jnp.asarray(nodes)

  def activation(x):
    rep = rep_fn(x)[1]
    return jnp.take_along_axis(rep, nodes[:, None], axis=1)[:, 0]

  run = jax.jit(lambda s: _l2_ascent(activation, s, steps, step_size))
  out = run(seeds)
  return out, activation(seeds), activation(out)


def interpolate(rep_fn, x1, x2, lambdas, *, start, steps=300, step_size=0.05):
  """Representation-space interpolation (eq. 14 with its sign corrected):
  for each lambda, the image x minimizing |lambda f(x1) + (1 - lambda) f(x2)
  - f(x)|_2, from `start` (H, W, C). x1, x2: (H, W, C) in [0, 1].
  Returns (images (L, H, W, C), relative distance |target - f(x)| /
  |target| at the start and at the end, each (L,))."""
  lam = jnp.asarray(lambdas, jnp.float32)[:, None]
  r1, r2 = (rep_fn(jnp.asarray(v)[None])[1] for v in (x1, x2))
  target = lam * r1 + (1.0 - lam) * r2  # (L, D)

  def closeness(x):  # maximized: minus the squared distance
    return -jnp.sum(jnp.square(rep_fn(x)[1] - target), -1)

  def relative(x):
    return jnp.sqrt(-closeness(x)) / jnp.linalg.norm(target, axis=-1)

  x0 = jnp.broadcast_to(
      jnp.asarray(start, jnp.float32), (len(lambdas),) + x1.shape
  )
  out = jax.jit(lambda s: _l2_ascent(closeness, s, steps, step_size))(x0)
  return out, relative(x0), relative(out)


def large_perturbations(logits_fn, x, targets, *, eps, steps, seed=0):
  """Targeted L2 PGD toward `targets` (n,) with a large eps and many steps
  (the final iterate): (images, predicted classes)."""
  x = jnp.asarray(x, jnp.float32)
  attack = jax.jit(
      lambda rng, v, t: attacks.pgd(
          logits_fn,
          rng,
          v,
          t,
          eps=eps,
          steps=steps,
          norm='l2',
          random_start=False,
          target=t,
          keep_best=False,
      )
  )
  out = attack(jax.random.PRNGKey(seed), x, jnp.asarray(targets))
  return out, np.asarray(jnp.argmax(logits_fn(out), -1))


# ----------------------------------------------------------------------------
# Grids.


def _show(ax, img, title=None):
  img = np.clip(np.asarray(img), 0, 1)
  ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap='gray')
  ax.set_xticks([])
  ax.set_yticks([])
  if title:
    ax.set_title(title, fontsize=7)


def image_grid(rows, path, row_labels, col_labels=None, title=''):
  """A PNG of images: rows[i] (n_i, H, W, C) in [0, 1], one row each."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  cols = max(len(r) for r in rows)
  fig, axes = plt.subplots(
      len(rows),
      cols,
      figsize=(1.2 * cols + 1, 1.3 * len(rows) + 0.4),
      squeeze=False,
  )
  for i, row in enumerate(rows):
    for j in range(cols):
      ax = axes[i, j]
      if j < len(row):
        _show(ax, row[j], col_labels[j] if (col_labels and i == 0) else None)
      else:
        ax.axis('off')
    axes[i, 0].set_ylabel(row_labels[i], fontsize=7)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


# ----------------------------------------------------------------------------
# --mode viz.

INT_KEYS = (
    'num_images',
    'num_seeds',
    'nodes_per_seed',
    'fv_steps',
    'interp_steps',
    'large_steps',
    'sweep_examples',
)
FLOAT_KEYS = ('fv_step_size', 'interp_step_size', 'large_eps')


def _error(msg):
  raise ConfigError(msg)


def check(config, workdir):
  """Everything --mode viz needs, checked before any compute: (workdirs,
  labels, out folder). One-line ConfigErrors naming the key."""
  from jaxadv import rundir  # pylint: disable=g-import-not-at-top
  from jaxadv.tools import common  # pylint: disable=g-import-not-at-top

  v = config.viz
  for key in INT_KEYS:
    if not isinstance(v[key], int) or isinstance(v[key], bool) or v[key] < 1:
      _error(f'config.viz.{key}={v[key]!r} must be a positive integer')
  for key in FLOAT_KEYS:
    if not isinstance(v[key], (int, float)) or v[key] <= 0:
      _error(f'config.viz.{key}={v[key]!r} must be a positive number')
  if not v.interp_lambdas or any(not 0 <= l <= 1 for l in v.interp_lambdas):
    _error(
        f'config.viz.interp_lambdas={tuple(v.interp_lambdas)} must be '
        'numbers in [0, 1]'
    )
  attacks.parse_attack(sweep_lib.attack_at_eps(v.sweep_attack, 0.5).__str__())
  workdirs = [workdir] + common.parse_list(v.compare)
  for w in workdirs:
    if not rundir.has_run(os.path.abspath(w)):
      _error(
          f'config.viz.compare: no run in {w} (no config.json or '
          'checkpoints/); pass --workdir of trained runs'
      )
  try:
    labels = common.workdir_labels(v.labels, workdirs)
  except ValueError as e:
    _error(f'config.viz.labels: {e}')
  out = v.out or os.path.join(workdir, 'viz')
  reason = rundir.output_dir_problem(out)
  if reason:
    _error(f'config.viz.out={out!r}: {reason}')
  return workdirs, labels, out


def _same_dataset(loaded, workdirs):
  first = loaded[0].dataset
  for run, w in zip(loaded[1:], workdirs[1:]):
    ds = run.dataset
    if ds.name != first.name or ds.image_shape != first.image_shape:
      _error(
          f'{w} was trained on {ds.name} {ds.image_shape}, {workdirs[0]} on '
          f'{first.name} {first.image_shape}: compare runs of one dataset'
      )
  return first


def _picks(ds, v):
  """Seeded test images: (images for saliency / large perturbations, their
  labels, seed images for feature visualization, the interpolation pair)."""
  rng = np.random.default_rng(v.seed)
  n = max(v.num_images, v.num_seeds, 2)
  idx = np.sort(rng.permutation(ds.num_test)[:n])
  batch = next(ds.test.batches([idx]))
  x = np.asarray(data.to_float(batch['image']))
  y = np.asarray(batch['label'])
  noise = rng.uniform(0.25, 0.75, (1,) + x.shape[1:]).astype(np.float32)
  seeds = np.concatenate([x[: v.num_seeds], noise])
  return x[: v.num_images], y[: v.num_images], seeds, (x[0], x[1])


def _per_run(run, v, picks, nodes, num_classes):
  """Every picture's images and numbers for one run."""
  x, y, seeds, (x1, x2) = picks
  rep_fn = representation_fn(run.state)
  logits_fn = run.state.logits_fn()
  tiled = np.repeat(seeds, v.nodes_per_seed, axis=0)
  feat, act0, act1 = maximize_nodes(
      rep_fn, tiled, nodes, steps=v.fv_steps, step_size=v.fv_step_size
  )
  start = np.full_like(x1, 0.5)
  interp, d0, d1 = interpolate(
      rep_fn,
      x1,
      x2,
      v.interp_lambdas,
      start=start,
      steps=v.interp_steps,
      step_size=v.interp_step_size,
  )
  targets = (y + 1) % num_classes
  large, pred = large_perturbations(
      logits_fn, x, targets, eps=v.large_eps, steps=v.large_steps, seed=v.seed
  )
  return {
      'saliency': saliency_lib.saliency(run.state, x, y),
      'features': np.asarray(feat),
      'interpolation': np.asarray(interp),
      'large': np.asarray(large),
      'numbers': {
          'feature_activation_seed': np.asarray(act0).tolist(),
          'feature_activation_after': np.asarray(act1).tolist(),
          'interp_distance_start': np.asarray(d0).tolist(),
          'interp_distance_after': np.asarray(d1).tolist(),
          'large_targets': targets.tolist(),
          'large_predicted': pred.tolist(),
      },
  }


def _write_pictures(results, labels, picks, v, out):
  x, _, seeds, (x1, x2) = picks
  k = v.nodes_per_seed
  paths = [
      saliency_lib.plot(
          x,
          [results[l]['saliency'] for l in labels],
          labels,
          os.path.join(out, 'saliency.png'),
      )
      or os.path.join(out, 'saliency.png')
  ]
  rows, names = [], []
  for label in labels:
    f = results[label]['features']
    for s in range(len(seeds)):
      rows.append(np.concatenate([seeds[s : s + 1], f[s * k : (s + 1) * k]]))
      names.append(f'{label} seed {s}')
  cols = ['seed'] + [f'node {i + 1}' for i in range(k)]
  paths.append(
      image_grid(
          rows,
          os.path.join(out, 'features.png'),
          names,
          cols,
          'direct feature visualization',
      )
  )
  rows = [
      np.concatenate([x2[None], results[l]['interpolation'], x1[None]])
      for l in labels
  ]
  cols = ['x2'] + [f'lambda {l:g}' for l in v.interp_lambdas] + ['x1']
  paths.append(
      image_grid(
          rows,
          os.path.join(out, 'interpolation.png'),
          labels,
          cols,
          'representation-space interpolation',
      )
  )
  rows = [x] + [results[l]['large'] for l in labels]
  paths.append(
      image_grid(
          rows,
          os.path.join(out, 'large_perturbations.png'),
          ['original'] + labels,
          None,
          f'targeted L2 PGD, eps {v.large_eps:g}, {v.large_steps} steps',
      )
  )
  return paths


def run_viz(config, workdir):
  """--mode viz: checks, loads every run, computes the pictures and the
  robustness curves, writes them. Returns {'paths': [...], 'numbers': ...}."""
  from jaxadv import runs  # pylint: disable=g-import-not-at-top

  workdirs, labels, out = check(config, workdir)
  v = config.viz
  loaded, mesh = [], None
  for w in workdirs:  # all first: a bad run fails before any compute
    loaded.append(runs.load_run(w, mesh))
    mesh = loaded[-1].mesh
  ds = _same_dataset(loaded, workdirs)
  picks = _picks(ds, v)
  rep_size = representation_fn(loaded[0].state)(picks[2][:1])[1].shape[-1]
  nodes = np.random.default_rng([v.seed, 1]).integers(
      0, rep_size, len(picks[2]) * v.nodes_per_seed
  )
  results = {
      label: _per_run(run, v, picks, nodes, ds.num_classes)
      for label, run in zip(labels, loaded)
  }
  os.makedirs(out, exist_ok=True)
  paths = _write_pictures(results, labels, picks, v, out)
  curves = (
      {
          label: sweep_lib.robust_accuracy_vs_eps(
              run.state,
              ds.test_images,
              ds.test_labels,
              v.sweep_attack,
              list(v.sweep_eps),
              mesh=run.mesh,
              specs=run.specs,
              batch_size=run.config.eval.batch_size,
              num_examples=v.sweep_examples,
              seed=v.seed,
          )
          for label, run in zip(labels, loaded)
      }
      if ds.in_memory
      else {}
  )
  if curves:
    paths.append(
        sweep_lib.plot_sweep(
            curves, os.path.join(out, 'robustness.png'), v.sweep_attack
        )
    )
  numbers = {l: results[l]['numbers'] for l in labels}
  payload = {
      'workdirs': dict(zip(labels, workdirs)),
      'nodes': nodes.tolist(),
      'numbers': numbers,
      'curves': curves,
  }
  with open(os.path.join(out, 'viz.json'), 'w') as f:
    json.dump(payload, f, indent=1)
  return {'paths': paths + [os.path.join(out, 'viz.json')], **payload}
