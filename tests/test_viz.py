"""--mode viz (jaxadv/tools/viz.py): feature visualization, representation
interpolation, large perturbations, the PNGs, and bad input before compute."""

import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import shared_dir
from conftest import tiny_config
from jaxadv import cli
from jaxadv import runs
from jaxadv import train
from jaxadv.errors import ConfigError
from jaxadv.tools import viz


@pytest.fixture(scope='module')
def run_dirs(tiny_data_dir, tmp_path_factory):
  """Two finished tiny runs (cnn5 standard and fast), built once per run."""

  def make(root):
    for name, method in (('std', {}), ('fast', {'eps': 0.1})):
      config = tiny_config(
          tiny_data_dir, **{'model.name': 'cnn5', 'num_epochs': 1}
      )
      if method:
        config.method.name = 'fast'
        config.method.eps = method['eps']
      train.train_and_evaluate(config, os.path.join(root, name))

  root = shared_dir(tmp_path_factory, 'viz_runs', make)
  return os.path.join(root, 'std'), os.path.join(root, 'fast')


def _viz_config(tiny_data_dir, **viz):
  c = tiny_config(tiny_data_dir)
  small = dict(
      num_images=2,
      num_seeds=1,
      nodes_per_seed=2,
      fv_steps=15,
      interp_lambdas=(0.0, 0.5, 1.0),
      interp_steps=60,
      interp_step_size=0.1,
      large_eps=5.0,
      large_steps=10,
      sweep_eps=(0.0, 1.0),
      sweep_examples=16,
  )
  c.viz.update({**small, **viz})
  return c


def test_feature_visualization_raises_the_chosen_node(run_dirs):
  state = runs.load_run(run_dirs[0]).state
  rep_fn = viz.representation_fn(state)
  seeds = jax.random.uniform(jax.random.PRNGKey(0), (4, 28, 28, 1))
  # Nodes active at their seed: a ReLU unit at 0 has no gradient to follow.
  rep = np.asarray(rep_fn(seeds)[1])
  nodes = jnp.asarray(
      [int(np.flatnonzero(r > 0)[k]) for k, r in enumerate(rep)]
  )
  out, before, after = viz.maximize_nodes(
      rep_fn, seeds, nodes, steps=20, step_size=0.2
  )
  assert out.shape == seeds.shape
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  assert np.all(np.asarray(after) > np.asarray(before) + 1e-3), (
      before,
      after,
  )
  # The representation is the penultimate layer: cnn5's fc1 (128 units).
  assert rep_fn(seeds)[1].shape == (4, 128)


def test_interpolation_endpoints_reproduce_the_two_representations(run_dirs):
  state = runs.load_run(run_dirs[0]).state
  rep_fn = viz.representation_fn(state)
  x1, x2 = jax.random.uniform(jax.random.PRNGKey(1), (2, 28, 28, 1))
  images, start, end = viz.interpolate(
      rep_fn,
      x1,
      x2,
      (0.0, 1.0),
      start=jnp.full_like(x1, 0.5),
      steps=150,
      step_size=0.1,
  )
  assert images.shape == (2, 28, 28, 1)
  start, end = np.asarray(start), np.asarray(end)
  # From a grey start, the matching drives f(x) to f(x2) (lambda 0) and to
  # f(x1) (lambda 1): the distance shrinks several-fold.
  assert np.all(end < 0.35 * start), (start, end)
  r = lambda v: np.asarray(rep_fn(v[None])[1][0])
  target = r(x2)
  got = r(images[0])
  assert np.linalg.norm(got - target) / np.linalg.norm(target) == pytest.approx(
      end[0], rel=1e-3
  )


def test_large_perturbations_stay_in_the_box_and_the_ball(run_dirs):
  state = runs.load_run(run_dirs[1]).state
  x = jax.random.uniform(jax.random.PRNGKey(2), (3, 28, 28, 1))
  out, pred = viz.large_perturbations(
      state.logits_fn(), x, jnp.array([1, 2, 3]), eps=2.0, steps=10
  )
  out = np.asarray(out)
  assert 0.0 <= out.min() and out.max() <= 1.0
  norms = np.sqrt(((out - np.asarray(x)) ** 2).reshape(3, -1).sum(1))
  assert np.all(norms <= 2.0 + 1e-4) and np.all(norms > 0.1)
  assert pred.shape == (3,)


def test_mode_viz_writes_every_picture(
    run_dirs, tiny_data_dir, tmp_path, capsys
):
  config = _viz_config(
      tiny_data_dir,
      compare=run_dirs[1],
      labels='std,fast',
      out=str(tmp_path / 'viz'),
  )
  assert cli.run(config, run_dirs[0], 'viz') == 0
  printed = capsys.readouterr().out
  names = (
      'saliency.png',
      'features.png',
      'interpolation.png',
      'large_perturbations.png',
      'robustness.png',
      'viz.json',
  )
  for name in names:
    path = tmp_path / 'viz' / name
    assert path.stat().st_size > 1000, name
    assert f'wrote {path}' in printed
  payload = json.loads((tmp_path / 'viz' / 'viz.json').read_text())
  assert sorted(payload['numbers']) == ['fast', 'std']
  for n in payload['numbers'].values():
    assert len(n['feature_activation_after']) == 2 * 2  # (1 + noise) x 2
    assert np.mean(n['feature_activation_after']) > np.mean(
        n['feature_activation_seed']
    )
  assert [r['eps'] for r in payload['curves']['std']] == [0.0, 1.0]


@pytest.mark.parametrize(
    'viz_keys,needle',
    [
        ({'compare': 'nope/run'}, 'config.viz.compare: no run in nope/run'),
        ({'fv_steps': 0}, 'config.viz.fv_steps=0 must be a positive integer'),
        ({'interp_lambdas': (0.5, 2.0)}, 'config.viz.interp_lambdas'),
        ({'labels': 'a,b,c'}, 'config.viz.labels'),
    ],
)
def test_bad_viz_input_is_one_line_before_compute(
    run_dirs, tiny_data_dir, viz_keys, needle, monkeypatch
):
  monkeypatch.setattr(runs, 'load_run', _no_compute)
  with pytest.raises(ConfigError, match=needle.replace('.', r'\.')):
    viz.run_viz(_viz_config(tiny_data_dir, **viz_keys), run_dirs[0])


def test_output_path_under_a_file_fails_before_compute(
    run_dirs, tiny_data_dir, tmp_path, monkeypatch
):
  (tmp_path / 'afile').write_text('x')
  monkeypatch.setattr(runs, 'load_run', _no_compute)
  config = _viz_config(tiny_data_dir, out=str(tmp_path / 'afile' / 'viz'))
  with pytest.raises(ConfigError, match='which is a file'):
    viz.run_viz(config, run_dirs[0])
  assert not os.path.exists(tmp_path / 'afile' / 'viz')


def test_runs_of_different_datasets_are_refused():
  run = lambda name, shape: types.SimpleNamespace(
      dataset=types.SimpleNamespace(name=name, image_shape=shape)
  )
  with pytest.raises(ConfigError, match='compare runs of one dataset'):
    viz._same_dataset(  # pylint: disable=protected-access
        [run('mnist', (28, 28, 1)), run('cifar10', (32, 32, 3))], ['a', 'b']
    )


def _no_compute(*args, **kwargs):
  raise AssertionError('compute started before the input was checked')
