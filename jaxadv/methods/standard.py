"""Standard (natural) training: cross-entropy on clean inputs."""

import jax

from jaxadv.methods import common


def validate(config):
  """No method keys beyond the name."""
  common.check_method_keys(config, ())


def make_train_step(ctx):
  """Returns train_step(state, batch, rngs) -> (state, metrics).

  batch: {'image': float (b, H, W, C) in [0, 1], 'label': int (b,)}.
  metrics: name -> (sum, count) over the local batch.
  """
  axis_name = ctx.axis_name

  def train_step(state, batch, rngs):
    del rngs
    x, y = batch['image'], batch['label']

    def loss_fn(params):
      logits, stats = common.forward(state, params, x, train=True)
      loss = common.cross_entropy(logits, y)
      return loss.mean(), (loss, logits, stats)

    grads, (loss, logits, stats) = jax.grad(loss_fn, has_aux=True)(state.params)
    state = common.apply_update(state, grads, stats, axis_name)
    return state, {
        'loss': common.summed(loss),
        'accuracy': common.summed(common.correct(logits, y)),
    }

  return train_step
