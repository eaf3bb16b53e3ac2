"""Every public attack runs inside jax.shard_map with its default checks (check_vma=True) and
gives the result it gives outside; with bfloat16 / float16 inputs every attack returns points
of the input dtype inside the eps ball and the [0, 1] box, measured on the returned values.

Both failed before the fix (issue 22): under shard_map, pgd, apgd_*, fab and fab_t raised
'scan body function carry input and carry output must have equal types' (keep-best carries
started from constants); in bf16, pgd / fgsm_rs returned points one bf16 ulp outside the
ball and square / fab_t raised a TypeError on the loop carry.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxadv import attacks as A


def key(seed):
  return jax.random.key(seed, impl='rbg')


def conv_logits_fn(seed=0, classes=5, channels=2, size=6):
  """A tiny random conv net: (b, size, size, channels) in [0, 1] -> (b, classes)."""
  k1, k2 = jax.random.split(jax.random.key(seed))
  w_conv = jax.random.normal(k1, (3, 3, channels, 4)) * 0.5
  w_out = jax.random.normal(k2, (size * size * 4, classes)) * 0.3

  def logits_fn(x):
    x = x.astype(
        jnp.float32
    )  # as Flax models cast inputs to their compute dtype
    h = lax.conv_general_dilated(
        x, w_conv, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
    )
    return jax.nn.relu(h).reshape(h.shape[0], -1) @ w_out

  return logits_fn


CONV = conv_logits_fn()


def random_batch(seed, b=8):
  rng = np.random.default_rng(seed)
  x = rng.uniform(0, 1, (b, 6, 6, 2)).astype(np.float32)
  x = np.where(rng.uniform(size=x.shape) < 0.1, np.round(x), x)
  return jnp.asarray(x, jnp.float32), jnp.asarray(rng.integers(0, 5, b))


# name -> (norm, eps, attack(rng, x, y)): every public attack, few steps.
ATTACKS = {
    'fgsm': ('linf', 0.1, lambda k, x, y: A.fgsm(CONV, k, x, y, eps=0.1)),
    'fgsm_rs': ('linf', 0.1, lambda k, x, y: A.fgsm_rs(CONV, k, x, y, eps=0.1)),
    'pgd_linf_restarts': (
        'linf',
        0.1,
        lambda k, x, y: A.pgd(CONV, k, x, y, eps=0.1, steps=3, restarts=2),
    ),
    'pgd_l2_restarts': (
        'l2',
        0.5,
        lambda k, x, y: A.pgd(
            CONV, k, x, y, eps=0.5, steps=3, norm='l2', restarts=2
        ),
    ),
    'bim': (
        'linf',
        0.1,
        lambda k, x, y: A.bim(CONV, k, x, y, eps=0.1, steps=3, step_size=0.05),
    ),
    'cw': ('linf', 0.1, lambda k, x, y: A.cw(CONV, k, x, y, eps=0.1, steps=3)),
    'iterative_adam': (
        'linf',
        0.1,
        lambda k, x, y: A.iterative(
            CONV, k, x, y, eps=0.1, steps=3, step=_adam(), init='uniform_linf'
        ),
    ),
    'apgd_ce': (
        'linf',
        0.1,
        lambda k, x, y: A.apgd_ce(CONV, k, x, y, eps=0.1, steps=5),
    ),
    'apgd_dlr_l2': (
        'l2',
        0.5,
        lambda k, x, y: A.apgd_dlr(CONV, k, x, y, eps=0.5, steps=5, norm='l2'),
    ),
    'apgd_t': (
        'linf',
        0.1,
        lambda k, x, y: A.apgd_t(
            CONV, k, x, y, eps=0.1, steps=5, num_target_classes=2
        ),
    ),
    'apgd_ce_l1': (
        'l1',
        2.0,
        lambda k, x, y: A.apgd_ce(
            CONV,
            k,
            x,
            y,
            eps=2.0,
            steps=6,
            norm='l1',
            largereps=True,
        ),
    ),
    'apgd_t_l1': (
        'l1',
        2.0,
        lambda k, x, y: A.apgd_t(
            CONV, k, x, y, eps=2.0, steps=5, norm='l1', num_target_classes=2
        ),
    ),
    'fab': (
        'linf',
        0.1,
        lambda k, x, y: A.fab(CONV, k, x, y, eps=0.1, steps=4, restarts=2),
    ),
    'fab_t_l2': (
        'l2',
        0.5,
        lambda k, x, y: A.fab_t(
            CONV, k, x, y, eps=0.5, steps=4, norm='l2', num_target_classes=2
        ),
    ),
    'square': (
        'linf',
        0.1,
        lambda k, x, y: A.square(CONV, k, x, y, eps=0.1, queries=10),
    ),
    'square_l2': (
        'l2',
        0.5,
        lambda k, x, y: A.square(CONV, k, x, y, eps=0.5, queries=10, norm='l2'),
    ),
    'autoattack_batch': (
        'linf',
        0.1,
        lambda k, x, y: _small_autoattack(k, x, y),
    ),
}


def _adam():
  import optax  # pylint: disable=g-import-not-at-top

  return optax.adam(0.02)


def _small_autoattack(k, x, y):
  # autoattack_batch itself at full size is minutes on CPU; a shortened version runs the
  # same code (components in turn, first misclassified point kept).
  small = [
      ('apgd-ce', 'apgd_ce', dict(steps=3, restarts=1)),
      ('fab-t', 'fab_t', dict(steps=2, restarts=1, num_target_classes=2)),
      ('square', 'square', dict(queries=3)),
  ]
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(A.autoattack, 'settings', lambda version, norm='linf': small)
    return A.autoattack_batch(CONV, k, x, y, eps=0.1)


def _distance(delta, norm):
  flat = np.abs(delta.reshape(delta.shape[0], -1))
  return {
      'linf': flat.max(-1),
      'l2': np.sqrt((flat**2).sum(-1)),
      'l1': flat.sum(-1),
  }[norm]


def _sharded(attack):
  """jit(shard_map(attack)) over all devices, check_vma at its default."""
  mesh = jax.make_mesh((jax.device_count(),), ('data',))
  fn = jax.jit(
      jax.shard_map(
          attack,
          mesh=mesh,
          in_specs=(P(), P('data'), P('data')),
          out_specs=P('data'),
      )  # check_vma defaults to True
  )
  data = NamedSharding(mesh, P('data'))
  return lambda k, x, y: fn(k, jax.device_put(x, data), jax.device_put(y, data))


def _assert_in_ball_and_box(name, x_adv, x, norm, eps, dtype):
  assert x_adv.dtype == x.dtype and x_adv.shape == x.shape
  x_adv64, x64 = np.asarray(x_adv, np.float64), np.asarray(x, np.float64)
  assert x_adv64.min() >= 0.0 and x_adv64.max() <= 1.0
  dist = _distance(x_adv64 - x64, norm)
  bound = float(np.float32(eps))  # the attack sees eps as float32
  if norm == 'linf':
    assert dist.max() <= bound
  else:
    assert dist.max() <= bound * (1 + 1e-5)
  if name in ('pgd_linf_restarts', 'fgsm'):
    # The attack moves to the ball's surface: most coordinates sit at x +- eps in bf16,
    # so the check above is not vacuous.
    assert dist.max() > bound - 2 * float(jnp.finfo(dtype).eps)


# One compiled program per attack checks both properties: it runs inside
# shard_map with default checks, on bfloat16 inputs, and returns bfloat16
# points inside the ball and the box.
@pytest.mark.parametrize('name', sorted(ATTACKS))
def test_attack_runs_under_shard_map_in_bfloat16(name):
  norm, eps, attack = ATTACKS[name]
  x, y = random_batch(2)
  x = x.astype('bfloat16')
  x_adv = _sharded(attack)(key(3), x, y)
  _assert_in_ball_and_box(name, x_adv, x, norm, eps, 'bfloat16')


# Inside shard_map the result is the one outside (float32), for attacks of
# each loop kind: restarts (pgd), APGD's checkpoints, FAB's targets, Square.
@pytest.mark.parametrize(
    'name', ['pgd_linf_restarts', 'apgd_t', 'fab_t_l2', 'square_l2']
)
def test_shard_map_gives_the_result_outside(name):
  _, _, attack = ATTACKS[name]
  x, y = random_batch(0)
  inside = _sharded(attack)(key(1), x, y)
  outside = jax.jit(attack)(key(1), x, y)
  np.testing.assert_array_equal(np.asarray(inside), np.asarray(outside))


@pytest.mark.parametrize(
    'name', ['fgsm_rs', 'pgd_linf_restarts', 'square', 'fab_t_l2']
)
def test_float16_input_stays_in_ball_and_box(name):
  norm, eps, attack = ATTACKS[name]
  x, y = random_batch(2)
  x = x.astype('float16')
  x_adv = jax.jit(attack)(key(3), x, y)
  _assert_in_ball_and_box(name, x_adv, x, norm, eps, 'float16')


def test_cast_into_ball_rounds_towards_x_only_where_needed():
  x = jnp.asarray([[0.5, 0.25, 0.75]], jnp.bfloat16)
  x32 = x.astype(jnp.float32)
  # 0.5 + 0.1 rounds to 0.6016 in bf16 (outside the L-inf ball of 0.1).
  inside = A.cast_into_ball(x32 + 0.1, x, 0.1, 'linf')
  assert np.abs(
      np.asarray(inside, np.float64) - np.asarray(x, np.float64)
  ).max() <= np.float32(0.1)
  # A point well inside keeps nearest rounding.
  near = x32 + 0.03
  np.testing.assert_array_equal(
      A.cast_into_ball(near, x, 0.1, 'linf'), near.astype(jnp.bfloat16)
  )
