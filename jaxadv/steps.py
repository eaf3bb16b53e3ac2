"""The synchronous data-parallel runner (config.runner='sync', see
jaxadv.runners): jit(shard_map(scan(train_step))) over a 1-D mesh, fed from
the host (in-memory or streamed) or from a device-resident train split.
"""

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from jaxadv import data
from jaxadv import methods as methods_lib
from jaxadv import parallel

# steps_per_call=0 (auto): XLA:CPU runs weight-gradient convolutions inside
# loops ~40x slower than outside (bench/RESULTS.md), so one step per call there.
AUTO_STEPS_PER_CALL = {'cpu': 1}
AUTO_STEPS_PER_CALL_ACCELERATOR = 10
# Folded into a step's key to derive the key shared by all devices (the
# per-device keys fold in the device index, which is < this).
SHARED_KEY_DATA = 0x7FFFFFFF


def steps_per_call(config, backend=None):
  """config.steps_per_call, with 0 resolved for the backend."""
  if config.steps_per_call > 0:
    return config.steps_per_call
  backend = jax.default_backend() if backend is None else backend
  return AUTO_STEPS_PER_CALL.get(backend, AUTO_STEPS_PER_CALL_ACCELERATOR)


def step_rngs(state):
  """(augmentation key, StepRngs) of the step `state.step`: the state's key
  folded with the step number, then with the device index (per device) or
  SHARED_KEY_DATA (identical on every device)."""
  rng = jax.random.fold_in(state.rng, state.step)
  shared = jax.random.fold_in(rng, SHARED_KEY_DATA)
  rng = jax.random.fold_in(rng, jax.lax.axis_index(parallel.AXIS))
  aug_rng, step_rng = jax.random.split(rng)
  return aug_rng, methods_lib.StepRngs(device=step_rng, shared=shared)


def make_train_fn(built, mesh, augment_kind, on_device=False, image_keys=None):
  """jit(shard_map(scan)) running a chunk of steps of built.method.

  Host feed (on_device=False): (state, chunk) -> (state, metrics summed over
  the chunk), with chunk a dict of every train feature, (S, B, ...) ('image'
  uint8, 'label', and whatever the dataset adds).
  Device feed (on_device=True): (state, resident, index (S, B) int32) ->
  same; `resident` is the whole train split ({feature: (N, ...)}) replicated
  on every device, and each step's batch is gathered there, so a call moves
  only S * B indices from the host.
  Augmentation runs on the device, the same crop/flip on every feature named
  in `image_keys` (default: the dataset's image-shaped features).
  """
  train_step = built.method.make_train_step(built.ctx)
  if image_keys is None:
    image_keys = data.image_keys(built.ctx.dataset.features)

  def step(state, batch):
    aug_rng, rngs = step_rngs(state)
    batch = data.augment_batch(aug_rng, batch, augment_kind, image_keys)
    state, metrics = train_step(state, batch, rngs)
    return state, jax.lax.psum(metrics, parallel.AXIS)

  batch = P(None, parallel.AXIS)
  if on_device:

    def chunk(state, resident, index):
      # The gather runs inside the scan body: one batch of images is live.
      return _scan_or_once(
          lambda st, idx: step(
              st,
              jax.tree_util.tree_map(
                  lambda a: jnp.take(a, idx, axis=0), resident
              ),
          ),
          state,
          index,
      )

    in_specs = (built.specs, P(), batch)
  else:

    def chunk(state, batches):
      return _scan_or_once(step, state, batches)

    in_specs = (built.specs, batch)
  # check_vma=False: gradients w.r.t. the replicated parameters are local
  # gradients that the method averages explicitly (common.apply_update);
  # with varying-axis typing JAX would instead psum them implicitly.
  fn = jax.shard_map(
      chunk,
      mesh=mesh,
      in_specs=in_specs,
      out_specs=(built.specs, P()),
      check_vma=False,
  )
  return jax.jit(fn, donate_argnums=0)


def _scan_or_once(body, state, xs):
  """lax.scan of body over the leading axis of xs, metrics summed."""
  if jax.tree_util.tree_leaves(xs)[0].shape[0] == 1:
    # No loop for a single step: XLA:CPU runs weight-gradient convolutions
    # inside while loops some 40x slower than outside (bench/RESULTS.md).
    return body(state, jax.tree_util.tree_map(lambda a: a[0], xs))
  state, metrics = jax.lax.scan(body, state, xs)
  return state, jax.tree_util.tree_map(lambda m: m.sum(0), metrics)


def make_source(config, built, ds, mesh):
  """The 'sync' runner's source (see jaxadv.runners)."""
  return DataParallelSource(config, built, ds, mesh)


class DataParallelSource:
  """loop.py's step source for synchronous data parallelism: each chunk is
  one call of make_train_fn's function on steps_per_call batches."""

  def __init__(self, config, built, ds, mesh):
    self.config, self.ds, self.mesh = config, ds, mesh
    kind = ds.augment if config.data.augment == 'auto' else config.data.augment
    self.on_device = data.feed_on_device(config.data.get('feed', 'auto'), ds)
    self.steps_per_call = steps_per_call(config)
    self.train_fn = make_train_fn(built, mesh, kind, on_device=self.on_device)
    self.resident = None
    if self.on_device:  # the whole train split, on every device, once
      arrays = ds.train.arrays
      self.resident = parallel.put_global(
          arrays, mesh, jax.tree_util.tree_map(lambda _: P(), arrays)
      )

  @property
  def data_feed(self):
    if self.on_device:
      return 'device'
    return 'host' if self.ds.in_memory else 'stream'

  def close(self):
    """Drops the device-resident train split (and any stream workers)."""
    self.resident = None
    close = getattr(self.ds.train, 'close', None)
    if close:
      close()

  def chunks(self, state, epoch, offset, epoch_stop):
    """Yields (state, metrics, n) for batches offset.. of `epoch`."""
    c = self.config
    for chunk in data.train_chunks(
        self.ds,
        c.batch_size,
        c.seed,
        epoch,
        self.steps_per_call,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        start_step=offset,
        gather=not self.on_device,
    ):
      spec = P(None, parallel.AXIS)
      n = min(len(next(iter(chunk.values()))), epoch_stop - offset)
      chunk = {k: v[:n] for k, v in chunk.items()}
      if self.on_device:
        idx = parallel.put_local_batch(chunk['index'], self.mesh, spec)
        state, metrics = self.train_fn(state, self.resident, idx)
      else:
        g = parallel.put_local_batch(chunk, self.mesh, spec)
        state, metrics = self.train_fn(state, g)
      offset += n
      yield state, metrics, n
      if offset >= epoch_stop:
        return
