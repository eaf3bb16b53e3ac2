"""The method contract v2 (issue 10), exercised by an example method written
against it here: an auxiliary network with its own Adam and poly schedule,
and a frozen teacher loaded from another run's workdir. Checkpoint, kill,
resume must give exactly the uninterrupted run's state, and the frozen
network must never be written into the checkpoints."""

import math
import os
import signal

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import tiny_config
from jaxadv import build
from jaxadv import checkpoint as ckpt_lib
from jaxadv import data
from jaxadv import eval_run
from jaxadv import methods
from jaxadv import parallel
from jaxadv import runs
from jaxadv import train
from jaxadv import train_state as ts
from jaxadv.methods import common

# ---------------------------------------------------------------------------
# The example method (this module is registered as method 'example_distill').

KEYS = ('teacher', 'distill_weight')


def validate(config):
  common.check_method_keys(config, KEYS)


def settings(config):
  return dict(
      teacher=config.method.teacher,
      distill_weight=float(config.method.distill_weight),
  )


def init(ctx, rng):
  aux_optim = ctx.config.optim.copy_and_resolve_references()
  aux_optim.update(name='adam', lr=1e-3, schedule='poly')
  aux = ctx.network(rng, aux_optim, 'cnn5', normalize=False)
  teacher = ctx.load_frozen(ctx.settings['teacher'])
  return methods.Parts(nets={'aux': aux}, frozen={'teacher': teacher})


def make_train_step(ctx):
  w, axis = ctx.settings['distill_weight'], ctx.axis_name

  def train_step(state, batch, rngs):
    del rngs
    x, y = batch['image'], batch['label']
    target = jax.nn.softmax(state.frozen['teacher'].logits_fn()(x))

    def main_loss(params):
      logits, stats = common.forward(state, params, x, train=True)
      soft = -(target * jax.nn.log_softmax(logits)).sum(-1)
      loss = common.cross_entropy(logits, y) + w * soft
      return loss.mean(), (loss, stats)

    def aux_loss(params):
      logits, stats = common.forward(state.nets['aux'], params, x, train=True)
      return common.cross_entropy(logits, y).mean(), (logits, stats)

    g, (loss, stats) = jax.grad(main_loss, has_aux=True)(state.params)
    g_aux, (aux_logits, aux_stats) = jax.grad(aux_loss, has_aux=True)(
        state.nets['aux'].params
    )
    aux = common.update_network(state.nets['aux'], g_aux, aux_stats, axis)
    state = common.apply_update(state.with_net('aux', aux), g, stats, axis)
    return state, {
        'loss': common.summed(loss),
        'aux_accuracy': common.summed(common.correct(aux_logits, y)),
    }

  return train_step


def eval_metrics(ctx):
  del ctx

  def metrics(state, batch):  # the main network's accuracy and the aux's
    out = common.accuracy_metrics(state, batch)
    aux = state.nets['aux'].logits_fn()(batch['image'])
    out['aux_accuracy'] = common.summed(
        common.correct(aux, batch['label']), batch['mask']
    )
    # A mean squared error, reported as an RMSE (metric_finalizers).
    p = jax.nn.softmax(state.logits_fn()(batch['image']))
    err = ((p - jax.nn.one_hot(batch['label'], p.shape[-1])) ** 2).sum(-1)
    out['prob_rmse'] = common.summed(err, batch['mask'])
    # One uniform draw per example from the example's own key.
    draw = jax.vmap(lambda k: jax.random.uniform(k))(batch['rng'])
    out['key_draw'] = common.summed(draw, batch['mask'])
    return out

  return metrics


def metric_finalizers(ctx):
  del ctx
  return {'prob_rmse': math.sqrt}


# ---------------------------------------------------------------------------


@pytest.fixture
def example_method(monkeypatch):
  monkeypatch.setitem(methods.METHODS, 'example_distill', __name__)


@pytest.fixture(scope='module')
def teacher_dir(tiny_data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('teacher'))
  config = tiny_config(tiny_data_dir, **{'model.name': 'cnn5', 'num_epochs': 1})
  assert train.train_and_evaluate(config, workdir)['status'] == 'completed'
  return workdir


def _config(tiny_data_dir, teacher_dir):
  c = tiny_config(
      tiny_data_dir,
      **{
          'model.name': 'cnn5',
          'num_epochs': 2,
          'optim.name': 'sgd',
          'optim.lr': 0.05,
      },
  )
  c.method.name = 'example_distill'
  c.method.teacher = teacher_dir
  c.method.distill_weight = 0.5
  return c


def test_aux_and_frozen_networks_are_built(
    tiny_data_dir, teacher_dir, example_method
):
  config = _config(tiny_data_dir, teacher_dir)
  ds = build.load_data(config)
  b = build.setup(config, ds, parallel.make_mesh())
  assert sorted(b.state.nets) == ['aux', 'main']
  assert list(b.state.frozen) == ['teacher']
  # The aux network has its own optimizer: Adam moments, not SGD momentum.
  leaves = lambda t: len(jax.tree_util.tree_leaves(t))
  aux = b.state.nets['aux']
  assert leaves(aux.opt_state) > 2 * leaves(aux.params)
  assert leaves(b.state.opt_state) < 2 * leaves(b.state.params)
  # The aux input is not normalized; the main model is.
  assert aux.apply_fn is not b.state.apply_fn
  # The teacher is the teacher run's main network, read-only.
  teacher_run = build.load_config(teacher_dir)
  assert teacher_run.method.name == 'standard'
  saved = ocp.StandardCheckpointer().restore(
      os.path.join(build.latest_step_dir(teacher_dir), 'state')
  )
  for a, t in zip(
      jax.tree_util.tree_leaves(b.state.frozen['teacher'].variables['params']),
      jax.tree_util.tree_leaves(saved['nets']['main']['params']),
  ):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(t))


def test_kill_and_resume_is_bit_identical_and_frozen_is_never_saved(
    tiny_data_dir, teacher_dir, tmp_path, monkeypatch, example_method
):
  config = _config(tiny_data_dir, teacher_dir)
  full = train.train_and_evaluate(config, str(tmp_path / 'full'))
  assert full['status'] == 'completed'
  # The method's eval_metrics are what the trainer evaluates and logs.
  assert 0.0 <= full['test_aux_accuracy'] <= 1.0
  assert 'test_aux_accuracy' in full['history'][-1]

  real_chunks = data.train_chunks
  calls = {'n': 0}

  def chunks_then_sigterm(*args, **kwargs):
    for chunk in real_chunks(*args, **kwargs):
      calls['n'] += 1
      if calls['n'] == 5:  # inside the first epoch (8 steps an epoch)
        os.kill(os.getpid(), signal.SIGTERM)
      yield chunk

  monkeypatch.setattr(data, 'train_chunks', chunks_then_sigterm)
  part = train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  assert part['status'].startswith('interrupted')
  assert 0 < part['steps'] < full['steps']
  monkeypatch.setattr(data, 'train_chunks', real_chunks)
  resumed = train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  assert resumed['status'] == 'completed'
  assert resumed['steps'] == full['steps']

  ds = build.load_data(config)
  template = build.setup(config, ds, parallel.make_mesh()).state
  states = [
      ckpt_lib.Checkpointer(str(tmp_path / d / 'checkpoints')).restore(
          template
      )[0]
      for d in ('full', 'resumed')
  ]
  a, b = (ts.saved_tree(s) for s in states)
  assert sorted(a['nets']) == ['aux', 'main']
  flat_a = jax.tree_util.tree_leaves_with_path(a)
  flat_b = jax.tree_util.tree_leaves(b)
  assert len(flat_a) == len(flat_b)
  for (path, x), y in zip(flat_a, flat_b):
    np.testing.assert_array_equal(
        np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path)
    )
  # The aux network trained (its Adam moved it away from its init).
  moved = [
      not np.array_equal(np.asarray(x), np.asarray(y))
      for x, y in zip(
          jax.tree_util.tree_leaves(states[0].nets['aux'].params),
          jax.tree_util.tree_leaves(template.nets['aux'].params),
      )
  ]
  assert any(moved)

  # No checkpoint file holds the teacher: its raw tree has no frozen
  # networks, and exactly the leaves of the trained part of the state.
  for d in ('full', 'resumed'):
    raw = ocp.StandardCheckpointer().restore(
        os.path.join(build.latest_step_dir(str(tmp_path / d)), 'state')
    )
    assert not raw.get('frozen')
    assert len(jax.tree_util.tree_leaves(raw)) == len(flat_a)
    paths = [
        jax.tree_util.keystr(p)
        for p, _ in jax.tree_util.tree_leaves_with_path(raw)
    ]
    assert not any('teacher' in p or 'frozen' in p for p in paths)


def test_eval_mode_reports_what_training_reported_without_the_teacher(
    tiny_data_dir, teacher_dir, tmp_path, monkeypatch, example_method
):
  """--mode eval and training's end-of-run evaluation are one code path:
  the method's eval metrics, finalized (an RMSE), with per-example keys that
  do not depend on the batch size; loading the run does not load frozen
  networks."""
  config = _config(tiny_data_dir, teacher_dir)
  config.num_epochs = 1
  workdir = str(tmp_path / 'run')
  trained = train.train_and_evaluate(config, workdir)
  assert trained['status'] == 'completed'

  def no_teacher(*args, **kwargs):
    raise AssertionError('evaluation loaded a frozen network')

  monkeypatch.setattr(build, 'load_frozen', no_teacher)
  config.eval_batch_size = 24  # other batches: same per-example keys
  out = eval_run.evaluate_checkpoint(config, workdir)
  for key in ('test_accuracy', 'test_aux_accuracy', 'test_prob_rmse'):
    assert out[key] == pytest.approx(trained[key], abs=1e-6), key
  assert out['test_key_draw'] == pytest.approx(
      trained['test_key_draw'], abs=1e-6
  )
  assert 0.2 < out['test_key_draw'] < 0.8  # uniform draws, not one key
  # The RMSE is the square root of the mean squared error.
  run = runs.load_run(workdir)
  x = run.dataset.test_images / 255.0
  p = jax.nn.softmax(run.state.logits_fn()(x))
  y = jax.nn.one_hot(run.dataset.test_labels, p.shape[-1])
  mse = float(((p - y) ** 2).sum(-1).mean())
  assert out['test_prob_rmse'] == pytest.approx(math.sqrt(mse), rel=1e-5)
