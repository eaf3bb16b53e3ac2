"""Gradient attacks of the PGD family: FGSM, FGSM-RS, PGD (L-inf, L2, restarts), iFGSM/BIM, CW-inf,
and the restart machinery they share."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from jaxadv.attacks.losses import objective_fn, success_fn
from jaxadv.attacks.projections import LogitsFn, bcast, loss_and_grad, norm_ops

RESTART_BATCHING = ('loop', 'vmap')


# Default step sizes, stated once: the attacks use them and AttackSpec.describe() reports them.
def fgsm_rs_step_size(eps):
  """FGSM-RS's alpha: 1.25 eps (Wong et al. 2020)."""
  return 1.25 * eps


def pgd_step_size(eps, steps):
  """PGD's per-step move: 2.5 eps / steps (Madry et al.'s robustness library)."""
  return 2.5 * eps / steps


def ifgsm_step_size(eps, steps):
  """iFGSM/BIM's per-step move: 1/255 (Kurakin et al. 2017's alpha = 1)."""
  del eps, steps
  return 1.0 / 255


def ifgsm_steps(eps):
  """iFGSM/BIM's default number of steps, Kurakin et al. 2017:
  min(255 eps + 4, 1.25 * 255 eps), at least 1 (eps in pixel scale)."""
  try:
    e = 255.0 * float(eps)
  except TypeError:
    raise ValueError('ifgsm with a traced eps needs explicit steps') from None
  return max(int(min(e + 4, 1.25 * e)), 1)


# Restarts.


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
  if restart_batching not in RESTART_BATCHING:
    raise ValueError(
        f'unknown restart_batching {restart_batching!r}; '
        f'valid: {", ".join(RESTART_BATCHING)}'
    )
  if restarts < 1:
    raise ValueError(f'restarts must be >= 1, got {restarts}')

  def scored(key):
    x_adv = run(key)
    logits = logits_fn(x_adv)
    return x_adv, objective(logits), success(logits)

  keys = restart_keys(rng, restarts)
  if restarts == 1:
    return scored(keys[0])
  loss_dtype = jax.eval_shape(scored, keys[0])[1].dtype
  init = (
      x,
      jnp.full(x.shape[:1], -jnp.inf, loss_dtype),
      jnp.zeros(x.shape[:1], bool),
  )
  merge = lambda best, new: (keep_better(best, new), None)
  if restart_batching == 'vmap':
    # All restarts at once (R times the memory), merged in restart order afterwards.
    return lax.scan(merge, init, jax.vmap(scored)(keys))[0]
  return lax.scan(lambda best, key: merge(best, scored(key)), init, keys)[0]


def check_steps(steps):
  if (
      not isinstance(steps, (int, np.integer))
      or isinstance(steps, bool)
      or steps < 1
  ):
    raise ValueError(f'steps must be a positive int, got {steps!r}')


# ----------------------------------------------------------------------------------------------
# Single-step attacks.


def clean(
    logits_fn: LogitsFn, rng: jax.Array, x: jax.Array, y: jax.Array
) -> jax.Array:
  """No attack: returns stop_gradient(x)."""
  del logits_fn, rng, y
  return lax.stop_gradient(x)


def fgsm(
    logits_fn: LogitsFn,
    rng: jax.Array,
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    norm: str = 'linf',
    loss: str = 'ce',
    target: jax.Array | None = None,
) -> jax.Array:
  """Fast gradient (sign) method: one step of size eps from x (rng unused).

  L-inf: x + eps * sign(g); L2: x + eps * g / |g|_2 (FGM); then clipped to [0, 1].
  """
  del rng
  direction, project, _ = norm_ops(norm)
  _, _, g = loss_and_grad(logits_fn, objective_fn(loss, y, target), x)
  return lax.stop_gradient(project(x + eps * direction(g), x, eps))


def fgsm_rs(
    logits_fn: LogitsFn,
    rng: jax.Array,
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    alpha=None,
    norm: str = 'linf',
    loss: str = 'ce',
    target: jax.Array | None = None,
    clip_start: bool = True,
) -> jax.Array:
  """FGSM with a random start (Wong et al. 2020; L2: Goodwin et al. 2020).

  Start uniform in the eps ball, one step of size alpha (default 1.25 * eps) along the signed
  (L-inf) or normalised (L2) gradient, project back to the eps ball and [0, 1].
  clip_start=False takes the gradient at the unclipped start x + delta, which may leave
  [0, 1], as Wong et al.'s MNIST code does (their CIFAR code clips); on MNIST, whose pixels
  are mostly 0, clipping removes half of the start noise from the background. The result is
  in [0, 1] either way.
  """
  direction, project, init = norm_ops(norm)
  alpha = fgsm_rs_step_size(eps) if alpha is None else alpha
  x0 = init(rng, x, eps, clip_start)
  _, _, g = loss_and_grad(logits_fn, objective_fn(loss, y, target), x0)
  return lax.stop_gradient(project(x0 + alpha * direction(g), x, eps))


# ----------------------------------------------------------------------------------------------
# PGD family.


def _pgd_run(
    logits_fn,
    rng,
    x,
    objective,
    success,
    *,
    eps,
    steps,
    step_size,
    norm,
    random_start,
    keep_best,
):
  """One PGD restart. keep_best: per example, the highest-loss iterate among those that
  succeed, else the highest-loss iterate (iterates 0..steps; the losses come with the
  gradients, plus one forward pass for the last iterate); else the final iterate (Madry et
  al.'s training)."""
  direction, project, init = norm_ops(norm)
  x0 = init(rng, x, eps) if random_start else x

  def step(x_adv, g):
    return project(x_adv + step_size * direction(g), x, eps)

  if not keep_best:
    return lax.fori_loop(
        0,
        steps,
        lambda _, xa: step(xa, loss_and_grad(logits_fn, objective, xa)[2]),
        x0,
    )

  def merge(best, x_adv, f, logits):
    # Prefer a success, then a higher loss (APGD's rule): a success found
    # is never lost, and among successes the strongest point is returned.
    x_b, f_b, ok_b = best
    ok = success(logits)
    take = (ok & (~ok_b | (f >= f_b))) | (~ok_b & (f > f_b))
    return (
        jnp.where(bcast(take, x_b), x_adv, x_b),
        jnp.where(take, f, f_b),
        ok_b | ok,
    )

  def body(_, carry):
    x_adv, best = carry
    f, logits, g = loss_and_grad(logits_fn, objective, x_adv)
    return step(x_adv, g), merge(best, x_adv, f, logits)

  b = x.shape[0]
  f_dtype = jax.eval_shape(lambda v: objective(logits_fn(v)), x).dtype
  best = (x0, jnp.full((b,), -jnp.inf, f_dtype), jnp.zeros((b,), bool))
  x_last, best = lax.fori_loop(0, steps, body, (x0, best))
  logits = logits_fn(x_last)
  return merge(best, x_last, objective(logits), logits)[0]


def pgd(
    logits_fn: LogitsFn,
    rng: jax.Array,
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    steps: int = 10,
    step_size=None,
    norm: str = 'linf',
    random_start: bool = True,
    restarts: int = 1,
    loss: str = 'ce',
    target: jax.Array | None = None,
    restart_batching: str = 'loop',
    keep_best: bool = True,
) -> jax.Array:
  """Projected gradient ascent (Madry et al. 2018).

  Args:
    eps: ball radius in pixel scale (L-inf or L2 per `norm`).
    steps: gradient steps per restart.
    step_size: per-step move (default 2.5 * eps / steps); L-inf steps along sign(g), L2 along
      g / |g|_2 per example.
    random_start: start uniform in the eps ball (else at x).
    restarts: independent random starts; see the module docstring for how they are merged
      and keyed (`restart_keys`).
    loss: 'ce' | 'cw' | 'dlr', maximised (targeted variants when `target` is given).
    target: optional int (b,) target classes; success then means predicting the target.
    restart_batching: 'loop' (lax.scan over restarts, memory of one) or 'vmap' (all at once).
    keep_best: per example and restart, return the highest-loss successful iterate, else the
      highest-loss one (default; an attack never loses a success it found, as APGD); False
      returns the final iterate, as Madry et al.'s training does.
  Returns:
    stop_gradient(x_adv), (b, ...) in [0, 1] and in the eps ball of x.
  """
  check_steps(steps)
  step_size = pgd_step_size(eps, steps) if step_size is None else step_size
  objective, success = objective_fn(loss, y, target), success_fn(y, target)
  run = lambda key: _pgd_run(
      logits_fn,
      key,
      x,
      objective,
      success,
      eps=eps,
      steps=steps,
      step_size=step_size,
      norm=norm,
      random_start=random_start,
      keep_best=keep_best,
  )
  x_adv, _, _ = best_of_restarts(
      run, logits_fn, objective, success, rng, x, restarts, restart_batching
  )
  return lax.stop_gradient(x_adv)


def ifgsm(
    logits_fn: LogitsFn,
    rng: jax.Array,
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    steps: int | None = None,
    step_size=None,
    norm: str = 'linf',
    loss: str = 'ce',
    target: jax.Array | None = None,
) -> jax.Array:
  """Iterative FGSM / BIM (Kurakin et al. 2017): PGD from x (no random start), one restart,
  best iterate kept. Default schedule Kurakin et al.'s: steps of 1/255 (`ifgsm_step_size`),
  min(255 eps + 4, 1.25 * 255 eps) of them (`ifgsm_steps`; eps must then be a Python number).
  Given `steps` without `step_size`, the step is still 1/255: pass step_size=eps/steps for
  k steps that reach the ball's boundary (as GREAT's Table 1 does)."""
  steps = ifgsm_steps(eps) if steps is None else steps
  check_steps(steps)
  step_size = ifgsm_step_size(eps, steps) if step_size is None else step_size
  return pgd(
      logits_fn,
      rng,
      x,
      y,
      eps=eps,
      steps=steps,
      step_size=step_size,
      norm=norm,
      random_start=False,
      loss=loss,
      target=target,
  )


bim = ifgsm


def cw(
    logits_fn: LogitsFn,
    rng: jax.Array,
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    steps: int = 10,
    step_size=None,
    norm: str = 'linf',
    random_start: bool = True,
    restarts: int = 1,
    target: jax.Array | None = None,
    restart_batching: str = 'loop',
) -> jax.Array:
  """PGD on the CW margin loss (the 'CW-inf' attack of the robustness literature)."""
  return pgd(
      logits_fn,
      rng,
      x,
      y,
      eps=eps,
      steps=steps,
      step_size=step_size,
      norm=norm,
      random_start=random_start,
      restarts=restarts,
      loss='cw',
      target=target,
      restart_batching=restart_batching,
  )
