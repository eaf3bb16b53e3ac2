"""Device mesh, shardings and host-to-device placement (single or multi-host).

Data parallelism runs steps under `jax.shard_map` over a 1-D mesh whose axis
is named 'data'. Everything in the TrainState is replicated except
`method_state['per_example']`, whose leaves lead with the global batch axis
and are split over devices like the batch.
"""

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

AXIS = 'data'


def make_mesh(devices=None):
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (AXIS,))


def _is_spec(x):
  return isinstance(x, P)


def state_specs(state):
  """PartitionSpecs of a TrainState (same pytree structure)."""
  specs = jax.tree_util.tree_map(lambda _: P(), state)
  ms = state.method_state
  return specs.replace(
      method_state={
          'per_example': jax.tree_util.tree_map(
              lambda _: P(AXIS), ms.get('per_example', {})
          ),
          'shared': jax.tree_util.tree_map(lambda _: P(), ms.get('shared', {})),
      }
  )


def shardings(mesh, specs):
  return jax.tree_util.tree_map(
      lambda s: NamedSharding(mesh, s), specs, is_leaf=_is_spec
  )


def put_global(tree, mesh, specs):
  """Places host values holding the *global* arrays (identical on every
  process) onto the mesh with `specs`."""

  def put(x, sharding):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])

  return jax.tree_util.tree_map(put, tree, shardings(mesh, specs))


def put_local_batch(tree, mesh, spec):
  """Builds global arrays from this process's slice of a batch (leading
  batch axes split over processes, as the data module hands them out)."""
  sharding = NamedSharding(mesh, spec)
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      tree,
  )


def fetch(tree):
  """Device -> host numpy (replicated values only)."""
  return jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x)), tree)
