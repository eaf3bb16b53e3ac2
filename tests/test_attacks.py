"""Tests of jaxadv.attacks: constraints, optimality on linear models, restarts, compile size,
strength ordering on a small MNIST model, and the attack spec language."""

import functools
import gzip
import math
import os
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st
from jax import lax

from jaxadv import attacks as A

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# Few, derandomized examples: every attack is jit-compiled once and reused across examples.
PROPERTY_SETTINGS = settings(
    max_examples=12, deadline=None, derandomize=True, database=None
)


def key(seed):
  # XLA:CPU compiles threefry slowly (~1 s per jitted attack); rbg keys keep the file fast.
  # The MNIST and restart-batching tests use the default implementation.
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
    h = jax.nn.relu(h)
    return h.reshape(h.shape[0], -1) @ w_out

  return logits_fn


CONV = conv_logits_fn()
X_SHAPE = (4, 6, 6, 2)
NUM_CLASSES = 5


def random_batch(seed, shape=X_SHAPE, classes=NUM_CLASSES):
  """x in [0, 1] with some pixels exactly on the box faces, y int (b,)."""
  rng = np.random.default_rng(seed)
  x = rng.uniform(0, 1, shape).astype(np.float32)
  x = np.where(rng.uniform(size=shape) < 0.1, np.round(x), x).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(
      rng.integers(0, classes, shape[0]), jnp.int32
  )


# ------------------------------------------------------------------------------------------
# Losses and helpers.


def test_losses_match_definitions():
  logits, y = jax.random.normal(key(0), (16, 7)) * 5, jnp.arange(16) % 7
  ref_ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  np.testing.assert_allclose(
      A.cross_entropy(logits, y), ref_ce, rtol=1e-5, atol=1e-6
  )
  z = np.asarray(logits)
  z_y = z[np.arange(16), np.asarray(y)]
  other = np.where(np.eye(7, dtype=bool)[np.asarray(y)], -np.inf, z)
  np.testing.assert_allclose(
      A.cw_margin(logits, y), other.max(1) - z_y, rtol=1e-6
  )
  srt = -np.sort(-z, axis=1)
  np.testing.assert_allclose(
      A.dlr(logits, y),
      (other.max(1) - z_y) / (srt[:, 0] - srt[:, 2]),
      rtol=1e-5,
  )
  t = (y + 3) % 7
  z_t = z[np.arange(16), np.asarray(t)]
  np.testing.assert_allclose(
      A.dlr_targeted(logits, y, t),
      (z_t - z_y) / (srt[:, 0] - 0.5 * (srt[:, 2] + srt[:, 3])),
      rtol=1e-5,
  )
  # DLR is invariant to shifting and positively scaling the logits.
  np.testing.assert_allclose(
      A.dlr(3 * logits + 2, y), A.dlr(logits, y), rtol=1e-4, atol=1e-6
  )
  # Cross-entropy keeps relative precision for confident predictions (APGD compares it).
  confident = jnp.array([[30.0, 0.0, 0.0]])
  np.testing.assert_allclose(
      A.cross_entropy(confident, jnp.array([0])), 2 * np.exp(-30), rtol=1e-5
  )


def test_targets():
  y = jnp.arange(2000) % 6
  t = A.random_target(key(1), y, 6)
  assert not np.any(np.asarray(t) == np.asarray(y))
  # Uniform over the 5 wrong classes: every (y, t) pair about equally frequent.
  counts = np.zeros((6, 6))
  np.add.at(counts, (np.asarray(y), np.asarray(t)), 1)
  off_diag = counts[~np.eye(6, dtype=bool)]
  assert off_diag.min() > 0.5 * off_diag.mean()
  logits = jnp.array([[0.0, -5.0, 1.0, 2.0], [-9.0, -5.0, 1.0, 2.0]])
  np.testing.assert_array_equal(
      A.worst_target(logits, jnp.array([0, 0])), [1, 1]
  )


@pytest.mark.parametrize('d', [2, 8])
def test_random_init_l2_is_uniform_in_ball(d):
  n, eps = 20000, 0.1
  x = jnp.full((n, d), 0.5)
  delta = np.asarray(A.random_init_l2(key(d), x, eps)) - 0.5
  r = np.linalg.norm(delta, axis=1) / eps
  assert r.max() <= 1 + 1e-5
  # Uniform in the ball: P(|delta| <= eps * q^(1/d)) = q.
  for q in (0.1, 0.5, 0.9):
    assert abs(np.mean(r <= q ** (1 / d)) - q) < 0.02
  assert np.abs(delta.mean(0)).max() < 0.01 * eps * 3


def test_random_init_linf_is_uniform_in_box():
  x = jnp.full((5000, 8), 0.5)
  delta = np.asarray(A.random_init_linf(key(2), x, 0.2)) - 0.5
  assert np.abs(delta).max() <= 0.2 + 1e-6
  np.testing.assert_allclose(delta.std(), 0.2 / np.sqrt(3), rtol=0.03)


def test_apgd_checkpoints():
  assert A.apgd_checkpoints(100) == (0, 22, 41, 57, 70, 80, 87, 93, 99)
  assert A.apgd_checkpoints(1) == (0, 1)


def test_attacks_block_gradients():
  x, y = random_batch(0)
  for attack in (
      A.fgsm,
      functools.partial(A.pgd, steps=2),
      functools.partial(A.apgd, steps=2),
  ):
    g = jax.jit(jax.grad(lambda x: attack(CONV, key(0), x, y, eps=0.1).sum()))(
        x
    )
    assert not np.any(np.asarray(g))


# ------------------------------------------------------------------------------------------
# Every attack stays in the eps ball and in [0, 1].


def _random_targets(y):
  return (y + 1 + jnp.arange(y.shape[0]) % (NUM_CLASSES - 1)) % NUM_CLASSES


PROPERTY_ATTACKS = {
    'fgsm_linf': ('linf', lambda k, x, y, eps: A.fgsm(CONV, k, x, y, eps=eps)),
    'fgsm_l2': (
        'l2',
        lambda k, x, y, eps: A.fgsm(CONV, k, x, y, eps=eps, norm='l2'),
    ),
    'fgsm_rs_linf': (
        'linf',
        lambda k, x, y, eps: A.fgsm_rs(CONV, k, x, y, eps=eps),
    ),
    'fgsm_rs_l2': (
        'l2',
        lambda k, x, y, eps: A.fgsm_rs(CONV, k, x, y, eps=eps, norm='l2'),
    ),
    'fgsm_rs_linf_unclipped_start': (
        'linf',
        lambda k, x, y, eps: A.fgsm_rs(
            CONV, k, x, y, eps=eps, clip_start=False
        ),
    ),
    'fgsm_rs_l2_unclipped_start': (
        'l2',
        lambda k, x, y, eps: A.fgsm_rs(
            CONV, k, x, y, eps=eps, norm='l2', clip_start=False
        ),
    ),
    'ifgsm': (
        'linf',
        lambda k, x, y, eps: A.ifgsm(CONV, k, x, y, eps=eps, steps=3),
    ),
    'pgd_linf_restarts_loop': (
        'linf',
        lambda k, x, y, eps: A.pgd(CONV, k, x, y, eps=eps, steps=3, restarts=2),
    ),
    'pgd_linf_restarts_vmap': (
        'linf',
        lambda k, x, y, eps: A.pgd(
            CONV, k, x, y, eps=eps, steps=3, restarts=2, restart_batching='vmap'
        ),
    ),
    'pgd_l2_restarts': (
        'l2',
        lambda k, x, y, eps: A.pgd(
            CONV, k, x, y, eps=eps, steps=3, norm='l2', restarts=2
        ),
    ),
    'pgd_targeted': (
        'linf',
        lambda k, x, y, eps: A.pgd(
            CONV, k, x, y, eps=eps, steps=3, target=_random_targets(y)
        ),
    ),
    'cw': ('linf', lambda k, x, y, eps: A.cw(CONV, k, x, y, eps=eps, steps=3)),
    'apgd_ce_linf': (
        'linf',
        lambda k, x, y, eps: A.apgd(CONV, k, x, y, eps=eps, steps=8),
    ),
    'apgd_dlr_linf': (
        'linf',
        lambda k, x, y, eps: A.apgd(
            CONV, k, x, y, eps=eps, steps=8, loss='dlr'
        ),
    ),
    'apgd_ce_l2': (
        'l2',
        lambda k, x, y, eps: A.apgd(
            CONV, k, x, y, eps=eps, steps=8, norm='l2', restarts=2
        ),
    ),
    'apgd_dlr_l2': (
        'l2',
        lambda k, x, y, eps: A.apgd(
            CONV, k, x, y, eps=eps, steps=8, norm='l2', loss='dlr'
        ),
    ),
    'apgd_t_linf': (
        'linf',
        lambda k, x, y, eps: A.apgd_t(CONV, k, x, y, eps=eps, steps=5),
    ),
    'apgd_t_l2': (
        'l2',
        lambda k, x, y, eps: A.apgd_t(
            CONV, k, x, y, eps=eps, steps=5, norm='l2', num_target_classes=2
        ),
    ),
}


@functools.cache
def _jitted(name):
  return jax.jit(PROPERTY_ATTACKS[name][1])


def _eps_strategy():
  # Includes eps = 0 (the attack must return x) and large radii where the box binds.
  return st.one_of(st.just(0.0), st.floats(0.0, 1.0))


@pytest.mark.parametrize('name', sorted(PROPERTY_ATTACKS))
@PROPERTY_SETTINGS
@given(seed=st.integers(0, 2**31 - 1), eps_fraction=_eps_strategy())
def test_attack_stays_in_ball_and_box(name, seed, eps_fraction):
  norm, _ = PROPERTY_ATTACKS[name]
  # Pixel-scale radii: L-inf up to 0.3, L2 from 0.1 up to 3 (the box binds for large ones).
  eps = (
      0.3 * eps_fraction
      if norm == 'linf'
      else (eps_fraction and 0.1 + 2.9 * eps_fraction)
  )
  x, y = random_batch(seed)
  x_adv = _jitted(name)(key(seed), x, y, jnp.float32(eps))
  assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
  x_adv, x = np.asarray(x_adv, np.float64), np.asarray(x, np.float64)
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
  delta = (x_adv - x).reshape(x.shape[0], -1)
  if norm == 'linf':
    assert np.abs(delta).max() <= eps + 1e-6
  else:
    assert np.linalg.norm(delta, axis=1).max() <= eps * (1 + 1e-5)


def test_fgsm_rs_unclipped_start_takes_the_gradient_outside_the_box():
  # Black pixels (x = 0): a clipped start sits at 0 for half of them; an unclipped one keeps
  # the negative noise. The gradient is taken there; the result is back in the box.
  x = jnp.zeros((4, 8, 8, 1))
  start = A.random_init_linf(key(0), x, 0.3, clip=False)
  assert float(start.min()) < -0.2 and float(start.max()) > 0.2
  assert float(A.random_init_linf(key(0), x, 0.3).min()) == 0.0
  seen = []

  def logits_fn(xa):
    jax.debug.callback(lambda v: seen.append(np.asarray(v)), xa)
    return jnp.stack([xa.sum((1, 2, 3)), -xa.sum((1, 2, 3))], -1)

  y = jnp.zeros((4,), jnp.int32)
  out = A.fgsm_rs(logits_fn, key(0), x, y, eps=0.3, clip_start=False)
  assert seen and seen[0].min() < 0.0  # the gradient point left the box
  # Increasing the loss of class 0 pushes every pixel down: clipped back to 0.
  np.testing.assert_array_equal(np.asarray(out), 0.0)


# ------------------------------------------------------------------------------------------
# Linear model: the optimal perturbation is known in closed form.


def linear_problem(dtype=np.float32, b=16, shape=(4, 4, 2), eps=0.05, seed=0):
  """Binary linear model logits = [0, w.(x - 1/2)] with x in [0.4, 0.6], so the eps ball
  stays inside the box. Maximising CE moves w.x up for y = 0 and down for y = 1: the optimum
  is s * eps * sign(w) (L-inf) or s * eps * w / |w|_2 (L2) with s = +1 for y = 0, -1 for y = 1.
  """
  rng = np.random.default_rng(seed)
  w = rng.normal(size=shape)
  w = (4 * w / np.linalg.norm(w)).astype(dtype)
  x = rng.uniform(0.4, 0.6, (b,) + shape).astype(dtype)
  y = rng.integers(0, 2, b)

  def logits_fn(xx):
    m = jnp.sum((xx - 0.5) * w, axis=(1, 2, 3))
    return jnp.stack([jnp.zeros_like(m), m], axis=-1)

  s = np.where(y == 0, 1.0, -1.0)[:, None, None, None]
  opt = {'linf': s * eps * np.sign(w), 'l2': s * eps * w / np.linalg.norm(w)}
  return logits_fn, jnp.asarray(x), jnp.asarray(y), eps, opt


LINEAR_ATTACKS = {
    'fgsm': functools.partial(A.fgsm),
    'pgd_no_random_start': functools.partial(
        A.pgd, steps=10, random_start=False
    ),
    # From a random start, each L2 projection only shrinks the off-optimum component by
    # eps / (eps + step_size), so L2 PGD needs a total travel well above the default 2.5 eps.
    'pgd_random_start': functools.partial(
        A.pgd, steps=20, step_size=0.05, restarts=2
    ),
    'apgd': functools.partial(A.apgd, steps=50),
}


@pytest.mark.parametrize('norm', ['linf', 'l2'])
@pytest.mark.parametrize('name', sorted(LINEAR_ATTACKS))
def test_linear_model_optimal_perturbation(name, norm):
  logits_fn, x, y, eps, opt = linear_problem()
  attack = jax.jit(
      functools.partial(LINEAR_ATTACKS[name], logits_fn, eps=eps, norm=norm)
  )
  x_adv = attack(key(0), x, y)
  delta = np.asarray(x_adv, np.float64) - np.asarray(x, np.float64)
  if norm == 'linf':
    np.testing.assert_allclose(delta, opt['linf'], atol=1e-4)
  else:
    err = (
        np.linalg.norm((delta - opt['l2']).reshape(len(delta), -1), axis=1)
        / eps
    )
    # APGD returns its highest-loss iterate. Near the L2 optimum the loss varies with the
    # squared angle to it, below float32 resolution at ~1e-3, so float32 only bounds APGD's
    # answer to a few 1e-3; float64 (below) checks that the algorithm itself converges.
    tol = 3e-3 if name == 'apgd' else 1e-3
    assert err.max() <= tol, err


def _enable_x64():
  if hasattr(jax, 'enable_x64'):
    return jax.enable_x64(True)
  from jax.experimental import enable_x64  # pylint: disable=g-import-not-at-top

  return enable_x64()


def test_linear_model_apgd_l2_float64():
  with _enable_x64():
    logits_fn, x, y, eps, opt = linear_problem(dtype=np.float64)
    attack = jax.jit(
        functools.partial(A.apgd, logits_fn, eps=eps, norm='l2', steps=50)
    )
    x_adv = attack(key(0), x, y)
    assert x_adv.dtype == jnp.float64
    delta = np.asarray(x_adv) - np.asarray(x)
    err = (
        np.linalg.norm((delta - opt['l2']).reshape(len(delta), -1), axis=1)
        / eps
    )
    assert err.max() <= 1e-3, err


# ------------------------------------------------------------------------------------------
# Restarts.


def _individual_restarts(attack, rng, x, y, restarts, logits_fn=CONV):
  """Each restart run on its own (restart r = the attack with restart_keys(rng, R)[r])."""
  xs = jnp.stack(
      [
          attack(logits_fn, k, x, y, restarts=1)
          for k in A.restart_keys(rng, restarts)
      ]
  )
  logits = jax.vmap(logits_fn)(xs)
  losses = jax.vmap(A.cross_entropy, in_axes=(0, None))(logits, y)
  success = jnp.argmax(logits, -1) != y
  return np.asarray(xs), np.asarray(losses), np.asarray(success)


# Two short steps from a wide random start: restarts end at different points and succeed on
# different examples. Module level, so both tests below reuse the restarts=1 compilation.
_SHORT_PGD = jax.jit(
    functools.partial(A.pgd, eps=0.2, steps=2, step_size=0.01),
    static_argnums=0,
    static_argnames=('restarts', 'restart_batching'),
)


@pytest.mark.parametrize('restart_batching', ['loop', 'vmap'])
def test_pgd_restarts_keep_first_success_else_highest_loss(restart_batching):
  restarts = 4
  x, _ = random_batch(1, shape=(32, 6, 6, 2))
  y = jnp.argmax(CONV(x), -1)  # all correct at x, so success needs the attack
  # Threefry keys: rbg keys draw different bits under vmap than one at a time.
  rng = jax.random.key(5)
  xs, losses, success = _individual_restarts(_SHORT_PGD, rng, x, y, restarts)
  got = np.asarray(
      _SHORT_PGD(
          CONV, rng, x, y, restarts=restarts, restart_batching=restart_batching
      )
  )

  any_success = success.any(0)
  chosen = np.where(any_success, success.argmax(0), losses.argmax(0))
  # The case must exercise both rules and a first success that is not restart 0.
  assert any_success.any() and not any_success.all()
  assert (chosen[any_success] > 0).any()
  np.testing.assert_allclose(got, xs[chosen, np.arange(len(y))], atol=1e-6)
  got_loss = np.asarray(A.cross_entropy(CONV(jnp.asarray(got)), y))
  np.testing.assert_allclose(
      got_loss[~any_success], losses.max(0)[~any_success], rtol=1e-5
  )


def test_restarts_without_success_keep_max_loss():
  restarts = 3
  x, y = random_batch(2, shape=(16, 6, 6, 2))
  # Make every example correctly classified with a margin a tiny eps cannot overturn.
  robust = lambda z: CONV(z) + 100.0 * jax.nn.one_hot(y, NUM_CLASSES)
  for attack in (
      functools.partial(A.pgd, eps=1e-3, steps=3),
      functools.partial(A.apgd, eps=1e-3, steps=4, norm='l2'),
  ):
    attack = jax.jit(attack, static_argnums=0, static_argnames='restarts')
    xs, losses, success = _individual_restarts(
        attack, key(7), x, y, restarts, robust
    )
    assert not success.any()
    got = attack(robust, key(7), x, y, restarts=restarts)
    got_loss = np.asarray(A.cross_entropy(robust(got), y))
    np.testing.assert_allclose(got_loss, losses.max(0), rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(got), xs[losses.argmax(0), np.arange(len(y))], atol=1e-6
    )


# ------------------------------------------------------------------------------------------
# Compile size does not grow with the number of steps.


def _hlo_text(attack, steps):
  x, y = random_batch(0)
  fn = jax.jit(lambda k, x, y: attack(CONV, k, x, y, eps=0.1, steps=steps))
  text = fn.lower(key(0), x, y).as_text()
  # Only constants may differ (step size, trip count, APGD's checkpoint table).
  return re.sub(r'dense<[^>]*>', 'dense<C>', text)


def test_program_size_independent_of_steps():
  assert _hlo_text(A.pgd, 10) == _hlo_text(A.pgd, 100)
  # APGD's checkpoint table is a (steps + 1,) constant: its type names the length.
  apgd_10, apgd_100 = _hlo_text(A.apgd, 10), _hlo_text(A.apgd, 100)
  assert apgd_10.replace('tensor<11x', 'tensor<Nx') == apgd_100.replace(
      'tensor<101x', 'tensor<Nx'
  )


# ------------------------------------------------------------------------------------------
# A small MLP trained on real MNIST.


def _mnist_dir():
  candidates = []
  if os.environ.get('JAXADV_DATA_DIR'):
    root = pathlib.Path(os.environ['JAXADV_DATA_DIR'])
    candidates += [root / 'mnist', root]
  candidates.append(REPO_ROOT.parent / 'shared' / 'data' / 'mnist')
  for path in candidates:
    if (path / 'train-images-idx3-ubyte.gz').exists():
      return path
  return None


def _read_idx(path):
  """IDX file: big-endian magic (0x08 = uint8 in byte 3, ndim in byte 4), one int32 per dim."""
  with gzip.open(path, 'rb') as fh:
    data = fh.read()
  magic = int.from_bytes(data[:4], 'big')
  assert magic >> 8 == 0x08, f'{path}: not a uint8 IDX file'
  ndim = magic & 0xFF
  dims = [
      int.from_bytes(data[4 + 4 * i : 8 + 4 * i], 'big') for i in range(ndim)
  ]
  return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


@pytest.fixture(scope='module')
def mnist_model():
  path = _mnist_dir()
  if path is None:
    pytest.skip(
        'MNIST IDX files not found in $JAXADV_DATA_DIR or ../shared/data/mnist'
    )
  n_train, n_test = 12000, 500
  x_tr = (
      _read_idx(path / 'train-images-idx3-ubyte.gz')[:n_train, :, :, None]
      / 255.0
  )
  y_tr = _read_idx(path / 'train-labels-idx1-ubyte.gz')[:n_train].astype(
      np.int32
  )
  x_te = (
      _read_idx(path / 't10k-images-idx3-ubyte.gz')[:n_test, :, :, None] / 255.0
  )
  y_te = _read_idx(path / 't10k-labels-idx1-ubyte.gz')[:n_test].astype(np.int32)

  def apply(p, x):
    h = jax.nn.relu(x.reshape(x.shape[0], -1) @ p['w1'] + p['b1'])
    return h @ p['w2'] + p['b2']

  k1, k2 = jax.random.split(jax.random.key(0))
  params = dict(
      w1=jax.random.normal(k1, (784, 128)) * np.sqrt(2 / 784),
      b1=jnp.zeros(128),
      w2=jax.random.normal(k2, (128, 10)) * np.sqrt(1 / 128),
      b2=jnp.zeros(10),
  )
  opt = optax.adam(1e-3)

  @jax.jit
  def train(
      params, x_all, y_all, idx
  ):  # 400 Adam steps of batch 128 in one scan
    def step(carry, batch_idx):
      params, opt_state = carry
      loss_fn = lambda p: A.cross_entropy(
          apply(p, x_all[batch_idx]), y_all[batch_idx]
      ).mean()
      grads = jax.grad(loss_fn)(params)
      updates, opt_state = opt.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None

    return lax.scan(step, (params, opt.init(params)), idx)[0][0]

  idx = np.random.default_rng(0).integers(0, n_train, (400, 128))
  params = train(
      params,
      jnp.asarray(x_tr, jnp.float32),
      jnp.asarray(y_tr),
      jnp.asarray(idx),
  )
  logits_fn = functools.partial(apply, params)
  return logits_fn, jnp.asarray(x_te, jnp.float32), jnp.asarray(y_te)


def _run_spec(spec, logits_fn, x, y, rng):
  return jax.jit(lambda r, x, y: A.make_attack(spec)(logits_fn, r, x, y))(
      rng, x, y
  )


def test_mnist_attack_strength_ordering(mnist_model):
  logits_fn, x, y = mnist_model
  accuracy = lambda xa: float(jnp.mean(jnp.argmax(logits_fn(xa), -1) == y))
  rng = jax.random.key(1)
  acc = {
      s: accuracy(_run_spec(s, logits_fn, x, y, rng))
      for s in (
          'clean',
          'fgsm(eps=0.1)',
          'pgd(eps=0.1, steps=40)',
          'apgd_t(eps=0.1, steps=25)',
      )
  }
  assert acc['clean'] > 0.9, acc
  assert acc['fgsm(eps=0.1)'] < acc['clean'] - 0.5, acc
  assert acc['pgd(eps=0.1, steps=40)'] <= acc['fgsm(eps=0.1)'], acc
  assert (
      acc['apgd_t(eps=0.1, steps=25)'] <= acc['pgd(eps=0.1, steps=40)'] + 0.005
  ), acc


@pytest.mark.parametrize('target', ['random', 'worst'])
def test_mnist_targeted_pgd_raises_target_probability(mnist_model, target):
  logits_fn, x, y = mnist_model
  rng = jax.random.key(2)
  x_adv = _run_spec(
      f'pgd(eps=0.1, steps=40, target={target})', logits_fn, x, y, rng
  )
  # The targets make_attack picks (documented: random uses the first half of split(rng)).
  if target == 'worst':
    t = A.worst_target(logits_fn(x), y)
  else:
    t = A.random_target(jax.random.split(rng)[0], y, 10)
  assert not np.any(np.asarray(t) == np.asarray(y))
  p_target = lambda xa: jnp.take_along_axis(
      jax.nn.softmax(logits_fn(xa)), t[:, None], 1
  )
  hit_rate = lambda xa: float(jnp.mean(jnp.argmax(logits_fn(xa), -1) == t))
  # The least likely class is far at eps = 0.1 (about 0.05 mean probability and 7% hits
  # against 1e-4 and 0% clean); a random target gets about 0.46 and 53%.
  assert float(p_target(x_adv).mean()) > float(p_target(x).mean()) + 0.025
  assert hit_rate(x_adv) > hit_rate(x) + 0.03


# ------------------------------------------------------------------------------------------
# Attack specs.


@pytest.mark.parametrize(
    'text, canonical',
    [
        (
            'pgd(norm=linf, eps=8/255, steps=50, restarts=10)',
            'pgd(norm=linf, eps=8/255, steps=50, restarts=10)',
        ),
        (
            ' pgd( restarts = 10,eps=16/510 , norm=l2 ) ',
            'pgd(norm=l2, eps=8/255, restarts=10)',
        ),
        ('fgsm(eps=0.3)', 'fgsm(eps=0.3)'),
        ('apgd_ce(eps=0.3, steps=100)', 'apgd_ce(eps=0.3, steps=100)'),
        ('apgd_t(eps=8/255)', 'apgd_t(eps=8/255)'),
        ('cw(eps=8/255, steps=100)', 'cw(eps=8/255, steps=100)'),
        (
            'pgd(eps=0.3, steps=40, target=random)',
            'pgd(eps=0.3, steps=40, target=random)',
        ),
        (
            'pgd(target=worst, eps=1e-2, random_start=false)',
            'pgd(eps=0.01, random_start=false, target=worst)',
        ),
        ('clean', 'clean'),
        ('clean()', 'clean'),
    ],
)
def test_parse_canonical_round_trip(text, canonical):
  spec = A.parse_attack(text)
  assert str(spec) == canonical
  assert A.parse_attack(str(spec)) == spec
  assert hash(A.parse_attack(canonical)) == hash(spec)


@PROPERTY_SETTINGS
@given(name=st.sampled_from(sorted(set(A.ATTACKS) - {'clean'})), data=st.data())
def test_parse_round_trip_property(name, data):
  values = {
      'norm': st.sampled_from(A.NORMS),
      'eps': st.fractions(0, 1, max_denominator=1000),
      'steps': st.integers(1, 500),
      'step_size': st.floats(1e-4, 1.0),
      'alpha': st.floats(0.01, 1.0),
      'restarts': st.integers(1, 20),
      'random_start': st.booleans(),
      'clip_start': st.booleans(),
      'loss': st.sampled_from(A.LOSSES),
      'target': st.sampled_from(A.TARGETS),
      'rho': st.floats(0.01, 1.0),
      'num_target_classes': st.integers(1, 20),
      'restart_batching': st.sampled_from(A.RESTART_BATCHING),
      'queries': st.integers(1, 10000),
      'p_init': st.floats(0.01, 1.0),
      'rescale_schedule': st.booleans(),
      'keep_best': st.booleans(),
      'eot_iter': st.integers(1, 50),
      'largereps': st.booleans(),
      'version': st.sampled_from(A.autoattack.VERSIONS),
  }
  keys = A.specs._spec_keys(name)
  chosen = data.draw(st.lists(st.sampled_from(keys), unique=True)) + ['eps']
  params = {k: data.draw(values[k]) for k in dict.fromkeys(chosen)}
  if params.get('random_start') is False and params.get('restarts', 1) > 1:
    with pytest.raises(ValueError, match='random_start=false'):
      A.AttackSpec(name, params)
    return
  if params.get('norm', 'linf') == 'linf' and params['eps'] > 1:
    with pytest.raises(ValueError, match='norm=linf'):
      A.AttackSpec(name, params)
    return
  if params.get('largereps'):  # the L1 schedule; norm is drawn from linf, l2
    with pytest.raises(ValueError, match='norm=l1'):
      A.AttackSpec(name, params)
    return
  spec = A.AttackSpec(name, params)
  assert A.parse_attack(str(spec)) == spec
  assert A.parse_attack(str(spec)).describe() == spec.describe()


def test_describe_resolves_defaults():
  eps = 8 / 255
  d = A.parse_attack('pgd(eps=8/255)').describe()
  assert d == dict(
      attack='pgd',
      norm='linf',
      eps=eps,
      steps=10,
      step_size=2.5 * eps / 10,
      restarts=1,
      loss='ce',
      target=None,
      random_start=True,
  )
  d = A.parse_attack('cw(eps=8/255, steps=100, norm=l2)').describe()
  assert (d['loss'], d['norm'], d['step_size']) == ('cw', 'l2', 2.5 * eps / 100)
  d = A.parse_attack('apgd_t(eps=8/255)').describe()
  assert d == dict(
      attack='apgd_t',
      norm='linf',
      eps=eps,
      steps=100,
      step_size=2 * eps,
      restarts=1,
      loss='dlr_targeted',
      target='top9',
      random_start=None,
  )
  assert A.parse_attack('apgd_ce(eps=0.3)').describe()['loss'] == 'ce'
  assert A.parse_attack('fgsm(eps=0.3)').describe()['step_size'] == 0.3
  assert (
      A.parse_attack('fgsm_rs(eps=0.2)').describe()['step_size'] == 1.25 * 0.2
  )
  d = A.parse_attack('ifgsm(eps=0.1, steps=5)').describe()
  assert d['step_size'] == 1 / 255 and d['steps'] == 5  # Kurakin's step
  d = A.parse_attack(
      'pgd(eps=0.3, steps=40, step_size=0.01, target=worst)'
  ).describe()
  assert (d['step_size'], d['target']) == (0.01, 'worst')
  assert set(A.parse_attack('clean').describe()) == set(d)


@pytest.mark.parametrize(
    'text, expected',
    [
        ('pgdx(eps=0.3)', ["unknown attack 'pgdx'", 'apgd_t', 'fgsm', 'pgd']),
        ('pgd(eps=-1)', ['eps', '>= 0']),
        ('pgd(eps=0.3, steps=0)', ['steps']),
        ('pgd(eps=0.3, steps=2.5)', ['steps']),
        ('pgd(eps=0.3, step_size=0)', ['step_size']),
        (
            'pgd(eps=0.3, foo=1)',
            ["unknown key 'foo'", 'eps', 'steps', 'restarts'],
        ),
        (
            'apgd_t(eps=0.3, target=worst)',
            ["unknown key 'target'", 'num_target_classes'],
        ),
        ('pgd(eps=0.3, norm=l3)', ['norm', 'linf', 'l2']),
        ('pgd(eps=0.3, target=best)', ['target', 'random', 'worst']),
        ('pgd(eps=0.3, eps=0.1)', ['eps', 'twice']),
        ('pgd(eps=8)', ['eps=8', '<= 1', 'norm=linf', '8/255']),
        (
            'pgd(eps=0.3, restarts=5, random_start=false)',
            ['restarts=5', 'random_start'],
        ),
        ('fgsm_rs(eps=0.3, clip_start=maybe)', ['clip_start', 'true', 'false']),
        ('pgd(steps=10)', ['eps', 'required']),
        ('pgd(eps)', ['key=value']),
        ('pgd(eps=1/0)', ['eps', 'zero']),
        ('pgd(eps=__import__("os"))', ['eps']),
        ('pgd(eps=0.3', ['expected']),
    ],
)
def test_parse_errors(text, expected):
  with pytest.raises(ValueError) as info:
    A.parse_attack(text)
  message = str(info.value)
  assert '\n' not in message
  for fragment in expected:
    assert fragment in message, message


def test_spec_reaches_clip_start_and_large_l2_eps():
  x, y = random_batch(3)
  rng = key(5)
  run = lambda fn: jax.jit(lambda r, x, y: fn(CONV, r, x, y))(rng, x, y)
  for clip in (True, False):
    got = run(
        A.make_attack(f'fgsm_rs(eps=0.3, clip_start={str(clip).lower()})')
    )
    want = run(functools.partial(A.fgsm_rs, eps=0.3, clip_start=clip))
    np.testing.assert_array_equal(got, want)
  assert (
      A.parse_attack('pgd(norm=l2, eps=2)').kwargs['eps'] == 2
  )  # L2 eps may exceed 1


def test_make_attack_matches_direct_call():
  x, y = random_batch(3)
  rng = key(4)
  run = lambda fn: jax.jit(lambda r, x, y: fn(CONV, r, x, y))(rng, x, y)
  got = run(A.make_attack('pgd(norm=l2, eps=1/2, steps=3, restarts=2)'))
  want = run(functools.partial(A.pgd, eps=0.5, steps=3, norm='l2', restarts=2))
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(A.make_attack('clean')(CONV, rng, x, y), x)
  assert set(A.ATTACKS) >= {
      'clean',
      'fgsm',
      'fgsm_rs',
      'ifgsm',
      'bim',
      'pgd',
      'cw',
      'apgd',
      'apgd_ce',
      'apgd_dlr',
      'apgd_t',
  }
  assert math.isclose(A.parse_attack('pgd(eps=8/255)').kwargs['eps'], 8 / 255)


@pytest.mark.parametrize('norm', ['linf', 'l2'])
def test_fgsm_rs_start_fills_the_eps_ball(norm):
  # Constant logits: zero gradient, sign(0) = 0, so fgsm_rs returns its start.
  x = jnp.full((64, 8, 8, 1), 0.5)
  y = jnp.zeros((64,), jnp.int32)
  flat = lambda xa: jnp.zeros((xa.shape[0], 3))
  eps = (
      0.3 if norm == 'linf' else 1.0
  )  # L2: coordinates ~ 1/8, [0, 1] clips none
  out = np.asarray(A.fgsm_rs(flat, key(0), x, y, eps=eps, norm=norm) - x)
  if norm == 'linf':  # uniform in the box: |d| ~ U(0, eps)
    d = np.abs(out)
    assert eps - 0.01 < d.max() <= eps + 1e-6
    assert abs(d.mean() - eps / 2) < 0.01
  else:  # uniform in the 64-dim ball: radius eps * u^(1/64), near eps
    r = np.sqrt((out.reshape(64, -1) ** 2).sum(-1))
    assert r.max() <= eps + 1e-5 and np.median(r) > 0.97 * eps


def _tiny_net(seed=0):
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  w1 = jax.random.normal(k1, (3 * 3 * 2, 16)) * 2.0
  w2 = jax.random.normal(k2, (16, 5))
  return lambda x: jnp.sin(x.reshape(x.shape[0], -1) @ w1 * 3.0) @ w2


def test_pgd_keeps_the_best_iterate_not_the_last():
  """With an oscillating loss and a large step, the final iterate often has
  a lower loss than an earlier one: keep_best returns, per example, a point
  at least as good as the last iterate, and strictly better for some."""
  f = _tiny_net()
  x = jax.random.uniform(jax.random.PRNGKey(1), (64, 3, 3, 2))
  y = jnp.argmax(f(x), -1)  # every example starts correctly classified
  kw = dict(eps=0.3, steps=7, step_size=0.2, loss='cw')
  best = A.pgd(f, jax.random.PRNGKey(2), x, y, **kw)
  last = A.pgd(f, jax.random.PRNGKey(2), x, y, keep_best=False, **kw)
  m_best, m_last = A.cw_margin(f(best), y), A.cw_margin(f(last), y)
  won_best, won_last = m_best > 0, m_last > 0
  assert bool(jnp.all(won_best | ~won_last))  # never loses a success
  better = (m_best > m_last + 1e-6) & ~won_last
  assert int(better.sum()) > 0
  assert float(jnp.abs(best - x).max()) <= 0.3 + 1e-6


def test_ifgsm_default_schedule_is_kurakins():
  d = A.parse_attack('ifgsm(eps=8/255)').describe()
  assert d['steps'] == 10 and math.isclose(d['step_size'], 1 / 255)
  d = A.parse_attack('ifgsm(eps=0.3)').describe()
  assert d['steps'] == int(min(0.3 * 255 + 4, 1.25 * 0.3 * 255)) == 80
  d = A.parse_attack('ifgsm(eps=0.1, steps=10, step_size=0.01)').describe()
  assert d['steps'] == 10 and d['step_size'] == 0.01
  # The attack runs that schedule: with 1/255 steps, 10 steps move at most
  # 10/255 from x even when eps is larger.
  f = _tiny_net(3)
  x = jax.random.uniform(jax.random.PRNGKey(4), (8, 3, 3, 2)) * 0.5 + 0.25
  y = jnp.argmax(f(x), -1)
  x_adv = A.ifgsm(f, jax.random.PRNGKey(0), x, y, eps=0.2, steps=10)
  assert float(jnp.abs(x_adv - x).max()) <= 10 / 255 + 1e-6
