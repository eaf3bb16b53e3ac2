"""Pieces every training method shares: forward passes, losses, updates.

A method's `train_step(state, batch, rng)` sees a local shard of the batch
when the trainer runs it under shard_map; `axis_name` (None outside a mesh)
is where gradients and BatchNorm statistics are averaged.
"""
import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits, labels):
  """Per-example softmax cross-entropy, float32, shape (b,)."""
  return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels)


def forward(state, params, x, *, train, adv=False):
  """Model pass on pixels x in [0, 1].

  Returns (logits, stat_updates). In train mode BatchNorm normalizes with
  batch statistics and `stat_updates` holds the new running statistics of
  the collection this pass used ('batch_stats', or 'batch_stats_adv' for
  adv=True on a dual-BN model); in eval mode it is {}.
  """
  variables = state.variables(params)
  if not train:
    return state.apply_fn(variables, x, train=False, adv=adv), {}
  collection = ('batch_stats_adv' if adv and state.batch_stats_adv
                else 'batch_stats')
  if collection not in variables:  # a model without BatchNorm
    return state.apply_fn(variables, x, train=True, adv=adv), {}
  logits, updates = state.apply_fn(variables, x, train=True, adv=adv,
                                   mutable=[collection])
  return logits, dict(updates)


def logits_fn(state, params=None, adv=False):
  """Inference-mode `x -> logits` closure for attacks (no stat updates)."""
  variables = state.variables(params)
  return lambda x: state.apply_fn(variables, x, train=False, adv=adv)


def pmean(tree, axis_name):
  return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def apply_update(state, grads, stat_updates, axis_name, **method_updates):
  """Averages gradients and running statistics over devices, then steps.

  Averaging the running statistics keeps the state identical on every
  device also when BatchNorm normalizes with per-device batch statistics.
  """
  grads = pmean(grads, axis_name)
  stats = {k: pmean(v, axis_name) for k, v in stat_updates.items()}
  return state.apply_gradients(grads, **stats, **method_updates)


def summed(values, mask=None):
  """(sum, count) pair of per-example values, exact under averaging."""
  values = values.astype(jnp.float32)
  if mask is None:
    return values.sum(), jnp.asarray(values.shape[0], jnp.float32)
  mask = mask.astype(jnp.float32)
  return (values * mask).sum(), mask.sum()


def correct(logits, labels):
  return (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
