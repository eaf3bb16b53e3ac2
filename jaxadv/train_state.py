"""The train state every method steps: named networks, each with its own
optimizer, frozen networks beside them, and per-method state.

    TrainState
      step          int32 scalar: optimizer updates of the main network
      rng           base key; each step folds its step number in
      nets          {'main': Network, <aux name>: Network, ...}: trained,
                    checkpointed, sharded and NaN-checked
      frozen        {<name>: Frozen}: read-only networks (a distillation
                    teacher); never checkpointed, rebuilt from their source
      method_state  {'per_example': {...}, 'shared': {...}}: 'per_example'
                    leaves lead with the global batch axis and are sharded
                    like the batch (Free's perturbation); 'shared' is
                    replicated (a staleness queue, GradNorm weights)

The checkpointed part is `saved_tree(state)`: every pytree field except
`frozen`, found by flax's serialization, so no field is listed by hand.
"""

from typing import Any, Callable

import flax
from flax import struct
import jax
import jax.numpy as jnp
import optax


@struct.dataclass
class Network:
  """One trained network: parameters, variable collections (BatchNorm
  statistics: 'batch_stats', 'batch_stats_adv'), optimizer state.

  apply_fn (the Linen module's apply) and tx (its optax transformation) are
  static: rebuilt from the config, not saved.
  """

  params: Any
  collections: Any
  opt_state: Any
  apply_fn: Callable = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)

  @property
  def batch_stats(self):
    return self.collections.get('batch_stats', {})

  @property
  def batch_stats_adv(self):
    return self.collections.get('batch_stats_adv', {})

  def variables(self, params=None):
    """Flax variables dict for `apply_fn` (optionally with other params)."""
    v = {'params': self.params if params is None else params}
    v.update({k: c for k, c in self.collections.items() if c})
    return v

  def apply_gradients(self, grads, **collections):
    """One optimizer update; `collections` replaces variable collections
    (e.g. batch_stats=... from a train-mode pass)."""
    upd, opt_state = self.tx.update(grads, self.opt_state, self.params)
    params = optax.apply_updates(self.params, upd)
    return self.replace(
        params=params,
        opt_state=opt_state,
        collections={**self.collections, **collections},
    )

  def logits_fn(self, params=None, adv=False):
    """Inference-mode `x -> logits` closure (no statistics change)."""
    variables = self.variables(params)
    return lambda x: self.apply_fn(variables, x, train=False, adv=adv)


@struct.dataclass
class Frozen:
  """A read-only network (e.g. a teacher loaded from another run's workdir):
  variables are inputs of every step but never updated or checkpointed."""

  variables: Any
  apply_fn: Callable = struct.field(pytree_node=False)

  def logits_fn(self, adv=False):
    return lambda x: self.apply_fn(self.variables, x, train=False, adv=adv)


@struct.dataclass
class TrainState:
  """Everything a run needs to continue exactly where it stopped (see the
  module docstring). The main network's fields are also reachable directly
  (`state.params`, `state.batch_stats`, `state.apply_fn`, ...)."""

  step: jax.Array
  rng: jax.Array
  nets: Any
  frozen: Any
  method_state: Any

  main = property(lambda self: self.nets['main'])
  params = property(lambda self: self.main.params)
  batch_stats = property(lambda self: self.main.batch_stats)
  batch_stats_adv = property(lambda self: self.main.batch_stats_adv)
  opt_state = property(lambda self: self.main.opt_state)
  apply_fn = property(lambda self: self.main.apply_fn)
  tx = property(lambda self: self.main.tx)

  def variables(self, params=None):
    """The main network's Flax variables (optionally with other params)."""
    return self.main.variables(params)

  def logits_fn(self, params=None, adv=False):
    """The main network's inference-mode `x -> logits` closure."""
    return self.main.logits_fn(params, adv)

  def with_net(self, name, net):
    return self.replace(nets={**self.nets, name: net})

  def with_collections(self, **collections):
    """The state with the main network's variable collections replaced."""
    main = self.main
    return self.with_net(
        'main', main.replace(collections={**main.collections, **collections})
    )

  def apply_gradients(self, grads, method_state=None, **collections):
    """One update of the main network (step + 1); `collections` replaces its
    variable collections, `method_state` the method's state."""
    state = self.with_net(
        'main', self.main.apply_gradients(grads, **collections)
    )
    if method_state is not None:
      state = state.replace(method_state=method_state)
    return state.replace(step=self.step + 1)


def init_network(rng, model, tx, input_shape, apply_fn=None):
  """A Network for `model` initialized on zeros of `input_shape` (1, H, W, C).

  apply_fn: the apply function steps use (e.g. the same architecture with
  BatchNorm synchronized over the mesh axis; default model.apply). Init runs
  outside the mesh, so `model` must not name a mesh axis.
  """
  variables = flax.core.unfreeze(
      model.init(rng, jnp.zeros(input_shape, jnp.float32), train=False)
  )
  params = variables.pop('params')
  return Network(
      params=params,
      collections=variables,
      opt_state=tx.init(params),
      apply_fn=model.apply if apply_fn is None else apply_fn,
      tx=tx,
  )


def empty_method_state(parts=None):
  parts = parts or {}
  return {
      'per_example': parts.get('per_example', {}),
      'shared': parts.get('shared', {}),
  }


def saved_tree(state):
  """The checkpointed part of a TrainState as nested dicts of arrays: every
  pytree field but the frozen networks."""
  return flax.serialization.to_state_dict(state.replace(frozen={}))


def with_saved_tree(template, tree):
  """`template` (static parts, frozen networks) with the saved arrays of
  `tree` (as saved_tree returns)."""
  restored = flax.serialization.from_state_dict(
      template.replace(frozen={}), tree
  )
  return restored.replace(frozen=template.frozen)
