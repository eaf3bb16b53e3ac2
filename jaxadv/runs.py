"""Loading a finished run: its config, its state, a logits function and the
dataset, for evaluation, sweeps, transfer matrices and studies.

Imports the construction layer (build) and checkpoints, never the trainer.
"""

import os
import sys
from typing import Any, NamedTuple

from jaxadv import build
from jaxadv import checkpoint as ckpt_lib
from jaxadv import parallel
from jaxadv.errors import ConfigError


class Run(NamedTuple):
  """A trained run, restored: unpacks as (config, state, specs, mesh,
  dataset)."""

  config: Any
  state: Any
  specs: Any
  mesh: Any
  dataset: Any

  def logits_fn(self):
    """The main network's inference-mode `x -> logits` (x in [0, 1])."""
    return self.state.logits_fn()


def restore_latest(workdir, template, keep=3):
  """(state, meta) of the newest checkpoint in <workdir>/checkpoints that
  restores onto `template`; a damaged newer one is named on stderr and
  skipped (left in place). FileNotFoundError if there is none,
  ConfigError if none restores."""
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), keep)
  try:
    steps = sorted(ckpt.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(
          f'no checkpoint in {ckpt.directory}; train first (--mode train) or '
          'point --workdir at a finished run'
      )
    for step in steps:
      try:
        return ckpt.restore(template, step)
      except Exception as e:  # pylint: disable=broad-except
        print(
            f'warning: checkpoint {ckpt.directory}/{step} does not '
            f'restore ({ckpt_lib.short_reason(e)}); trying the previous '
            'one',
            file=sys.stderr,
        )
    raise ConfigError(
        f'no checkpoint in {ckpt.directory} restores; ' 'retrain the run'
    )
  finally:
    ckpt.close()


def load_run(workdir, mesh=None, config=None):
  """Rebuilds a trained run (Run).

  The model, state layout and data come from `config` (default
  <workdir>/config.json); the state is the latest checkpoint in
  <workdir>/checkpoints, placed on `mesh` (default: all devices), its main
  model computing in the config's eval.dtype.
  """
  config = build.load_config(workdir) if config is None else config
  mesh = parallel.make_mesh() if mesh is None else mesh
  ds = build.load_data(config)
  b = build.setup(config, ds, mesh)
  state, _ = restore_latest(workdir, b.state, config.keep_checkpoints)
  return Run(config, build.for_eval(config, ds, state), b.specs, mesh, ds)
