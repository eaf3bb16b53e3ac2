"""Runners: where a run's updates come from, chosen by `config.runner`.

A runner module provides

  make_source(config, built, ds, mesh) -> source
  mesh_devices(config) -> list of devices   (optional; default all: the
                          devices of the training mesh; a runner may keep
                          others for itself, e.g. attack workers)
  validate(config)      (optional; one-line errors.ConfigError)

and a source is an object with

  chunks(state, epoch, offset, epoch_stop) -> iterator of (state, metrics, n)
      advances `state` by n batches at a time from batch `offset` of
      `epoch` (never past `epoch_stop`); `metrics` is a {name: (sum, count)}
      tree still on the device
  close()               releases threads, processes, prefetch buffers; the
                        trainer calls it in a `finally` (error, Ctrl-C,
                        SIGTERM, normal end)
  data_feed: str        'device' | 'host' | 'stream' (results.json)
  steps_per_call: int   batches per jit call (results.json)

jaxadv.loop owns everything else (logging, checkpoints, signals, the NaN
guard), so runners differ only in where their updates come from.
"""

import importlib

from jaxadv.errors import ConfigError

RUNNERS = {
    'sync': 'jaxadv.steps',  # synchronous data parallelism (default)
}


def get_runner(name):
  """The runner module registered under `name`."""
  if name not in RUNNERS:
    raise ConfigError(
        f"config.runner='{name}' is unknown; valid: "
        f"{', '.join(sorted(RUNNERS))}"
    )
  return importlib.import_module(RUNNERS[name])


def runner_name(config):
  return config.get('runner', 'sync') or 'sync'


def validate(config):
  runner = get_runner(runner_name(config))
  fn = getattr(runner, 'validate', None)
  if fn:
    fn(config)


def mesh_devices(config):
  """The devices of the training mesh (None: all of them)."""
  fn = getattr(get_runner(runner_name(config)), 'mesh_devices', None)
  return fn(config) if fn else None


def make_source(config, built, ds, mesh):
  return get_runner(runner_name(config)).make_source(config, built, ds, mesh)
