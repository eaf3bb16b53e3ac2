"""The trainer: loss goes down, resume is exact, bad input fails early,
NaN stops without touching the last good checkpoint."""

import json
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, tiny_config
from jaxadv import build
from jaxadv import checkpoint as ckpt_lib
from jaxadv import data
from jaxadv import monitor as monitor_lib
from jaxadv import parallel
from jaxadv import steps
from jaxadv import train
from jaxadv import validation


def _setup(config):
  ds = data.load_dataset(config.data, seed=config.seed)
  mesh = parallel.make_mesh()
  return ds, mesh, build.setup(config, ds, mesh)


@pytest.mark.parametrize('model', ['mnist_cnn', 'cnn5'])
def test_steps_lower_the_loss_on_a_fixed_batch(tiny_data_dir, model):
  config = tiny_config(tiny_data_dir, **{'model.name': model})
  ds, mesh, s = _setup(config)
  fn = steps.make_train_fn(s, mesh, 'none')
  images = np.repeat(ds.train_images[None, :64], 5, axis=0)
  labels = np.repeat(ds.train_labels[None, :64], 5, axis=0)
  g = parallel.put_local_batch(
      (images, labels), mesh, jax.sharding.PartitionSpec(None, 'data')
  )
  state, m1 = fn(s.state, {'image': g[0][:1], 'label': g[1][:1]})
  state, m2 = fn(state, {'image': g[0], 'label': g[1]})
  first = float(m1['loss'][0] / m1['loss'][1])
  later = float(m2['loss'][0] / m2['loss'][1])
  assert int(state.step) == 6
  assert later < first, (first, later)


def test_interrupted_run_resumes_to_identical_parameters(
    tiny_data_dir, tmp_path, monkeypatch
):
  config = tiny_config(
      tiny_data_dir,
      **{
          'model.name': 'cnn5',
          'num_epochs': 2,
          'steps_per_call': 2,
          'batch_size': 32,
          'data.num_train_examples': 192,  # 6 steps an epoch: chunks 2, 2, 2
          'eval_every': 0,
      },
  )
  full = train.train_and_evaluate(config, str(tmp_path / 'full'))
  assert full['status'] == 'completed'

  # SIGTERM arrives during the second chunk of the first epoch (step 4).
  real_chunks = data.train_chunks
  calls = {'n': 0}

  def chunks_then_sigterm(*args, **kwargs):
    for chunk in real_chunks(*args, **kwargs):
      calls['n'] += 1
      if calls['n'] == 2:
        os.kill(os.getpid(), signal.SIGTERM)
      yield chunk

  monkeypatch.setattr(data, 'train_chunks', chunks_then_sigterm)
  part = train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  assert part['status'].startswith('interrupted')
  assert part['steps'] == 4 and full['steps'] == 12  # stopped mid-epoch
  monkeypatch.setattr(data, 'train_chunks', real_chunks)
  resumed = train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  assert resumed['status'] == 'completed'
  assert resumed['steps'] == full['steps']

  _, _, s = _setup(config)
  a, _ = ckpt_lib.Checkpointer(str(tmp_path / 'full' / 'checkpoints')).restore(
      s.state
  )
  b, _ = ckpt_lib.Checkpointer(
      str(tmp_path / 'resumed' / 'checkpoints')
  ).restore(s.state)
  for x, y in zip(
      jax.tree_util.tree_leaves((a.params, a.batch_stats, a.opt_state)),
      jax.tree_util.tree_leaves((b.params, b.batch_stats, b.opt_state)),
  ):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize('steps_per_call', [1, 3])
def test_device_feed_equals_host_feed(tiny_data_dir, tmp_path, steps_per_call):
  # The whole train split on the device, batches gathered there, must train
  # bit-identically to host-gathered batches (same order, same augmentation).
  states = {}
  for feed in ('host', 'device'):
    config = tiny_config(
        tiny_data_dir,
        **{
            'model.name': 'cnn5',
            'num_epochs': 1,
            'batch_size': 32,
            'data.num_train_examples': 96,  # 3 steps: one chunk of 3
            'data.feed': feed,
            'data.augment': 'crop_flip',
            'steps_per_call': steps_per_call,
            'eval_every': 0,
        },
    )
    res = train.train_and_evaluate(config, str(tmp_path / feed))
    assert res['data_feed'] == feed
    _, _, s = _setup(config)
    ck = ckpt_lib.Checkpointer(str(tmp_path / feed / 'checkpoints'))
    states[feed], _ = ck.restore(s.state)
    ck.close()
  a, b = states['host'], states['device']
  assert int(a.step) == int(b.step) == 3
  for x, y in zip(
      jax.tree_util.tree_leaves((a.params, a.batch_stats)),
      jax.tree_util.tree_leaves((b.params, b.batch_stats)),
  ):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


class _FakeDevice:

  def __init__(self, limit):
    self.limit = limit

  def memory_stats(self):
    return None if self.limit is None else {'bytes_limit': self.limit}


def test_auto_feed_puts_small_train_splits_on_the_device(tiny_data_dir):
  config = tiny_config(tiny_data_dir)
  ds = data.load_dataset(config.data)
  nbytes = ds.train_images.nbytes + ds.train_labels.nbytes
  assert data.feed_on_device('auto', ds, _FakeDevice(None))  # CPU: no stats
  assert data.feed_on_device('auto', ds, _FakeDevice(4 * nbytes))
  assert not data.feed_on_device('auto', ds, _FakeDevice(4 * nbytes - 1))
  assert not data.feed_on_device('host', ds, _FakeDevice(None))
  assert data.feed_on_device('device', ds, _FakeDevice(1))


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(
    tiny_data_dir, tmp_path
):
  workdir = str(tmp_path / 'nan')
  config = tiny_config(tiny_data_dir, num_epochs=1)
  train.train_and_evaluate(config, workdir)
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'))
  good = ckpt.latest_step()
  ckpt.close()
  config = tiny_config(tiny_data_dir, num_epochs=3, **{'optim.lr': 1e30})
  with pytest.raises(train.NonFiniteError, match='last good checkpoint'):
    train.train_and_evaluate(config, workdir)
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'))
  assert ckpt.latest_step() == good
  _, _, s = _setup(config)
  state, _ = ckpt.restore(s.state)
  assert all(
      bool(jnp.all(jnp.isfinite(x)))
      for x in jax.tree_util.tree_leaves(state.params)
  )


@pytest.mark.parametrize(
    'overrides,needle',
    [
        (
            {'batch_size': 100},
            'config.batch_size=100 is not divisible by the 8 devices',
        ),
        ({'eval_batch_size': 12}, 'config.eval_batch_size=12'),
        ({'model.name': 'resnet9000'}, 'valid: '),
        ({'method.name': 'magic'}, "unknown method 'magic'"),
        ({'optim.lr': 0.0}, 'config.optim.lr=0.0 must be a positive number'),
        ({'optim.schedule': 'zigzag'}, 'valid: constant'),
        ({'dtype': 'float16'}, "config.dtype='float16'"),
        ({'data.train_fraction': 1.5}, 'config.data.train_fraction'),
        ({'steps_per_call': -1}, 'config.steps_per_call=-1'),
        ({'data.feed': 'disk'}, "config.data.feed='disk'; valid: auto, device"),
        ({'eval.dtype': 'float16'}, "config.eval.dtype='float16'"),
        ({'model.kwargs.stem': 'tiny'}, 'config.model.kwargs: '),
        ({'model.activation': 'tanhh'}, 'config.model.activation: '),
        (
            {'eval.attacks': ('clean',), 'eval.batch_size': 500},
            'config.eval.batch_size=500 is not divisible by the 8 devices',
        ),
        ({'monitor.attack': 'pgdd(eps=0.1)'}, 'config.monitor.attack: '),
        (
            {'monitor.attack': 'fgsm(eps=0.1)', 'monitor.num_examples': 0},
            'config.monitor.num_examples=0',
        ),
        (
            {'monitor.attack': 'fgsm(eps=0.1)', 'monitor.max_drop': -0.1},
            'config.monitor.max_drop=-0.1',
        ),
    ],
)
def test_config_validation_names_the_key(tiny_data_dir, overrides, needle):
  config = tiny_config(tiny_data_dir, **overrides)
  with pytest.raises(validation.ConfigError) as e:
    validation.validate_config(config, num_devices=8, num_processes=1)
  assert needle in str(e.value)
  assert '\n' not in str(e.value)


def test_default_configs_validate():
  from configs import cifar10_standard, mnist_standard  # pylint: disable=g-import-not-at-top

  for mod in (mnist_standard, cifar10_standard):
    validation.validate_config(mod.get_config(), num_devices=8, num_processes=1)


def _main(args, cwd):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run(
      [sys.executable, os.path.join(REPO, 'main.py')] + args,
      cwd=cwd,
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
  )


def test_main_end_to_end(tiny_data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  flags = [
      '--config',
      os.path.join(REPO, 'configs', 'mnist_standard.py'),
      '--workdir',
      workdir,
      f'--config.data.data_dir={tiny_data_dir}',
      f'--config.data.cache_dir={tmp_path}/cache',
      '--config.num_epochs=2',
      '--config.batch_size=64',
      '--config.eval_batch_size=80',
      '--config.progress=False',
  ]
  out = _main(flags, REPO)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'clean test accuracy' in out.stdout
  results = json.load(open(os.path.join(workdir, 'results.json')))
  assert results['status'] == 'completed'
  assert results['test_accuracy'] > 0.5  # the tiny classes are easy
  assert results['eval_dtype'] == 'float32'
  lines = open(os.path.join(workdir, 'metrics.jsonl')).read().splitlines()
  assert any('loss' in json.loads(l) for l in lines)

  out = _main(flags + ['--mode', 'eval'], REPO)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"{100 * results['test_accuracy']:.2f}%" in out.stdout

  out = _main(flags + ['--config.optim.lr=-1'], REPO)
  assert out.returncode == 2
  assert (
      out.stderr.strip().splitlines()[-1].startswith('error: config.optim.lr')
  )


@pytest.mark.parametrize(
    'extra,needle',
    [
        (
            ['--config.method.epz=0.1'],
            "--config.method.epz: config.method has no key 'epz'; valid: ",
        ),
        (
            [
                '--config',
                os.path.join(REPO, 'configs', 'mnist_standard.py'),
                '--config.optimm.lr=1',
            ],
            "config has no key 'optimm'; valid: batch_size",
        ),
        (['--config.num_epochs=two'], 'flag --config.num_epochs=two: '),
    ],
)
def test_bad_override_is_one_line_error(tmp_path, extra, needle):
  out = _main(['--workdir', str(tmp_path / 'w')] + extra, REPO)
  assert out.returncode == 2
  err = out.stderr.strip().splitlines()
  assert (
      len(err) == 1 and err[0].startswith('error: ') and needle in err[0]
  ), out.stderr


def test_model_normalize_switch(tiny_data_dir):
  config = tiny_config(tiny_data_dir, **{'model.name': 'wong_mnist'})
  ds = data.load_dataset(config.data)
  x = jnp.asarray(ds.train_images[:4] / 255.0, jnp.float32)
  on = build.build_model(config, ds)
  config.model.normalize = False
  off = build.build_model(config, ds)
  assert on.mean == ds.mean and off.mean is None and off.std is None
  v = on.init(jax.random.key(0), x)
  # Same weights, different first op: different logits.
  assert not np.allclose(on.apply(v, x), off.apply(v, x))


def test_steps_per_call_auto(tiny_data_dir):
  config = tiny_config(tiny_data_dir, steps_per_call=0)
  assert steps.steps_per_call(config, 'cpu') == 1
  assert steps.steps_per_call(config, 'gpu') == 10
  assert steps.steps_per_call(config, 'tpu') == 10
  config.steps_per_call = 3
  assert steps.steps_per_call(config, 'cpu') == 3


def test_evaluation_runs_in_eval_dtype(tiny_data_dir):
  # A bf16-trained model is evaluated on its float32 weights in float32 by
  # default (eval.dtype); '' keeps the training dtype.
  config = tiny_config(
      tiny_data_dir, **{'model.name': 'cnn5', 'dtype': 'bfloat16'}
  )
  assert config.eval.dtype == 'float32'
  ds = build.load_data(config)
  state = build.setup(config, ds, parallel.make_mesh()).state
  x = data.to_float(ds.test_images[:16])
  logits = lambda st: np.asarray(st.apply_fn(st.variables(), x, train=False))
  f32 = build.build_model(config, ds, dtype='float32')
  want = np.asarray(f32.apply(state.variables(), x, train=False))
  evaluated = build.for_eval(config, ds, state)
  np.testing.assert_allclose(logits(evaluated), want, rtol=1e-6, atol=1e-6)
  assert np.abs(logits(state) - want).max() > 1e-4  # bf16 differs
  assert build.eval_dtype(config) == 'float32'
  config.eval.dtype = ''
  assert build.for_eval(config, ds, state) is state
  assert build.eval_dtype(config) == 'bfloat16'


def _monitored(tiny_data_dir, **overrides):
  """wong_mnist, 2 steps per epoch, FGSM monitor on 64 training images."""
  return tiny_config(
      tiny_data_dir,
      **{
          'model.name': 'wong_mnist',
          'data.num_train_examples': 128,
          'num_epochs': 5,
          'monitor.attack': 'fgsm(eps=0.1)',
          'monitor.num_examples': 64,
          'monitor.max_drop': 0.2,
          **overrides,
      },
  )


def _script_monitor(monkeypatch, accuracies, on_call=None):
  """The monitor reads `accuracies` epoch by epoch; returns the states seen."""
  seen = []

  def scripted(self, state):
    del self
    seen.append(jax.tree_util.tree_map(np.asarray, state.params))
    if on_call:
      on_call(len(seen))
    return accuracies[len(seen) - 1]

  monkeypatch.setattr(monitor_lib.OverfitMonitor, 'robust_accuracy', scripted)
  return seen


def _params(workdir, config, sub='checkpoints'):
  _, _, s = _setup(config)
  ck = ckpt_lib.Checkpointer(os.path.join(workdir, sub))
  state, meta = ck.restore(s.state)
  ck.close()
  return state, meta


def test_monitor_early_stops_and_keeps_the_best_state(
    tiny_data_dir, tmp_path, monkeypatch
):
  workdir = str(tmp_path / 'mon')
  config = _monitored(tiny_data_dir)
  seen = _script_monitor(monkeypatch, [0.5, 0.6, 0.3, 0.9, 0.9])
  res = train.train_and_evaluate(config, workdir)
  # 0.3 < 0.6 - 0.2 at epoch 3: stop, keep epoch 2's state.
  assert res['status'].startswith('early-stopped at epoch 3'), res['status']
  assert len(seen) == 3 and res['steps'] == 6
  final, meta = _params(workdir, config)
  assert meta['early_stopped'] is True and int(final.step) == 6
  for a, b in zip(
      jax.tree_util.tree_leaves(final.params),
      jax.tree_util.tree_leaves(seen[1]),
  ):
    np.testing.assert_array_equal(np.asarray(a), b)
  best, best_meta = _params(workdir, config, 'best')
  assert best_meta['robust_accuracy'] == 0.6 and int(best.step) == 4
  # One metrics record per epoch (not one per evaluation).
  epochs = [
      json.loads(l)['epoch']
      for l in open(os.path.join(workdir, 'metrics.jsonl')).read().splitlines()
      if 'monitor_accuracy' in l or 'test_accuracy' in l
  ]
  assert epochs == [1.0, 2.0, 3.0]
  # Rerunning finds the early stop and trains no further.
  again = train.train_and_evaluate(config, workdir)
  assert again['status'].startswith('early-stopped (in an earlier run')
  assert again['steps'] == 6 and len(seen) == 3
  assert again['epochs_done'] == 3.0  # not the 5 planned


def test_interrupt_during_the_monitor_keeps_its_early_stop(
    tiny_data_dir, tmp_path, monkeypatch
):
  workdir = str(tmp_path / 'mon')
  config = _monitored(tiny_data_dir)

  def sigterm_at_epoch_3(n):
    if n == 3:
      os.kill(os.getpid(), signal.SIGTERM)

  _script_monitor(monkeypatch, [0.5, 0.6, 0.3], sigterm_at_epoch_3)
  res = train.train_and_evaluate(config, workdir)
  assert res['status'].startswith('interrupted'), res['status']
  _, meta = _params(workdir, config)
  assert meta['early_stopped'] is True
  again = train.train_and_evaluate(config, workdir)
  assert again['status'].startswith('early-stopped (in an earlier run')
  assert again['steps'] == 6


def test_monitor_never_keeps_a_nonfinite_state(tiny_data_dir, tmp_path):
  workdir = str(tmp_path / 'nan')
  # Without the metrics check the state reaches the epoch's end as NaN.
  config = _monitored(
      tiny_data_dir, **{'optim.lr': 1e30, 'halt_on_nonfinite': False}
  )
  with pytest.raises(
      train.NonFiniteError,
      match='NaN/Inf by step 2; not ' 'saved. No checkpoint had been saved yet',
  ):
    train.train_and_evaluate(config, workdir)
  best = ckpt_lib.Checkpointer(os.path.join(workdir, 'best'))
  assert best.latest_step() is None
  best.close()
  # Called directly, the monitor refuses the state too.
  ds, mesh, s = _setup(config)
  monitor = monitor_lib.OverfitMonitor(
      config, ds, mesh, s.specs, str(tmp_path / 'direct')
  )
  nan_state = s.state.with_net(
      'main',
      s.state.main.replace(
          params=jax.tree_util.tree_map(lambda p: p * jnp.nan, s.state.params)
      ),
  )
  with pytest.raises(train.NonFiniteError, match='monitor did not keep'):
    monitor.update(nan_state, 1)
  assert monitor.ckpt.latest_step() is None


def test_monitor_resaves_a_step_it_already_holds(
    tiny_data_dir, tmp_path, monkeypatch
):
  # A run killed without saving redoes an epoch whose state is in best/.
  config = _monitored(tiny_data_dir)
  ds, mesh, s = _setup(config)
  monitor = monitor_lib.OverfitMonitor(config, ds, mesh, s.specs, str(tmp_path))
  _script_monitor(monkeypatch, [0.5, 0.7])
  monitor.update(s.state, 1)
  monitor.best = -1.0  # as a fresh process after the kill would not know it
  assert monitor.update(s.state, 1) == (0.7, False)
  assert monitor.ckpt.read_meta()['robust_accuracy'] == 0.7


def test_ctrl_c_outside_the_training_loop_is_one_line(monkeypatch, capsys):
  # The signal handlers cover the training loop only; a Ctrl-C during the
  # final evaluation must still end with a message, not a traceback.
  from jaxadv import cli  # pylint: disable=g-import-not-at-top

  def interrupted(config, workdir):
    raise KeyboardInterrupt

  monkeypatch.setattr(train, 'train_and_evaluate', interrupted)
  assert cli.run(None, '/nonexistent', 'train') == cli.EXIT_INTERRUPTED == 130
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'rerun the same command' in err[0]


def test_checkpoint_round_trips_the_whole_state(tiny_data_dir, tmp_path):
  # Params, statistics, optimizer moments, step, rng and Free's perturbation
  # all come back (not the template's values).
  config = tiny_config(
      tiny_data_dir,
      **{
          'model.name': 'cnn5',
          'method.name': 'free',
          'method.eps': 0.1,
          'method.replays': 2,
      },
  )
  ds, mesh, s = _setup(config)
  fn = steps.make_train_fn(s, mesh, 'none')
  g = parallel.put_local_batch(
      {
          'image': ds.train_images[None, :64],
          'label': ds.train_labels[None, :64],
      },
      mesh,
      jax.sharding.PartitionSpec(None, 'data'),
  )
  state, _ = fn(s.state, g)
  ck = ckpt_lib.Checkpointer(str(tmp_path / 'ck'))
  ck.save(int(state.step), state, {'note': 'x'})
  ck.wait()
  template = _setup(config)[2].state
  restored, meta = ck.restore(template)
  ck.close()
  assert meta == {'note': 'x'} and int(restored.step) == 2
  fields = lambda st: (
      st.params,
      st.batch_stats,
      st.opt_state,
      st.rng,
      st.method_state,
  )
  moved = 0
  for a, b, t in zip(
      jax.tree_util.tree_leaves(fields(restored)),
      jax.tree_util.tree_leaves(fields(state)),
      jax.tree_util.tree_leaves(fields(template)),
  ):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    moved += not np.array_equal(np.asarray(b), np.asarray(t))
  assert moved > 10  # the step changed most leaves: the test can fail
