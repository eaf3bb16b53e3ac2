"""train_and_evaluate(config, workdir): build, restore, loop, evaluate.

Construction is jaxadv.build, the loop jaxadv.loop, the synchronous step
source jaxadv.steps, the overfitting monitor jaxadv.monitor. Nothing here
depends on the training method: methods plug in through `jaxadv.methods`.
"""
import json
import os
import time

from absl import logging
import jax

from jaxadv import build
from jaxadv import checkpoint as ckpt_lib
from jaxadv import evaluate
from jaxadv import loop
from jaxadv import monitor as monitor_lib
from jaxadv import parallel
from jaxadv import progress as progress_lib
from jaxadv import reports
from jaxadv import sanity
from jaxadv import steps
from jaxadv import validation
from jaxadv.errors import NonFiniteError  # re-exported: train.NonFiniteError
from jaxadv.methods import common


def _write_config(config, workdir):
  """<workdir>/config.json (process 0): lets eval/transfer tools rebuild
  the model from the workdir."""
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))


class Session:
  """The parts of one training run the loop and the final evaluation share."""

  def __init__(self, config, workdir):
    self.config, self.workdir = config, workdir
    self.ds = build.load_data(config)
    self.mesh = parallel.make_mesh()
    self.built = build.setup(config, self.ds, self.mesh)
    self.ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                      config.keep_checkpoints)
    self.plan = loop.Plan.from_config(config, self.built)
    metrics_fn = getattr(self.built.method, 'eval_metrics', None)
    self.metrics_fn = (metrics_fn(self.built.ctx) if metrics_fn
                       else common.accuracy_metrics)
    self.eval_fn = evaluate.make_metrics_fn(self.mesh, self.built.specs,
                                            self.metrics_fn)
    self.monitor = (monitor_lib.OverfitMonitor(
        config, self.ds, self.mesh, self.built.specs, workdir,
        self.built.ctx.settings) if config.monitor.attack else None)
    self.jsonl = progress_lib.JsonlWriter(
        os.path.join(workdir, 'metrics.jsonl'), jax.process_index() == 0)

  def restore(self):
    """The newest checkpoint's state (or the fresh one) and whether an
    earlier run already stopped early (nothing left to train)."""
    state = self.built.state
    if self.ckpt.latest_step() is None:
      return state, False
    state, _ = self.ckpt.restore(state)
    logging.info('resumed from step %d', int(state.step))
    done = self.monitor is not None and bool(
        self.ckpt.read_meta().get('early_stopped'))
    return state, done

  def test_metrics(self, state):
    """{'test_<name>': value} of the method's eval metrics on the test set."""
    values, _ = evaluate.metrics(state, self.ds.test_images,
                                 self.ds.test_labels, mesh=self.mesh,
                                 specs=self.built.specs,
                                 batch_size=self.config.eval_batch_size,
                                 fn=self.eval_fn)
    return {f'test_{k}': v for k, v in values.items()}

  def end_of_epoch(self, state, epoch):
    """loop.run's callback: test metrics every eval_every epochs (and at the
    end), the monitor every epoch; returns (record, stop status, state)."""
    c = self.config
    record = {'epoch': epoch, 'step': int(state.step)}
    batches = int(state.step) // self.plan.updates_per_batch
    record['epoch'] = batches / self.plan.steps_per_epoch
    if batches >= self.plan.total_batches or (c.eval_every and
                                              epoch % c.eval_every == 0):
      record.update(self.test_metrics(state))
      logging.info('epoch %d: %s', epoch, record)
    stop = None
    if self.monitor is not None:
      if not loop.all_finite(state):
        raise NonFiniteError(loop.nonfinite_message(state, self.ckpt))
      record['monitor_accuracy'], overfit = self.monitor.update(state, epoch)
      if overfit:
        stop = (f'early-stopped at epoch {epoch}: monitor accuracy '
                f'{record["monitor_accuracy"]:.4f} fell more than '
                f'{c.monitor.max_drop} below its best '
                f'{self.monitor.best:.4f} (catastrophic overfitting); the '
                'best state is kept')
        logging.warning(stop)
        state = self.monitor.best_state(state).replace(step=state.step)
    if len(record) > 2:
      self.jsonl.write(record)
    return record, stop, state

  def close(self):
    self.ckpt.close()
    if self.monitor is not None:
      self.monitor.close()


def train_and_evaluate(config, workdir):
  """Trains per `config`, checkpointing into `workdir`; resumes if possible.

  Returns the results dict also written to <workdir>/results.json.
  """
  t_start = time.time()
  if config.distributed:
    jax.distributed.initialize()
  validation.validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  _write_config(config, workdir)
  s = Session(config, workdir)
  try:
    state, finished = s.restore()
    source = steps.DataParallelSource(config, s.built, s.ds, s.mesh)
    bar = progress_lib.Progress(
        s.plan.total_batches, int(state.step) // s.plan.updates_per_batch,
        config.progress and jax.process_index() == 0)
    logger = loop.Logger(s.plan, s.jsonl, bar, s.built.schedule)
    if finished:
      out = loop.Outcome(state=state, batches_done=int(state.step) //
                         s.plan.updates_per_batch, start_batches=0,
                         status='early-stopped (in an earlier run; the best '
                         'state was kept)')
      out.start_batches = out.batches_done
    else:
      out = loop.run(state, source, plan=s.plan, ckpt=s.ckpt, logger=logger,
                     end_of_epoch=s.end_of_epoch)
    results = _results(s, out, source, t_start)
    if not out.status.startswith('interrupted'):
      _final_evaluation(s, out, results)
    if jax.process_index() == 0:
      with open(os.path.join(workdir, 'results.json'), 'w') as f:
        json.dump(results, f, indent=2)
  finally:
    s.close()
  return results


def _results(s, out, source, t_start):
  """The results record of a run (before its final evaluation)."""
  config, t_end = s.config, time.time()
  steady_images = (out.batches_done - (out.steady_from or out.batches_done)
                   ) * config.batch_size
  steady_time = (t_end - out.t_steady) if out.t_steady else 0.0
  return {
      'status': out.status,
      'dataset': s.ds.name,
      'model': config.model.name,
      'method': config.method.name,
      'epochs_done': out.batches_done / s.plan.steps_per_epoch,
      'steps': int(out.state.step),
      'device_kind': jax.devices()[0].device_kind,
      'data_feed': source.data_feed,
      'steps_per_call': source.steps_per_call,
      'num_devices': jax.device_count(),
      'wall_time_s': t_end - t_start,
      'train_images': (out.batches_done - out.start_batches) *
                      config.batch_size,
      'images_per_s': (steady_images / steady_time if steady_time > 0
                       else float('nan')),
      'history': out.history,
      'config': json.loads(config.to_json_best_effort()),
  }


def _final_evaluation(s, out, results):
  """Clean test metrics in the eval dtype and, with eval.at_end, the attacks
  of config.eval.attacks (reports written into the workdir)."""
  config = s.config
  last = out.history[-1] if out.history else {}
  eval_state = build.for_eval(config, s.ds, out.state)
  results['eval_dtype'] = build.eval_dtype(config)
  if ('test_accuracy' in last and out.status == 'completed' and
      eval_state is out.state):
    results.update({k: v for k, v in last.items() if k.startswith('test_')})
  else:
    results.update(s.test_metrics(eval_state))
  if config.eval.at_end and config.eval.attacks:
    results['robust'] = evaluate.run_attacks(
        eval_state, s.ds.test_images, s.ds.test_labels, config.eval.attacks,
        mesh=s.mesh, specs=s.built.specs, batch_size=config.eval.batch_size,
        num_examples=config.eval.num_examples, seed=config.eval.seed,
        dtype=results['eval_dtype'], method_settings=s.built.ctx.settings)
    reports.write_report(results['robust'], s.workdir)
    results['warnings'] = sanity.sanity_flags(results['robust'])
