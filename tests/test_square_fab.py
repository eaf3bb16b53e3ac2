"""Tests of the attacks beyond gradients: Square (score-based), FAB / FAB-T (minimal
perturbations), the AutoAttack sequence, and the sanity rule that flags gradient masking.
"""

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from jax import lax

from jaxadv import attacks as A
from jaxadv.evaluation import sanity
from jaxadv.attacks import autoattack

# The package exports the functions square and fab under the names of their modules.
square_lib = importlib.import_module('jaxadv.attacks.square')
fab_lib = importlib.import_module('jaxadv.attacks.fab')

PROPERTY_SETTINGS = settings(
    max_examples=8, deadline=None, derandomize=True, database=None
)


def key(seed):
  # XLA:CPU compiles threefry slowly; rbg keys keep the file fast.
  return jax.random.key(seed, impl='rbg')


def conv_logits_fn(seed=0, classes=5, channels=2, size=6):
  """A tiny random conv net: (b, size, size, channels) in [0, 1] -> (b, classes)."""
  k1, k2 = jax.random.split(jax.random.key(seed))
  w_conv = jax.random.normal(k1, (3, 3, channels, 4)) * 0.5
  w_out = jax.random.normal(k2, (size * size * 4, classes)) * 0.3

  def logits_fn(x):
    h = lax.conv_general_dilated(
        x, w_conv, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
    )
    return jax.nn.relu(h).reshape(h.shape[0], -1) @ w_out

  return logits_fn


CONV = conv_logits_fn()
NUM_CLASSES = 5


def random_batch(seed, shape=(4, 6, 6, 2)):
  """x in [0, 1] with some pixels exactly on the box faces, y int (b,)."""
  rng = np.random.default_rng(seed)
  x = rng.uniform(0, 1, shape).astype(np.float32)
  x = np.where(rng.uniform(size=shape) < 0.1, np.round(x), x).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(
      rng.integers(0, NUM_CLASSES, shape[0]), jnp.int32
  )


def accuracy(logits_fn, x, y):
  return float(
      np.mean(np.asarray(jnp.argmax(logits_fn(x), -1)) == np.asarray(y))
  )


# ------------------------------------------------------------------------------------------
# Every new attack stays in the eps ball and in [0, 1]; misclassified points keep x.


def _targets(y):
  return (y + 1 + jnp.arange(y.shape[0]) % (NUM_CLASSES - 1)) % NUM_CLASSES


PROPERTY_ATTACKS = {
    'square_linf': (
        'linf',
        lambda k, x, y, eps: A.square(CONV, k, x, y, eps=eps, queries=25),
    ),
    'square_l2_restarts': (
        'l2',
        lambda k, x, y, eps: A.square(
            CONV, k, x, y, eps=eps, norm='l2', queries=25, restarts=2
        ),
    ),
    'square_linf_targeted': (
        'linf',
        lambda k, x, y, eps: A.square(
            CONV, k, x, y, eps=eps, queries=25, target=_targets(y)
        ),
    ),
    'fab_linf': (
        'linf',
        lambda k, x, y, eps: A.fab(CONV, k, x, y, eps=eps, steps=6),
    ),
    'fab_l2_restarts': (
        'l2',
        lambda k, x, y, eps: A.fab(
            CONV, k, x, y, eps=eps, norm='l2', steps=6, restarts=2
        ),
    ),
    'fab_t_linf': (
        'linf',
        lambda k, x, y, eps: A.fab_t(
            CONV, k, x, y, eps=eps, steps=6, num_target_classes=2
        ),
    ),
    'fab_t_l2': (
        'l2',
        lambda k, x, y, eps: A.fab_t(
            CONV, k, x, y, eps=eps, norm='l2', steps=6, num_target_classes=2
        ),
    ),
}


@functools.cache
def _jitted(name):
  return jax.jit(PROPERTY_ATTACKS[name][1])


@pytest.mark.parametrize('name', sorted(PROPERTY_ATTACKS))
@PROPERTY_SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    eps_fraction=st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 1.0)),
)
def test_attack_stays_in_ball_and_box(name, seed, eps_fraction):
  norm, _ = PROPERTY_ATTACKS[name]
  # L-inf up to 0.3, L2 from 0.1 up to 3 (the box binds for large radii).
  eps = (
      0.3 * eps_fraction
      if norm == 'linf'
      else (eps_fraction and 0.1 + 2.9 * eps_fraction)
  )
  x, y = random_batch(seed)
  x_adv = _jitted(name)(key(seed), x, y, jnp.float32(eps))
  assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
  x_adv64, x64 = np.asarray(x_adv, np.float64), np.asarray(x, np.float64)
  assert x_adv64.min() >= 0.0 and x_adv64.max() <= 1.0
  delta = (x_adv64 - x64).reshape(x.shape[0], -1)
  if norm == 'linf':
    assert np.abs(delta).max() <= eps + 1e-6
  else:
    assert np.linalg.norm(delta, axis=1).max() <= eps * (1 + 1e-5) + 1e-7
  # Examples the model already gets wrong (or, targeted, already gives the target) stay at x.
  pred = np.asarray(jnp.argmax(CONV(x), -1))
  done = (
      pred == np.asarray(_targets(y))
      if name.endswith('targeted')
      else pred != np.asarray(y)
  )
  np.testing.assert_array_equal(x_adv64[done], x64[done])


# ------------------------------------------------------------------------------------------
# Square's schedule of square sizes.


def test_square_schedule_follows_the_paper():
  # 10,000 queries: p halves after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000.
  p = [
      A.square_fraction(it, 10000)
      for it in (0, 10, 11, 50, 51, 8000, 8001, 9999)
  ]
  np.testing.assert_allclose(
      p, [0.8, 0.8, 0.4, 0.4, 0.2, 0.8 / 256, 0.8 / 512, 0.8 / 512]
  )
  # Rescaled for 5,000 queries the halvings come twice as early; AutoAttack does not rescale.
  assert (
      A.square_fraction(6, 5000) == 0.4
      and A.square_fraction(6, 5000, rescale=False) == 0.8
  )
  # CIFAR-10 (32 x 32): s = round(sqrt(p * 1024)); L2 uses odd sizes >= 3.
  sizes = A.square_sizes(5000, 32, 32, 'linf', rescale=False)
  assert sizes[[0, 11, 51, 201, 501, 1001, 2001, 4001]].tolist() == [
      29,
      20,
      14,
      10,
      7,
      5,
      4,
      3,
  ]
  sizes = A.square_sizes(5000, 32, 32, 'l2', rescale=False)
  assert sizes[[0, 11, 51, 201, 501, 1001, 2001, 4001]].tolist() == [
      29,
      21,
      15,
      11,
      7,
      5,
      5,
      3,
  ]
  assert (
      A.square_sizes(100, 4, 6, 'linf').max() <= 4
  )  # never larger than the image


def test_square_l2_bump_is_the_papers_pattern():
  bump = square_lib._bump(5)  # pylint: disable=protected-access
  assert np.isclose(np.sum(bump**2), 1.0)
  assert (bump[:2] > 0).all() and (
      bump[2:] < 0
  ).all()  # + top half, - bottom half
  # Rings around each half's centre: the weight grows towards the centre.
  assert bump[1, 2] == bump[:2].max() and bump[3, 2] == bump[2:].min()
  assert bump[0, 0] < bump[0, 1] < bump[1, 2]


# ------------------------------------------------------------------------------------------
# FAB: exact projections and minimal perturbations on a linear model.


def _brute_force_projection(t, w, c, norm):
  """Minimal-norm step onto {<w, z> = c} within [0, 1] by bisection on the radius."""
  gap = w @ t - c
  w = w * (1.0 if gap >= 0 else -1.0)
  room = np.where(w > 0, t, 1 - t)
  scale = np.abs(w) if norm == 'l2' else np.ones_like(w)
  step = lambda r: -np.sign(w) * np.minimum(r * scale, room)
  if np.abs(w) @ room < abs(gap):  # out of reach: every coordinate to its face
    return -np.sign(w) * room
  lo, hi = 0.0, 1e6
  for _ in range(200):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if -(w @ step(mid)) < abs(gap) else (lo, mid)
  return step(hi)


@pytest.mark.parametrize('norm', ['linf', 'l2'])
def test_hyperplane_box_projection_is_minimal(norm):
  project = jax.jit(
      {
          'linf': fab_lib.hyperplane_box_projection_linf,
          'l2': fab_lib.hyperplane_box_projection_l2,
      }[norm]
  )
  # Reachable and unreachable hyperplanes, active and inactive box, pixels on the faces, zero
  # and tiny weights; problems of 1 to 11 coordinates padded to 12 with w = 0 (where d must be 0).
  rng = np.random.default_rng(0)
  m, n_max = 200, 12
  n = rng.integers(1, n_max, m)
  pad = np.arange(n_max)[None, :] >= n[:, None]
  t = rng.uniform(0, 1, (m, n_max))
  t = np.where(rng.uniform(size=t.shape) < 0.2, np.round(t), t)
  w = np.where(
      pad | (rng.uniform(size=t.shape) < 0.2), 0.0, rng.normal(size=t.shape)
  )
  w = w * np.where(
      rng.uniform(size=t.shape) < 0.2, 1e-4, 1.0
  )  # breakpoints far apart
  c = np.sum(w * t, 1) + rng.normal(size=m) * rng.choice([0.01, 0.3, 3.0], m)
  d = np.asarray(project(*(jnp.asarray(v, jnp.float32) for v in (t, w, c))))
  want = np.stack(
      [_brute_force_projection(t[i], w[i], c[i], norm) for i in range(m)]
  )
  np.testing.assert_allclose(d, want, atol=2e-5)
  assert (d[pad] == 0).all()
  assert (t + d >= -1e-6).all() and (t + d <= 1 + 1e-6).all()


def linear_multiclass(b=8, shape=(4, 4, 2), classes=4, seed=0):
  """z = W x + bias with, per example, z_y - z_t = m (small) and every other class 100 below,
  x near the middle of the box: the minimal perturbation crossing z_t = z_y is
  m / |w_t - w_y|_1 (L-inf) and m / |w_t - w_y|_2 (L2), and the box does not bind.
  """
  rng = np.random.default_rng(seed)
  n = int(np.prod(shape))
  w = rng.normal(size=(classes, n)).astype(np.float32)
  y = rng.integers(0, classes, b)
  t = (y + 1 + rng.integers(0, classes - 1, b)) % classes
  x = (0.5 + rng.uniform(-0.05, 0.05, (b,) + shape)).astype(np.float32)
  margin = rng.uniform(0.2, 1.0, b)
  z = x.reshape(b, -1) @ w.T
  bias = np.full((b, classes), -100.0)
  bias[np.arange(b), y] = margin - z[np.arange(b), y]
  bias[np.arange(b), t] = -z[np.arange(b), t]
  bias = jnp.asarray(bias, jnp.float32)
  logits_fn = (
      lambda xx: xx.reshape(xx.shape[0], -1) @ w.T + bias
  )  # fixed batch order
  dw = w[t] - w[y]
  optimum = {
      'linf': margin / np.abs(dw).sum(1),
      'l2': margin / np.linalg.norm(dw, axis=1),
  }
  return (
      logits_fn,
      jnp.asarray(x),
      jnp.asarray(y, jnp.int32),
      jnp.asarray(t, jnp.int32),
      optimum,
  )


@pytest.mark.parametrize('norm', ['linf', 'l2'])
def test_fab_finds_the_minimal_perturbation_of_a_linear_model(norm):
  logits_fn, x, y, t, optimum = linear_multiclass()
  want = optimum[norm]
  assert want.max() < 0.4  # x +- the optimum stays inside the box
  runs = {
      'targeted': lambda r: A.fab_minimal(
          logits_fn, r, x, y, norm=norm, steps=100, target=t
      ),
      'untargeted': lambda r: A.fab_minimal(
          logits_fn, r, x, y, norm=norm, steps=100
      ),
  }
  for name, run in runs.items():
    x_min, dist = jax.jit(run)(key(0))
    # FAB overshoots the boundary by eta = 1.05 and steps back by beta = 0.9: it ends within
    # about 0.5% above the optimum, never below it (x_min is misclassified).
    np.testing.assert_allclose(np.asarray(dist), want, rtol=1e-2, err_msg=name)
    assert (np.asarray(dist) >= want * (1 - 1e-4)).all(), name
    assert (
        np.asarray(jnp.argmax(logits_fn(x_min), -1)) != np.asarray(y)
    ).all(), name
  # FAB-T (targets: the top other classes, here t first) as an eps-bounded attack breaks
  # exactly the examples whose optimum is within eps, and returns x for the others.
  fab_t = jax.jit(
      lambda r, eps: A.fab_t(logits_fn, r, x, y, eps=eps, norm=norm, steps=100)
  )
  for eps in (0.98 * want.min(), float(np.median(want)), 1.02 * want.max()):
    x_adv = fab_t(key(0), eps)
    broken = np.asarray(jnp.argmax(logits_fn(x_adv), -1)) != np.asarray(y)
    clear = np.abs(want / eps - 1) > 0.015  # away from FAB's 1% tolerance
    np.testing.assert_array_equal(broken[clear], (want <= eps)[clear])
    np.testing.assert_array_equal(
        np.asarray(x_adv)[~broken], np.asarray(x)[~broken]
    )
    delta = np.asarray(x_adv, np.float64).reshape(len(y), -1) - np.asarray(
        x
    ).reshape(len(y), -1)
    size = (
        np.abs(delta).max(1)
        if norm == 'linf'
        else np.linalg.norm(delta, axis=1)
    )
    assert size.max() <= eps * (1 + 1e-5)


# ------------------------------------------------------------------------------------------
# Gradient masking: a quantizing first layer with zero gradient.


def masked_problem(b=32, size=8, classes=4, seed=0):
  """A model that binarises its input (x > 1/2) through stop_gradient, so its input gradient
  is zero everywhere, then classifies the binary image by matching class patterns of +-1.
  Clean pixels sit 0.04 to 0.08 from the threshold, on the side of their class's pattern: the
  model is accurate, and an L-inf eps of 0.1 can flip any pixel."""
  rng = np.random.default_rng(seed)
  patterns = rng.choice([-1.0, 1.0], (classes, size * size)).astype(np.float32)
  y = rng.integers(0, classes, b)
  x = 0.5 + patterns[y].reshape(b, size, size, 1) * rng.uniform(
      0.04, 0.08, (b, size, size, 1)
  )

  def logits_fn(xx):
    binary = lax.stop_gradient((xx > 0.5).astype(jnp.float32))
    return 0.1 * (2 * binary - 1).reshape(xx.shape[0], -1) @ patterns.T

  return logits_fn, jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)


def _record(spec, acc, n, model='m'):
  """An eval record as the evaluation writes it (name, describe(), accuracy, ...)."""
  spec = A.parse_attack(spec) if isinstance(spec, str) else spec
  return {
      'name': str(spec),
      **spec.describe(),
      'model': model,
      'num_examples': n,
      'accuracy': acc,
  }


def test_gradient_masking_is_seen_through_and_flagged():
  logits_fn, x, y = masked_problem()
  n, eps = len(y), 0.1
  assert (
      jax.grad(lambda xx: A.cross_entropy(logits_fn(xx), y).sum())(x).max() == 0
  )
  specs = (
      'clean',
      'pgd(eps=0.1, steps=20, restarts=2)',
      'square(eps=0.1, queries=300)',
      'autoattack(norm=linf, eps=0.1)',
  )
  accs = {}
  for i, text in enumerate(specs):
    spec = A.parse_attack(text)
    x_adv = (
        x
        if spec.name == 'clean'
        else jax.jit(lambda r, s=spec: A.make_attack(s)(logits_fn, r, x, y))(
            key(i)
        )
    )
    assert np.abs(np.asarray(x_adv) - np.asarray(x)).max() <= eps + 1e-6
    assert 0 <= np.asarray(x_adv).min() and np.asarray(x_adv).max() <= 1
    accs[text] = accuracy(logits_fn, x_adv, y)
  assert accs['clean'] == 1.0
  assert (
      accs['pgd(eps=0.1, steps=20, restarts=2)'] >= 0.9
  )  # the gradient sees nothing
  assert accs['square(eps=0.1, queries=300)'] <= 0.1  # the queries do
  assert (
      accs['autoattack(norm=linf, eps=0.1)'] <= 0.1
  )  # Square inside AutoAttack
  records = [_record(text, acc, n) for text, acc in accs.items()]
  flags = [
      w
      for w in sanity.sanity_flags(records)
      if 'gradient masking suspected' in w
  ]
  assert len(flags) == 1 and flags[0].startswith('square('), flags


def test_square_is_no_free_lunch_on_an_ordinary_model():
  # A smooth random model: gradients are informative, so Square, with a fraction of the
  # evaluations, must not report a lower accuracy than PGD beyond noise (a few examples);
  # otherwise it counts successes that are not there.
  rng = np.random.default_rng(1)
  w1 = rng.normal(size=(8 * 8 * 2, 64)).astype(np.float32) / 8
  w2 = rng.normal(size=(64, 5)).astype(np.float32)
  logits_fn = lambda xx: jnp.tanh(xx.reshape(xx.shape[0], -1) @ w1) @ w2
  x = jnp.asarray(rng.uniform(0, 1, (64, 8, 8, 2)).astype(np.float32))
  y = jnp.argmax(logits_fn(x), -1)  # clean accuracy 100%
  eps = 0.02
  x_pgd = jax.jit(
      lambda r: A.pgd(
          logits_fn, r, x, y, eps=eps, steps=20, restarts=2, loss='cw'
      )
  )(key(1))
  x_sq = jax.jit(lambda r: A.square(logits_fn, r, x, y, eps=eps, queries=500))(
      key(2)
  )
  acc_pgd, acc_sq = accuracy(logits_fn, x_pgd, y), accuracy(logits_fn, x_sq, y)
  assert acc_sq <= 0.8, acc_sq  # Square does break points here
  assert acc_sq >= acc_pgd - 2 / len(y), (acc_sq, acc_pgd)
  # Every Square success is a real misclassification of a point in the ball and the box,
  # checked in float64 outside the attack's compiled program.
  x64, sq64 = np.asarray(x, np.float64), np.asarray(x_sq, np.float64)
  broken = (np.tanh(sq64.reshape(len(y), -1) @ w1) @ w2).argmax(
      -1
  ) != np.asarray(y)
  np.testing.assert_array_equal(
      broken, np.asarray(jnp.argmax(logits_fn(x_sq), -1) != y)
  )
  assert (
      np.abs(sq64 - x64).max() <= eps + 1e-6
      and 0 <= sq64.min()
      and sq64.max() <= 1
  )


# ------------------------------------------------------------------------------------------
# The sanity rule, on records built by hand.


PGD = 'pgd(eps=8/255, steps=50, restarts=10)'


@pytest.mark.parametrize(
    'attack', ['square(eps=8/255)', 'fab(eps=8/255)', 'fab_t(eps=8/255)']
)
def test_masking_flag_fires_beyond_two_points(attack):
  base = [
      _record('clean', 0.90, 1000),
      _record('fgsm(eps=8/255)', 0.60, 1000),
      _record(PGD, 0.50, 1000),
      _record('apgd_ce(eps=8/255)', 0.48, 1000),
  ]

  def flags(*records):
    return [
        w
        for w in sanity.sanity_flags(list(records))
        if 'gradient masking suspected' in w
    ]

  assert flags(*base) == []
  assert (
      flags(*base, _record(attack, 0.47, 1000)) == []
  )  # within 2 points of the best
  assert flags(*base, _record(attack, 0.461, 1000)) == []
  (warning,) = flags(*base, _record(attack, 0.45, 1000))
  assert attack in warning and 'apgd_ce' in warning and '45.00%' in warning
  assert (
      flags(*base, _record(attack, 0.10, 1000, model='other')) == []
  )  # another model
  assert (
      flags(*base, _record(attack.replace('8/255', '16/255'), 0.10, 1000)) == []
  )  # eps
  assert (
      flags(*base, _record(attack.replace('eps', 'norm=l2, eps'), 0.10, 1000))
      == []
  )
  # Few examples: one example's worth (5 points of 20) is noise.
  assert flags(_record(PGD, 0.50, 20), _record(attack, 0.45, 20)) == []
  assert len(flags(_record(PGD, 0.50, 20), _record(attack, 0.40, 20))) == 1


def test_masking_flag_ignores_ensembles_and_gradient_attacks():
  records = [
      _record(PGD, 0.50, 1000),
      _record('autoattack(eps=8/255)', 0.30, 1000),
      _record('autoattack(eps=8/255)', 0.31, 1000),
      _record('apgd_t(eps=8/255)', 0.40, 1000),
  ]
  assert sanity.sanity_flags(records) == []


# ------------------------------------------------------------------------------------------
# Specs and the AutoAttack sequence.


def test_autoattack_spec_and_components():
  spec = A.parse_attack('autoattack(eps=8/255, norm=linf)')
  assert str(spec) == 'autoattack(norm=linf, eps=8/255)'
  d = spec.describe()
  assert (
      d['attack'] == 'autoattack'
      and d['norm'] == 'linf'
      and d['eps'] == 8 / 255
  )
  parts = A.specs.autoattack_spec_components(spec)
  assert [c.name for c in parts] == ['apgd-ce', 'apgd-t', 'fab-t', 'square']
  assert [str(c.spec) for c in parts] == [
      'apgd_ce(norm=linf, eps=8/255, steps=100, restarts=1)',
      'apgd_t(norm=linf, eps=8/255, steps=100, restarts=1, num_target_classes=9)',
      'fab_t(norm=linf, eps=8/255, steps=100, restarts=1, num_target_classes=9)',
      'square(norm=linf, eps=8/255, queries=5000, restarts=1, p_init=0.8, '
      'rescale_schedule=false)',
  ]
  for c in parts:  # every component round-trips through the spec language
    assert A.parse_attack(str(c.spec)) == c.spec
  l2 = A.specs.autoattack_components(0.5, 'l2')
  assert all(c.spec.describe()['norm'] == 'l2' for c in l2)
  assert [c.name for c in A.specs.autoattack_components(0.5, 'l2', 'plus')] == [
      'apgd-ce',
      'apgd-dlr',
      'fab',
      'square',
      'apgd-t',
      'fab-t',
  ]
  with pytest.raises(ValueError, match='version'):
    A.specs.autoattack_components(0.5, 'l2', 'fast')
  d = A.parse_attack('square(eps=0.1, queries=300, target=random)').describe()
  assert (d['steps'], d['loss'], d['target'], d['step_size']) == (
      300,
      'ce',
      'random',
      None,
  )
  assert A.parse_attack('fab_t(eps=0.1)').describe()['target'] == 'top9'
  with pytest.raises(ValueError, match='p_init'):
    A.parse_attack('square(eps=0.1, p_init=2)')
  with pytest.raises(ValueError, match='queries'):
    A.parse_attack('square(eps=0.1, queries=0)')


def test_make_attack_passes_the_spec_to_the_attacks(monkeypatch):
  seen = {}

  def recorder(name):
    @functools.wraps(
        A.ATTACKS[name]
    )  # the spec keys come from the attack's signature
    def record(logits_fn, rng, x, y, **kwargs):
      seen[name] = kwargs
      return x

    return record

  for name in ('square', 'fab', 'fab_t', 'autoattack'):
    monkeypatch.setitem(A.ATTACKS, name, recorder(name))
  x, y = random_batch(3)
  for text in (
      'square(norm=l2, eps=1/2, queries=20, p_init=0.5, rescale_schedule=false)',
      'fab(eps=0.1, steps=7, restarts=2, target=worst)',
      'fab_t(norm=l2, eps=1, num_target_classes=3)',
      'autoattack(eps=8/255)',
  ):
    A.make_attack(text)(CONV, key(0), x, y)
  assert seen['square'] == dict(
      norm='l2', eps=0.5, queries=20, p_init=0.5, rescale_schedule=False
  )
  assert seen['fab'].pop('target').shape == y.shape
  assert seen['fab'] == dict(eps=0.1, steps=7, restarts=2)
  assert seen['fab_t'] == dict(norm='l2', eps=1, num_target_classes=3)
  assert seen['autoattack'] == dict(eps=8 / 255)
