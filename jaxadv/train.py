"""train_and_evaluate(config, workdir): the one training loop of jaxadv.

Mesh, state, jit(shard_map(scan(train_step))), data feeding, evaluation,
checkpoints, NaN guard and interruption handling. Nothing here depends on the
training method: methods plug in through `jaxadv.methods`.
"""
import contextlib
import json
import math
import os
import signal
import time

from absl import logging
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np

from jaxadv import attacks
from jaxadv import checkpoint as ckpt_lib
from jaxadv import data
from jaxadv.errors import NonFiniteError  # re-exported: train.NonFiniteError
from jaxadv import evaluate
from jaxadv import methods as methods_lib
from jaxadv import models
from jaxadv import optim
from jaxadv import parallel
from jaxadv import progress as progress_lib
from jaxadv import reports
from jaxadv import sanity
from jaxadv.train_state import create_train_state
from jaxadv import validation

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}




def load_data(config):
  """The config's dataset; bad data keys become one-line ConfigErrors."""
  try:
    return data.load_dataset(config.data, seed=config.seed)
  except (ValueError, ImportError) as e:  # ImportError: TFDS needed, absent
    raise validation.ConfigError(str(e)) from None


def build_model(config, ds, axis_name=None, dtype=None):
  """The config's model for dataset `ds` (normalization inside the model,
  with the dataset's mean and std unless config.model.normalize is False),
  computing in `dtype` (default config.dtype)."""
  normalize = config.model.get('normalize', True)
  return models.get_model(
      config.model.name, num_classes=ds.num_classes,
      mean=ds.mean if normalize else None, std=ds.std if normalize else None,
      dtype=DTYPES[dtype or config.dtype], activation=config.model.activation,
      bn_axis_name=axis_name if config.sync_bn else None,
      dual_bn=config.model.dual_bn, **dict(config.model.kwargs))


def eval_dtype(config):
  """The compute dtype of evaluation: config.eval.dtype, '' = config.dtype."""
  return config.eval.get('dtype', '') or config.dtype


def for_eval(config, ds, state):
  """`state` with a model computing in eval_dtype(config); same weights
  (float32 master parameters and statistics), so a bf16-trained model is
  evaluated in float32 by default."""
  dtype = eval_dtype(config)
  if dtype == config.dtype:
    return state
  return state.replace(
      apply_fn=build_model(config, ds, parallel.AXIS, dtype=dtype).apply)


def setup(config, ds, mesh):
  """Model, method, optimizer and an initialized state placed on `mesh`.

  Returns a dict with model, method, state, specs, steps_per_epoch,
  updates_per_batch, total_batches, schedule.
  """
  method = methods_lib.get_method(config.method.name)
  model = build_model(config, ds, axis_name=parallel.AXIS)
  try:
    steps_per_epoch = data.steps_per_epoch(len(ds.train_labels),
                                           config.batch_size)
  except ValueError as e:
    raise validation.ConfigError(str(e)) from None
  upb = methods_lib.updates_per_batch(method, config)
  total_batches = max(int(round(config.num_epochs * steps_per_epoch)), 1)
  tx, schedule = optim.make_optimizer(config.optim, total_batches * upb,
                                      steps_per_epoch * upb)
  image_shape = ds.train_images.shape[1:]
  method_state = methods_lib.init_method_state(
      method, config, (config.batch_size,) + image_shape)
  # Init outside the mesh: BatchNorm must not look for the 'data' axis.
  init_model = build_model(config, ds, axis_name=None)
  state = create_train_state(jax.random.PRNGKey(config.seed), init_model, tx,
                             (1,) + image_shape, method_state)
  state = state.replace(apply_fn=model.apply)
  specs = parallel.state_specs(state)
  state = parallel.put_global(state, mesh, specs)
  return dict(model=model, method=method, state=state, specs=specs,
              steps_per_epoch=steps_per_epoch, updates_per_batch=upb,
              total_batches=total_batches, schedule=schedule)


# steps_per_call=0 (auto): XLA:CPU runs weight-gradient convolutions inside
# loops ~40x slower than outside (bench/RESULTS.md), so one step per call there.
AUTO_STEPS_PER_CALL = {'cpu': 1}
AUTO_STEPS_PER_CALL_ACCELERATOR = 10


def steps_per_call(config, backend=None):
  """config.steps_per_call, with 0 resolved for the backend."""
  if config.steps_per_call > 0:
    return config.steps_per_call
  backend = jax.default_backend() if backend is None else backend
  return AUTO_STEPS_PER_CALL.get(backend, AUTO_STEPS_PER_CALL_ACCELERATOR)


def make_train_fn(config, model, method, mesh, specs, augment_kind,
                  on_device=False):
  """jit(shard_map(scan)) running a chunk of steps.

  Host feed (on_device=False): (state, images (S, B, ...) uint8, labels
  (S, B)) -> (state, metrics summed over the chunk).
  Device feed (on_device=True): (state, train_images (N, ...) uint8,
  train_labels (N,), index (S, B) int32) -> same; the whole train split is
  replicated on every device and each step's batch is gathered there, so a
  call moves only S * B indices from the host.

  Each step's rng is the state's key folded with the step number and the
  device index; augmentation runs on the device.
  """
  train_step = method.make_train_step(config, model, axis_name=parallel.AXIS)

  def step(state, img, lbl):
    rng = jax.random.fold_in(state.rng, state.step)
    rng = jax.random.fold_in(rng, jax.lax.axis_index(parallel.AXIS))
    aug_rng, step_rng = jax.random.split(rng)
    x = data.augment(aug_rng, img, augment_kind)
    state, metrics = train_step(state, {'image': x, 'label': lbl}, step_rng)
    return state, jax.lax.psum(metrics, parallel.AXIS)

  batch = P(None, parallel.AXIS)
  if on_device:
    def chunk(state, train_images, train_labels, index):
      # The gather runs inside the scan body: one batch of images is live.
      return _scan_or_once(
          lambda st, idx: step(st, jnp.take(train_images, idx, axis=0),
                               jnp.take(train_labels, idx, axis=0)),
          state, index)
    in_specs = (specs, P(), P(), batch)
  else:
    def chunk(state, images, labels):
      return _scan_or_once(lambda st, xs: step(st, *xs), state,
                           (images, labels))
    in_specs = (specs, batch, batch)
  # check_vma=False: gradients w.r.t. the replicated parameters are local
  # gradients that the method averages explicitly (common.apply_update);
  # with varying-axis typing JAX would instead psum them implicitly.
  fn = jax.shard_map(chunk, mesh=mesh, in_specs=in_specs,
                     out_specs=(specs, P()), check_vma=False)
  return jax.jit(fn, donate_argnums=0)


def _scan_or_once(body, state, xs):
  """lax.scan of body over the leading axis of xs, metrics summed."""
  if jax.tree_util.tree_leaves(xs)[0].shape[0] == 1:
    # No loop for a single step: XLA:CPU runs weight-gradient convolutions
    # inside while loops some 40x slower than outside (bench/RESULTS.md).
    return body(state, jax.tree_util.tree_map(lambda a: a[0], xs))
  state, metrics = jax.lax.scan(body, state, xs)
  return state, jax.tree_util.tree_map(lambda m: m.sum(0), metrics)


class OverfitMonitor:
  """Wong et al.'s catastrophic-overfitting check, for any method.

  Every epoch: accuracy under `config.monitor.attack` on a fixed training
  minibatch. The best state is kept in <workdir>/best; a fall of more than
  `max_drop` below the best asks the trainer to stop.
  """

  def __init__(self, config, ds, mesh, specs, workdir):
    m = config.monitor
    n = min(m.num_examples, len(ds.train_labels))
    idx = np.sort(np.random.default_rng([config.seed, 7]).permutation(
        len(ds.train_labels))[:n])
    self.images, self.labels = ds.train_images[idx], ds.train_labels[idx]
    ndev = mesh.devices.size
    self.batch_size = -(-n // ndev) * ndev
    self.mesh, self.specs, self.max_drop = mesh, specs, m.max_drop
    self.acc_fn = evaluate.make_accuracy_fn(
        mesh, specs, attacks.make_attack(m.attack))
    self.ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, 'best'), 1)
    self.best = -1.0
    if self.ckpt.latest_step() is not None:
      self.best = self.ckpt.read_meta().get('robust_accuracy', -1.0)

  def update(self, state, epoch):
    """Returns (robust accuracy, True if training should stop)."""
    if not _all_finite(state):  # never keep a NaN state as the best one
      raise NonFiniteError(
          f'parameters or statistics became NaN/Inf by step '
          f'{int(state.step)}; the monitor did not keep this state')
    acc = self.robust_accuracy(state)
    if acc > self.best:
      self.best = acc
      step = int(state.step)
      if step in self.ckpt.all_steps():  # a resumed run redoing this epoch
        self.ckpt.delete(step)
      self.ckpt.save(step, state, {'robust_accuracy': acc, 'epoch': epoch})
      self.ckpt.wait()
    return acc, acc < self.best - self.max_drop

  def robust_accuracy(self, state):
    """Accuracy under the monitor's attack on its fixed training batch."""
    return evaluate.accuracy(state, self.images, self.labels, mesh=self.mesh,
                             specs=self.specs, batch_size=self.batch_size,
                             accuracy_fn=self.acc_fn)[0]

  def best_state(self, template):
    return self.ckpt.restore(template)[0]


def _finalize(metrics):
  """{name: (sum, count)} on host -> {name: mean}."""
  return {k: float(s) / max(float(c), 1.0) for k, (s, c) in metrics.items()}


def _all_finite(state):
  """Every float array of the state (params, statistics, optimizer and
  method state) is finite."""
  leaves = [x for x in jax.tree_util.tree_leaves(
      (state.params, state.batch_stats, state.batch_stats_adv,
       state.opt_state, state.method_state))
            if jnp.issubdtype(x.dtype, jnp.floating)]
  return bool(jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])))


def _agree(flag):
  """True on every process if `flag` is True on any (multi-host runs must
  leave the loop together: a process leaving alone would wait in the
  checkpoint save while the others wait in the next step's collectives)."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(np.any(multihost_utils.process_allgather(
      np.asarray(bool(flag)))))


@contextlib.contextmanager
def _stop_on_signals():
  """Turns SIGINT/SIGTERM into a flag the loop checks between chunks."""
  flag = {'signal': None}

  def handler(signum, frame):
    del frame
    if flag['signal'] is not None:  # a second Ctrl-C: leave now
      raise KeyboardInterrupt
    flag['signal'] = signal.Signals(signum).name
  try:
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT,
                                                   signal.SIGTERM)}
  except ValueError:  # not the main thread: no handlers
    yield flag
    return
  try:
    yield flag
  finally:
    for s, h in old.items():
      signal.signal(s, h)


def train_and_evaluate(config, workdir):
  """Trains per `config`, checkpointing into `workdir`; resumes if possible.

  Returns the results dict also written to <workdir>/results.json.
  """
  t_start = time.time()
  if config.distributed:
    jax.distributed.initialize()
  method = validation.validate_config(config)
  del method
  is_main = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  if is_main:  # lets eval/transfer tools rebuild the model from the workdir
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
  ds = load_data(config)
  mesh = parallel.make_mesh()
  s = setup(config, ds, mesh)
  state, specs = s['state'], s['specs']
  spe, upb, total = s['steps_per_epoch'], s['updates_per_batch'], s[
      'total_batches']

  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'),
                               config.keep_checkpoints)
  if ckpt.latest_step() is not None:
    state, _ = ckpt.restore(state)
    logging.info('resumed from step %d', int(state.step))
  batches_done = int(state.step) // upb
  start_batches = batches_done

  kind = ds.augment if config.data.augment == 'auto' else config.data.augment
  on_device = data.feed_on_device(config.data.get('feed', 'auto'), ds)
  train_fn = make_train_fn(config, s['model'], s['method'], mesh, specs, kind,
                           on_device=on_device)
  if on_device:  # the whole train split, replicated on every device, once
    resident = parallel.put_global((ds.train_images, ds.train_labels), mesh,
                                   (P(), P()))
  acc_fn = evaluate.make_accuracy_fn(mesh, specs)
  jsonl = progress_lib.JsonlWriter(os.path.join(workdir, 'metrics.jsonl'),
                                   is_main)
  bar = progress_lib.Progress(total, batches_done, config.progress and is_main)
  status = 'completed'
  monitor = (OverfitMonitor(config, ds, mesh, specs, workdir)
             if config.monitor.attack else None)
  finished = False  # by early stopping in an earlier run: nothing to resume
  if monitor is not None and ckpt.latest_step() is not None and (
      ckpt.read_meta().get('early_stopped')):
    finished = True
    status = 'early-stopped (in an earlier run; the best state was kept)'
  pidx, pcount = jax.process_index(), jax.process_count()
  spc = steps_per_call(config)

  def test_accuracy(st):
    return evaluate.accuracy(st, ds.test_images, ds.test_labels, mesh=mesh,
                             specs=specs, batch_size=config.eval_batch_size,
                             accuracy_fn=acc_fn)[0]

  def save(st, **meta):
    if not _all_finite(st):
      raise NonFiniteError(_nonfinite_msg(st, ckpt))
    ckpt.save(int(st.step), st, {'batches_done': int(st.step) // upb,
                                 'epoch': int(st.step) // upb / spe, **meta})

  pending, last_log = None, batches_done
  t_steady, steady_from = None, None
  history = []
  early_stopped, stopping = False, False
  with _stop_on_signals() as stop:
    while not finished and batches_done < total and not stopping:
      epoch, offset = divmod(batches_done, spe)
      epoch_stop = min(spe, total - epoch * spe)
      for chunk in data.train_chunks(
          ds, config.batch_size, config.seed, epoch, spc,
          process_index=pidx, process_count=pcount, start_step=offset,
          gather=not on_device):
        if on_device:
          n = min(chunk['index'].shape[0], epoch_stop - offset)
          idx = parallel.put_local_batch(chunk['index'][:n], mesh,
                                         P(None, parallel.AXIS))
          state, m = train_fn(state, *resident, idx)
        else:
          n = min(chunk['label'].shape[0], epoch_stop - offset)
          g = parallel.put_local_batch(
              (chunk['image'][:n], chunk['label'][:n]), mesh,
              P(None, parallel.AXIS))
          state, m = train_fn(state, *g)
        pending = m if pending is None else jax.tree_util.tree_map(
            jnp.add, pending, m)
        batches_done += n
        offset += n
        if t_steady is None:  # the first call compiles: time from its end
          jax.block_until_ready(state.step)
          t_steady, steady_from = time.time(), batches_done
        if batches_done - last_log >= config.log_every or offset >= epoch_stop:
          _log(pending, state, s['schedule'], jsonl, bar, batches_done, spe,
               config)
          pending, last_log = None, batches_done
        stopping = _agree(stop['signal'] is not None)
        if offset >= epoch_stop or stopping:
          break
      if offset < epoch_stop:  # interrupted inside the epoch
        break
      finished_epoch = batches_done // spe
      record = {'epoch': batches_done / spe, 'step': int(state.step)}
      if batches_done >= total or (config.eval_every and
                                   finished_epoch % config.eval_every == 0):
        record['test_accuracy'] = test_accuracy(state)
        logging.info('epoch %d: test accuracy %.4f', finished_epoch,
                     record['test_accuracy'])
      overfit = False
      if monitor is not None:
        if not _all_finite(state):
          raise NonFiniteError(_nonfinite_msg(state, ckpt))
        record['monitor_accuracy'], overfit = monitor.update(
            state, finished_epoch)
      if len(record) > 2:
        jsonl.write(record)
      if overfit:
        early_stopped = True
        status = (f'early-stopped at epoch {finished_epoch}: monitor '
                  f'accuracy {record["monitor_accuracy"]:.4f} fell more '
                  f'than {config.monitor.max_drop} below its best '
                  f'{monitor.best:.4f} (catastrophic overfitting); the best '
                  'state is kept')
        logging.warning(status)
        state = monitor.best_state(state).replace(step=state.step)
        history.append(record)
        break
      history.append(record)
      if batches_done < total and config.checkpoint_every and (
          finished_epoch % config.checkpoint_every == 0):
        save(state)
      stopping = _agree(stop['signal'] is not None)  # during the epoch's end
    stopping = stopping or _agree(stop['signal'] is not None)
    bar.close()
    if pending is not None:
      _log(pending, state, s['schedule'], jsonl, bar, batches_done, spe,
           config)
    if stopping:  # an early stop decided before it still holds on resume
      status = f'interrupted ({stop["signal"] or "on another process"})'
    if ckpt.latest_step() != int(state.step):
      save(state, early_stopped=early_stopped)
    ckpt.wait()

  t_end = time.time()
  steady_images = (batches_done - (steady_from or batches_done)) * (
      config.batch_size)
  steady_time = (t_end - t_steady) if t_steady else 0.0
  results = {
      'status': status,
      'dataset': ds.name,
      'model': config.model.name,
      'method': config.method.name,
      'epochs_done': batches_done / spe,
      'steps': int(state.step),
      'device_kind': jax.devices()[0].device_kind,
      'data_feed': 'device' if on_device else 'host',
      'steps_per_call': spc,
      'num_devices': jax.device_count(),
      'wall_time_s': t_end - t_start,
      'train_images': (batches_done - start_batches) * config.batch_size,
      'images_per_s': (steady_images / steady_time if steady_time > 0
                       else float('nan')),
      'history': history,
      'config': json.loads(config.to_json_best_effort()),
  }
  if not status.startswith('interrupted'):
    last = history[-1] if history else {}
    eval_state = for_eval(config, ds, state)
    results['eval_dtype'] = eval_dtype(config)
    results['test_accuracy'] = (
        last['test_accuracy'] if 'test_accuracy' in last and
        status == 'completed' and eval_state is state else
        test_accuracy(eval_state))
    if config.eval.at_end and config.eval.attacks:
      results['robust'] = evaluate.run_attacks(
          eval_state, ds.test_images, ds.test_labels, config.eval.attacks,
          mesh=mesh, specs=specs, batch_size=config.eval.batch_size,
          num_examples=config.eval.num_examples, seed=config.eval.seed,
          dtype=results['eval_dtype'])
      reports.write_report(results['robust'], workdir)
      results['warnings'] = sanity.sanity_flags(results['robust'])
  if is_main:
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
      json.dump(results, f, indent=2)
  ckpt.close()
  return results


def _log(pending, state, schedule, jsonl, bar, batches_done, spe, config):
  """Fetches summed metrics (the only host sync), checks them, logs them."""
  metrics = _finalize(parallel.fetch(pending))
  if config.halt_on_nonfinite and not all(
      math.isfinite(v) for v in metrics.values()):
    raise NonFiniteError(
        f'non-finite training metrics {metrics} by step {int(state.step)}; '
        'stopped without saving: the last good checkpoint is kept. Lower '
        'config.optim.lr or check the data.')
  step = int(state.step)
  metrics['lr'] = float(schedule(max(step - 1, 0)))
  jsonl.write({'step': step, 'epoch': batches_done / spe, **metrics})
  bar.update(batches_done, metrics)


def _nonfinite_msg(state, ckpt):
  latest = ckpt.latest_step()
  kept = (f'The last good checkpoint (step {latest}) is kept in '
          f'{ckpt.directory}.' if latest is not None else
          f'No checkpoint had been saved yet in {ckpt.directory}.')
  return (f'parameters or statistics became NaN/Inf by step '
          f'{int(state.step)}; not saved. {kept} Lower config.optim.lr or '
          'check the data.')


def evaluate_checkpoint(config, workdir):
  """--mode eval: restores the latest checkpoint and evaluates it.

  The model and data come from the run's own <workdir>/config.json when it
  exists (so any eval config can evaluate any run); `config.eval` and the
  eval batch size come from `config`. Returns a dict with the clean test
  accuracy (and, when config.eval.attacks is set, the robust records).
  """
  if config.distributed:
    jax.distributed.initialize()
  if os.path.isfile(os.path.join(workdir, 'config.json')):
    run_config = evaluate.load_config(workdir)
    run_config.eval = config.eval
    run_config.eval_batch_size = config.eval_batch_size
    run_config.distributed = config.distributed
    config = run_config
  validation.validate_config(config)
  ds = load_data(config)
  mesh = parallel.make_mesh()
  s = setup(config, ds, mesh)
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'),
                               config.keep_checkpoints)
  if ckpt.latest_step() is None:
    raise FileNotFoundError(
        f'no checkpoint in {ckpt.directory}; train first (--mode train) or '
        'point --workdir at a finished run')
  state, _ = ckpt.restore(s['state'])
  ckpt.close()
  state = for_eval(config, ds, state)
  acc, n = evaluate.accuracy(state, ds.test_images, ds.test_labels, mesh=mesh,
                             specs=s['specs'],
                             batch_size=config.eval_batch_size)
  out = {'step': int(state.step), 'test_accuracy': acc, 'num_examples': n,
         'eval_dtype': eval_dtype(config), 'robust': []}
  if config.eval.attacks:
    out['robust'] = evaluate.run_attacks(
        state, ds.test_images, ds.test_labels, config.eval.attacks,
        mesh=mesh, specs=s['specs'], batch_size=config.eval.batch_size,
        num_examples=config.eval.num_examples, seed=config.eval.seed,
        dtype=out['eval_dtype'])
    out['table'] = reports.write_report(out['robust'], workdir)
  return out
