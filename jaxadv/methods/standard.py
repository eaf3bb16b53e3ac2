"""Standard (natural) training: cross-entropy on clean inputs."""
import jax

from jaxadv.methods import common


def validate(config):
  """No method keys beyond the name."""
  del config


def make_train_step(config, model, axis_name=None):
  """Returns train_step(state, batch, rng) -> (state, metrics).

  batch: {'image': float (b, H, W, C) in [0, 1], 'label': int (b,)}.
  metrics: name -> (sum, count) over the local batch.
  """
  del config, model

  def train_step(state, batch, rng):
    del rng
    x, y = batch['image'], batch['label']

    def loss_fn(params):
      logits, stats = common.forward(state, params, x, train=True)
      loss = common.cross_entropy(logits, y)
      return loss.mean(), (loss, logits, stats)

    grads, (loss, logits, stats) = jax.grad(loss_fn, has_aux=True)(
        state.params)
    state = common.apply_update(state, grads, stats, axis_name)
    return state, {'loss': common.summed(loss),
                   'accuracy': common.summed(common.correct(logits, y))}

  return train_step
