"""Golden values (issue 10): the parameters after 3 steps of every method and
the eval report of a fixed tiny run, on 1 and on 8 forced CPU devices, must
not change under refactoring.

tests/golden/values.json was recorded by tests/golden_check.py before the
foundation-v2 refactor. With the same jax version on the same CPU model the
comparison is bit-exact (sha256 of every parameter and statistic); elsewhere
XLA may round differently, and sums and leading values must agree to 1e-5.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, 'golden', 'values.json')


@pytest.fixture(scope='module')
def results(tiny_data_dir, tmp_path_factory):
  procs = {}
  for n in ('1', '8'):
    wd = str(tmp_path_factory.mktemp(f'golden{n}'))
    procs[n] = subprocess.Popen(
        [
            sys.executable,
            os.path.join(HERE, 'golden_check.py'),
            tiny_data_dir,
            wd,
            n,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
  out = {}
  for n, p in procs.items():
    text, _ = p.communicate(timeout=900)
    lines = [l for l in text.splitlines() if l.startswith('RESULT ')]
    assert p.returncode == 0 and lines, text[-3000:]
    out[n] = json.loads(lines[-1][len('RESULT ') :])
  return out


def _exact(new, old):
  return new['jax'] == old['jax'] and new['cpu'] == old['cpu']


@pytest.mark.parametrize('devices', ['1', '8'])
@pytest.mark.parametrize(
    'method', ['standard', 'pgd', 'pgd_dual_bn', 'free', 'fast', 'fast_l2']
)
def test_parameters_after_three_steps_unchanged(results, devices, method):
  with open(GOLDEN) as f:
    old = json.load(f)[devices]
  new = results[devices]
  assert new['devices'] == int(devices)
  a, b = new['methods'][method], old['methods'][method]
  assert a['step'] == b['step'] and a['num_leaves'] == b['num_leaves']
  if _exact(new, old):
    assert a['sha256'] == b['sha256'], (a['sum'], b['sum'])
  else:
    np.testing.assert_allclose(a['head'], b['head'], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        [a['sum'], a['abs_sum']], [b['sum'], b['abs_sum']], rtol=1e-5
    )


@pytest.mark.parametrize('devices', ['1', '8'])
def test_eval_report_unchanged(results, devices):
  with open(GOLDEN) as f:
    old = json.load(f)[devices]
  new = results[devices]
  assert new['test_accuracy'] == old['test_accuracy']
  assert [r['name'] for r in new['eval']] == [r['name'] for r in old['eval']]
  for r, g in zip(new['eval'], old['eval']):
    if _exact(new, old):
      assert r == g
    else:  # one example's worth of rounding-flipped decisions
      assert abs(r['accuracy'] - g['accuracy']) <= 1.5 / r['num_examples'], r
      assert {k: v for k, v in r.items() if k != 'accuracy'} == {
          k: v for k, v in g.items() if k != 'accuracy'
      }
