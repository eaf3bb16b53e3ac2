"""Loading a finished run: its config, its state, a logits function and the
dataset, for evaluation, sweeps, transfer matrices and studies.

Imports the construction layer (build) and checkpoints, never the trainer.
"""

import dataclasses
import os
import sys
from typing import Any

from jaxadv import build
from jaxadv import checkpoint as ckpt_lib
from jaxadv import parallel
from jaxadv.errors import ConfigError


@dataclasses.dataclass
class Run:
  """A trained run, restored: unpacks as (config, state, specs, mesh,
  dataset); `built` (build.Built: method, ctx) serves its method's eval
  metrics."""

  config: Any
  state: Any
  specs: Any
  mesh: Any
  dataset: Any
  built: Any = None

  def __iter__(self):
    return iter((self.config, self.state, self.specs, self.mesh, self.dataset))

  def __getitem__(self, i):
    return tuple(self)[i]

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
  model computing in the config's eval.dtype. Frozen networks (a
  distillation teacher) are not loaded: evaluation does not use them.
  """
  config = build.load_config(workdir) if config is None else config
  mesh = parallel.make_mesh() if mesh is None else mesh
  ds = build.load_data(config)
  b = build.setup(config, ds, mesh, with_frozen=False)
  state, _ = restore_latest(workdir, b.state, config.keep_checkpoints)
  state = build.for_eval(config, ds, state)
  return Run(config, state, b.specs, mesh, ds, b)
