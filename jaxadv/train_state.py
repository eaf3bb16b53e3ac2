"""The train state every method steps: one pytree, checkpointed whole."""
from typing import Any, Callable

import flax
from flax import struct
import jax
import jax.numpy as jnp
import optax


@struct.dataclass
class TrainState:
  """Everything a run needs to continue exactly where it stopped.

  Attributes:
    step: number of optimizer updates done (int32 scalar).
    params: model parameters (float32).
    batch_stats: BatchNorm running statistics of clean passes ({} if none).
    batch_stats_adv: running statistics of the adversarial BatchNorm set
      (collection 'batch_stats_adv'; {} unless the model has dual_bn).
    opt_state: optax state.
    rng: base key; each step folds its step number (and device index) in.
    method_state: per-method persistent state, e.g. Free's carried
      perturbation; {} for methods that need none.
    apply_fn, tx: static, not saved.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  batch_stats_adv: Any
  opt_state: Any
  rng: jax.Array
  method_state: Any
  apply_fn: Callable = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)

  def variables(self, params=None):
    """Flax variables dict for `apply_fn` (optionally with other params)."""
    v = {'params': self.params if params is None else params}
    if self.batch_stats:
      v['batch_stats'] = self.batch_stats
    if self.batch_stats_adv:
      v['batch_stats_adv'] = self.batch_stats_adv
    return v

  def apply_gradients(self, grads, **updates):
    """One optimizer update; `updates` replaces other fields (e.g. stats)."""
    upd, opt_state = self.tx.update(grads, self.opt_state, self.params)
    params = optax.apply_updates(self.params, upd)
    return self.replace(step=self.step + 1, params=params,
                        opt_state=opt_state, **updates)


def create_train_state(rng, model, tx, input_shape, method_state=None):
  """Initializes params/statistics for inputs of `input_shape` (1, H, W, C)."""
  init_rng, state_rng = jax.random.split(rng)
  variables = model.init(init_rng, jnp.zeros(input_shape, jnp.float32),
                         train=False)
  variables = flax.core.unfreeze(variables)
  params = variables['params']
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=variables.get('batch_stats', {}),
      batch_stats_adv=variables.get('batch_stats_adv', {}),
      opt_state=tx.init(params),
      rng=state_rng,
      method_state={} if method_state is None else method_state,
      apply_fn=model.apply,
      tx=tx)
