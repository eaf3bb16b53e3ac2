"""Projections onto the eps balls and the [0, 1] box, random starts, steepest-ascent directions
and the loss-and-gradient step every gradient attack takes."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import math

from jaxadv.attacks.losses import TINY

LogitsFn = Callable[[jax.Array], jax.Array]
NORMS = ('linf', 'l2')


def bcast(v: jax.Array, x: jax.Array) -> jax.Array:
  """Reshape per-example v (b,) to broadcast against x (b, ...)."""
  return jnp.reshape(v, jnp.shape(v) + (1,) * (x.ndim - jnp.ndim(v)))


def l2_norm(v: jax.Array) -> jax.Array:
  """Per-example L2 norm over all but the batch axis, shape (b, 1, ..., 1)."""
  return jnp.sqrt(
      jnp.sum(jnp.square(v), axis=tuple(range(1, v.ndim)), keepdims=True)
  )


def project_linf(x_adv: jax.Array, x: jax.Array, eps) -> jax.Array:
  """Exact projection onto {|x_adv - x|_inf <= eps} intersected with [0, 1] (both boxes)."""
  return jnp.clip(x_adv, jnp.maximum(x - eps, 0.0), jnp.minimum(x + eps, 1.0))


def project_l2(x_adv: jax.Array, x: jax.Array, eps) -> jax.Array:
  """Projection onto {|x_adv - x|_2 <= eps}, then clipped to [0, 1].

  Clipping after the ball projection keeps the point in the ball (x is in [0, 1], so clipping
  only moves coordinates towards x); it is not the exact projection onto the intersection.
  """
  delta = x_adv - x
  delta = delta * jnp.minimum(1.0, eps / jnp.maximum(l2_norm(delta), TINY))
  return jnp.clip(x + delta, 0.0, 1.0)


def random_init_linf(
    rng: jax.Array, x: jax.Array, eps, clip: bool = True
) -> jax.Array:
  """x plus noise uniform in the L-inf box of radius eps, clipped to [0, 1] if `clip`."""
  delta = jax.random.uniform(rng, x.shape, x.dtype, -1.0, 1.0) * eps
  return jnp.clip(x + delta, 0.0, 1.0) if clip else x + delta


def random_init_l2(
    rng: jax.Array, x: jax.Array, eps, clip: bool = True
) -> jax.Array:
  """x plus noise uniform in the L2 ball of radius eps, clipped to [0, 1] if `clip`.

  Uniform in the ball: a gaussian direction normalised, radius eps * u^(1/d), d = pixels per
  example.
  """
  k_dir, k_rad = jax.random.split(rng)
  d = math.prod(x.shape[1:])
  direction = jax.random.normal(k_dir, x.shape, x.dtype)
  direction = direction / jnp.maximum(l2_norm(direction), TINY)
  u = jax.random.uniform(k_rad, (x.shape[0],), x.dtype)
  delta = direction * bcast(eps * u ** (1.0 / d), x)
  return jnp.clip(x + delta, 0.0, 1.0) if clip else x + delta


def _linf_direction(g: jax.Array) -> jax.Array:
  return jnp.sign(g)


def _l2_direction(g: jax.Array) -> jax.Array:
  return g / jnp.maximum(l2_norm(g), TINY)


# norm -> (steepest-ascent direction of unit norm, projection, random start)
_NORM_OPS = {
    'linf': (_linf_direction, project_linf, random_init_linf),
    'l2': (_l2_direction, project_l2, random_init_l2),
}


def norm_ops(norm: str):
  if norm not in _NORM_OPS:
    raise ValueError(f'unknown norm {norm!r}; valid norms: {", ".join(NORMS)}')
  return _NORM_OPS[norm]


def loss_and_grad(logits_fn: LogitsFn, objective, x_adv: jax.Array):
  """(per-example loss (b,), logits (b, C), d sum(loss) / d x_adv (b, ...))."""

  def total(xa):
    logits = logits_fn(xa)
    f = objective(logits)
    return jnp.sum(f), (f, logits)

  (_, (f, logits)), g = jax.value_and_grad(total, has_aux=True)(x_adv)
  return f, logits, g


def l1_ball_box_delta(x: jax.Array, delta: jax.Array, eps) -> jax.Array:
  """The Euclidean projection of x + delta onto {|x' - x|_1 <= eps} intersected with [0, 1],
  returned as the perturbation d = x' - x, (b, ...) like x.

  The problem separates per coordinate given a multiplier lam >= 0:
  d_i = sign(delta_i) clip(|delta_i| - lam, 0, room_i), room_i the distance from x_i to the
  face of [0, 1] that delta_i points at, and h(lam) = sum_i clip(|delta_i| - lam, 0, room_i)
  is nonincreasing and piecewise linear. lam = 0 if h(0) <= eps; else h(lam) = eps is solved
  exactly from the 2n sorted breakpoints (where each coordinate starts and stops shrinking).
  The same problem as fra31/auto-attack's L1_projection (Croce & Hein 2021, "Mind the box"),
  solved here by one sort and cumulative sums instead of its bisection over the sorted list.
  """
  b = x.shape[0]
  t, v = x.reshape(b, -1), delta.reshape(b, -1)
  a, sign = jnp.abs(v), jnp.sign(v)
  room = jnp.where(v >= 0, 1.0 - t, t)
  start = jnp.maximum(a - room, 0.0)  # h's slope drops by 1 after start_i ...
  end = jnp.maximum(a, start)  # ... and recovers after end_i
  points = jnp.concatenate([start, end], axis=-1)
  weights = jnp.concatenate(
      [-jnp.ones_like(start), jnp.ones_like(end)], axis=-1
  )
  order = jnp.argsort(points, axis=-1)
  points = jnp.take_along_axis(points, order, axis=-1)
  slope = jnp.cumsum(jnp.take_along_axis(weights, order, axis=-1), axis=-1)
  h0 = jnp.sum(jnp.minimum(a, room), axis=-1, keepdims=True)
  # h at each sorted breakpoint: h(p_0) = h(0) (nothing shrinks before the first one).
  gaps = jnp.diff(points, axis=-1) * slope[:, :-1]
  h = h0 + jnp.concatenate(
      [jnp.zeros_like(h0), jnp.cumsum(gaps, axis=-1)], axis=-1
  )
  eps = jnp.asarray(eps, h.dtype)
  j = jnp.argmax(
      h <= eps, axis=-1
  )  # the first breakpoint at or below eps (h(last) = 0)
  prev = jnp.maximum(j - 1, 0)[:, None]
  h_prev = jnp.take_along_axis(h, prev, axis=-1)[:, 0]
  p_prev = jnp.take_along_axis(points, prev, axis=-1)[:, 0]
  s_prev = jnp.take_along_axis(slope, prev, axis=-1)[:, 0]
  lam = p_prev + (h_prev - eps) / jnp.maximum(-s_prev, 1.0)
  lam = jnp.where(h0[:, 0] <= eps, 0.0, jnp.maximum(lam, 0.0))
  d = sign * jnp.clip(a - lam[:, None], 0.0, room)
  return d.reshape(x.shape)


def project_l1(x_adv: jax.Array, x: jax.Array, eps) -> jax.Array:
  """Euclidean projection onto {|x_adv - x|_1 <= eps} intersected with [0, 1] (exact up to
  float rounding; the clip only absorbs that)."""
  return jnp.clip(x + l1_ball_box_delta(x, x_adv - x, eps), 0.0, 1.0)
