"""Restarts and keep-best merging shared by the iterative attacks, and the small helpers that
keep their loop carries valid under `jax.shard_map` (default `check_vma=True`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxadv.attacks.projections import bcast

RESTART_BATCHING = ('loop', 'vmap')


def batch_full(x: jax.Array, value, dtype) -> jax.Array:
  """A (b,) array filled with `value`, built from x so that it has x's varying-axis type.

  Under shard_map with check_vma=True, a loop carry that starts as a constant (jnp.full) is
  mesh-invariant while its update, computed from x, varies over the mesh axis; scan and
  fori_loop then reject the carry. full_like keeps x's type (and costs nothing more).
  """
  return jnp.full_like(x, value, dtype=dtype, shape=jnp.shape(x)[:1])


def check_steps(steps):
  if (
      not isinstance(steps, (int, np.integer))
      or isinstance(steps, bool)
      or steps < 1
  ):
    raise ValueError(f'steps must be a positive int, got {steps!r}')


def check_restarts(restarts, restart_batching='loop'):
  if restart_batching not in RESTART_BATCHING:
    raise ValueError(
        f'unknown restart_batching {restart_batching!r}; '
        f'valid: {", ".join(RESTART_BATCHING)}'
    )
  if (
      not isinstance(restarts, (int, np.integer))
      or isinstance(restarts, bool)
      or restarts < 1
  ):
    raise ValueError(f'restarts must be >= 1, got {restarts}')


def restart_keys(rng: jax.Array, restarts: int) -> jax.Array:
  """Keys of the restarts, (restarts,) keys: restart r of an attack run with `rng` uses [r].

  A single restart uses rng itself, so attack(rng=restart_keys(rng, R)[r], restarts=1)
  reproduces restart r of attack(rng=rng, restarts=R). With restart_batching='vmap' this holds
  for threefry keys (the default) but not for 'rbg' keys, which draw other bits under vmap.
  """
  if restarts == 1:
    return rng[None]
  return jax.random.split(rng, restarts)


def keep_better(best, new):
  """Merge (x_adv, loss, success) candidates: keep a success if `best` has one, else take
  `new` if it succeeds or has a strictly higher loss (ties keep the earlier restart).
  """
  x_b, f_b, ok_b = best
  x_n, f_n, ok_n = new
  take = ~ok_b & (ok_n | (f_n > f_b))
  return (
      jnp.where(bcast(take, x_b), x_n, x_b),
      jnp.where(take, f_n, f_b),
      ok_b | ok_n,
  )


def best_of_restarts(
    run, logits_fn, objective, success, rng, x, restarts, restart_batching
):
  """Per example, the first successful restart of run(key) -> x_adv, else the highest loss.

  Returns (x_adv (b, ...), loss (b,), success bool (b,)) scored at the returned points.
  """
  check_restarts(restarts, restart_batching)

  def scored(key):
    x_adv = run(key)
    logits = logits_fn(x_adv)
    return x_adv, objective(logits), success(logits)

  keys = restart_keys(rng, restarts)
  if restarts == 1:
    return scored(keys[0])
  loss_dtype = jax.eval_shape(scored, keys[0])[1].dtype
  init = (x, batch_full(x, -jnp.inf, loss_dtype), batch_full(x, False, bool))
  merge = lambda best, new: (keep_better(best, new), None)
  if restart_batching == 'vmap':
    # All restarts at once (R times the memory), merged in restart order afterwards.
    return lax.scan(merge, init, jax.vmap(scored)(keys))[0]
  return lax.scan(lambda best, key: merge(best, scored(key)), init, keys)[0]
