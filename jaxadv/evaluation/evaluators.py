"""Evaluators over batch iterators: a method's metrics, clean and robust
accuracy, per-example robust flags and adversarial examples, each one jitted
shard_map program per batch, fed from `data.eval_batches` of any split (in
memory or streamed), so a 50,000-image validation set streams like training.

What is evaluated ("the model") is any pytree with a `logits_fn()` method
returning `x -> logits` in inference mode (a TrainState, or
`LogitsModel(fn)` around a plain callable); it is an argument of the jitted
programs, placed on the mesh with `specs`. Metrics are exact (sum, count)
pairs summed over devices and batches: every example counts exactly once
(the last batch is padded and masked).

`data` arguments take a split (data.ArraySplit, a streamed split), an
(images, labels) pair of arrays, or ((x_adv, x), labels) for precomputed
adversarial inputs and their clean originals (black-box transfer).
"""

from typing import Any, Callable

from flax import struct
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np

from jaxadv import data as data_lib
from jaxadv import parallel
from jaxadv.methods import common


@struct.dataclass
class LogitsModel:
  """A plain `x -> logits` callable as an evaluable model (no arrays of its
  own to place: its parameters are closed over)."""

  fn: Callable = struct.field(pytree_node=False)

  def logits_fn(self):
    return self.fn


def as_split(data):
  """A split from a split, (images, labels) or ((x_adv, x), labels)."""
  if hasattr(data, 'batches'):
    return data
  images, labels = data
  if isinstance(images, tuple):  # precomputed adversarial inputs
    x_adv, x = images
    return data_lib.ArraySplit(
        {'image': x_adv, 'clean': x, 'label': np.asarray(labels, np.int32)}
    )
  return data_lib.ArraySplit(
      {'image': images, 'label': np.asarray(labels, np.int32)}
  )


def global_batches(split, batch_size, mesh, indices=None):
  """(i, batch on the mesh) per global eval batch of `split` (its examples
  `indices`, default all): every feature plus 'mask' and 'index'.

  Fewer examples than `batch_size` make one batch of just enough rows (a
  multiple of the device count): padding rows cost a full attack each.
  """
  n = len(split) if indices is None else len(indices)
  ndev = mesh.devices.size
  batch_size = min(batch_size, max(-(-n // ndev) * ndev, ndev))
  batches = data_lib.eval_batches(
      split,
      batch_size,
      indices=indices,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
  )
  for i, b in enumerate(batches):
    yield i, parallel.put_local_batch(b, mesh, P(parallel.AXIS))


def _sharded(fn, mesh, specs, num_args=0, out=P()):
  """jit(shard_map(fn(model, batch, rng, *args))) with the batch split over
  the mesh axis and everything else replicated.

  check_vma=False: the trainer's convention (gradients of replicated
  parameters are averaged explicitly); outputs are psum'ed or batch-sharded.
  """
  b = P(parallel.AXIS)
  return jax.jit(
      jax.shard_map(
          fn,
          mesh=mesh,
          in_specs=(specs, b, P()) + (P(),) * num_args,
          out_specs=out,
          check_vma=False,
      )
  )


def _device_key(rng):
  return jax.random.fold_in(rng, jax.lax.axis_index(parallel.AXIS))


def example_keys(rng, index):
  """One key per example, from the base key and the example's index in its
  split: the same whatever batch or device the example lands in."""
  return jax.vmap(lambda i: jax.random.fold_in(rng, i))(index)


def make_metrics_fn(mesh, specs, metrics_fn):
  """jit(shard_map) of one eval batch -> {name: (sum, count)} summed over
  devices, for a method's metrics_fn(state, batch). The batch holds every
  feature ('image' float in [0, 1]; other image-shaped features as stored),
  'label', 'mask', 'index' and 'rng' (a key per example, see example_keys).
  Called as fn(state, batch, rng)."""

  def batch_metrics(state, batch, rng):
    batch = dict(batch, image=data_lib.to_float(batch['image']))
    batch['rng'] = example_keys(rng, batch['index'])
    return jax.lax.psum(metrics_fn(state, batch), parallel.AXIS)

  return _sharded(batch_metrics, mesh, specs)


def finalize(sums, finalizers=None):
  """{name: value}: sum / count, passed through finalizers[name] if any
  (e.g. math.sqrt turns a mean squared error into an RMSE)."""
  finalizers = finalizers or {}
  out = {}
  for k, (s, c) in sums.items():
    mean = float(s) / max(float(c), 1.0)
    out[k] = finalizers[k](mean) if k in finalizers else mean
  return out


def metrics(
    state,
    data,
    *,
    mesh,
    specs,
    batch_size,
    metrics_fn=None,
    fn=None,
    finalizers=None,
    seed=0,
    indices=None,
):
  """A method's eval metrics over `data` (every example counted once):
  ({name: value}, number of examples). `fn` is a prebuilt make_metrics_fn
  (else built from metrics_fn); values are finalized (see finalize)."""
  split = as_split(data)
  fn = fn or make_metrics_fn(mesh, specs, metrics_fn)
  total, rng = None, jax.random.PRNGKey(seed)
  for _, g in global_batches(split, batch_size, mesh, indices):
    out = fn(state, g, rng)
    total = (
        out if total is None else jax.tree_util.tree_map(jnp.add, total, out)
    )
  n = len(split) if indices is None else len(indices)
  return finalize(parallel.fetch(total), finalizers), n


def make_accuracy_fn(mesh, specs, attack=None):
  """jit(shard_map) of one eval batch -> (num_correct, num_counted), called
  as fn(model, batch, rng, *args).

  attack: None for clean accuracy, else fn(logits_fn, rng, x, y, *args) ->
  x_adv run against the model in inference mode (no statistics updated);
  `args` (e.g. a traced eps) are replicated. A batch with a 'clean' feature
  holds precomputed inputs in 'image' and their clean originals (transfer).

  Under an attack (or with 'clean') an example counts as correct only when
  the model classifies both the clean input and the attacked one correctly,
  as robust accuracy is defined (and AutoAttack counts it): the clean input
  is itself a point of the threat model, and an attack, a targeted one above
  all, can return a point classified correctly when the clean input is not.
  """

  def batch_accuracy(model, batch, rng, *args):
    logits_fn = model.logits_fn()
    x = data_lib.to_float(batch['image'])
    paired = 'clean' in batch
    x_clean = data_lib.to_float(batch['clean']) if paired else x
    if attack is not None:
      x = attack(logits_fn, _device_key(rng), x, batch['label'], *args)
    ok = common.correct(logits_fn(x), batch['label'])
    if attack is not None or paired:
      # x itself lies in the threat model: an example the model gets wrong
      # is never robust, whatever point the attack returned.
      ok = ok * common.correct(logits_fn(x_clean), batch['label'])
    return jax.lax.psum(common.summed(ok, batch['mask']), parallel.AXIS)

  def fn(model, batch, rng, *args):
    inner = _sharded(batch_accuracy, mesh, specs, len(args))
    return inner(model, batch, rng, *args)

  return jax.jit(fn)


def batch_key(seed, i):
  """The attack key of eval batch i: fold_in(PRNGKey(seed), i), folded with
  the device index inside the program."""
  return jax.random.fold_in(jax.random.PRNGKey(seed), i)


def accuracy(
    model,
    data,
    labels=None,
    *,
    mesh,
    specs,
    batch_size,
    attack=None,
    seed=0,
    accuracy_fn=None,
    attack_args=(),
    indices=None,
):
  """Accuracy of `model` on `data` (examples `indices`, default all), every
  example counted once: (accuracy in [0, 1], number of examples).

  With `attack`, accuracy is robust accuracy: correct on the clean and on the
  attacked input. Batch i attacks with batch_key(seed, i). attack_args:
  extra replicated arguments of the attack (see make_accuracy_fn). `labels`
  (deprecated form): data=images, labels=labels.
  """
  split = as_split(data if labels is None else (data, labels))
  fn = accuracy_fn or make_accuracy_fn(mesh, specs, attack)
  total = None
  for i, g in global_batches(split, batch_size, mesh, indices):
    out = fn(model, g, batch_key(seed, i), *attack_args)
    total = (
        out if total is None else jax.tree_util.tree_map(jnp.add, total, out)
    )
  correct, count = (float(v) for v in parallel.fetch(total))
  return correct / max(count, 1.0), int(round(count))


def _gather_rows(x, mask):
  """Host numpy of a batch-sharded array, all processes' rows, padding
  dropped (padding rows only ever follow the real ones)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    x, mask = multihost_utils.process_allgather((x, mask), tiled=True)
  return np.asarray(x)[np.asarray(mask) > 0]


def _per_example(
    batch_fn, model, split, *, mesh, specs, batch_size, seed, indices
):
  """Concatenated rows of batch_fn(model, batch, key) over the split."""
  fn = _sharded(batch_fn, mesh, specs, out=P(parallel.AXIS))
  out = []
  for i, g in global_batches(split, batch_size, mesh, indices):
    out.append(_gather_rows(fn(model, g, batch_key(seed, i)), g['mask']))
  return out


def adversarial_examples(
    model,
    data,
    labels=None,
    attack=None,
    *,
    mesh,
    specs,
    batch_size,
    seed=0,
    indices=None,
):
  """x_adv = attack(model) for every example, float32 (N, H, W, C) in
  [0, 1], in the order of the examples.

  Batches and keys are those of `accuracy(..., attack=attack, seed=seed)`,
  so evaluating x_adv on `model` reproduces that white-box accuracy.
  """
  if attack is None:  # called as (model, data, attack, ...)
    data, labels, attack = data, None, labels
  split = as_split(data if labels is None else (data, labels))

  def batch_attack(model, batch, rng):
    x = data_lib.to_float(batch['image'])
    return attack(model.logits_fn(), _device_key(rng), x, batch['label'])

  out = _per_example(
      batch_attack,
      model,
      split,
      mesh=mesh,
      specs=specs,
      batch_size=batch_size,
      seed=seed,
      indices=indices,
  )
  shape = (0,) + tuple(split.features['image'].shape)
  return np.concatenate([np.zeros(shape, np.float32)] + out).astype(np.float32)


def robust_flags(
    model,
    data,
    labels=None,
    attack=None,
    *,
    mesh,
    specs,
    batch_size,
    seed=0,
    indices=None,
):
  """Per example, whether `model` classifies the clean input and its
  attacked version correctly: bool (N,) on the host, in example order.

  Batches and keys are those of `accuracy(..., attack=attack, seed=seed)`,
  so `robust_flags(...).mean()` is that robust accuracy. Ensembles such as
  AutoAttack call it on the still-robust examples after each attack.
  """
  if attack is None:
    data, labels, attack = data, None, labels
  split = as_split(data if labels is None else (data, labels))

  def batch_flags(model, batch, rng):
    logits_fn = model.logits_fn()
    x, y = data_lib.to_float(batch['image']), batch['label']
    ok = common.correct(logits_fn(attack(logits_fn, _device_key(rng), x, y)), y)
    return ok * common.correct(logits_fn(x), y)

  out = _per_example(
      batch_flags,
      model,
      split,
      mesh=mesh,
      specs=specs,
      batch_size=batch_size,
      seed=seed,
      indices=indices,
  )
  return np.concatenate([np.zeros((0,), bool)] + [o > 0 for o in out])
