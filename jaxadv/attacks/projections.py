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
