"""Where the suite's time goes: per test, wall seconds, CPU seconds (this
process and the subprocesses it waited for) and seconds spent compiling
(JAX's trace, lowering and XLA compile events, this process only).

Off unless JAXADV_TEST_TIMING names a folder; then every pytest process
(each xdist worker) writes <folder>/timing-<worker>.json, and
`python bench/test_timing.py <folder>` turns them into the per-file table of
bench/RESULTS.md. Loaded by tests/conftest.py; measures, asserts nothing.
"""

import json
import os
import resource
import time

import pytest

COMPILE_EVENTS = (
    '/jax/core/compile/jaxpr_trace_duration',
    '/jax/core/compile/jaxpr_to_mlir_module_duration',
    '/jax/core/compile/backend_compile_duration',
)


def _cpu():
  own = resource.getrusage(resource.RUSAGE_SELF)
  kids = resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


class Timing:
  """Accumulates one record per test id over its setup, call and
  teardown phases."""

  def __init__(self, folder):
    self.folder = folder
    self.records = {}
    self.compile_s = 0.0
    import jax.monitoring  # pylint: disable=g-import-not-at-top

    jax.monitoring.register_event_duration_secs_listener(self._on_event)

  def _on_event(self, name, seconds, **_):
    if name in COMPILE_EVENTS:
      self.compile_s += seconds

  @pytest.hookimpl(hookwrapper=True)
  def pytest_runtest_protocol(self, item, nextitem):
    del nextitem
    t0, (own0, kids0), c0 = time.perf_counter(), _cpu(), self.compile_s
    yield
    own1, kids1 = _cpu()
    self.records[item.nodeid] = {
        'wall_s': time.perf_counter() - t0,
        'cpu_s': own1 - own0,
        'child_cpu_s': kids1 - kids0,
        'compile_s': self.compile_s - c0,
    }

  def pytest_sessionfinish(self, session):
    del session
    os.makedirs(self.folder, exist_ok=True)
    worker = os.environ.get('PYTEST_XDIST_WORKER', 'main')
    with open(os.path.join(self.folder, f'timing-{worker}.json'), 'w') as f:
      json.dump(self.records, f, indent=1)


def register(config):
  folder = os.environ.get('JAXADV_TEST_TIMING')
  if folder:
    config.pluginmanager.register(Timing(folder), 'jaxadv_timing')
