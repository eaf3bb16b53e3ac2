"""APGD for the L1 threat model (Croce & Hein, ICML 2021, "Mind the box: l1-APGD for sparse
adversarial attacks on image classifiers"), as fra31/auto-attack's autopgd_base.py runs it in
AutoAttack's standard L1 version.

Per step, the update moves only the coordinates whose |gradient| is in the top fraction
`topk` of the example: step_size * sign(g_i) / k on each of those k coordinates (an L1 move
of step_size), then the exact projection onto the L1 ball intersected with [0, 1]
(`projections.l1_ball_box_delta`); no momentum. Every k_check = max(int(0.04 N), 1) steps
(N the steps of the run) the sparsity s of the best point so far sets topk = s / (1.5 n),
and the step size returns to eps and the run restarts from the best point when s shrank
under 0.95 of its value at the last check; otherwise the step size is divided by 1.5,
within [eps / 10, eps]. With `largereps` (AutoAttack's L1 setting) the run is split into
three runs at 3 eps, 2 eps and eps of ceil(0.3 N), ceil(0.3 N) and the rest of the steps,
each starting from the previous one's best point projected onto its ball; only the last,
at eps, counts for success.

Follows the reference in all of the above (100 steps: 30 + 30 + 40). Departs in the returned
point: per example the highest-loss iterate among those that succeed (the reference keeps the last
successful one; either is a success), else the highest-loss iterate (the reference returns x).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from jaxadv.attacks.projections import bcast, l1_ball_box_delta
from jaxadv.attacks.restarts import batch_full

_ADASP_REDUCE = 1.5  # step-size division at a check without a sparsity drop
_ADASP_MIN = 10.0  # the step size stays >= eps / _ADASP_MIN


def _l0(delta: jax.Array) -> jax.Array:
  """Nonzero coordinates per example, float32 (b,)."""
  flat = delta.reshape(delta.shape[0], -1)
  return jnp.sum(flat != 0, axis=-1).astype(jnp.float32)


def _sparse_step(g: jax.Array, topk: jax.Array) -> jax.Array:
  """sign(g) on the coordinates with |g| at or above the (1 - topk) quantile of the example,
  divided by their count: a move of L1 size 1. g (b, ...), topk (b,)."""
  b, n = g.shape[0], math.prod(g.shape[1:])
  mag = jnp.abs(g).reshape(b, n)
  idx = jnp.clip(((1.0 - topk) * n).astype(jnp.int32), 0, n - 1)
  thr = jnp.take_along_axis(jnp.sort(mag, axis=-1), idx[:, None], axis=-1)
  direction = jnp.sign(jnp.where(mag >= thr, g.reshape(b, n), 0.0))
  l1 = jnp.sum(jnp.abs(direction), axis=-1, keepdims=True)
  return (direction / (l1 + 1e-10)).reshape(g.shape)


def _l1_run(grad_fn, key, x, x0, success, *, eps, steps, from_start):
  """One L1 run of `steps` from x0 (in the eps ball). Returns (x_best, x_adv, found): the
  highest-loss iterate, the highest-loss successful one and whether any succeeded.

  from_start: x0 is a random start (topk 0.2 and sparsity n at first, the reference's
  default) rather than a given initial point (topk and sparsity from x0)."""
  n = math.prod(x.shape[1:])
  k_check = max(int(0.04 * steps), 1)
  f0, logits0, g0 = grad_fn(x0, jax.random.fold_in(key, 0))
  ok0 = success(logits0)
  sp0 = batch_full(x, n, jnp.float32) if from_start else _l0(x0 - x)
  s0 = dict(
      x=x0,
      g=g0,
      x_best=x0,
      g_best=g0,
      f_best=f0,
      x_adv=x0,
      f_adv=jnp.where(ok0, f0, -jnp.inf),
      found=ok0,
      eta=batch_full(x, 1.0, x.dtype) * eps,
      topk=jnp.full_like(sp0, 0.2) if from_start else sp0 / n / 1.5,
      sp_old=sp0,
  )

  def body(i, s):
    moved = s['x'] + bcast(s['eta'], x) * _sparse_step(s['g'], s['topk'])
    x_new = x + l1_ball_box_delta(x, moved - x, eps)
    f, logits, g = grad_fn(x_new, jax.random.fold_in(key, i + 1))
    ok = success(logits)
    sel = lambda c, u, v: jnp.where(bcast(c, u), u, v)
    up = f > s['f_best']
    x_best, g_best = sel(up, x_new, s['x_best']), sel(up, g, s['g_best'])
    better_adv = ok & (f >= s['f_adv'])
    # The sparsity check, every k_check steps.
    check = (i + 1) % k_check == 0
    sp = _l0(x_best - x)
    drop = check & (sp / s['sp_old'] < 0.95)
    eta = jnp.where(drop, eps, s['eta'] / _ADASP_REDUCE)
    eta = jnp.where(check, jnp.clip(eta, eps / _ADASP_MIN, eps), s['eta'])
    return dict(
        x=sel(drop, x_best, x_new),
        g=sel(drop, g_best, g),
        x_best=x_best,
        g_best=g_best,
        f_best=jnp.maximum(f, s['f_best']),
        x_adv=sel(better_adv, x_new, s['x_adv']),
        f_adv=jnp.where(better_adv, f, s['f_adv']),
        found=s['found'] | ok,
        eta=eta,
        topk=jnp.where(check, sp / n / 1.5, s['topk']),
        sp_old=jnp.where(check, sp, s['sp_old']),
    )

  s = lax.fori_loop(0, steps, body, s0)
  return s['x_best'], s['x_adv'], s['found']


def largereps_schedule(steps: int):
  """AutoAttack's L1 eps schedule: ((3, n1), (2, n2), (1, n3)), eps multiples and steps,
  n1 = n2 = ceil(0.3 steps) (in float arithmetic, as the reference), n3 the rest.
  """
  n1 = math.ceil(0.3 * steps)
  if steps - 2 * n1 < 1:
    raise ValueError(f'largereps needs steps >= 3, got {steps}')
  return ((3.0, n1), (2.0, n1), (1.0, steps - 2 * n1))


def apgd_l1_run(grad_fn, rng, x, success, *, eps, steps, largereps):
  """One APGD-L1 restart (see the module docstring). Returns, per example, the highest-loss
  successful iterate of the (last) run if one succeeded, else its highest-loss iterate.
  """
  k_start, k_runs = jax.random.split(rng)
  noise = jax.random.normal(k_start, x.shape, x.dtype)
  if not largereps:
    x0 = jnp.clip(x + l1_ball_box_delta(x, noise, eps), 0.0, 1.0)
    x_best, x_adv, found = _l1_run(
        grad_fn, k_runs, x, x0, success, eps=eps, steps=steps, from_start=True
    )
    return jnp.where(bcast(found, x), x_adv, x_best)
  x_init = x
  for i, (scale, n) in enumerate(largereps_schedule(steps)):
    start = noise if i == 0 else x_init - x
    x_init = jnp.clip(x + l1_ball_box_delta(x, start, scale * eps), 0.0, 1.0)
    x_init, x_adv, found = _l1_run(
        grad_fn,
        jax.random.fold_in(k_runs, i),
        x,
        x_init,
        success,
        eps=scale * eps,
        steps=n,
        from_start=False,
    )
  return jnp.where(bcast(found, x), x_adv, x_init)
