"""Free adversarial training, Free-m (Shafahi et al. 2019, Algorithm 2).

Each minibatch is replayed m times. A replay is ONE forward/backward pass
giving both the parameter gradient (an optimizer update) and the input
gradient (a signed step on the perturbation):
  x_adv = clip(x + delta, 0, 1)
  theta <- theta - lr * grad_theta CE(x_adv)
  delta <- clip(delta + step_size * sign(grad_delta CE(x_adv)), -eps, eps)
delta (b, H, W, C) persists across minibatches in
state.method_state['per_example']['delta'] (the global batch is split over
devices like the batch). One train_step call makes m optimizer updates, so
config.num_epochs counts passes over the data (m gradient passes each).

Method keys (config.method):
  eps        L-inf radius, pixel scale (8/255).
  replays    m >= 1.
  step_size  signed step on delta (default eps).
BatchNorm runs in train mode in every replay (each is a training step).
"""

import jax
import jax.numpy as jnp

from jaxadv import methods
from jaxadv.methods import common

KEYS = ('eps', 'replays', 'step_size')
# delta has the global batch's shape: another batch size cannot restore it.
RESTORE_KEYS = ('batch_size',)


def validate(config):
  """Raises validation.ConfigError naming the first bad method key."""
  common.check_method_keys(config, KEYS)
  common.check_eps(config, 'linf')
  common.check_positive(config, 'replays', integer=True, required=True)
  common.check_positive(config, 'step_size')


def updates_per_batch(config):
  return int(config.method.replays)


def trains_clean_bn(config):
  """Every pass is on x + delta: no clean BatchNorm pass."""
  del config
  return False


def settings(config):
  """Resolved method keys (step_size defaults to eps)."""
  eps = float(config.method.eps)
  return dict(
      eps=eps,
      replays=int(config.method.replays),
      step_size=float(common.method_value(config, 'step_size', eps)),
  )


def init(ctx, rng):
  """delta = 0, float32 (global batch, H, W, C), sharded like the batch."""
  del rng
  delta = jnp.zeros((ctx.batch_size,) + ctx.image_shape, jnp.float32)
  return methods.Parts(method_state={'per_example': {'delta': delta}})


def free_replay(state, x, y, *, eps, step_size, axis_name=None):
  """One replay: one forward/backward pass, one update of params and delta.

  x: float (b, H, W, C) in [0, 1]; y: int (b,). eps, step_size: pixel scale.
  Returns (state, metrics) with metrics 'loss' and 'adv_accuracy' on the
  inputs x + delta this replay trained on.
  """
  delta = state.method_state['per_example']['delta']

  def loss_fn(params, delta):
    x_adv = jnp.clip(x + delta, 0.0, 1.0)
    logits, stats = common.forward(state, params, x_adv, train=True, adv=True)
    loss = common.cross_entropy(logits, y)
    return loss.mean(), (loss, logits, stats)

  (_, (loss, logits, stats)), (g_params, g_delta) = jax.value_and_grad(
      loss_fn, argnums=(0, 1), has_aux=True
  )(state.params, delta)
  delta = jnp.clip(delta + step_size * jnp.sign(g_delta), -eps, eps)
  method_state = {
      **state.method_state,
      'per_example': {**state.method_state['per_example'], 'delta': delta},
  }
  state = common.apply_update(
      state, g_params, stats, axis_name, method_state=method_state
  )
  return state, {
      'loss': common.summed(loss),
      'adv_accuracy': common.summed(common.correct(logits, y)),
  }


def make_train_step(ctx):
  """Returns train_step(state, batch, rngs) -> (state, metrics): m replays,
  unrolled (m is small; XLA:CPU runs weight-gradient convolutions inside
  loops many times slower, bench/RESULTS.md); metrics are (sum, count) over
  the m replays of the local batch. rngs are unused (delta starts at 0 and
  carries over)."""
  s, axis_name = ctx.settings, ctx.axis_name

  def train_step(state, batch, rngs):
    del rngs
    x, y = batch['image'], batch['label']
    total = None
    for _ in range(s['replays']):
      state, metrics = free_replay(
          state,
          x,
          y,
          eps=s['eps'],
          step_size=s['step_size'],
          axis_name=axis_name,
      )
      total = (
          metrics
          if total is None
          else jax.tree_util.tree_map(jnp.add, total, metrics)
      )
    return state, total

  return train_step
