"""Adversarial training methods: constraints of the inputs they train on,
loss goes down under the trainer, Free's one pass per replay and carried
perturbation, PGD with clean_weight=1 is standard training, config checks."""

import dataclasses
import functools
import glob
import importlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, tiny_config
from jaxadv import build
from jaxadv import data
from jaxadv import methods
from jaxadv import parallel
from jaxadv import steps
from jaxadv import train
from jaxadv import validation
from jaxadv.methods import common
from jaxadv.methods import fast
from jaxadv.methods import free
from jaxadv.methods import pgd

B = 16  # batch


def _config(data_dir, method, **overrides):
  """cnn5 (3 convs with BatchNorm) on the tiny MNIST, batch 16."""
  c = tiny_config(
      data_dir, **{'model.name': 'cnn5', 'batch_size': B, 'eval_batch_size': B}
  )
  for key, value in method.items():
    c.method[key] = value
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  validation.validate_config(c, num_devices=1, num_processes=1)
  return c


def _setup(config):
  ds = data.load_dataset(config.data, seed=config.seed)
  mesh = parallel.make_mesh()
  return ds, mesh, build.setup(config, ds, mesh)


def _fixed_batches(ds, mesh, steps):
  """The same first B train images `steps` times, as (S, B, ...) on mesh."""
  images = np.repeat(ds.train_images[None, :B], steps, axis=0)
  labels = np.repeat(ds.train_labels[None, :B], steps, axis=0)
  return parallel.put_local_batch(
      {'image': images, 'label': labels},
      mesh,
      jax.sharding.PartitionSpec(None, 'data'),
  )


def _mean(metric):
  return float(metric[0] / metric[1])


def _train_fn(config, mesh, s):
  return steps.make_train_fn(s, mesh, 'none')


@pytest.mark.parametrize(
    'method',
    [
        dict(name='pgd', eps=0.2, steps=3, norm='linf', attack_bn='train'),
        dict(
            name='fast', eps=2.0, norm='l2', attack_bn='eval', clean_weight=0.5
        ),
        dict(name='free', eps=0.2, replays=2, step_size=0.05),
    ],
    ids=['pgd_linf', 'fast_l2_clean_half', 'free_m2'],
)
def test_steps_lower_the_training_loss_on_a_fixed_batch(tiny_data_dir, method):
  config = _config(tiny_data_dir, method)
  ds, mesh, s = _setup(config)
  fn = _train_fn(config, mesh, s)
  g = _fixed_batches(ds, mesh, 6)
  first = lambda b, sl: {k: v[sl] for k, v in b.items()}
  state, m1 = fn(s.state, first(g, slice(None, 1)))
  if method['name'] == 'free':
    delta1 = np.asarray(state.method_state['per_example']['delta'])
  state, m2 = fn(state, first(g, slice(1, None)))
  m = method.get('replays', 1)
  assert int(state.step) == 6 * m  # Free: m optimizer updates per batch
  assert float(m2['loss'][1]) == 5 * m * B
  assert 'adv_accuracy' in m2
  assert ('accuracy' in m2) == bool(method.get('clean_weight'))
  assert _mean(m2['loss']) < _mean(m1['loss']), (m1['loss'], m2['loss'])
  if method['name'] == 'free':
    # Two replays of eps/4 from delta = 0 move it at most eps/2; later
    # steps get further only if delta carries over between train_steps.
    eps = method['eps']
    delta = np.asarray(state.method_state['per_example']['delta'])
    assert delta.shape == (B, 28, 28, 1)
    assert 0 < np.abs(delta1).max() <= eps / 2 + 1e-7
    assert np.abs(delta).max() <= eps + 1e-7
    assert (np.abs(delta) > 0.75 * eps).mean() > 0.05


def _direct(config):
  """A state whose model has no mesh axis (sync_bn off) for direct calls."""
  config.sync_bn = False
  ds, _, s = _setup(config)
  s.ctx = dataclasses.replace(s.ctx, axis_name=None)
  x = data.to_float(jnp.asarray(ds.train_images[:B]))
  y = jnp.asarray(ds.train_labels[:B])
  return s, x, y


def _rngs(rng):
  return methods.StepRngs(device=rng, shared=rng)


def _perturbation_norms(x_adv, x):
  d = np.asarray(x_adv - x).reshape(x.shape[0], -1)
  return np.abs(d).max(1), np.sqrt((d.astype(np.float64) ** 2).sum(1))


@pytest.mark.parametrize(
    'module,method',
    [
        (fast, dict(name='fast', eps=0.1, norm='linf', attack_bn='eval')),
        (fast, dict(name='fast', eps=1.5, norm='l2')),
    ],
    ids=['fast_linf', 'fast_l2'],
)
def test_adversarial_examples_stay_in_ball_and_box(
    tiny_data_dir, module, method
):
  config = _config(tiny_data_dir, method)
  s, x, y = _direct(config)
  fn = jax.jit(module.make_adversarial_examples(s.ctx))
  x_adv = fn(s.state, x, y, jax.random.PRNGKey(1))
  _check_ball_and_box(s.state, x_adv, x, y, method['eps'], method['norm'])


def _check_ball_and_box(state, x_adv, x, y, eps, norm):
  assert x_adv.shape == x.shape
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
  linf, l2 = _perturbation_norms(x_adv, x)
  size = linf if norm == 'linf' else l2
  assert size.max() <= eps * (1 + 1e-5)
  assert size.min() > 0.5 * eps  # the attack does move every example
  # The attack raises the loss over the clean input.
  logits_fn = common.logits_fn(state)
  assert float(common.cross_entropy(logits_fn(x_adv), y).mean()) > float(
      common.cross_entropy(logits_fn(x), y).mean()
  )


def test_pgd_step_trains_on_examples_in_the_ball_and_keeps_one_stat_update(
    tiny_data_dir,
):
  """The step trains on pgd.adversarial_examples (in the eps ball and [0, 1]);
  with attack_bn='train' the K attack passes leave the running statistics
  alone: only the training pass on x_adv updates them."""
  config = _config(
      tiny_data_dir, dict(name='pgd', eps=0.1, steps=3, attack_bn='train')
  )
  s, x, y = _direct(config)
  state, rng = s.state, jax.random.PRNGKey(3)
  step = jax.jit(pgd.make_train_step(s.ctx))
  new, metrics = step(state, {'image': x, 'label': y}, _rngs(rng))
  x_adv = jax.jit(pgd.make_adversarial_examples(s.ctx))(state, x, y, rng)
  _check_ball_and_box(state, x_adv, x, y, 0.1, 'linf')
  logits, stats = common.forward(state, state.params, x_adv, train=True)
  np.testing.assert_allclose(
      _mean(metrics['loss']),
      float(common.cross_entropy(logits, y).mean()),
      rtol=1e-5,
  )
  for a, b in zip(
      jax.tree_util.tree_leaves(new.batch_stats),
      jax.tree_util.tree_leaves(stats['batch_stats']),
  ):
    np.testing.assert_allclose(
        np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6
    )


def test_pgd_with_clean_weight_one_is_the_standard_step(tiny_data_dir):
  params = []
  for method in (
      dict(name='standard'),
      dict(name='pgd', eps=0.2, steps=2, clean_weight=1.0),
  ):
    config = _config(tiny_data_dir, method)
    ds, mesh, s = _setup(config)
    g = _fixed_batches(ds, mesh, 2)
    state, _ = _train_fn(config, mesh, s)(s.state, g)
    params.append(state.params)
  for a, b in zip(*map(jax.tree_util.tree_leaves, params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def _count_eqns(jaxpr, name):
  """Equations named `name` in a jaxpr and all its sub-jaxprs."""
  n = 0
  for eqn in jaxpr.eqns:
    n += eqn.primitive.name == name
    for v in eqn.params.values():
      for sub in (v if isinstance(v, (list, tuple)) else (v,)):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          n += _count_eqns(sub.jaxpr, name)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          n += _count_eqns(sub, name)
  return n


def test_free_replay_is_one_forward_backward_pass(tiny_data_dir):
  """cnn5 has 3 convs: one pass is 3 forward convs + 3 weight-gradient
  convs + 3 input-gradient convs (the first one gives grad_delta)."""
  config = _config(tiny_data_dir, dict(name='free', eps=0.1, replays=2))
  s, x, y = _direct(config)
  replay = functools.partial(free.free_replay, eps=0.1, step_size=0.1)
  jaxpr = jax.make_jaxpr(replay)(s.state, x, y)
  assert _count_eqns(jaxpr.jaxpr, 'conv_general_dilated') == 3 * 3
  # The whole step is m = 2 unrolled replays: 9 convs each, nothing more.
  step = free.make_train_step(s.ctx)
  jaxpr = jax.make_jaxpr(step)(
      s.state, {'image': x, 'label': y}, _rngs(jax.random.PRNGKey(0))
  )
  assert _count_eqns(jaxpr.jaxpr, 'conv_general_dilated') == 2 * 3 * 3


def test_free_step_updates_delta_by_the_signed_input_gradient(tiny_data_dir):
  """One replay from a nonzero delta, recomputed here independently:
  delta' = clip(delta + step * sign(grad_delta CE(clip(x + delta))), +-eps)
  with the gradient at the parameters before the update."""
  eps, step_size = 0.2, 0.05
  config = _config(
      tiny_data_dir, dict(name='free', eps=eps, replays=1, step_size=step_size)
  )
  s, x, y = _direct(config)
  delta0 = eps * jax.random.uniform(
      jax.random.PRNGKey(5), x.shape, x.dtype, -1.0, 1.0
  )
  state = s.state.replace(
      method_state={'per_example': {'delta': delta0}, 'shared': {}}
  )
  step = jax.jit(free.make_train_step(s.ctx))
  new, _ = step(state, {'image': x, 'label': y}, _rngs(jax.random.PRNGKey(0)))
  assert int(new.step) == 1

  def loss(delta):
    logits, _ = state.apply_fn(
        {'params': state.params, 'batch_stats': state.batch_stats},
        jnp.clip(x + delta, 0, 1),
        train=True,
        mutable=['batch_stats'],
    )
    return common.cross_entropy(logits, y).mean()

  grad = np.asarray(jax.jit(jax.grad(loss))(delta0))
  expected = np.clip(np.asarray(delta0) + step_size * np.sign(grad), -eps, eps)
  delta1 = np.asarray(new.method_state['per_example']['delta'])
  assert np.mean(np.abs(expected - delta1) > 1e-6) < 1e-3
  assert np.abs(delta1).max() <= eps + 1e-7
  assert not np.allclose(delta1, np.asarray(delta0))


@pytest.mark.parametrize(
    'name,method,needle',
    [
        ('pgd', dict(eps=-0.1, steps=3), 'config.method.eps=-0.1 must be > 0'),
        ('pgd', dict(eps=8, steps=3), 'config.method.eps=8 must be <= 1'),
        ('pgd', dict(steps=3), 'config.method.eps=None'),
        ('pgd', dict(eps=0.1, steps=0), 'config.method.steps=0'),
        ('pgd', dict(eps=0.1, steps=2.5), 'config.method.steps=2.5'),
        (
            'pgd',
            dict(eps=0.1, steps=3, step_size=0.0),
            'config.method.step_size=0.0',
        ),
        ('pgd', dict(eps=0.1, steps=3, norm='l1'), "config.method.norm='l1'"),
        (
            'pgd',
            dict(eps=0.1, steps=3, attack_bn='frozen'),
            "config.method.attack_bn='frozen'",
        ),
        (
            'pgd',
            dict(eps=0.1, steps=3, clean_weight=1.5),
            'config.method.clean_weight=1.5',
        ),
        ('pgd', dict(eps=0.1, step=3), 'config.method.step is not a key'),
        ('fast', dict(eps=0.1, norm='l3'), "config.method.norm='l3'"),
        ('fast', dict(eps=0.0), 'config.method.eps=0.0 must be > 0'),
        ('fast', dict(eps=0.1, step_size=-1.0), 'config.method.step_size=-1.0'),
        ('free', dict(eps=0.1, replays=0), 'config.method.replays=0'),
        ('free', dict(eps=0.1), 'config.method.replays=None'),
        (
            'free',
            dict(eps=0.1, replays=4, step_size=0),
            'config.method.step_size=0',
        ),
    ],
)
def test_validation_names_the_key(tiny_data_dir, name, method, needle):
  config = tiny_config(tiny_data_dir)
  config.method.name = name
  for key, value in method.items():
    config.method[key] = value
  with pytest.raises(validation.ConfigError) as e:
    validation.validate_config(config, num_devices=8, num_processes=1)
  assert needle in str(e.value)
  assert '\n' not in str(e.value)


@pytest.mark.parametrize(
    'name,method,ok',
    [
        ('free', dict(eps=0.1, replays=2), False),
        ('fast', dict(eps=0.1), False),
        ('pgd', dict(eps=0.1, steps=2), False),
        ('fast', dict(eps=0.1, clean_weight=0.5), True),
        ('pgd', dict(eps=0.1, steps=2, clean_weight=0.5), True),
        ('standard', {}, True),
    ],
)
def test_dual_bn_needs_clean_passes(tiny_data_dir, name, method, ok):
  # Evaluation runs the clean BatchNorm set: a method that never trains it
  # must not run with a second (adversarial) set.
  config = tiny_config(
      tiny_data_dir, **{'model.name': 'cnn5', 'model.dual_bn': True}
  )
  config.method.name = name
  for key, value in method.items():
    config.method[key] = value
  if ok:
    validation.validate_config(config, num_devices=1, num_processes=1)
    return
  with pytest.raises(validation.ConfigError) as e:
    validation.validate_config(config, num_devices=1, num_processes=1)
  assert 'config.model.dual_bn=True' in str(e.value)
  assert '\n' not in str(e.value)


CONFIGS = sorted(
    os.path.basename(p)[:-3]
    for p in glob.glob(os.path.join(REPO, 'configs', '*.py'))
    if not p.endswith('__init__.py')
)


@pytest.mark.parametrize('name', CONFIGS)
def test_every_config_validates(name):
  mod = importlib.import_module(f'configs.{name}')
  validation.validate_config(mod.get_config(), num_devices=8, num_processes=1)


def test_each_step_draws_a_fresh_rng(tiny_data_dir):
  # The step's key folds in the step number: the same batch at steps 0 and 1
  # gets different random starts (loss computed before the update).
  config = _config(
      tiny_data_dir,
      dict(name='fast', eps=0.3, norm='linf'),
      **{'model.name': 'mnist_cnn'},
  )
  ds, mesh, s = _setup(config)
  fn = _train_fn(config, mesh, s)
  copy = lambda st: jax.tree_util.tree_map(jnp.copy, st)  # fn donates
  later = copy(s.state).replace(step=s.state.step + 1)
  _, m0 = fn(copy(s.state), _fixed_batches(ds, mesh, 1))
  _, m1 = fn(later, _fixed_batches(ds, mesh, 1))
  assert float(m0['loss'][0]) != float(m1['loss'][0])
  _, again = fn(copy(s.state), _fixed_batches(ds, mesh, 1))
  assert float(again['loss'][0]) == float(m0['loss'][0])  # and is seeded
