"""Composable attacks: losses as callables, the generic `iterative` attack (init, step rule,
projection, loss) with an optax step, and the PGD presets built on it."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxadv import attacks as A


def key(seed):
  return jax.random.key(seed, impl='rbg')


def linear_logits_fn(seed=0, dim=12, classes=4):
  w = jax.random.normal(jax.random.key(seed), (dim, classes))
  return lambda x: x.reshape(x.shape[0], -1) @ w, w


def batch(seed=0, b=6, dim=12, classes=4):
  rng = np.random.default_rng(seed)
  x = rng.uniform(0.2, 0.8, (b, dim)).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(rng.integers(0, classes, b), jnp.int32)


def test_callable_loss_equals_the_named_loss():
  """A callable computing the CE loss gives the same PGD result as loss='ce'."""
  fn, _ = linear_logits_fn()
  x, y = batch()
  by_name = A.pgd(fn, key(0), x, y, eps=0.1, steps=5)
  by_callable = A.pgd(fn, key(0), x, y, eps=0.1, steps=5, loss=A.cross_entropy)
  np.testing.assert_array_equal(by_name, by_callable)


def test_custom_callable_loss_is_maximised():
  """A loss no named objective matches (push logit 0 up, whatever the label): PGD and APGD
  raise it to its maximum over the box, the corner sign(w_0)."""
  fn, w = linear_logits_fn()
  x, y = batch()
  loss = lambda logits, labels: logits[:, 0] + 0.0 * labels
  best = np.asarray(
      x + 0.1 * jnp.sign(w[:, 0])
  )  # L-inf optimum (x in [0.2, 0.8])
  for attack in (A.pgd, A.apgd):
    x_adv = attack(fn, key(1), x, y, eps=0.1, steps=20, loss=loss)
    np.testing.assert_allclose(x_adv, best, atol=1e-6)
  start = np.asarray(fn(x)[:, 0])
  assert np.all(np.asarray(fn(jnp.asarray(best))[:, 0]) > start)


def test_callable_loss_gets_the_targets_when_targeted():
  fn, _ = linear_logits_fn()
  x, y = batch()
  target = (y + 1) % 4
  seen = []

  def loss(logits, labels):
    seen.append(labels)
    return -A.cross_entropy(logits, labels)

  A.pgd(fn, key(0), x, y, eps=0.1, steps=2, loss=loss, target=target)
  assert all(np.array_equal(np.asarray(s), np.asarray(target)) for s in seen)


def test_bad_losses_are_named():
  fn, _ = linear_logits_fn()
  x, y = batch()
  with pytest.raises(ValueError, match='valid losses: ce, cw, dlr'):
    A.pgd(fn, key(0), x, y, eps=0.1, loss='hinge')
  with pytest.raises(ValueError, match='one value per example'):
    A.pgd(fn, key(0), x, y, eps=0.1, loss=lambda z, t: z)


def test_optax_step_rule_works():
  """An optax.adam step (given -g, as optax minimises) raises the loss of the custom
  objective, stays in the ball and box, and matches a hand-written Adam loop."""
  fn, w = linear_logits_fn()
  x, y = batch()
  loss = lambda logits, labels: logits[:, 0] + 0.0 * labels
  tx = optax.adam(0.01)
  x_adv = A.iterative(
      fn, None, x, y, eps=0.1, steps=8, step=tx, loss=loss, keep_best=False
  )
  # The same 8 Adam steps by hand, projecting after each.
  xa, state = x, tx.init(x)
  for _ in range(8):
    g = jax.grad(lambda v: jnp.sum(fn(v)[:, 0]))(xa)
    u, state = tx.update(-g, state, xa)
    xa = A.project_linf(xa + u, x, 0.1)
  np.testing.assert_allclose(x_adv, xa, atol=1e-6)
  assert np.abs(np.asarray(x_adv - x)).max() <= 0.1 + 1e-6
  assert np.all(np.asarray(fn(x_adv)[:, 0]) > np.asarray(fn(x)[:, 0]))
  with pytest.raises(ValueError, match='own learning rate'):
    A.iterative(fn, None, x, y, eps=0.1, step=tx, step_size=0.1)


def test_custom_init_and_projection_are_used():
  fn, _ = linear_logits_fn()
  x, y = batch()
  calls = []

  def init(rng, x, eps):
    calls.append('init')
    return x + eps / 2  # a corner of the smaller box below

  def project(x_adv, x, eps):
    calls.append('project')
    return jnp.clip(x_adv, x - eps / 2, x + eps / 2)  # a smaller box

  x_adv = A.iterative(
      fn,
      key(0),
      x,
      y,
      eps=0.1,
      steps=3,
      step_size=0.01,
      init=init,
      project=project,
  )
  assert calls.count('init') == 1 and 'project' in calls
  assert np.abs(np.asarray(x_adv - x)).max() <= 0.05 + 1e-6
  with pytest.raises(ValueError, match='valid: zero, uniform_linf, uniform_l2'):
    A.iterative(fn, key(0), x, y, eps=0.1, init='gaussian', step_size=0.1)
  with pytest.raises(ValueError, match='valid: linf, l2'):
    A.iterative(fn, key(0), x, y, eps=0.1, project='l7', step_size=0.1)


def test_presets_are_the_generic_attack():
  """pgd and fgsm_rs equal `iterative` called with their parts."""
  fn, _ = linear_logits_fn()
  x, y = batch()
  pgd = A.pgd(fn, key(3), x, y, eps=0.5, steps=4, norm='l2', restarts=2)
  generic = A.iterative(
      fn,
      key(3),
      x,
      y,
      eps=0.5,
      steps=4,
      step='l2',
      step_size=2.5 * 0.5 / 4,
      init='uniform_l2',
      project='l2',
      restarts=2,
  )
  np.testing.assert_array_equal(pgd, generic)
  rs = A.fgsm_rs(fn, key(4), x, y, eps=0.1)
  generic = A.iterative(
      fn,
      key(4),
      x,
      y,
      eps=0.1,
      steps=1,
      step_size=0.125,
      init='uniform_linf',
      project='linf',
      keep_best=False,
  )
  np.testing.assert_array_equal(rs, generic)
