"""AutoAttack coverage (issue 23): the component lists of versions standard / plus / rand and
of the L1 version against fra31/auto-attack's set_version, APGD-L1 (the exact L1-ball-and-box
projection, the sparse step, the ball and box of its points), FAB's L1 projection, and EOT
averaging over draws of a randomized model."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadv import attacks as A
from jaxadv.attacks import apgd_l1, autoattack

# The package exports the function fab under the name of its module.
fab_lib = importlib.import_module('jaxadv.attacks.fab')


def key(seed):
  return jax.random.key(seed, impl='rbg')


# ------------------------------------------------------------------------------------------
# Versions, as fra31/auto-attack's autoattack.py set_version (and the constructor's objects).


def _components(text):
  return [
      (c.name, str(c.spec))
      for c in A.specs.autoattack_spec_components(A.parse_attack(text))
  ]


def test_version_components_equal_the_references():
  assert _components('autoattack(eps=8/255, version=plus)') == [
      ('apgd-ce', 'apgd_ce(norm=linf, eps=8/255, steps=100, restarts=5)'),
      ('apgd-dlr', 'apgd_dlr(norm=linf, eps=8/255, steps=100, restarts=5)'),
      ('fab', 'fab(norm=linf, eps=8/255, steps=100, restarts=5)'),
      (
          'square',
          'square(norm=linf, eps=8/255, queries=5000, restarts=1, p_init=0.8, '
          'rescale_schedule=false)',
      ),
      (
          'apgd-t',
          'apgd_t(norm=linf, eps=8/255, steps=100, restarts=1, '
          'num_target_classes=9)',
      ),
      (
          'fab-t',
          'fab_t(norm=linf, eps=8/255, steps=100, restarts=1, '
          'num_target_classes=9)',
      ),
  ]
  assert _components('autoattack(norm=l2, eps=1/2, version=rand)') == [
      (
          'apgd-ce',
          'apgd_ce(norm=l2, eps=1/2, steps=100, restarts=1, eot_iter=20)',
      ),
      (
          'apgd-dlr',
          'apgd_dlr(norm=l2, eps=1/2, steps=100, restarts=1, eot_iter=20)',
      ),
  ]
  # L1 standard: the reference's APGD settings (5 restarts; APGD-T 5 targets; both with
  # use_largereps) and FAB-T; its L1 Square is not available here (documented).
  assert _components('autoattack(norm=l1, eps=12)') == [
      (
          'apgd-ce',
          'apgd_ce(norm=l1, eps=12, steps=100, restarts=5, largereps=true)',
      ),
      (
          'apgd-t',
          'apgd_t(norm=l1, eps=12, steps=100, restarts=1, num_target_classes=5, '
          'largereps=true)',
      ),
      (
          'fab-t',
          'fab_t(norm=l1, eps=12, steps=100, restarts=1, num_target_classes=9)',
      ),
  ]
  for text in (
      'autoattack(eps=8/255, version=plus)',
      'autoattack(norm=l1, eps=12, version=rand)',
  ):
    spec = A.parse_attack(text)
    assert A.parse_attack(str(spec)) == spec
    for _, comp in _components(text):
      assert str(A.parse_attack(comp)) == comp
  with pytest.raises(
      ValueError, match='version must be one of standard, plus, rand'
  ):
    A.parse_attack('autoattack(eps=0.1, version=fast)')
  with pytest.raises(ValueError, match='not available for norm=l1'):
    A.parse_attack('autoattack(eps=12, norm=l1, version=plus)')
  with pytest.raises(ValueError, match='norm=l1 is supported by'):
    A.parse_attack('pgd(eps=12, norm=l1)')
  with pytest.raises(ValueError, match='eot_iter must be a positive integer'):
    A.parse_attack('apgd_ce(eps=0.1, eot_iter=0)')


def test_largereps_schedule_is_the_references():
  # iters = [ceil(.3 N), ceil(.3 N), N - sum], as the reference's decr_eps_pgd schedule.
  assert apgd_l1.largereps_schedule(100) == ((3.0, 30), (2.0, 30), (1.0, 40))
  assert apgd_l1.largereps_schedule(7) == ((3.0, 3), (2.0, 3), (1.0, 1))
  assert apgd_l1.largereps_schedule(10) == ((3.0, 3), (2.0, 3), (1.0, 4))
  with pytest.raises(ValueError, match='steps >= 3'):
    apgd_l1.largereps_schedule(2)


# ------------------------------------------------------------------------------------------
# L1.


def _l1_projection_brute(t, v, eps):
  """argmin |d - v|_2 over |d|_1 <= eps, t + d in [0, 1], by bisection on the multiplier."""
  room = np.where(v >= 0, 1 - t, t)
  h = lambda lam: np.clip(np.abs(v) - lam, 0, room).sum()
  lam = 0.0
  if h(0.0) > eps:
    lo, hi = 0.0, np.abs(v).max()
    for _ in range(200):
      lo, hi = (
          ((lo + hi) / 2, hi) if h((lo + hi) / 2) > eps else (lo, (lo + hi) / 2)
      )
    lam = hi
  return np.sign(v) * np.clip(np.abs(v) - lam, 0, room)


def test_l1_ball_box_projection_is_exact():
  rng = np.random.default_rng(0)
  t = rng.uniform(0, 1, (64, 20))
  t = np.where(rng.uniform(size=t.shape) < 0.2, np.round(t), t)
  v = rng.normal(size=t.shape) * rng.choice([0.05, 0.5, 3.0], (64, 1))
  eps = rng.choice([0.0, 0.3, 2.0, 50.0], 64)
  d = np.stack(
      [
          np.asarray(
              A.l1_ball_box_delta(
                  jnp.asarray(t[i : i + 1], jnp.float32),
                  jnp.asarray(v[i : i + 1], jnp.float32),
                  eps[i],
              )
          )[0]
          for i in range(64)
      ]
  )
  want = np.stack([_l1_projection_brute(t[i], v[i], eps[i]) for i in range(64)])
  np.testing.assert_allclose(d, want, atol=2e-5)
  assert (np.abs(d).sum(1) <= eps * (1 + 1e-5) + 1e-6).all()
  assert (t + d >= -1e-6).all() and (t + d <= 1 + 1e-6).all()


def test_fab_l1_projection_is_minimal():
  """The greedy L1 step equals the LP optimum min |d|_1, <w, t + d> = c, t + d in [0, 1]."""
  scipy_opt = pytest.importorskip('scipy.optimize')
  rng = np.random.default_rng(1)
  m, n = 60, 8
  t = rng.uniform(0, 1, (m, n))
  w = np.where(rng.uniform(size=(m, n)) < 0.2, 0.0, rng.normal(size=(m, n)))
  c = np.sum(w * t, 1) + rng.normal(size=m) * rng.choice([0.05, 0.5, 5.0], m)
  d = np.asarray(
      fab_lib.hyperplane_box_projection_l1(
          *(jnp.asarray(a, jnp.float32) for a in (t, w, c))
      )
  )
  for i in range(m):
    # d = p - q with p, q >= 0: minimise sum(p + q).
    lp = scipy_opt.linprog(
        np.ones(2 * n),
        A_eq=np.concatenate([w[i], -w[i]])[None],
        b_eq=[c[i] - w[i] @ t[i]],
        bounds=[(0, 1 - t[i, j]) for j in range(n)]
        + [(0, t[i, j]) for j in range(n)],
    )
    if lp.status == 0:  # reachable: same L1 length and on the hyperplane
      assert abs(np.abs(d[i]).sum() - lp.fun) < 1e-4
      assert abs(w[i] @ (t[i] + d[i]) - c[i]) < 1e-3
    else:  # unreachable: every coordinate with w != 0 at the face that lowers the gap
      assert np.all(
          (t[i] + d[i] < 1e-6) | (t[i] + d[i] > 1 - 1e-6) | (w[i] == 0)
      )
  assert (t + d >= -1e-6).all() and (t + d <= 1 + 1e-6).all()


def _linear(seed=0, dim=30, classes=5):
  w = jax.random.normal(jax.random.key(seed), (dim, classes))
  return lambda x: x.reshape(x.shape[0], -1) @ w


def test_sparse_step_moves_the_top_coordinates():
  g = jnp.asarray([[0.1, -3.0, 0.5, 2.0, 0.0, -0.2, 1.0, 0.3, 0.0, 0.05]])
  step = np.asarray(apgd_l1._sparse_step(g, jnp.asarray([0.3])))
  # topk 0.3 of 10 coordinates: |g| >= the value at sorted index 7, i.e. the 3 largest.
  np.testing.assert_allclose(
      step[0], [0, -1 / 3, 0, 1 / 3, 0, 0, 1 / 3, 0, 0, 0]
  )


@pytest.mark.parametrize('largereps', [False, True])
def test_apgd_l1_stays_in_ball_and_box_and_attacks(largereps):
  fn = _linear()
  rng = np.random.default_rng(2)
  x = rng.uniform(0, 1, (16, 30)).astype(np.float32)
  x = jnp.asarray(np.where(rng.uniform(size=x.shape) < 0.3, np.round(x), x))
  y = jnp.argmax(fn(x), -1)  # all correct at x
  eps = 1.5
  attack = jax.jit(
      lambda k, x, y: A.apgd_ce(
          fn,
          k,
          x,
          y,
          eps=eps,
          norm='l1',
          steps=12,
          largereps=largereps,
          restarts=2,
      )
  )
  x_adv = np.asarray(attack(key(0), x, y), np.float64)
  x64 = np.asarray(x, np.float64)
  assert x_adv.min() >= 0 and x_adv.max() <= 1
  assert np.abs(x_adv - x64).sum(1).max() <= eps * (1 + 1e-5)
  # It attacks: the CE loss rises and some examples are misclassified.
  ce = lambda v: np.asarray(A.cross_entropy(fn(jnp.asarray(v, jnp.float32)), y))
  assert ce(x_adv).mean() > ce(x64).mean()
  assert (
      np.mean(
          np.argmax(np.asarray(fn(jnp.asarray(x_adv, jnp.float32))), -1)
          != np.asarray(y)
      )
      > 0
  )


# ------------------------------------------------------------------------------------------
# EOT.


def _noisy_linear(dim=12, classes=4):
  """z = x W + s * (x V), s = +-1 per draw, V twice W's scale: one draw's gradient is
  dominated by +-V, the mean of 20 by W."""
  kw, kv = jax.random.split(jax.random.key(5))
  w = jax.random.normal(kw, (dim, classes))
  v = 10.0 * jax.random.normal(kv, (dim, classes))

  def fn(x, rng):
    s = jax.random.rademacher(rng, (), jnp.float32)
    return x @ w + s * (x @ v)

  return fn, w


def test_eot_gradient_is_the_mean_of_the_draws():
  fn, _ = _noisy_linear()
  model = A.Randomized(fn, key(0))
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(3, 12)), jnp.float32)
  y = jnp.asarray([0, 1, 2])
  objective = lambda z: A.cross_entropy(z, y)
  k = key(7)
  f, logits, g = A.eot_loss_and_grad(model, objective, 8)(x, k)
  draws = [
      jax.grad(lambda v: jnp.sum(objective(fn(v, kk))))(x)
      for kk in jax.random.split(k, 8)
  ]
  np.testing.assert_allclose(g, np.mean(draws, axis=0), rtol=1e-5, atol=1e-6)
  # Several distinct draws went in (not one draw repeated).
  assert len({np.asarray(d).tobytes() for d in draws}) > 1
  assert not any(np.allclose(g, d) for d in draws)
  np.testing.assert_allclose(
      logits, fn(x, jax.random.split(k, 8)[-1]), rtol=1e-6
  )
  # A deterministic logits_fn has one gradient, computed once.
  det = lambda v: v @ jnp.ones((12, 4))
  f1, _, g1 = A.eot_loss_and_grad(det, objective, 20)(x, k)
  np.testing.assert_array_equal(
      g1, A.projections.loss_and_grad(det, objective, x)[2]
  )


def test_eot_helps_against_a_randomized_model():
  """On the noisy model, APGD-CE with EOT 20 raises the expected loss (of x W) more than
  APGD without EOT, whose steps follow single noisy draws."""
  fn, w = _noisy_linear()
  model = A.Randomized(fn, key(1))
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.uniform(0.3, 0.7, (32, 12)), jnp.float32)
  y = jnp.argmax(x @ w, -1)
  expected_ce = lambda v: float(jnp.mean(A.cross_entropy(v @ w, y)))
  runs = {
      n: A.apgd_ce(model, key(2), x, y, eps=0.05, steps=20, eot_iter=n)
      for n in (1, 20)
  }
  assert expected_ce(runs[20]) > expected_ce(runs[1])
  assert expected_ce(runs[20]) > expected_ce(x)


def test_fab_t_l1_finds_points_in_the_l1_ball():
  """FAB-T in L1 on a linear model: its points are in the box, within eps in L1, and
  misclassified wherever they moved; with a large eps every example is broken.
  """
  fn = _linear()
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.uniform(0.2, 0.8, (12, 30)), jnp.float32)
  y = jnp.argmax(fn(x), -1)
  for eps in (0.3, 30.0):
    x_adv = np.asarray(
        A.fab_t(fn, key(0), x, y, eps=eps, norm='l1', steps=20), np.float64
    )
    x64 = np.asarray(x, np.float64)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    dist = np.abs(x_adv - x64).sum(1)
    assert dist.max() <= eps * (1 + 1e-5)
    wrong = np.argmax(
        np.asarray(fn(jnp.asarray(x_adv, jnp.float32))), -1
    ) != np.asarray(y)
    assert np.all(wrong[dist > 0])
    if eps > 1:
      assert wrong.all()
