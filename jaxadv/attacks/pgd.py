"""Gradient attacks of the PGD family: FGSM, FGSM-RS, PGD (L-inf, L2, restarts), iFGSM/BIM and
CW-inf, as presets of the composable `iterative.iterative` attack (init, step rule,
projection, loss, steps)."""

from __future__ import annotations

import jax
from jax import lax

from jaxadv.attacks.iterative import iterative
from jaxadv.attacks.precision import float32_inside
from jaxadv.attacks.projections import LogitsFn, norm_ops
from jaxadv.attacks.restarts import (  # re-exported: the restart machinery lived here
    RESTART_BATCHING,
    best_of_restarts,
    check_steps,
    keep_better,
    restart_keys,
)

# norm -> the parts of `iterative` that make PGD in that norm: random start, step, projection.
_PGD_PARTS = {
    'linf': ('uniform_linf', 'sign', 'linf'),
    'l2': ('uniform_l2', 'l2', 'l2'),
}


def pgd_parts(norm: str):
  """(init, step, project) names of `iterative` for PGD in `norm`."""
  norm_ops(norm)  # raises on an unknown norm, naming the valid ones
  return _PGD_PARTS[norm]


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


# ----------------------------------------------------------------------------------------------
# Single-step attacks.


def clean(
    logits_fn: LogitsFn, rng: jax.Array, x: jax.Array, y: jax.Array
) -> jax.Array:
  """No attack: returns stop_gradient(x)."""
  del logits_fn, rng, y
  return lax.stop_gradient(x)


@float32_inside
def fgsm(
    logits_fn: LogitsFn,
    rng: jax.Array,
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    norm: str = 'linf',
    loss='ce',
    target: jax.Array | None = None,
) -> jax.Array:
  """Fast gradient (sign) method: one step of size eps from x (rng unused).

  L-inf: x + eps * sign(g); L2: x + eps * g / |g|_2 (FGM); then clipped to [0, 1].
  `iterative` with init='zero', one step of size eps, the final iterate.
  """
  del rng
  _, step, project = pgd_parts(norm)
  return iterative(
      logits_fn,
      None,
      x,
      y,
      eps=eps,
      steps=1,
      step=step,
      step_size=eps,
      init='zero',
      project=project,
      loss=loss,
      target=target,
      keep_best=False,
  )


@float32_inside
def fgsm_rs(
    logits_fn: LogitsFn,
    rng: jax.Array,
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    alpha=None,
    norm: str = 'linf',
    loss='ce',
    target: jax.Array | None = None,
    clip_start: bool = True,
) -> jax.Array:
  """FGSM with a random start (Wong et al. 2020; L2: Goodwin et al. 2020).

  Start uniform in the eps ball, one step of size alpha (default 1.25 * eps) along the signed
  (L-inf) or normalised (L2) gradient, project back to the eps ball and [0, 1].
  clip_start=False takes the gradient at the unclipped start x + delta, which may leave
  [0, 1], as Wong et al.'s MNIST code does (their CIFAR code clips); on MNIST, whose pixels
  are mostly 0, clipping removes half of the start noise from the background. The result is
  in [0, 1] either way. `iterative` with a uniform start and one step.
  """
  _, step, project = pgd_parts(norm)
  init = norm_ops(norm)[2]
  alpha = fgsm_rs_step_size(eps) if alpha is None else alpha
  return iterative(
      logits_fn,
      rng,
      x,
      y,
      eps=eps,
      steps=1,
      step=step,
      step_size=alpha,
      init=lambda k, x, eps: init(k, x, eps, clip_start),
      project=project,
      loss=loss,
      target=target,
      keep_best=False,
  )


# ----------------------------------------------------------------------------------------------
# PGD family.


@float32_inside
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
    loss='ce',
    target: jax.Array | None = None,
    restart_batching: str = 'loop',
    keep_best: bool = True,
) -> jax.Array:
  """Projected gradient ascent (Madry et al. 2018): `iterative` with a uniform random start
  in the eps ball (or x), sign (L-inf) or L2-normalised steps and the ball-and-box projection.

  Args:
    eps: ball radius in pixel scale (L-inf or L2 per `norm`).
    steps: gradient steps per restart.
    step_size: per-step move (default 2.5 * eps / steps); L-inf steps along sign(g), L2 along
      g / |g|_2 per example.
    random_start: start uniform in the eps ball (else at x).
    restarts: independent random starts; see the package docstring for how they are merged
      and keyed (`restart_keys`).
    loss: 'ce' | 'cw' | 'dlr' or a callable (logits, labels) -> (b,), maximised (targeted
      variants, or labels = target, when `target` is given).
    target: optional int (b,) target classes; success then means predicting the target.
    restart_batching: 'loop' (lax.scan over restarts, memory of one) or 'vmap' (all at once).
    keep_best: per example and restart, return the highest-loss successful iterate, else the
      highest-loss one (default; an attack never loses a success it found, as APGD); False
      returns the final iterate, as Madry et al.'s training does.
  Returns:
    stop_gradient(x_adv), (b, ...) in [0, 1] and in the eps ball of x.
  """
  check_steps(steps)
  init, step, project = pgd_parts(norm)
  step_size = pgd_step_size(eps, steps) if step_size is None else step_size
  return iterative(
      logits_fn,
      rng,
      x,
      y,
      eps=eps,
      steps=steps,
      step=step,
      step_size=step_size,
      init=init if random_start else 'zero',
      project=project,
      loss=loss,
      target=target,
      restarts=restarts,
      keep_best=keep_best,
      restart_batching=restart_batching,
  )


@float32_inside
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
    loss='ce',
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


@float32_inside
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
