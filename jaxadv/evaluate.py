"""Clean and robust accuracy with exact (sum, count) averaging, eval reports,
sanity flags against gradient masking, and loading trained workdirs.

Every test example is counted exactly once: the data module pads the last
global batch and masks the padding, and sums are reduced over devices.

Records (one dict per evaluated attack) carry the attack's resolved settings
(`AttackSpec.describe()`: attack, norm, eps in pixel scale, steps, step_size,
restarts, loss, target, random_start) plus name, seed, num_examples,
accuracy (in [0, 1]) and seconds. Records of several models also carry
`model` (the evaluated model) and, for black-box transfer, `source` (the
model the attack ran on).
"""

import os
import time

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np

from jaxadv import attacks
from jaxadv import data
from jaxadv import parallel
from jaxadv.methods import common


def make_accuracy_fn(mesh, specs, attack=None):
  """jit(shard_map) of one eval batch -> (num_correct, num_counted).

  attack: None for clean accuracy, else fn(logits_fn, rng, x, y, *args) ->
  x_adv run against the model in inference mode (no statistics updated);
  `args` (e.g. a traced eps) are replicated arguments of the returned
  fn(state, images, labels, mask, rng, *args). `images` may also be a pair
  (x_adv, x) of precomputed inputs and their clean originals (transfer).

  Under an attack (or for a pair) an example counts as correct only when the
  model classifies both the clean input and the attacked one correctly, as
  robust accuracy is defined (and AutoAttack counts it): the clean input is
  itself a point of the threat model, and an attack, a targeted one above
  all, can return a point classified correctly when the clean input is not.
  """

  def batch_accuracy(state, images, labels, mask, rng, *args):
    model = state.logits_fn()
    paired = isinstance(images, tuple)  # (precomputed x_adv, clean x)
    x, x_clean = (
        (data.to_float(images[0]), data.to_float(images[1]))
        if paired
        else (data.to_float(images),) * 2
    )
    if attack is not None:
      rng = jax.random.fold_in(rng, jax.lax.axis_index(parallel.AXIS))
      x = attack(model, rng, x, labels, *args)
    ok = common.correct(model(x), labels)
    if attack is not None or paired:
      # x itself lies in the threat model: an example the model gets wrong
      # is never robust, whatever point the attack returned.
      ok = ok * common.correct(model(x_clean), labels)
    return jax.lax.psum(common.summed(ok, mask), parallel.AXIS)

  b = P(parallel.AXIS)

  # check_vma=False: attacks start lax.scan carries from device-invariant
  # constants (restarts, APGD-T's targets), which the varying-axis type check
  # rejects inside shard_map; the psum makes the output replicated anyway.
  def fn(state, images, labels, mask, rng, *args):
    inner = jax.shard_map(
        batch_accuracy,
        mesh=mesh,
        in_specs=(specs, b, b, b, P()) + (P(),) * len(args),
        out_specs=P(),
        check_vma=False,
    )
    return inner(state, images, labels, mask, rng, *args)

  return jax.jit(fn)


def make_metrics_fn(mesh, specs, metrics_fn):
  """jit(shard_map) of one eval batch -> {name: (sum, count)} summed over
  devices, for a method's metrics_fn(state, batch) (batch: 'image' float in
  [0, 1], 'label', 'mask'; see methods.common.accuracy_metrics)."""

  def batch_metrics(state, images, labels, mask):
    batch = {'image': data.to_float(images), 'label': labels, 'mask': mask}
    return jax.lax.psum(metrics_fn(state, batch), parallel.AXIS)

  b = P(parallel.AXIS)
  return jax.jit(
      jax.shard_map(
          batch_metrics,
          mesh=mesh,
          in_specs=(specs, b, b, b),
          out_specs=P(),
          check_vma=False,
      )
  )


def metrics(
    state, images, labels, *, mesh, specs, batch_size, metrics_fn=None, fn=None
):
  """A method's eval metrics over images (N, H, W, C), all N counted once:
  ({name: mean}, N). `fn` is a prebuilt make_metrics_fn (else built from
  metrics_fn)."""
  fn = fn or make_metrics_fn(mesh, specs, metrics_fn)
  total = None
  for _, g in _global_batches(images, labels, batch_size, mesh):
    out = fn(state, *g)
    total = (
        out if total is None else jax.tree_util.tree_map(jnp.add, total, out)
    )
  fetched = parallel.fetch(total)
  means = {k: float(s) / max(float(c), 1.0) for k, (s, c) in fetched.items()}
  return means, len(labels)


def _global_batches(images, labels, batch_size, mesh):
  """(index, (images, labels, mask) on the mesh) per global eval batch.

  Fewer examples than `batch_size` make one batch of just enough rows (a
  multiple of the device count): padding rows cost a full attack each.
  """
  pidx, pcount = jax.process_index(), jax.process_count()
  ndev = mesh.devices.size
  batch_size = min(batch_size, max(-(-len(labels) // ndev) * ndev, ndev))
  paired = isinstance(images, tuple)
  streams = [
      data.eval_batches(
          a, labels, batch_size, process_index=pidx, process_count=pcount
      )
      for a in (images if paired else (images,))
  ]
  for i, batches in enumerate(zip(*streams)):
    image = tuple(b['image'] for b in batches)
    yield i, parallel.put_local_batch(
        (
            image if paired else image[0],
            batches[0]['label'],
            batches[0]['mask'],
        ),
        mesh,
        P(parallel.AXIS),
    )


def accuracy(
    state,
    images,
    labels,
    *,
    mesh,
    specs,
    batch_size,
    attack=None,
    seed=0,
    accuracy_fn=None,
    attack_args=(),
):
  """Accuracy of `state` on images (N, H, W, C), all N counted once.

  images: uint8 0..255 or float pixels in [0, 1]; or a pair (x_adv, x) of
  precomputed adversarial examples and their clean originals, counted as
  robust accuracy (see make_accuracy_fn). With `attack`, accuracy is robust
  accuracy: correct on the clean and on the attacked input. Batch i attacks
  with key fold_in(PRNGKey(seed), i), folded with the device index.
  attack_args: extra replicated arguments of the attack (see
  make_accuracy_fn).

  Returns (accuracy in [0, 1], number of examples).
  """
  fn = accuracy_fn or make_accuracy_fn(mesh, specs, attack)
  total = None
  for i, g in _global_batches(images, labels, batch_size, mesh):
    rng = jax.random.fold_in(jax.random.PRNGKey(seed), i)
    out = fn(state, *g, rng, *attack_args)
    total = (
        out if total is None else jax.tree_util.tree_map(jnp.add, total, out)
    )
  correct, count = (float(v) for v in parallel.fetch(total))
  return correct / max(count, 1.0), int(round(count))


def adversarial_examples(
    state, images, labels, attack, *, mesh, specs, batch_size, seed=0
):
  """x_adv = attack(model of `state`) for every example, float32 (N, H, W, C)
  in [0, 1], in the order of `images`.

  Batches and keys are those of `accuracy(..., attack=attack, seed=seed)`,
  so evaluating x_adv on `state` reproduces that white-box accuracy.
  """

  def batch_attack(state, images, labels, rng):
    rng = jax.random.fold_in(rng, jax.lax.axis_index(parallel.AXIS))
    return attack(state.logits_fn(), rng, data.to_float(images), labels)

  b = P(parallel.AXIS)
  fn = jax.jit(
      jax.shard_map(
          batch_attack,
          mesh=mesh,  # check_vma: see
          in_specs=(specs, b, b, P()),  # make_accuracy_fn
          out_specs=b,
          check_vma=False,
      )
  )
  out = []
  for i, (img, lbl, mask) in _global_batches(images, labels, batch_size, mesh):
    x_adv = fn(state, img, lbl, jax.random.fold_in(jax.random.PRNGKey(seed), i))
    out.append(_gather_rows(x_adv, mask))
  return np.concatenate(out).astype(np.float32)


def _gather_rows(x, mask):
  """Host numpy of a batch-sharded array, all processes' rows, padding
  dropped (padding rows only ever follow the real ones)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    x, mask = multihost_utils.process_allgather((x, mask), tiled=True)
  return np.asarray(x)[np.asarray(mask) > 0]


def robust_flags(
    state, images, labels, attack, *, mesh, specs, batch_size, seed=0
):
  """Per example, whether `state` classifies the clean input and its attacked
  version correctly: bool (N,) on the host, in the order of `images`.

  Batches and keys are those of `accuracy(..., attack=attack, seed=seed)`,
  so `robust_flags(...).mean()` is that robust accuracy. Ensembles such as
  AutoAttack call it on the still-robust subset after each attack.
  """

  def batch_flags(state, images, labels, rng):
    rng = jax.random.fold_in(rng, jax.lax.axis_index(parallel.AXIS))
    model = state.logits_fn()
    x = data.to_float(images)
    ok = common.correct(model(attack(model, rng, x, labels)), labels)
    return ok * common.correct(model(x), labels)

  b = P(parallel.AXIS)
  fn = jax.jit(
      jax.shard_map(
          batch_flags,
          mesh=mesh,  # check_vma: see
          in_specs=(specs, b, b, P()),  # make_accuracy_fn
          out_specs=b,
          check_vma=False,
      )
  )
  out = [np.zeros((0,), bool)]
  for i, (img, lbl, mask) in _global_batches(images, labels, batch_size, mesh):
    ok = fn(state, img, lbl, jax.random.fold_in(jax.random.PRNGKey(seed), i))
    out.append(_gather_rows(ok, mask) > 0)
  return np.concatenate(out)


def subset(images, labels, num_examples, seed):
  """A seeded random subset (never the first n: data may be sorted by
  class); the whole split when num_examples is 0 or >= N."""
  n = len(labels)
  if not num_examples or num_examples >= n:
    return images, labels
  idx = np.sort(np.random.default_rng(seed).permutation(n)[:num_examples])
  return images[idx], labels[idx]


def record(spec, accuracy_value, num_examples, seed, seconds, **extra):
  """One eval record for an AttackSpec (see the module docstring)."""
  return {
      'name': str(spec),
      **spec.describe(),
      'seed': seed,
      'num_examples': num_examples,
      'accuracy': accuracy_value,
      'seconds': seconds,
      **extra,
  }


def run_attacks(
    state,
    images,
    labels,
    attack_specs,
    *,
    mesh,
    specs,
    batch_size,
    num_examples=0,
    seed=0,
    dtype=None,
    method_settings=None,
):
  """Accuracy under each attack spec on the same seeded subset; one record
  per attack (see the module docstring). 'clean' is a valid spec. `dtype`,
  the model's compute dtype, is recorded when given; `method_settings`
  resolves `key=method` in the specs (the training method's values)."""
  extra = {} if dtype is None else {'dtype': dtype}
  images, labels = subset(images, labels, num_examples, seed)
  records = []
  for spec_text in attack_specs:
    spec = attacks.parse_attack(spec_text, method_settings)
    if spec.name == 'autoattack':
      records += run_autoattack(
          state,
          images,
          labels,
          spec,
          mesh=mesh,
          specs=specs,
          batch_size=batch_size,
          seed=seed,
          **extra,
      )
      continue
    fn = None if spec.name == 'clean' else attacks.make_attack(spec)
    t0 = time.time()
    acc, n = accuracy(
        state,
        images,
        labels,
        mesh=mesh,
        specs=specs,
        batch_size=batch_size,
        attack=fn,
        seed=seed,
    )
    records.append(record(spec, acc, n, seed, time.time() - t0, **extra))
  return records


def run_autoattack(
    state, images, labels, spec, *, mesh, specs, batch_size, seed=0, **extra
):
  """AutoAttack as its reference runs it: each component (APGD-CE, APGD-T,
  FAB-T, Square for 'standard') attacks only the points still robust after
  the ones before it (the batch is compacted on the host in between), and
  an example is robust only if the clean input and every component's point
  are classified correctly.

  Returns one record per component (accuracy = robust accuracy after it,
  over all examples; 'component_of' names the ensemble) and the final
  record of `spec` with 'components' {name: accuracy}.
  """
  t_start, n = time.time(), len(labels)
  keep = np.flatnonzero(
      robust_flags(
          state,
          images,
          labels,
          attacks.clean,
          mesh=mesh,
          specs=specs,
          batch_size=batch_size,
          seed=seed,
      )
  )
  out, after = [], {}
  for i, comp in enumerate(attacks.specs.autoattack_spec_components(spec)):
    t0 = time.time()
    if keep.size:
      ok = robust_flags(
          state,
          images[keep],
          labels[keep],
          attacks.make_attack(comp.spec),
          mesh=mesh,
          specs=specs,
          batch_size=batch_size,
          seed=seed + 1 + i,
      )
      keep = keep[ok]
    after[comp.name] = keep.size / max(n, 1)
    out.append(
        record(
            comp.spec,
            after[comp.name],
            n,
            seed,
            time.time() - t0,
            component_of=str(spec),
            **extra,
        )
    )
  out.append(
      record(
          spec,
          keep.size / max(n, 1),
          n,
          seed,
          time.time() - t_start,
          components=after,
          **extra,
      )
  )
  return out


# ----------------------------------------------------------------------------
# Command-line helpers of the sweep and transfer tools.


def parse_list(text):
  """'a,b, c' -> ['a', 'b', 'c'] (empty items dropped)."""
  return [t.strip() for t in text.split(',') if t.strip()]


def workdir_labels(text, workdirs):
  """Model names from a comma-separated --labels (default: folder names)."""
  if not workdirs:
    raise ValueError('--workdirs names no workdir')
  labels = (
      parse_list(text)
      if text
      else [os.path.basename(os.path.normpath(w)) for w in workdirs]
  )
  if len(labels) != len(workdirs) or len(set(labels)) != len(labels):
    raise ValueError(
        f'--labels needs {len(workdirs)} distinct names, got ' f'{labels}'
    )
  return labels


def add_report_args(parser):
  """The options the sweep and transfer CLIs share (argparse)."""
  parser.add_argument('--out', required=True, help='output folder')
  parser.add_argument(
      '--num_examples',
      type=int,
      default=None,
      help='seeded test subset size (default: the first '
      "workdir's config.eval.num_examples; 0 = all)",
  )
  parser.add_argument(
      '--labels',
      default='',
      help='comma-separated names of the models (default: ' 'folder names)',
  )
  parser.add_argument(
      '--seed',
      type=int,
      default=0,
      help='seed of the subset and of the random starts',
  )
