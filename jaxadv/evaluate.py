"""Clean and robust accuracy with exact (sum, count) averaging.

Every test example is counted exactly once: the data module pads the last
global batch and masks the padding, and sums are reduced over devices.
"""
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from jaxadv import data
from jaxadv import parallel
from jaxadv.methods import common


def make_accuracy_fn(mesh, specs, attack=None):
  """jit(shard_map) of one eval batch -> (num_correct, num_counted).

  attack: None for clean accuracy, else fn(logits_fn, rng, x, y) -> x_adv
  run against the model in inference mode (no statistics updated).
  """
  def batch_accuracy(state, images, labels, mask, rng):
    x = data.to_float(images)
    if attack is not None:
      rng = jax.random.fold_in(rng, jax.lax.axis_index(parallel.AXIS))
      x = attack(common.logits_fn(state), rng, x, labels)
    logits = common.logits_fn(state)(x)
    ok = common.correct(logits, labels)
    return jax.lax.psum(common.summed(ok, mask), parallel.AXIS)

  b = P(parallel.AXIS)
  fn = jax.shard_map(batch_accuracy, mesh=mesh,
                     in_specs=(specs, b, b, b, P()), out_specs=P())
  return jax.jit(fn)


def accuracy(state, images, labels, *, mesh, specs, batch_size, attack=None,
             seed=0, accuracy_fn=None):
  """Accuracy of `state` on uint8 images (N, H, W, C), all N counted once.

  Returns (accuracy in [0, 1], number of examples).
  """
  fn = accuracy_fn or make_accuracy_fn(mesh, specs, attack)
  pidx, pcount = jax.process_index(), jax.process_count()
  total = None
  for i, batch in enumerate(data.eval_batches(
      images, labels, batch_size, process_index=pidx, process_count=pcount)):
    g = parallel.put_local_batch(
        (batch['image'], batch['label'], batch['mask']), mesh, P(parallel.AXIS))
    rng = jax.random.fold_in(jax.random.PRNGKey(seed), i)
    out = fn(state, *g, rng)
    total = out if total is None else jax.tree_util.tree_map(jnp.add, total, out)
  correct, count = (float(v) for v in parallel.fetch(total))
  return correct / max(count, 1.0), int(round(count))
