"""Simulated staleness (method 'stale', Bhat et al. 2018 Section 5): exact
staleness accounting with a fake attack that writes a digest of the crafting
parameters into its examples, s = 0 equals pgd, kill and resume is
bit-identical (the queue is in the checkpoint), one-line config errors.
The 8-device case is in tests/multidevice_check.py (test_parallel.py)."""

import json
import os
import signal

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from conftest import tiny_config
from jaxadv import build
from jaxadv import checkpoint as ckpt_lib
from jaxadv import data
from jaxadv import parallel
from jaxadv import steps
from jaxadv import train
from jaxadv import train_state as ts
from jaxadv import validation
from jaxadv.errors import ConfigError
from jaxadv.methods import common
from jaxadv.methods import stale

B = 16


def _config(data_dir, **method):
  c = tiny_config(
      data_dir,
      **{'model.name': 'cnn5', 'batch_size': B, 'eval_batch_size': 40},
  )
  c.method = ml_collections.ConfigDict(
      {
          **dict(name='stale', eps=0.2, steps=2, staleness=1, fresh_every=1),
          **method,
      }
  )
  return c


def digest(params):
  """A number in [0, 1) that changes whenever the parameters do: the
  fractional part of their sum."""
  total = sum(jnp.sum(p) for p in jax.tree_util.tree_leaves(params))
  return jnp.mod(total, 1.0)


def shifted(x, params):
  """The fake attack's example: x shifted by the parameters' digest - 0.5."""
  return jnp.clip(x + digest(params) - 0.5, 0.0, 1.0)


def fake_attack(ctx):
  """Writes the digest of the crafting parameters into every pixel."""
  del ctx
  return lambda state, x, y, rng: shifted(x, state.params)


def _batches(ds, n):
  return [
      (
          ds.train_images[i * B : (i + 1) * B],
          ds.train_labels[i * B : (i + 1) * B],
      )
      for i in range(n)
  ]


def _run(built, mesh, batches):
  """Steps the trainer's step function over `batches`; returns host copies
  of the state before each step and after the last, and the metrics of each
  step (the step function donates its input state)."""
  fn = steps.make_train_fn(built, mesh, 'none')
  state, states, metrics = built.state, [], []
  for img, lbl in batches:
    states.append(jax.device_get(state))
    g = parallel.put_local_batch(
        {'image': img[None], 'label': lbl[None]}, mesh, P(None, 'data')
    )
    state, m = fn(state, g)
    metrics.append(parallel.fetch(m))
  return states + [jax.device_get(state)], metrics


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


@pytest.mark.parametrize('s', [1, 3])
def test_batch_trained_at_step_t_was_crafted_at_step_t_minus_s(
    tiny_data_dir, monkeypatch, s
):
  monkeypatch.setattr(stale, 'make_adversarial_examples', fake_attack)
  config = _config(tiny_data_dir, staleness=s)
  config.sync_bn = False  # the replay below runs outside the mesh
  validation.validate_config(config, num_devices=1, num_processes=1)
  ds, mesh = build.load_data(config), parallel.make_mesh()
  built = build.setup(config, ds, mesh)
  n = 2 * s + 3
  batches = _batches(ds, n)
  states, metrics = _run(built, mesh, batches)
  digests = [float(digest(st.params)) for st in states]
  assert len(set(digests[s:])) == n + 1 - s  # every update changes it

  # The queue: after step t, slot t % s holds step t's batch, crafted with
  # the parameters of step t, with its labels and clean images.
  crafted = []
  for t in range(n):
    q = jax.tree_util.tree_map(
        lambda a: np.asarray(a)[:, t % s],
        states[t + 1].method_state['per_example']['queue'],
    )
    crafted.append(q['x_adv'])
    assert np.all(q['crafted_at'] == t)
    np.testing.assert_allclose(
        q['x_adv'],
        np.clip(batches[t][0] / 255.0 + digests[t] - 0.5, 0, 1),
        atol=1e-5,
        err_msg=t,
    )
    np.testing.assert_array_equal(q['label'], batches[t][1])
    np.testing.assert_allclose(q['x'], batches[t][0] / 255.0, atol=1e-6)

  # Training: no update while the queue fills; then step t trains on the
  # batch of step t - s, so an independent replay of that rule (pure
  # train_on outside the trainer, on the batches crafted above) reproduces
  # the parameters, and a replay with staleness s - 1 does not.
  def replay(lag):
    ref = states[0]
    train_on = jax.jit(lambda st, x, y: stale.train_on(st, x, y, None)[0])
    out = []
    for t in range(n):
      if t >= s:
        src = t - lag
        ref = train_on(ref, crafted[src], batches[src][1])
      out.append(ref)
    return out

  ok, off_by_one = replay(s), replay(s - 1)
  for t in range(n):
    diff = max(
        np.abs(a - b).max()
        for a, b in zip(_leaves(states[t + 1].params), _leaves(ok[t].params))
    )
    assert diff < 1e-5, (t, diff)
    if t < s:
      assert digests[t + 1] == digests[0]  # filling: parameters unchanged
  wrong = max(
      np.abs(a - b).max()
      for a, b in zip(_leaves(states[n].params), _leaves(off_by_one[-1].params))
  )
  assert wrong > 1e-3, wrong  # the test tells s from s - 1
  assert int(states[n].step) == n

  _check_metrics(metrics, states, batches, crafted, s)


def _check_metrics(metrics, states, batches, crafted, s):
  """Nothing counted while filling; afterwards the stale accuracy is the
  current parameters' on the batch crafted s steps earlier, the fresh one
  theirs on a fresh attack of that batch's clean images and labels."""
  for t, m in enumerate(metrics):
    trained = t >= s
    assert float(m['loss'][1]) == (B if trained else 0)
    assert float(m['staleness'][0]) == (s * B if trained else 0)
    assert float(m['fresh_adv_accuracy'][1]) == (B if trained else 0)
    if not trained:
      continue
    st, (img, lbl) = states[t], batches[t - s]
    for name, x in (
        ('adv_accuracy', crafted[t - s]),
        ('fresh_adv_accuracy', shifted(img / 255.0, st.params)),
    ):
      logits, _ = common.forward(st, st.params, x, train=True, adv=True)
      correct = int(np.sum(np.argmax(logits, -1) == lbl))
      assert float(m[name][0]) == correct, (t, name)


def test_staleness_zero_is_pgd_step_for_step(tiny_data_dir):
  common = dict(eps=0.2, steps=2, random_start=True)
  finals = {}
  for name in ('pgd', 'stale'):
    c = _config(tiny_data_dir)
    c.method = ml_collections.ConfigDict(dict(name=name, **common))
    if name == 'stale':
      c.method.staleness = 0
    validation.validate_config(c, num_devices=1, num_processes=1)
    ds, mesh = build.load_data(c), parallel.make_mesh()
    built = build.setup(c, ds, mesh)
    states, metrics = _run(built, mesh, _batches(ds, 4))
    finals[name] = (states[-1], metrics)
  (a, ma), (b, mb) = finals['pgd'], finals['stale']
  assert int(a.step) == int(b.step) == 4
  # Bit-identical: the same attack with the same key, then the same loss
  # and update (pgd's (1 - 0.0) * CE multiplies by exactly 1).
  for x, y in zip(
      _leaves((a.params, a.opt_state)), _leaves((b.params, b.opt_state))
  ):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(
      _leaves(a.params)[0],
      _leaves(build.setup(c, ds, mesh).state.params)[0],
  )
  for m1, m2 in zip(ma, mb):
    np.testing.assert_array_equal(m1['loss'], m2['loss'])
    np.testing.assert_array_equal(m1['adv_accuracy'], m2['fresh_adv_accuracy'])


def _chunks_then_sigterm(real, at):
  calls = {'n': 0}

  def chunks(*args, **kwargs):
    for chunk in real(*args, **kwargs):
      calls['n'] += 1
      if calls['n'] == at:
        os.kill(os.getpid(), signal.SIGTERM)
      yield chunk

  return chunks


def test_kill_and_resume_is_bit_identical_with_the_queue_saved(
    tiny_data_dir, tmp_path, monkeypatch
):
  c = _config(tiny_data_dir, staleness=3, steps=1, fresh_every=2)
  c.num_epochs = 1
  c.batch_size = 32
  c.data.num_train_examples = 256  # 8 steps
  full = train.train_and_evaluate(c, str(tmp_path / 'full'))
  assert full['status'] == 'completed' and full['steps'] == 8
  real = data.train_chunks
  monkeypatch.setattr(data, 'train_chunks', _chunks_then_sigterm(real, 5))
  part = train.train_and_evaluate(c, str(tmp_path / 'resumed'))
  assert part['status'].startswith('interrupted')
  assert 3 < part['steps'] < 8  # the queue was full when it stopped
  monkeypatch.setattr(data, 'train_chunks', real)
  assert train.train_and_evaluate(c, str(tmp_path / 'resumed'))['steps'] == 8

  template = build.setup(c, build.load_data(c), parallel.make_mesh()).state
  a, b = (
      ts.saved_tree(
          ckpt_lib.Checkpointer(str(tmp_path / d / 'checkpoints')).restore(
              template
          )[0]
      )
      for d in ('full', 'resumed')
  )
  assert np.asarray(a['method_state']['per_example']['queue']['x']).shape == (
      32,
      3,
      28,
      28,
      1,
  )
  flat_a = jax.tree_util.tree_leaves_with_path(a)
  flat_b = jax.tree_util.tree_leaves(b)
  assert len(flat_a) == len(flat_b)
  for (path, x), y in zip(flat_a, flat_b):
    np.testing.assert_array_equal(
        np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path)
    )
  with open(tmp_path / 'full' / 'metrics.jsonl') as f:
    logged = [json.loads(l) for l in f if '"adv_accuracy"' in l]
  assert [r['staleness'] for r in logged if r['step'] > 3] == [3.0] * 3
  assert 'fresh_adv_accuracy' in logged[-1]


@pytest.mark.parametrize(
    'method, needle',
    [
        (dict(staleness=-1), 'config.method.staleness=-1 must be an integer'),
        (dict(staleness=2.5), 'config.method.staleness=2.5 must be'),
        (dict(staleness=None), 'config.method.staleness=None must be'),
        (dict(fresh_every=-3), 'config.method.fresh_every=-3 must be'),
        (dict(clean_weight=0.5), 'valid: attack_bn, eps, fresh_every, norm'),
        (dict(eps=3.0), 'config.method.eps=3.0 must be <= 1'),
        (dict(staleness=64), 'config.method.staleness=64 leaves nothing'),
    ],
)
def test_config_errors_are_one_line(tiny_data_dir, method, needle):
  c = _config(tiny_data_dir, **method)
  c.num_epochs = 1
  with pytest.raises(ConfigError) as e:
    validation.validate_config(c, num_devices=1, num_processes=1)
    ds = build.load_data(c)
    build.setup(c, ds, parallel.make_mesh())
  assert needle in str(e.value) and '\n' not in str(e.value), str(e.value)
