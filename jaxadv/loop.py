"""The training loop that runners share: chunks of steps from a step source,
metric logging, checkpoint cadence, the NaN guard, signals and agreement
across hosts.

A step source is any object with

  chunks(state, epoch, offset, epoch_stop) -> iterator of (state, metrics, n)

that advances `state` by n batches at a time from batch `offset` of `epoch`
(never past `epoch_stop`), with `metrics` a {name: (sum, count)} tree still
on the device. steps.DataParallelSource is the synchronous one; an
asynchronous runner (examples crafted by worker processes) is another source
on the same loop. The loop owns everything else, so runners differ only in
where their updates come from.
"""

import contextlib
import dataclasses
import math
import signal
import time
from typing import Any, Callable, Optional

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from jaxadv import parallel
from jaxadv import train_state as ts
from jaxadv.errors import NonFiniteError


@dataclasses.dataclass
class Plan:
  """Step counts and cadences of a run (batches = calls of the method's
  train_step; each makes updates_per_batch optimizer updates)."""

  steps_per_epoch: int
  updates_per_batch: int
  total_batches: int
  log_every: int
  eval_every: int
  checkpoint_every: int
  halt_on_nonfinite: bool = True

  @classmethod
  def from_config(cls, config, built):
    return cls(
        built.steps_per_epoch,
        built.updates_per_batch,
        built.total_batches,
        config.log_every,
        config.eval_every,
        config.checkpoint_every,
        config.halt_on_nonfinite,
    )


@dataclasses.dataclass
class Outcome:
  """What the loop did: the final state and how it got there."""

  state: Any
  batches_done: int
  start_batches: int
  status: str = 'completed'
  history: list = dataclasses.field(default_factory=list)
  early_stopped: bool = False
  stopped_by: Optional[str] = None  # the signal, if interrupted
  t_steady: Optional[float] = None  # after the first (compiling) call
  steady_from: Optional[int] = None


def all_finite(state):
  """Every float array of the checkpointed state (every network's
  parameters, statistics and optimizer state, method state) is finite."""
  leaves = [
      x
      for x in jax.tree_util.tree_leaves(ts.saved_tree(state))
      if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)
  ]
  return bool(jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])))


def nonfinite_message(state, ckpt):
  latest = ckpt.latest_step()
  kept = (
      f'The last good checkpoint (step {latest}) is kept in '
      f'{ckpt.directory}.'
      if latest is not None
      else f'No checkpoint had been saved yet in {ckpt.directory}.'
  )
  return (
      f'parameters or statistics became NaN/Inf by step '
      f'{int(state.step)}; not saved. {kept} Lower config.optim.lr or '
      'check the data.'
  )


def agree(flag):
  """True on every process if `flag` is True on any (multi-host runs must
  leave the loop together: a process leaving alone would wait in the
  checkpoint save while the others wait in the next step's collectives)."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  return bool(np.any(multihost_utils.process_allgather(np.asarray(bool(flag)))))


@contextlib.contextmanager
def stop_on_signals():
  """Turns SIGINT/SIGTERM into a flag the loop checks between chunks."""
  flag = {'signal': None}

  def handler(signum, frame):
    del frame
    if flag['signal'] is not None:  # a second Ctrl-C: leave now
      raise KeyboardInterrupt
    flag['signal'] = signal.Signals(signum).name

  try:
    old = {
        s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)
    }
  except ValueError:  # not the main thread: no handlers
    yield flag
    return
  try:
    yield flag
  finally:
    for s, h in old.items():
      signal.signal(s, h)


class Logger:
  """Sums device metrics between fetches; every fetch (the only host sync)
  checks them and writes a metrics.jsonl record and the progress line."""

  def __init__(self, plan, jsonl, bar, schedule, finalizers=None):
    self.plan, self.jsonl, self.bar, self.schedule = plan, jsonl, bar, schedule
    self.finalizers = finalizers or {}
    self.pending, self.last = None, None

  def add(self, metrics):
    self.pending = (
        metrics
        if self.pending is None
        else (jax.tree_util.tree_map(jnp.add, self.pending, metrics))
    )

  def flush(self, state, batches_done):
    if self.pending is None:
      return
    fetched = parallel.fetch(self.pending)
    metrics = {
        k: float(s) / max(float(c), 1.0) for k, (s, c) in fetched.items()
    }
    metrics = {
        k: self.finalizers[k](v) if k in self.finalizers else v
        for k, v in metrics.items()
    }
    self.pending, self.last = None, batches_done
    if self.plan.halt_on_nonfinite and not all(
        math.isfinite(v) for v in metrics.values()
    ):
      raise NonFiniteError(
          f'non-finite training metrics {metrics} by step '
          f'{int(state.step)}; stopped without saving: the last good '
          'checkpoint is kept. Lower config.optim.lr or check the data.'
      )
    step = int(state.step)
    metrics['lr'] = float(self.schedule(max(step - 1, 0)))
    self.jsonl.write(
        {
            'step': step,
            'epoch': batches_done / self.plan.steps_per_epoch,
            **metrics,
        }
    )
    self.bar.update(batches_done, metrics)


def save(ckpt, state, plan, **meta):
  """Checkpoints `state` unless it holds NaN/Inf (NonFiniteError)."""
  if not all_finite(state):
    raise NonFiniteError(nonfinite_message(state, ckpt))
  step = int(state.step)
  ckpt.save(
      step,
      state,
      {
          'batches_done': step // plan.updates_per_batch,
          'epoch': step // plan.updates_per_batch / plan.steps_per_epoch,
          **meta,
      },
  )


def _run_epoch(out, source, logger, plan, stop):
  """Runs the rest of the current epoch (or until a stop is agreed).
  Returns True if the epoch finished."""
  epoch, offset = divmod(out.batches_done, plan.steps_per_epoch)
  epoch_stop = min(
      plan.steps_per_epoch, plan.total_batches - epoch * plan.steps_per_epoch
  )
  for state, metrics, n in source.chunks(out.state, epoch, offset, epoch_stop):
    out.state = state
    logger.add(metrics)
    out.batches_done += n
    offset += n
    if out.t_steady is None:  # the first call compiles: time from its end
      jax.block_until_ready(state.step)
      out.t_steady, out.steady_from = time.time(), out.batches_done
    if out.batches_done - logger.last >= plan.log_every or offset >= epoch_stop:
      logger.flush(out.state, out.batches_done)
    if agree(stop['signal'] is not None) or offset >= epoch_stop:
      break
  return offset >= epoch_stop


def run(state, source, *, plan, ckpt, logger, end_of_epoch: Callable):
  """Trains from `state` (restored or fresh) to plan.total_batches.

  end_of_epoch(state, epoch) -> (record, stop_status or None, state): the
  caller's evaluation and monitor; a stop_status ends training early (the
  returned state is kept). Checkpoints every plan.checkpoint_every epochs
  and at the end (also when interrupted by SIGINT/SIGTERM). Returns an
  Outcome.
  """
  done = int(state.step) // plan.updates_per_batch
  out = Outcome(state=state, batches_done=done, start_batches=done)
  logger.last = done
  with stop_on_signals() as stop:
    while out.batches_done < plan.total_batches:
      if not _run_epoch(out, source, logger, plan, stop):
        break  # interrupted inside the epoch
      epoch = out.batches_done // plan.steps_per_epoch
      record, stop_status, out.state = end_of_epoch(out.state, epoch)
      out.history.append(record)
      if stop_status is not None:
        out.status, out.early_stopped = stop_status, True
        break
      if (
          out.batches_done < plan.total_batches
          and plan.checkpoint_every
          and epoch % plan.checkpoint_every == 0
      ):
        save(ckpt, out.state, plan)
      if agree(stop['signal'] is not None):  # during the epoch's end
        break
    interrupted = agree(stop['signal'] is not None)
    logger.bar.close()
    logger.flush(out.state, out.batches_done)
    if interrupted:  # an early stop decided before it still holds on resume
      out.stopped_by = stop['signal'] or 'on another process'
      out.status = f'interrupted ({out.stopped_by})'
    if ckpt.latest_step() != int(out.state.step):
      save(ckpt, out.state, plan, early_stopped=out.early_stopped)
    ckpt.wait()
  return out
