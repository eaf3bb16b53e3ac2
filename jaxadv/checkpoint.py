"""orbax checkpoints of the TrainState: periodic saves, keep N, resume.

What is saved is `train_state.saved_tree(state)`: every pytree field of the
state (step, rng, every trained network's parameters, statistics and
optimizer state, method state) except the frozen networks, plus a small JSON
record. Restoring takes the shardings of a template state, so a checkpoint
written on one device count restores onto another.
"""

import logging
import os
import re
import shutil
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxadv import train_state as ts


def _abstract(x):
  if isinstance(x, jax.Array):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  return jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype)


class Checkpointer:
  """CheckpointManager in `directory`, keeping the newest `keep` steps."""

  def __init__(self, directory, keep=3):
    self.directory = os.path.abspath(directory)
    _quiet_background_noise()
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    self._mgr = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self):
    return self._mgr.latest_step()

  def all_steps(self):
    return list(self._mgr.all_steps())

  def save(self, step, state, meta=None, force=True):
    """Saves `state` under `step` (asynchronously; see wait())."""
    self._mgr.save(
        int(step),
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(ts.saved_tree(state)),
            meta=ocp.args.JsonSave(meta or {}),
        ),
        force=force,
    )

  def delete(self, step):
    """Removes the checkpoint of `step`."""
    self._mgr.wait_until_finished()
    self._mgr.delete(int(step))

  def restore(self, template, step=None):
    """Returns (state, meta) restored onto the shardings of `template`."""
    step = self.latest_step() if step is None else step
    abstract = jax.tree_util.tree_map(_abstract, ts.saved_tree(template))
    out = self._mgr.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract),
            meta=ocp.args.JsonRestore(),
        ),
    )
    return (ts.with_saved_tree(template, out['state']), dict(out['meta'] or {}))

  def read_meta(self, step=None):
    """The JSON record saved with `step` (default: the latest)."""
    step = self.latest_step() if step is None else step
    if step is None:
      return {}
    out = self._mgr.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
    )
    return dict(out['meta'] or {})

  def wait(self):
    self._mgr.wait_until_finished()

  def reload(self):
    """Re-reads the steps on disk (after a checkpoint was moved away)."""
    self._mgr.reload()

  def close(self):
    self._mgr.wait_until_finished()
    self._mgr.close()


# An absl status as tensorstore words it: 'OUT_OF_RANGE: Error reading ...:
# <innermost reason> [source locations=...] [tensorstore_spec=...]'.
_STATUS = re.compile(r'([A-Z][A-Z_]{3,}): (.*)', re.S)
_STATUS_TAIL = re.compile(r' \[(?:source locations|tensorstore_spec)')


def short_reason(exc):
  """One short line for why a checkpoint failed: the absl status code and
  innermost reason of the first tensorstore error in `exc`'s chain (orbax
  wraps it in messages that run to pages), else the first line of `exc`."""
  seen, e = [], exc
  while e is not None and e not in seen and len(seen) < 20:
    seen.append(e)
    m = _STATUS.match(str(e).strip())
    if m:
      code, text = m.group(1), _STATUS_TAIL.split(m.group(2))[0]
      return f'{code}: {text.split(": ")[-1].strip()[:200]}'
    e = e.__cause__ or e.__context__
  text = str(exc).strip().splitlines()
  text = text[0] if text else type(exc).__name__
  return f'{type(exc).__name__}: {text[:200]}'


def _quiet_background_noise():
  """Silences two kinds of duplicate noise, once per process.

  orbax logs every failure of its background save threads at ERROR, with a
  traceback, before the same error is raised in the main thread by save()
  or wait() (where the run layer reports it in one line, e.g. ENOSPC); and
  tensorstore reads still in flight when a restore fails call back into
  orbax's asyncio loop after it closed, each printing 'RuntimeError: Event
  loop is closed' through sys.unraisablehook. Both are dropped; nothing
  else is.
  """
  if getattr(sys.unraisablehook, 'jaxadv_quiet', False):
    return
  previous = sys.unraisablehook

  def unraisable(info):
    if not (
        isinstance(info.exc_value, RuntimeError)
        and str(info.exc_value) == 'Event loop is closed'
    ):
      previous(info)

  unraisable.jaxadv_quiet = True
  sys.unraisablehook = unraisable
  logging.getLogger('absl').addFilter(_drop_orbax_errors)


def _drop_orbax_errors(record):
  return not (
      record.levelno >= logging.ERROR
      and f'{os.sep}orbax{os.sep}' in (record.pathname or '')
  )


def set_aside(ckpt, step, dest):
  """Moves checkpoint `step` of `ckpt` (a damaged one) into folder `dest`;
  returns its new path. The manager forgets the step."""
  os.makedirs(dest, exist_ok=True)
  src = os.path.join(ckpt.directory, str(step))
  target = os.path.join(dest, str(step))
  n = 1
  while os.path.exists(target):
    target = os.path.join(dest, f'{step}.{n}')
    n += 1
  os.replace(src, target)
  ckpt.reload()
  return target


def remove_partial_saves(directory):
  """Deletes orbax's temporary folders of saves that never finished (e.g.
  on a full disk), so the last complete checkpoint stays the latest."""
  if not os.path.isdir(directory):
    return
  for name in os.listdir(directory):
    if 'orbax-checkpoint-tmp' in name:
      shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
