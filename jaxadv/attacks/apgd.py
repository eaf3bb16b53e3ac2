"""APGD and APGD-T (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", Algorithm 1), in L-inf and L2, and in L1 through
jaxadv/attacks/apgd_l1.py (Croce & Hein 2021); EOT gradients for randomized models
(jaxadv/attacks/eot.py)."""

from __future__ import annotations

import fractions
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxadv.attacks.apgd_l1 import apgd_l1_run, largereps_schedule
from jaxadv.attacks.eot import check_eot, eot_loss_and_grad
from jaxadv.attacks.losses import as_float, dlr_targeted, objective_fn, success_fn
from jaxadv.attacks.precision import float32_inside
from jaxadv.attacks.projections import LogitsFn, bcast, norm_ops
from jaxadv.attacks.restarts import (
    batch_full,
    best_of_restarts,
    check_steps,
    keep_better,
)

APGD_NORMS = ('linf', 'l2', 'l1')


def apgd_step_size(eps):
  """APGD's initial step size: 2 eps (Croce & Hein 2020)."""
  return 2.0 * eps


def apgd_checkpoints(steps: int) -> tuple[int, ...]:
  """APGD checkpoints w_j = ceil(p_j * steps) <= steps, deduplicated, starting with w_0 = 0.

  p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06). Exact rationals avoid
  ceil(0.22 * 100) = 23 from float rounding.
  """
  check_steps(steps)
  F = fractions.Fraction
  p = [F(0), F(22, 100)]
  while p[-1] <= 1:
    p.append(p[-1] + max(p[-1] - p[-2] - F(3, 100), F(6, 100)))
  return tuple(
      sorted(
          {math.ceil(pj * steps) for pj in p if math.ceil(pj * steps) <= steps}
      )
  )


def _apgd_schedule(steps: int):
  """Static per-iterate arrays (steps + 1,): is iterate k a checkpoint, and w_j - w_{j-1}."""
  w = apgd_checkpoints(steps)
  is_ckpt = np.zeros(steps + 1, bool)
  window = np.ones(steps + 1, np.int32)
  for prev, cur in zip(w[:-1], w[1:]):
    is_ckpt[cur], window[cur] = True, cur - prev
  return jnp.asarray(is_ckpt), jnp.asarray(window)


def _apgd_run(grad_fn, rng, x, success, *, eps, steps, norm, rho, alpha):
  """One APGD restart in L-inf or L2; grad_fn(x_adv, key) -> (loss, logits, gradient) (keys
  only matter for EOT on a randomized model). Returns, per example, the highest-loss
  successful iterate if any iterate succeeded, else the highest-loss iterate; (b, ...).
  """
  direction, project, init = norm_ops(norm)
  is_ckpt, window = _apgd_schedule(steps)
  k_eot = jax.random.fold_in(
      rng, 1
  )  # init draws from rng itself, as before EOT

  x0 = init(rng, x, eps)
  f0, logits0, g0 = grad_fn(x0, jax.random.fold_in(k_eot, 0))
  ok0 = success(logits0)
  s0 = dict(
      x=x0,
      x_prev=x0,
      g=g0,
      f=f0,  # current iterate x_k and x_{k-1}
      x_max=x0,
      g_max=g0,
      f_max=f0,  # highest loss so far (restart point)
      x_adv=x0,
      f_adv=jnp.where(ok0, f0, -jnp.inf),
      found=ok0,  # best successful iterate
      # per-example step size, 2 * eps
      eta=batch_full(x, 1.0, x.dtype) * apgd_step_size(eps),
      n_up=batch_full(x, 0, jnp.int32),  # loss increases since last checkpoint
      f_max_ckpt=f0,
      halved_ckpt=batch_full(x, False, bool),  # state at the last checkpoint
  )

  def body(k, s):  # computes iterate k + 1 from x_k
    z = project(s['x'] + bcast(s['eta'], x) * direction(s['g']), x, eps)
    a = jnp.where(k == 0, 1.0, alpha)  # the first step has no momentum
    x_new = project(
        s['x'] + a * (z - s['x']) + (1 - a) * (s['x'] - s['x_prev']), x, eps
    )
    f, logits, g = grad_fn(x_new, jax.random.fold_in(k_eot, k + 1))
    ok = success(logits)

    sel = lambda c, u, v: jnp.where(bcast(c, u), u, v)
    # Ties go to the newer iterate (the paper's '>' otherwise): near a maximum the float32 loss
    # stops resolving the remaining progress, and the iterates are still converging.
    up = f >= s['f_max']
    x_max, g_max = sel(up, x_new, s['x_max']), sel(up, g, s['g_max'])
    f_max = jnp.maximum(f, s['f_max'])
    better_adv = ok & (f >= s['f_adv'])
    n_up = s['n_up'] + (f > s['f']).astype(jnp.int32)

    # Checkpoint w_j = k + 1: halve eta and restart from x_max if under rho of the steps since
    # w_{j-1} increased the loss (condition 1), or if neither eta nor the best loss changed
    # since w_{j-1} (condition 2).
    at_ckpt = is_ckpt[k + 1]
    cond1 = n_up.astype(jnp.float32) < rho * window[k + 1].astype(jnp.float32)
    cond2 = ~s['halved_ckpt'] & (f_max <= s['f_max_ckpt'])
    halve = at_ckpt & (cond1 | cond2)
    return dict(
        x=sel(halve, x_max, x_new),
        x_prev=s['x'],
        g=sel(halve, g_max, g),
        f=jnp.where(halve, f_max, f),
        x_max=x_max,
        g_max=g_max,
        f_max=f_max,
        x_adv=sel(better_adv, x_new, s['x_adv']),
        f_adv=jnp.where(better_adv, f, s['f_adv']),
        found=s['found'] | ok,
        eta=jnp.where(halve, s['eta'] / 2, s['eta']),
        n_up=jnp.where(at_ckpt, 0, n_up),
        f_max_ckpt=jnp.where(at_ckpt, f_max, s['f_max_ckpt']),
        halved_ckpt=jnp.where(at_ckpt, halve, s['halved_ckpt']),
    )

  s = lax.fori_loop(0, steps, body, s0)
  return jnp.where(bcast(s['found'], x), s['x_adv'], s['x_max'])


def _check_apgd(norm, rho, alpha, eot_iter, largereps, steps):
  if norm not in APGD_NORMS:
    raise ValueError(
        f'unknown norm {norm!r}; valid norms for APGD: {", ".join(APGD_NORMS)}'
    )
  if not 0 < rho <= 1:
    raise ValueError(f'rho must be in (0, 1], got {rho}')
  if not 0 < alpha <= 1:
    raise ValueError(f'alpha (momentum) must be in (0, 1], got {alpha}')
  check_eot(eot_iter)
  if largereps:
    if norm != 'l1':
      raise ValueError(
          f'largereps is the L1 eps schedule; use norm=l1 (got norm={norm})'
      )
    largereps_schedule(steps)


def _make_run(
    logits_fn,
    x,
    objective,
    success,
    *,
    eps,
    norm,
    steps,
    rho,
    alpha,
    eot_iter,
    largereps,
):
  """key -> x_adv: one APGD restart in `norm` (see `apgd`)."""
  grad_fn = eot_loss_and_grad(logits_fn, objective, eot_iter)
  if norm == 'l1':
    return lambda key: apgd_l1_run(
        grad_fn, key, x, success, eps=eps, steps=steps, largereps=largereps
    )
  return lambda key: _apgd_run(
      grad_fn,
      key,
      x,
      success,
      eps=eps,
      steps=steps,
      norm=norm,
      rho=rho,
      alpha=alpha,
  )


@float32_inside
def apgd(
    logits_fn: LogitsFn,
    rng: jax.Array,
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    norm: str = 'linf',
    steps: int = 100,
    loss='ce',
    restarts: int = 1,
    rho: float = 0.75,
    alpha: float = 0.75,
    target: jax.Array | None = None,
    eot_iter: int = 1,
    largereps: bool = False,
    restart_batching: str = 'loop',
) -> jax.Array:
  """Auto-PGD (Croce & Hein 2020, Algorithm 1), per example.

  L-inf and L2: random start in the eps ball; step size 2 * eps, halved at the checkpoints
  `apgd_checkpoints(steps)` when under a fraction rho of the steps since the last checkpoint
  increased the loss, or when neither the step size nor the best loss changed since then; a
  halving restarts from the best point. Momentum:
  x_{k+1} = P(x_k + alpha (z_{k+1} - x_k) + (1 - alpha)(x_k - x_{k-1})), z_{k+1} = P(x_k + eta
  * d(g)) with d = sign (L-inf) or g / |g|_2 (L2). L1: the sparsity-adaptive APGD of Croce &
  Hein 2021 (jaxadv/attacks/apgd_l1.py; rho and alpha do not apply).

  Args:
    eps: ball radius in pixel scale (L1: the sum of absolute pixel changes, e.g. 12 on
      CIFAR-10 as in AutoAttack's L1 evaluations).
    norm: 'linf' | 'l2' | 'l1'.
    steps: gradient steps per restart (N_iter).
    loss: 'ce' | 'dlr' (needs >= 3 classes, >= 4 if targeted) | 'cw', or a callable
      (logits, labels) -> (b,) to maximise (labels = target when targeted).
    restarts, restart_batching: as in `pgd`.
    rho: checkpoint threshold on the fraction of loss-increasing steps.
    alpha: momentum weight of the new step (1 = no momentum).
    target: optional int (b,) targets (success = predicting the target).
    eot_iter: gradients averaged per step over this many draws of a randomized model
      (`eot.Randomized`; AutoAttack's version='rand' uses 20); a deterministic logits_fn
      has one gradient, computed once.
    largereps: L1 only: AutoAttack's schedule of runs at 3 eps, 2 eps, eps
      (`apgd_l1.largereps_schedule`).
  Returns:
    stop_gradient(x_adv) (b, ...): per example, the highest-loss successful iterate if any
    iterate succeeded, else the highest-loss iterate; in [0, 1] and the eps ball.
  """
  check_steps(steps)
  _check_apgd(norm, rho, alpha, eot_iter, largereps, steps)
  objective, success = objective_fn(loss, y, target), success_fn(y, target)
  run = _make_run(
      logits_fn,
      x,
      objective,
      success,
      eps=eps,
      norm=norm,
      steps=steps,
      rho=rho,
      alpha=alpha,
      eot_iter=eot_iter,
      largereps=largereps,
  )
  x_adv, _, _ = best_of_restarts(
      run, logits_fn, objective, success, rng, x, restarts, restart_batching
  )
  return lax.stop_gradient(x_adv)


@float32_inside
def apgd_ce(
    logits_fn: LogitsFn,
    rng: jax.Array,
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    norm: str = 'linf',
    steps: int = 100,
    restarts: int = 1,
    rho: float = 0.75,
    alpha: float = 0.75,
    target: jax.Array | None = None,
    eot_iter: int = 1,
    largereps: bool = False,
    restart_batching: str = 'loop',
) -> jax.Array:
  """APGD on the cross-entropy loss."""
  return apgd(
      logits_fn,
      rng,
      x,
      y,
      eps=eps,
      norm=norm,
      steps=steps,
      loss='ce',
      restarts=restarts,
      rho=rho,
      alpha=alpha,
      target=target,
      eot_iter=eot_iter,
      largereps=largereps,
      restart_batching=restart_batching,
  )


@float32_inside
def apgd_dlr(
    logits_fn: LogitsFn,
    rng: jax.Array,
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    norm: str = 'linf',
    steps: int = 100,
    restarts: int = 1,
    rho: float = 0.75,
    alpha: float = 0.75,
    target: jax.Array | None = None,
    eot_iter: int = 1,
    largereps: bool = False,
    restart_batching: str = 'loop',
) -> jax.Array:
  """APGD on the DLR loss (targeted DLR when `target` is given)."""
  return apgd(
      logits_fn,
      rng,
      x,
      y,
      eps=eps,
      norm=norm,
      steps=steps,
      loss='dlr',
      restarts=restarts,
      rho=rho,
      alpha=alpha,
      target=target,
      eot_iter=eot_iter,
      largereps=largereps,
      restart_batching=restart_batching,
  )


def _top_targets(logits_fn, x, y, num_target_classes):
  """The num_target_classes (at most C - 1) highest clean logits other than y, (b, T)."""
  clean_logits = as_float(lax.stop_gradient(logits_fn(x)))
  num_classes = clean_logits.shape[-1]
  if num_classes < 4:
    raise ValueError(f'apgd_t needs at least 4 classes, got {num_classes}')
  n_targets = min(num_target_classes, num_classes - 1)
  mask = jax.nn.one_hot(y, num_classes, dtype=bool)
  others = jnp.where(mask, -jnp.inf, clean_logits)
  return lax.top_k(others, n_targets)[1], clean_logits.dtype


@float32_inside
def apgd_t(
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
    rho: float = 0.75,
    alpha: float = 0.75,
    eot_iter: int = 1,
    largereps: bool = False,
    restart_batching: str = 'loop',
) -> jax.Array:
  """APGD-T (Croce & Hein 2020): APGD on the targeted DLR loss, once per target class.

  An untargeted attack: the targets are the num_target_classes (at most C - 1; needs C >= 4)
  highest-logit classes at x other than y, success means misclassification. Per example the
  first target (in decreasing clean logit) whose run succeeds is kept, else the run with the
  highest targeted DLR. Target i (0-based) uses key jax.random.fold_in(rng, i), split per
  restart by `restart_keys`. norm, eot_iter and largereps as in `apgd` (AutoAttack's L1
  version runs 5 targets with largereps).

  Returns:
    stop_gradient(x_adv) (b, ...) in [0, 1] and the eps ball of x.
  """
  check_steps(steps)
  _check_apgd(norm, rho, alpha, eot_iter, largereps, steps)
  targets, f_dtype = _top_targets(logits_fn, x, y, num_target_classes)
  untargeted = success_fn(y, None)

  def one_target(best, i):
    target = targets[:, i].astype(y.dtype)
    objective = lambda z: dlr_targeted(z, y, target)
    run = _make_run(
        logits_fn,
        x,
        objective,
        untargeted,
        eps=eps,
        norm=norm,
        steps=steps,
        rho=rho,
        alpha=alpha,
        eot_iter=eot_iter,
        largereps=largereps,
    )
    new = best_of_restarts(
        run,
        logits_fn,
        objective,
        untargeted,
        jax.random.fold_in(rng, i),
        x,
        restarts,
        restart_batching,
    )
    return keep_better(best, new), None

  init = (x, batch_full(x, -jnp.inf, f_dtype), batch_full(x, False, bool))
  steps_t = jnp.arange(targets.shape[1])
  (x_adv, _, _), _ = lax.scan(one_target, init, steps_t)
  return lax.stop_gradient(x_adv)
