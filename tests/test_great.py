"""The great method (GREAT / GREACE on the v2 contract), the Table 1 tool and
the saliency maps."""

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import tiny_config
from jaxadv import build
from jaxadv import eval_run
from jaxadv.tools import great_table
from jaxadv.tools import saliency
from jaxadv import train
from jaxadv import validation


def _config(data_dir, variant='both', **overrides):
  c = tiny_config(
      data_dir,
      **{
          'model.name': 'cnn5',
          'num_epochs': 1,
          'method.name': 'great',
          **overrides,
      },
  )
  c.method.variant = variant
  c.eval.attacks = (
      'clean',
      'fgsm(eps=0.1)',
      'ifgsm(eps=0.1, steps=2, step_size=0.05, target=worst)',
  )
  c.eval.num_examples = 40
  c.eval.batch_size = 40
  return c


@pytest.fixture(scope='module')
def great_runs(tiny_data_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp('great')
  out = {}
  for variant in ('both', 'greace'):
    out[variant] = str(root / variant)
    res = train.train_and_evaluate(
        _config(tiny_data_dir, variant), out[variant]
    )
    assert res['status'] == 'completed'
  return out


def test_both_networks_train_and_are_checkpointed(great_runs):
  wd = great_runs['both']
  saved = ocp.StandardCheckpointer().restore(
      os.path.join(build.latest_step_dir(wd), 'state')
  )
  assert sorted(saved['nets']) == ['aux', 'main']
  # The aux network is the main architecture with leaky ReLU on g: same
  # parameter shapes, and Adam moments (not SGD's trace) in its opt_state.
  shapes = lambda t: [a.shape for a in jax.tree_util.tree_leaves(t)]
  assert shapes(saved['nets']['aux']['params']) == shapes(
      saved['nets']['main']['params']
  )
  assert len(jax.tree_util.tree_leaves(saved['nets']['aux']['opt_state'])) > (
      2 * len(jax.tree_util.tree_leaves(saved['nets']['aux']['params']))
  )
  lines = open(os.path.join(wd, 'metrics.jsonl')).read().splitlines()
  import json  # pylint: disable=g-import-not-at-top

  logs = [json.loads(l) for l in lines if 'aux_loss' in l]
  assert logs and all(np.isfinite(r['aux_loss']) for r in logs)
  # alpha and beta ramp up from 0 (poly 0.9) towards alpha_max / beta_max.
  alphas = [r['alpha'] for r in logs]
  assert alphas == sorted(alphas) and 0 < alphas[-1] < 1.0
  assert logs[-1]['beta'] == pytest.approx(2 * logs[-1]['alpha'], rel=1e-5)


def test_variants_train_differently(great_runs):
  a, b = (
      ocp.StandardCheckpointer().restore(
          os.path.join(build.latest_step_dir(great_runs[v]), 'state')
      )
      for v in ('both', 'greace')
  )
  diff = max(
      float(np.abs(np.asarray(x) - np.asarray(y)).max())
      for x, y in zip(
          jax.tree_util.tree_leaves(a['nets']['main']),
          jax.tree_util.tree_leaves(b['nets']['main']),
      )
  )
  assert diff > 1e-6


@pytest.mark.parametrize(
    'overrides,needle',
    [
        ({'variant': 'gre'}, "config.method.variant='gre'"),
        ({'alpha_max': -1.0}, 'config.method.alpha_max=-1.0 must be'),
        ({'aux_model': 'resnet1'}, "config.method.aux_model='resnet1'"),
        ({'alpha': 1.0}, 'config.method.alpha is not a key'),
    ],
)
def test_bad_great_keys_are_one_line_errors(tiny_data_dir, overrides, needle):
  c = _config(tiny_data_dir)
  for k, v in overrides.items():
    c.method[k] = v
  with pytest.raises(
      validation.ConfigError,
      match=needle.replace('(', r'\(').replace(')', r'\)').replace('.', r'\.'),
  ):
    validation.validate_config(c, num_devices=1, num_processes=1)


def test_table1_and_saliency_tools(great_runs, tmp_path, capsys):
  out = tmp_path / 'table'
  assert (
      great_table.main(
          [
              '--workdirs',
              f'{great_runs["both"]},{great_runs["greace"]}',
              '--labels',
              'GRE(AT+CE),GREACE',
              '--out',
              str(out),
          ]
      )
      == 0
  )
  text = (out / 'table1.md').read_text()
  header = text.splitlines()[0]
  assert header.startswith(
      '| model | train | clean | FGSM @0.1 | ' 'iFGSM worst @0.1 |'
  ), header
  assert '| GREACE |' in text and 'Sanity checks' in text
  png = tmp_path / 'sal.png'
  assert (
      saliency.main(
          [
              '--workdirs',
              great_runs['both'],
              '--out',
              str(png),
              '--num_images',
              '2',
          ]
      )
      == 0
  )
  assert png.stat().st_size > 1000
  assert (
      great_table.main(
          ['--workdirs', str(tmp_path / 'nope'), '--out', str(out)]
      )
      == 2
  )


def test_eval_mode_reports_aux_accuracy_as_training_did(great_runs):
  """--mode eval of a GREAT run reports the auxiliary network's accuracy on
  test gradients, the value training's end-of-run evaluation wrote."""
  wd = great_runs['both']
  with open(os.path.join(wd, 'results.json')) as f:
    trained = json.load(f)
  out = eval_run.evaluate_checkpoint(build.load_config(wd), wd)
  assert 0.0 <= out['test_aux_accuracy'] <= 1.0
  assert out['test_aux_accuracy'] == pytest.approx(
      trained['test_aux_accuracy'], abs=1e-6
  )
  assert out['test_accuracy'] == pytest.approx(
      trained['test_accuracy'], abs=1e-6
  )
