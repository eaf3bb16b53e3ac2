"""FAB, the Fast Adaptive Boundary attack (Croce & Hein, ICML 2020, "Minimally distorted
adversarial examples with a fast adaptive boundary attack"), L-inf, L2 and L1, untargeted and
targeted (FAB-T, as AutoAttack runs it).

FAB looks for the smallest perturbation that changes the prediction: each step linearises the
decision boundary at the current iterate, projects both the iterate and the clean point onto
that hyperplane intersected with the [0, 1] box (the exact minimal-norm projections below),
and moves to a convex combination of the two projections, biased towards the clean point, with
a small overshoot; once an iterate is misclassified it steps back towards the clean point.

Written after the reference implementation in fra31/auto-attack (fab_base.py, fab_pt.py,
fab_projections.py), in JAX with one fixed batch: every example iterates for all steps,
examples misclassified at x keep x, and the projections bracket the root of a
piecewise-linear function by bisection and then solve it exactly (the reference sorts its
breakpoints, which is ~20x slower on CPU; the L1 projection is a greedy sort by |w|).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxadv.attacks.losses import TINY, as_float
from jaxadv.attacks.precision import float32_inside
from jaxadv.attacks.restarts import batch_full, check_steps, restart_keys
from jaxadv.attacks.projections import (
    LogitsFn,
    bcast,
    project_l1,
    project_l2,
    project_linf,
)

_UNREACHED = 1e10  # the reference's marker for the hyperplane of the true class


# ----------------------------------------------------------------------------------------------
# Minimal-norm projections onto a hyperplane intersected with the box. Points are flat (b, n);
# the hyperplane is {z : <w, z> = c} with w (b, n) and c (b,).


def _oriented(t, w, c):
  """Flips (w, c) per example so that <w, t> >= c: the projection then has to lower <w, .> by
  gap >= 0. Returns (w, gap, room) with room (b, n) the distance coordinate i can move in the
  direction that lowers <w, .> without leaving [0, 1]."""
  gap = jnp.sum(w * t, axis=-1) - c
  w = w * jnp.where(gap >= 0, 1.0, -1.0)[:, None]
  room = jnp.where(w > 0, t, 1.0 - t)
  return w, jnp.abs(gap), room


def _at(v, k):
  return jnp.take_along_axis(v, k[:, None], axis=-1)[:, 0]


_BISECTIONS = 32  # halvings of the bracket before the exact solve


def _solve(drop, saturated_drop, slope, lo, hi, gap):
  """The radius r in [lo, hi] (b,) with drop(r) = gap, where drop is nondecreasing and
  piecewise linear with drop(lo) <= gap <= drop(hi) and lo > 0: geometric bisection (the
  radii span many decades in L2), then the exact solve on the final bracket with the
  coordinates saturated at lo held fixed, r = (gap - saturated_drop(lo)) / slope(lo), kept
  within the bracket."""

  def halve(_, bracket):
    lo, hi = bracket
    mid = jnp.exp(0.5 * (jnp.log(lo) + jnp.log(hi)))
    below = drop(mid) < gap
    return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

  lo, hi = lax.fori_loop(0, _BISECTIONS, halve, (lo, hi))
  return jnp.clip(
      (gap - saturated_drop(lo)) / jnp.maximum(slope(lo), TINY), lo, hi
  )


def hyperplane_box_projection_linf(t, w, c):
  """The smallest-L-inf step d (b, n) with <w, t + d> = c and t + d in [0, 1].

  With radius lam the most <w, .> can drop is g(lam) = sum_i |w_i| min(lam, room_i), concave
  piecewise linear with breakpoints at the rooms; the answer is d_i = -sign(w_i) min(lam*,
  room_i) with g(lam*) = gap. If the box cannot reach the hyperplane (g(1) < gap), d moves
  every coordinate to the face that lowers <w, .> (the reference does the same). The
  reference sorts the breakpoints; here lam* is bracketed by bisection and solved exactly on
  the bracket, which gives the same step and is ~20x faster than sorting on CPU.
  """
  w, gap, room = _oriented(t, w, c)
  aw = jnp.abs(w)
  sat = lambda r: room <= r[:, None]
  drop = lambda r: jnp.sum(aw * jnp.minimum(r[:, None], room), axis=-1)
  saturated_drop = lambda r: jnp.sum(jnp.where(sat(r), aw * room, 0.0), axis=-1)
  slope = lambda r: jnp.sum(jnp.where(sat(r), 0.0, aw), axis=-1)
  # The unconstrained answer gap / |w|_1 is a lower bound (the box only adds to it).
  lo = jnp.maximum(gap / jnp.maximum(jnp.sum(aw, axis=-1), TINY), TINY)
  lam = _solve(
      drop,
      saturated_drop,
      slope,
      lo,
      jnp.maximum(jnp.max(room, axis=-1), lo),
      gap,
  )
  lam = jnp.where(
      drop(jnp.ones_like(gap)) < gap, jnp.inf, jnp.where(gap > 0, lam, 0.0)
  )
  return -jnp.sign(w) * jnp.minimum(lam[:, None], room)


def hyperplane_box_projection_l2(t, w, c):
  """The smallest-L2 step d (b, n) with <w, t + d> = c and t + d in [0, 1].

  KKT: d_i = -sign(w_i) min(mu |w_i|, room_i); the drop h(mu) = sum_i |w_i| min(mu |w_i|,
  room_i) is piecewise linear with breakpoints room_i / |w_i|, and mu* solves h(mu*) = gap
  (bracketed by bisection, then solved exactly, as in the L-inf case). If the box cannot
  reach the hyperplane, every coordinate with w_i != 0 goes to its face.
  """
  w, gap, room = _oriented(t, w, c)
  aw = jnp.abs(w)
  active = aw > 0
  ratio = jnp.where(active, room / jnp.where(active, aw, 1.0), 0.0)
  sat = lambda r: ratio <= r[:, None]
  drop = lambda r: jnp.sum(aw * jnp.minimum(r[:, None] * aw, room), axis=-1)
  saturated_drop = lambda r: jnp.sum(jnp.where(sat(r), aw * room, 0.0), axis=-1)
  slope = lambda r: jnp.sum(jnp.where(sat(r), 0.0, aw**2), axis=-1)
  lo = jnp.maximum(gap / jnp.maximum(jnp.sum(aw**2, axis=-1), TINY), TINY)
  hi = jnp.maximum(jnp.max(ratio, axis=-1), lo)
  mu = _solve(drop, saturated_drop, slope, lo, hi, gap)
  mu = jnp.where(
      jnp.sum(aw * room, axis=-1) < gap, jnp.inf, jnp.where(gap > 0, mu, 0.0)
  )
  return -jnp.sign(w) * jnp.where(
      active, jnp.minimum(mu[:, None] * aw, room), 0.0
  )


def hyperplane_box_projection_l1(t, w, c):
  """The smallest-L1 step d (b, n) with <w, t + d> = c and t + d in [0, 1].

  Each unit of L1 moved on coordinate i lowers <w, .> by |w_i|, so the minimal step moves the
  coordinates in decreasing |w_i| to their faces until the gap closes, the last one partly.
  If the box cannot reach the hyperplane, every coordinate with w_i != 0 goes to its face
  (the reference, fra31/auto-attack's projection_l1, does the same; it finds the last
  coordinate by bisection over the sorted cumulative drops, here by a clip per coordinate).
  """
  w, gap, room = _oriented(t, w, c)
  aw = jnp.abs(w)
  order = jnp.argsort(-aw, axis=-1)
  aw_s = jnp.take_along_axis(aw, order, axis=-1)
  room_s = jnp.take_along_axis(room, order, axis=-1)
  full = aw_s * room_s  # the drop of moving a coordinate all the way
  before = (
      jnp.cumsum(full, axis=-1) - full
  )  # the drop of the coordinates before it
  amount = jnp.clip(
      (gap[:, None] - before) / jnp.maximum(aw_s, TINY), 0.0, room_s
  )
  unreachable = jnp.sum(full, axis=-1) < gap
  amount = jnp.where(unreachable[:, None], room_s, amount)
  amount = jnp.where(aw_s > 0, amount, 0.0)
  amount = jnp.take_along_axis(amount, jnp.argsort(order, axis=-1), axis=-1)
  return -jnp.sign(w) * amount


def _linf(v):
  return jnp.max(jnp.abs(v), axis=-1)


def _l2(v):
  return jnp.sqrt(jnp.sum(jnp.square(v), axis=-1))


def _l1(v):
  return jnp.sum(jnp.abs(v), axis=-1)


# norm -> (norm of flat (b, n), dual norm, projection onto hyperplane and box)
_FAB_NORMS = {
    'linf': (_linf, _l1, hyperplane_box_projection_linf),
    'l2': (_l2, _l2, hyperplane_box_projection_l2),
    'l1': (_l1, _linf, hyperplane_box_projection_l1),
}
FAB_NORMS = tuple(_FAB_NORMS)


# ----------------------------------------------------------------------------------------------
# The FAB iteration.


def _linearize_targeted(logits_fn, y, target):
  """x (b, ...) -> (f (b,), grad f (b, n)) with f = z_target - z_y: one backward pass."""

  def fn(x):
    def diff(xx):
      z = as_float(logits_fn(xx))
      take = lambda c: jnp.take_along_axis(z, c[:, None], axis=-1)[:, 0]
      return take(target) - take(y)

    f, vjp = jax.vjp(diff, x)
    return f, vjp(jnp.ones_like(f))[0].reshape(x.shape[0], -1)

  return fn


def _linearize_closest(logits_fn, y, dual_norm):
  """Untargeted FAB: the linearised boundary between y and the class whose boundary is closest
  in the linear approximation, |z_k - z_y| / |grad (z_k - z_y)|_dual. Needs the whole Jacobian
  (one backward pass per class, as the reference)."""

  def fn(x):
    z, vjp = jax.vjp(lambda xx: as_float(logits_fn(xx)), x)
    b, num_classes = z.shape
    # Built from z (not a constant) so the cotangents have z's varying-axis type under
    # shard_map with check_vma=True.
    eye = jnp.eye(num_classes, dtype=z.dtype)[:, None, :] + jnp.zeros_like(z)
    jac = jnp.moveaxis(jax.vmap(lambda e: vjp(e)[0])(eye), 0, 1).reshape(
        b, num_classes, -1
    )
    take = lambda v: jnp.take_along_axis(
        v, y.reshape((b,) + (1,) * (v.ndim - 1)), axis=1
    )
    df, dg = z - take(z), jac - take(jac)
    df = jnp.where(jax.nn.one_hot(y, num_classes, dtype=bool), _UNREACHED, df)
    k = jnp.argmin(jnp.abs(df) / (dual_norm(dg) + TINY), axis=-1)
    return _at(df, k), jnp.take_along_axis(dg, k[:, None, None], axis=1)[:, 0]

  return fn


def _random_start(rng, x, eps, norm):
  """The reference's start for restarts after the first: a random direction scaled to norm
  eps / 2 (L-inf: uniform noise scaled to max |.| = eps / 2; L2, L1: gaussian), clipped.
  """
  if norm == 'linf':
    t = jax.random.uniform(rng, x.shape, x.dtype, -1.0, 1.0)
  else:
    t = jax.random.normal(rng, x.shape, x.dtype)
  t = t / bcast(_FAB_NORMS[norm][0](t.reshape(t.shape[0], -1)) + TINY, t)
  return jnp.clip(x + 0.5 * eps * t, 0.0, 1.0)


def _fab_run(
    logits_fn, x, y, x_start, linearize, *, norm, steps, alpha_max, eta, beta
):
  """One FAB run from x_start. Returns (x_min (b, ...), dist (b,)): per example the closest
  misclassified iterate and its distance to x; x and inf where none was found, x and 0 where x
  itself is misclassified."""
  pnorm, _, project = _FAB_NORMS[norm]
  b = x.shape[0]
  x0 = x.reshape(b, -1)
  wrong = lambda xx: jnp.argmax(logits_fn(xx), axis=-1) != y
  dist0 = jnp.where(wrong(x), 0.0, jnp.inf).astype(x0.dtype)

  def body(_, s):
    x1, x_min, dist = s
    df, dg = linearize(x1.reshape(x.shape))
    c = (
        jnp.sum(dg * x1, axis=-1) - df
    )  # the boundary's linearisation: <dg, z> = c
    d1, d2 = project(x1, dg, c), project(x0, dg, c)
    a1 = jnp.maximum(pnorm(d1), 1e-8)
    a2 = jnp.maximum(pnorm(d2), 1e-8)
    alpha = jnp.clip(a1 / (a1 + a2), 0.0, alpha_max)[:, None]
    x1 = jnp.clip(
        (x1 + eta * d1) * (1 - alpha) + (x0 + eta * d2) * alpha, 0.0, 1.0
    )
    adv = wrong(x1.reshape(x.shape))
    d = pnorm(x1 - x0)
    closer = adv & (d < dist)
    x_min = jnp.where(closer[:, None], x1, x_min)
    dist = jnp.where(closer, d, dist)
    # Misclassified: step back towards x (by beta) to look for a closer crossing.
    x1 = jnp.where(adv[:, None], x0 + beta * (x1 - x0), x1)
    return x1, x_min, dist

  init = (x_start.reshape(b, -1), x0, dist0)
  _, x_min, dist = lax.fori_loop(0, steps, body, init)
  return x_min.reshape(x.shape), dist


def _check_fab(norm, steps, restarts, alpha_max, eta, beta):
  if norm not in FAB_NORMS:
    raise ValueError(
        f'unknown norm {norm!r}; valid norms: {", ".join(FAB_NORMS)}'
    )
  check_steps(steps)
  if restarts < 1:
    raise ValueError(f'restarts must be >= 1, got {restarts}')
  if not 0 <= alpha_max <= 1 or eta < 1 or not 0 < beta < 1:
    raise ValueError(
        f'need 0 <= alpha_max <= 1, eta >= 1, 0 < beta < 1; got alpha_max='
        f'{alpha_max}, eta={eta}, beta={beta}'
    )


@float32_inside(ball=False)
def fab_minimal(
    logits_fn: LogitsFn,
    rng: jax.Array,
    x: jax.Array,
    y: jax.Array,
    *,
    norm: str = 'linf',
    steps: int = 100,
    restarts: int = 1,
    target: jax.Array | None = None,
    eps=0.0,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
) -> tuple[jax.Array, jax.Array]:
  """The smallest perturbation FAB finds, not bounded by any eps.

  Args:
    norm: the norm minimised, 'linf' | 'l2' | 'l1'.
    steps: FAB iterations per restart (each: one forward-backward pass, one backward pass per
      class when untargeted, and one forward pass to test the new iterate).
    restarts: restart 0 starts at x; restart r >= 1 starts at a random point at distance
      eps / 2 (as AutoAttack's FAB), keyed by `restart_keys(rng, restarts)[r]`. The closest
      point over all restarts is kept.
    target: int (b,): linearise the boundary between y and target only (FAB-T: one gradient
      per step). None: untargeted FAB, the closest linearised boundary among all classes.
      Either way success means misclassification, as in the reference.
    eps: only sets the radius of the random starts (the reference's use of eps inside FAB).
    alpha_max, eta, beta: the paper's bias towards x (0.1), overshoot (1.05) and backward step
      (0.9).
  Returns:
    (x_min, dist): x_min (b, ...) the closest misclassified point found, x where none was
    found; dist (b,) its norm-distance to x, inf where none was found, 0 where x itself is
    misclassified. Both are stop_gradient'ed.
  """
  _check_fab(norm, steps, restarts, alpha_max, eta, beta)
  dual = _FAB_NORMS[norm][1]
  linearize = (
      _linearize_closest(logits_fn, y, dual)
      if target is None
      else _linearize_targeted(logits_fn, y, target)
  )
  keys = restart_keys(rng, restarts)

  def one_restart(best, r):
    start = jnp.where(r == 0, x, _random_start(keys[r], x, eps, norm))
    x_r, d_r = _fab_run(
        logits_fn,
        x,
        y,
        start,
        linearize,
        norm=norm,
        steps=steps,
        alpha_max=alpha_max,
        eta=eta,
        beta=beta,
    )
    closer = d_r < best[1]
    return (
        jnp.where(bcast(closer, x), x_r, best[0]),
        jnp.where(closer, d_r, best[1]),
    ), None

  init = (x, batch_full(x, jnp.inf, x.dtype))
  (x_min, dist), _ = lax.scan(one_restart, init, jnp.arange(restarts))
  return lax.stop_gradient(x_min), lax.stop_gradient(dist)


def _within_eps(x, x_min, dist, eps, norm):
  """AutoAttack's rule: a FAB point counts only if it is within eps; otherwise x is returned
  (so an example FAB cannot break within eps stays robust). The projection only absorbs
  float rounding."""
  x_adv = jnp.where(bcast(dist <= eps, x), x_min, x)
  project = {'linf': project_linf, 'l2': project_l2, 'l1': project_l1}[norm]
  return lax.stop_gradient(project(x_adv, x, eps))


@float32_inside
def fab(
    logits_fn: LogitsFn,
    rng: jax.Array,
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    norm: str = 'linf',
    steps: int = 100,
    restarts: int = 1,
    target: jax.Array | None = None,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
) -> jax.Array:
  """FAB (Croce & Hein 2020) as an eps-bounded attack, the way AutoAttack counts it.

  Runs `fab_minimal` (untargeted, or towards `target` when given) and returns, per example,
  the closest misclassified point found if its distance to x is at most eps, else x itself
  (the reference's perturb() likewise keeps x for points it broke only beyond eps). So an
  example counts as non-robust exactly when FAB found a misclassified point within eps.

  Returns:
    stop_gradient(x_adv), (b, ...) in [0, 1] and in the eps ball of x.
  """
  x_min, dist = fab_minimal(
      logits_fn,
      rng,
      x,
      y,
      norm=norm,
      steps=steps,
      restarts=restarts,
      target=target,
      eps=eps,
      alpha_max=alpha_max,
      eta=eta,
      beta=beta,
  )
  return _within_eps(x, x_min, dist, eps, norm)


@float32_inside
def fab_t(
    logits_fn: LogitsFn,
    rng: jax.Array,
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    norm: str = 'linf',
    steps: int = 100,
    restarts: int = 1,
    num_target_classes: int = 9,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
) -> jax.Array:
  """FAB-T, AutoAttack's targeted FAB: `fab_minimal` towards each of the num_target_classes
  (at most C - 1) highest-logit classes at x other than y, one gradient per step.

  The reference runs target k only on the points no earlier target broke within eps; here
  every target runs on the whole batch and the closest point over all targets is kept, which
  breaks the same examples within eps. Target i (0-based, in decreasing clean logit) uses key
  jax.random.fold_in(rng, i); with restarts=1 (AutoAttack's setting) FAB-T draws no random
  numbers at all.

  Returns:
    stop_gradient(x_adv), (b, ...) in [0, 1] and in the eps ball of x: the closest
    misclassified point found when it is within eps, else x.
  """
  x_min, dist = fab_t_minimal(
      logits_fn,
      rng,
      x,
      y,
      norm=norm,
      steps=steps,
      restarts=restarts,
      num_target_classes=num_target_classes,
      eps=eps,
      alpha_max=alpha_max,
      eta=eta,
      beta=beta,
  )
  return _within_eps(x, x_min, dist, eps, norm)


@float32_inside(ball=False)
def fab_t_minimal(
    logits_fn: LogitsFn,
    rng: jax.Array,
    x: jax.Array,
    y: jax.Array,
    *,
    norm: str = 'linf',
    steps: int = 100,
    restarts: int = 1,
    num_target_classes: int = 9,
    eps=0.0,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
) -> tuple[jax.Array, jax.Array]:
  """(x_min, dist) of `fab_minimal` minimised over FAB-T's targets (see `fab_t`)."""
  clean = as_float(lax.stop_gradient(logits_fn(x)))
  num_classes = clean.shape[-1]
  if num_classes < 2:
    raise ValueError(f'fab_t needs at least 2 classes, got {num_classes}')
  n_targets = min(num_target_classes, num_classes - 1)
  others = jnp.where(
      jax.nn.one_hot(y, num_classes, dtype=bool), -jnp.inf, clean
  )
  targets = lax.top_k(others, n_targets)[1].astype(y.dtype)  # (b, T)

  def one_target(best, i):
    x_i, d_i = fab_minimal(
        logits_fn,
        jax.random.fold_in(rng, i),
        x,
        y,
        norm=norm,
        steps=steps,
        restarts=restarts,
        target=targets[:, i],
        eps=eps,
        alpha_max=alpha_max,
        eta=eta,
        beta=beta,
    )
    closer = d_i < best[1]
    return (
        jnp.where(bcast(closer, x), x_i, best[0]),
        jnp.where(closer, d_i, best[1]),
    ), None

  init = (x, batch_full(x, jnp.inf, x.dtype))
  (x_min, dist), _ = lax.scan(one_target, init, jnp.arange(n_targets))
  return x_min, dist
