"""train_and_evaluate(config, workdir): build, restore, loop, evaluate.

Construction is jaxadv.build, the loop jaxadv.loop, the synchronous step
source jaxadv.steps, the overfitting monitor jaxadv.monitor. Nothing here
depends on the training method: methods plug in through `jaxadv.methods`.
"""

import json
import os
import sys
import time

from absl import logging
import jax

from jaxadv import build
from jaxadv import checkpoint as ckpt_lib
from jaxadv import eval_run
from jaxadv import evaluation
from jaxadv import loop
from jaxadv import methods as methods_lib
from jaxadv import monitor as monitor_lib
from jaxadv import parallel
from jaxadv import progress as progress_lib
from jaxadv import rundir
from jaxadv import runners
from jaxadv import tb_events
from jaxadv import validation
from jaxadv.errors import ConfigError
from jaxadv.errors import NonFiniteError  # re-exported: train.NonFiniteError
from jaxadv.evaluation import reports


def _config_dict(config):
  return json.loads(config.to_json_best_effort())


def _say(msg):
  """One line on stderr from process 0 (resume notes, warnings)."""
  if jax.process_index() == 0:
    print(msg, file=sys.stderr, flush=True)


class Session:
  """The parts of one training run the loop and the final evaluation share."""

  def __init__(self, config, workdir):
    self.config, self.workdir = config, workdir
    self.ds = build.load_data(config)
    self.mesh = parallel.make_mesh(runners.mesh_devices(config))
    self.built = build.setup(config, self.ds, self.mesh)
    self.ckpt = ckpt_lib.Checkpointer(
        os.path.join(workdir, 'checkpoints'), config.keep_checkpoints
    )
    self.plan = loop.Plan.from_config(config, self.built)
    metrics_fn, self.finalizers = methods_lib.eval_metrics(
        self.built.method, self.built.ctx
    )
    self.eval_fn = evaluation.make_metrics_fn(
        self.mesh, self.built.specs, metrics_fn
    )
    self.monitor = (
        monitor_lib.OverfitMonitor(
            config,
            self.ds,
            self.mesh,
            self.built.specs,
            workdir,
            self.built.ctx.settings,
        )
        if config.monitor.attack
        else None
    )
    self.jsonl = progress_lib.JsonlWriter(
        os.path.join(workdir, 'metrics.jsonl'), jax.process_index() == 0
    )

  def restore(self):
    """The newest checkpoint that restores (or the fresh state) and whether
    an earlier run already stopped early (nothing left to train).

    A checkpoint that fails to restore (truncated or missing files) is
    named in one line, moved to <workdir>/checkpoints_damaged/ and the next
    older one is tried; ConfigError if none restores.
    """
    state = self.built.state
    if jax.process_index() == 0:  # a save cut short by a kill (orbax would
      ckpt_lib.remove_partial_saves(self.ckpt.directory)  # warn, then redo)
    steps = sorted(self.ckpt.all_steps(), reverse=True)
    for step in steps:
      try:
        state, _ = self.ckpt.restore(self.built.state, step)
        break
      except Exception as e:  # pylint: disable=broad-except
        where = os.path.join(self.ckpt.directory, str(step))
        moved = ckpt_lib.set_aside(
            self.ckpt, step, os.path.join(self.workdir, 'checkpoints_damaged')
        )
        _say(
            f'warning: checkpoint {where} does not restore '
            f'({ckpt_lib.short_reason(e)}); moved to {moved}, trying the '
            'previous one'
        )
    else:
      if steps:
        raise ConfigError(
            f'no checkpoint in {self.ckpt.directory} restores (damaged ones '
            f'were moved to {self.workdir}/checkpoints_damaged); start again '
            'with a new --workdir'
        )
      return state, False
    batches = int(state.step) // self.plan.updates_per_batch
    done = self.monitor is not None and bool(
        self.ckpt.read_meta().get('early_stopped')
    )
    if batches >= self.plan.total_batches or done:
      _say(
          f'already complete at step {int(state.step)} in {self.workdir}: '
          'evaluating only'
      )
    else:
      _say(
          f'resumed from step {int(state.step)} (epoch '
          f'{batches / self.plan.steps_per_epoch:g}) in {self.workdir}'
      )
    return state, done

  def test_metrics(self, state):
    """{'test_<name>': value} of the method's eval metrics on the test set
    (the code path of --mode eval: eval_run.clean_metrics)."""
    return eval_run.clean_metrics(
        self.config, self.built, state, self.ds, self.mesh, self.eval_fn
    )

  def end_of_epoch(self, state, epoch):
    """loop.run's callback: test metrics every eval_every epochs (and at the
    end), the monitor every epoch; returns (record, stop status, state)."""
    c = self.config
    record = {'epoch': epoch, 'step': int(state.step)}
    batches = int(state.step) // self.plan.updates_per_batch
    record['epoch'] = batches / self.plan.steps_per_epoch
    if batches >= self.plan.total_batches or (
        c.eval_every and epoch % c.eval_every == 0
    ):
      record.update(self.test_metrics(state))
      logging.info('epoch %d: %s', epoch, record)
    stop = None
    if self.monitor is not None:
      if not loop.all_finite(state):
        raise NonFiniteError(loop.nonfinite_message(state, self.ckpt))
      record['monitor_accuracy'], overfit = self.monitor.update(state, epoch)
      if overfit:
        stop = (
            f'early-stopped at epoch {epoch}: monitor accuracy '
            f'{record["monitor_accuracy"]:.4f} fell more than '
            f'{c.monitor.max_drop} below its best '
            f'{self.monitor.best:.4f} (catastrophic overfitting); the '
            'best state is kept'
        )
        logging.warning(stop)
        state = self.monitor.best_state(state).replace(step=state.step)
    if len(record) > 2:
      self.jsonl.write(record)
    return record, stop, state

  def close(self):
    self.jsonl.close()
    self.ckpt.close()
    if self.monitor is not None:
      self.monitor.close()


def train_and_evaluate(config, workdir):
  """Trains per `config`, checkpointing into `workdir`; resumes if possible.

  Nothing is written before the inputs are known good: the workdir is
  checked, the config validated and compared with the run's own (a change
  that makes the checkpoint unrestorable is refused; a risky one is warned
  about and recorded in config_history.jsonl), the data loaded and the
  state built. Returns the results dict also written to results.json.
  """
  t_start = time.time()
  if config.distributed:
    jax.distributed.initialize()
  workdir = rundir.check_workdir(workdir, 'train')
  validation.validate_config(config)
  is_main = jax.process_index() == 0
  extra_fatal = methods_lib.restore_keys(
      methods_lib.get_method(config.method.name), config
  )
  if rundir.has_run(workdir):  # refuse a fatal change before any work
    rundir.record_config(
        workdir, _config_dict(config), write=False, extra_fatal=extra_fatal
    )
  s = Session(config, workdir)
  try:
    state, finished = s.restore()
    # The step restored, not the newest on disk (a damaged one set aside).
    resumed = None if s.ckpt.latest_step() is None else int(state.step)
    risky = rundir.record_config(
        workdir,
        _config_dict(config),
        resumed_from_step=resumed,
        extra_fatal=extra_fatal,
        write=is_main,
    )
    if risky:
      _say('warning: ' + rundir.risky_warning(workdir, risky))
    results = _train(s, state, finished, t_start)
    if is_main:
      rundir.write_atomic(
          os.path.join(workdir, 'results.json'),
          json.dumps(results, indent=2) + '\n',
      )
  except (OSError, RuntimeError, ValueError) as e:
    msg = rundir.disk_error_message(e, workdir)
    if msg is None:
      raise
    ckpt_lib.remove_partial_saves(s.ckpt.directory)
    raise ConfigError(msg) from None
  finally:
    s.close()
  return results


def _train(s, state, finished, t_start):
  """From the restored `state`: loop (unless `finished` or already
  complete), results, final evaluation. The runner's source is closed
  whatever happens (error, Ctrl-C, SIGTERM)."""
  config, step = s.config, int(state.step)
  is_main = jax.process_index() == 0
  tb_dir = os.path.join(s.workdir, tb_events.TB_DIR)
  if is_main:  # a resumed run logs each step once, in both
    rundir.truncate_metrics(os.path.join(s.workdir, 'metrics.jsonl'), step)
    tb_events.truncate_events(tb_dir, step)
  s.jsonl.events = tb_events.EventWriter(
      tb_dir,
      is_main and config.get('tensorboard', True),
      purge_step=step + 1 if step else None,
  )
  source = runners.make_source(config, s.built, s.ds, s.mesh)
  try:
    out = _loop(s, state, finished, source)
  finally:
    source.close()
  results = _results(s, out, source, t_start)
  if not out.status.startswith('interrupted'):
    _final_evaluation(s, out, results)
  return results


def _loop(s, state, finished, source):
  """loop.run from `state`, or the Outcome of a run already finished."""
  config = s.config
  bar = progress_lib.Progress(
      s.plan.total_batches,
      int(state.step) // s.plan.updates_per_batch,
      config.progress and jax.process_index() == 0,
  )
  logger = loop.Logger(
      s.plan, s.jsonl, bar, s.built.schedule, finalizers=s.finalizers
  )
  if finished:
    done = int(state.step) // s.plan.updates_per_batch
    return loop.Outcome(
        state=state,
        batches_done=done,
        start_batches=done,
        status='early-stopped (in an earlier run; the best ' 'state was kept)',
    )
  return loop.run(
      state,
      source,
      plan=s.plan,
      ckpt=s.ckpt,
      logger=logger,
      end_of_epoch=s.end_of_epoch,
  )


def _results(s, out, source, t_start):
  """The results record of a run (before its final evaluation)."""
  config, t_end = s.config, time.time()
  steady_images = (
      out.batches_done - (out.steady_from or out.batches_done)
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
      'train_images': (
          (out.batches_done - out.start_batches) * config.batch_size
      ),
      'images_per_s': (
          steady_images / steady_time if steady_time > 0 else None
      ),  # None: nothing trained in this run
      'history': out.history,
      # What `key=method` in attack specs resolved to, and the monitor's
      # attack as run (training, monitor and evaluation move together).
      'method_settings': {
          k: v
          for k, v in s.built.ctx.settings.items()
          if isinstance(v, (int, float, str, bool))
      },
      'monitor_attack': str(s.monitor.spec) if s.monitor else None,
      'config': json.loads(config.to_json_best_effort()),
  }


def _final_evaluation(s, out, results):
  """Clean test metrics in the eval dtype and, with eval.at_end, the attacks
  of config.eval.attacks (reports written into the workdir)."""
  config = s.config
  last = out.history[-1] if out.history else {}
  eval_state = build.for_eval(config, s.ds, out.state)
  results['eval_dtype'] = build.eval_dtype(config)
  results['num_test_examples'] = s.ds.num_test
  if (
      'test_accuracy' in last
      and out.status == 'completed'
      and eval_state is out.state
  ):
    results.update({k: v for k, v in last.items() if k.startswith('test_')})
  else:
    results.update(s.test_metrics(eval_state))
  if config.eval.at_end and config.eval.attacks:
    results['robust'], results['warnings'] = eval_run.attack_records(
        config, s.built, eval_state, s.ds, s.mesh
    )
    reports.write_report(results['robust'], s.workdir)
