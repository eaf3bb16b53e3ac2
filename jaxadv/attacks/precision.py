"""Low-precision inputs: every attack runs in float32 and returns x_adv in the dtype of x,
inside the eps ball and the [0, 1] box as measured on the returned values.

Rounding a float32 point to bfloat16 (8 significant bits) can move a coordinate by half a
bf16 ulp away from x, e.g. x + 0.1 -> x + 0.1016: outside the L-inf ball of radius 0.1, and
for L2/L1 it can lift the norm above eps. `cast_into_ball` rounds to nearest and, for the
examples where that leaves the ball, rounds every coordinate towards x instead (then each
|x_adv_i - x_i| is at most the float32 one, so every norm is too, and the point stays
between x and the float32 point, both in [0, 1]).
"""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp

from jaxadv.attacks.projections import bcast


def _distance(delta: jax.Array, norm: str) -> jax.Array:
  """Per-example norm of delta (b, ...), (b,)."""
  flat = jnp.abs(delta.reshape(delta.shape[0], -1))
  if norm == 'linf':
    return jnp.max(flat, axis=-1)
  if norm == 'l2':
    return jnp.sqrt(jnp.sum(jnp.square(flat), axis=-1))
  if norm == 'l1':
    return jnp.sum(flat, axis=-1)
  raise ValueError(f'unknown norm {norm!r}')


def cast_into_ball(
    x_adv: jax.Array, x: jax.Array, eps, norm: str | None
) -> jax.Array:
  """x_adv (float32, in [0, 1] and the eps ball of x) cast to x.dtype, kept in both.

  Args:
    x_adv: float32 (b, ...), the attack's result.
    x: the clean input in its own (low-precision) dtype, (b, ...).
    eps: the radius (pixel scale); ignored when norm is None.
    norm: 'linf' | 'l2' | 'l1', or None when the constraint set is unknown (a custom
      projection): then every coordinate is rounded towards x.
  Returns:
    x_adv in x.dtype: rounded to nearest where that stays in the ball, else rounded towards
    x coordinate by coordinate.
  """
  near = x_adv.astype(x.dtype)
  x32 = x.astype(jnp.float32)
  away = jnp.abs(near.astype(jnp.float32) - x32) > jnp.abs(x_adv - x32)
  toward = jnp.where(away, jnp.nextafter(near, x), near)
  if norm is None:
    return toward
  dist = _distance(near.astype(jnp.float32) - x32, norm)
  inside = dist <= jnp.asarray(eps, jnp.float32)
  return jnp.where(bcast(inside, x), near, toward)


def _is_low_precision(x) -> bool:
  dtype = jnp.result_type(x)
  return jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32


def float32_inside(attack=None, *, norm_key: str = 'norm', ball: bool = True):
  """Decorator: run `attack(logits_fn, rng, x, y, **kw)` in float32 when x is bfloat16 or
  float16, and return its x_adv in x's dtype via `cast_into_ball` (eps and the norm come from
  the keyword arguments; `norm_key` names the argument holding the norm; a non-string value
  there means an unknown constraint set). ball=False: the attack returns (x_adv, dist), cast
  without a ball (`fab_minimal`). Float32 and float64 inputs pass through unchanged.

  The wrapper keeps the attack's signature (inspect.signature follows __wrapped__), so attack
  specs still read their keys from it.
  """
  if attack is None:
    return functools.partial(float32_inside, norm_key=norm_key, ball=ball)
  params = inspect.signature(attack).parameters
  default_norm = (
      params[norm_key].default
      if norm_key in params
      and params[norm_key].default is not inspect.Parameter.empty
      else None
  )

  @functools.wraps(attack)
  def wrapped(logits_fn, rng, x, y, **kwargs):
    if not _is_low_precision(x):
      return attack(logits_fn, rng, x, y, **kwargs)
    out = attack(logits_fn, rng, x.astype(jnp.float32), y, **kwargs)
    if not ball:
      x_min, dist = out
      return x_min.astype(x.dtype), dist
    norm = kwargs.get(norm_key, default_norm)
    return cast_into_ball(
        out, x, kwargs.get('eps'), norm if isinstance(norm, str) else None
    )

  return wrapped
