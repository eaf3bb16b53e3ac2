"""Two processes (hosts) on CPU, gloo collectives: per-host data slices, a
stop signal seen by one host only, resume, equality with one host."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _launch(args_per_process, timeout=300):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  procs = [
      subprocess.Popen(
          [sys.executable, os.path.join(HERE, 'multihost_check.py')] + args,
          env=env,
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
      )
      for args in args_per_process
  ]
  results = []
  try:
    for p in procs:
      out, err = p.communicate(timeout=timeout)
      assert p.returncode == 0, err[-4000:]
      line = [l for l in out.splitlines() if l.startswith('RESULT ')][-1]
      results.append(json.loads(line[len('RESULT ') :]))
  finally:
    for p in procs:  # a hang must not outlive the test
      if p.poll() is None:
        p.kill()
  return results


@pytest.fixture(scope='module')
def runs(tiny_data_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp('multihost')
  multi = str(root / 'multi')
  port = _free_port()
  first = _launch(
      [[str(i), str(port), multi, tiny_data_dir, 'sigterm'] for i in range(2)]
  )
  port = _free_port()
  second = _launch(
      [[str(i), str(port), multi, tiny_data_dir] for i in range(2)]
  )
  ref = _launch([['reference', '-', str(root / 'ref'), tiny_data_dir]])[0]
  return first, second, ref


def test_two_processes_run_as_two_hosts(runs):
  first, _, ref = runs
  assert [r['process'] for r in first] == [0, 1]
  assert all(r['processes'] == 2 and r['devices'] == 2 for r in first)
  assert ref['processes'] == 1 and ref['devices'] == 2


def test_a_signal_on_one_host_stops_all_hosts_at_the_same_step(runs):
  first, _, ref = runs
  # Process 0 alone got SIGTERM: both stopped, at the same step, early.
  assert all(r['status'] == 'interrupted (SIGTERM)' for r in first[:1])
  assert first[1]['status'] == 'interrupted (on another process)'
  assert first[0]['steps'] == first[1]['steps']
  assert 0 < first[0]['steps'] < ref['steps']


def test_resumed_multihost_run_equals_one_host(runs):
  _, second, ref = runs
  assert all(r['status'] == 'completed' for r in second)
  assert second[0]['steps'] == second[1]['steps'] == ref['steps']
  for r in second:  # the same parameters on both hosts and as one host
    for a, b in zip(r['params'], ref['params']):
      np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
  assert second[0]['test_accuracy'] == pytest.approx(ref['test_accuracy'])
  # Only process 0 writes the run's files (both see the shared workdir).
  assert 'results.json' in second[0]['files']
