"""Adversarial attacks as pure, jit-able, batched functions.

Every attack has the signature

  attack(logits_fn, rng, x, y, *, eps, ...) -> x_adv

- `logits_fn(x) -> logits` of shape (b, classes) is the only view of the model (a closure;
  normalization and BatchNorm-in-inference-mode live inside it). Examples must not interact
  inside it, because attacks differentiate the batch sum of per-example losses.
- `x` is float in [0, 1] of any shape (b, ...) (images are NHWC); `y` int labels (b,).
- `eps` is in pixel scale (8/255, not 8); it may be a traced scalar. `steps`, `restarts`, `norm`
  and `loss` are static (Python values).
- The result is `lax.stop_gradient(x_adv)` with x_adv in [0, 1] and inside the eps ball of x.
- Multi-step loops run in `lax.fori_loop` / `lax.scan`, so the compiled size does not grow with
  the number of steps.

Losses are per-example objectives of shape (b,) that the attacker maximises (higher = more
adversarial). Targeted attacks take `target` (b,) int and maximise -CE(logits, target), the
targeted margin z_t - max_{j!=t} z_j (`loss='cw'`) or the targeted DLR (`loss='dlr'`).

Restarts: restart r of an attack called with key `rng` uses `restart_keys(rng, restarts)[r]`, and
calling the same attack with that key and restarts=1 reproduces restart r (see `restart_keys`).
Per example, the first restart that succeeds is kept (untargeted: misclassified; targeted:
predicted as the target), else the one with the highest loss at its returned point.

`parse_attack` / `make_attack` turn evaluation specs such as
`pgd(norm=linf, eps=8/255, steps=50, restarts=10)` into attack functions; see `parse_attack`.
"""
from __future__ import annotations

import dataclasses
import fractions
import inspect
import math
import re
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

LogitsFn = Callable[[jax.Array], jax.Array]
Attack = Callable[..., jax.Array]

NORMS = ('linf', 'l2')
LOSSES = ('ce', 'cw', 'dlr')
RESTART_BATCHING = ('loop', 'vmap')
_TINY = 1e-12  # guards divisions by a zero gradient or perturbation norm


# ----------------------------------------------------------------------------------------------
# Losses: per-example, shape (b,), computed in at least float32.


def _as_float(logits: jax.Array) -> jax.Array:
  """Losses are computed in at least float32 (bfloat16 logits lose the small differences
  APGD compares)."""
  return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))


def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
  """Softmax cross-entropy -log p_y. logits (b, C), y int (b,) -> (b,) in nats.

  Written as softplus(logsumexp_{j!=y} z_j - z_y): unlike logsumexp(z) - z_y it keeps full
  relative precision when p_y is close to 1, where APGD would otherwise see a flat loss.
  """
  logits = _as_float(logits)
  mask = jax.nn.one_hot(y, logits.shape[-1], dtype=bool)
  z_y = jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
  lse_other = jax.nn.logsumexp(jnp.where(mask, -jnp.inf, logits), axis=-1)
  return jax.nn.softplus(lse_other - z_y)


def _max_other(logits: jax.Array, label: jax.Array) -> jax.Array:
  """max_{j != label} z_j, shape (b,)."""
  mask = jax.nn.one_hot(label, logits.shape[-1], dtype=bool)
  return jnp.max(jnp.where(mask, -jnp.inf, logits), axis=-1)


def cw_margin(logits: jax.Array, y: jax.Array) -> jax.Array:
  """Carlini-Wagner margin max_{j!=y} z_j - z_y, (b,); > 0 iff x is misclassified."""
  logits = _as_float(logits)
  z_y = jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
  return _max_other(logits, y) - z_y


def cw_margin_targeted(logits: jax.Array, target: jax.Array) -> jax.Array:
  """Targeted CW margin z_t - max_{j!=t} z_j, (b,); > 0 iff x is classified as the target."""
  return -cw_margin(logits, target)


def _sorted_logits(logits: jax.Array, k: int, name: str) -> jax.Array:
  if logits.shape[-1] < k:
    raise ValueError(f'{name} needs at least {k} classes, got {logits.shape[-1]}')
  return lax.top_k(_as_float(logits), k)[0]


def dlr(logits: jax.Array, y: jax.Array) -> jax.Array:
  """Difference of Logits Ratio (Croce & Hein 2020), (b,); needs C >= 3.

  -(z_y - max_{i!=y} z_i) / (z_pi1 - z_pi3), pi = classes sorted by decreasing logit. Invariant
  to shifting and scaling the logits; > 0 iff misclassified.
  """
  z = _sorted_logits(logits, 3, 'dlr')
  return cw_margin(logits, y) / (z[:, 0] - z[:, 2] + _TINY)


def dlr_targeted(logits: jax.Array, y: jax.Array, target: jax.Array) -> jax.Array:
  """Targeted DLR (Croce & Hein 2020), (b,); needs C >= 4.

  -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2): maximising it pushes z_t above z_y.
  """
  z = _sorted_logits(logits, 4, 'dlr_targeted')
  logits = _as_float(logits)
  z_y = jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
  z_t = jnp.take_along_axis(logits, target[:, None], axis=-1)[:, 0]
  return (z_t - z_y) / (z[:, 0] - 0.5 * (z[:, 2] + z[:, 3]) + _TINY)


def _objective(loss: str, y: jax.Array, target: jax.Array | None):
  """logits (b, C) -> per-example loss to maximise (b,)."""
  if loss not in LOSSES:
    raise ValueError(f'unknown loss {loss!r}; valid losses: {", ".join(LOSSES)}')
  if target is None:
    return {'ce': lambda z: cross_entropy(z, y),
            'cw': lambda z: cw_margin(z, y),
            'dlr': lambda z: dlr(z, y)}[loss]
  return {'ce': lambda z: -cross_entropy(z, target),
          'cw': lambda z: cw_margin_targeted(z, target),
          'dlr': lambda z: dlr_targeted(z, y, target)}[loss]


def _success(y: jax.Array, target: jax.Array | None):
  """logits (b, C) -> bool (b,): misclassified, or classified as the target when targeted."""
  if target is None:
    return lambda z: jnp.argmax(z, axis=-1) != y
  return lambda z: jnp.argmax(z, axis=-1) == target


# ----------------------------------------------------------------------------------------------
# Targets, projections and random starts.


def random_target(rng: jax.Array, y: jax.Array, num_classes: int) -> jax.Array:
  """A target drawn uniformly from the num_classes - 1 wrong classes, int (b,)."""
  shift = jax.random.randint(rng, y.shape, 1, num_classes, dtype=y.dtype)
  return (y + shift) % num_classes


def worst_target(logits: jax.Array, y: jax.Array) -> jax.Array:
  """The least likely wrong class (GREAT's 'worst' target), int (b,)."""
  mask = jax.nn.one_hot(y, logits.shape[-1], dtype=bool)
  return jnp.argmin(jnp.where(mask, jnp.inf, logits), axis=-1).astype(y.dtype)


def _bcast(v: jax.Array, x: jax.Array) -> jax.Array:
  """Reshape per-example v (b,) to broadcast against x (b, ...)."""
  return jnp.reshape(v, jnp.shape(v) + (1,) * (x.ndim - jnp.ndim(v)))


def _l2_norm(v: jax.Array) -> jax.Array:
  """Per-example L2 norm over all but the batch axis, shape (b, 1, ..., 1)."""
  return jnp.sqrt(jnp.sum(jnp.square(v), axis=tuple(range(1, v.ndim)), keepdims=True))


def project_linf(x_adv: jax.Array, x: jax.Array, eps) -> jax.Array:
  """Exact projection onto {|x_adv - x|_inf <= eps} intersected with [0, 1] (both boxes)."""
  return jnp.clip(x_adv, jnp.maximum(x - eps, 0.0), jnp.minimum(x + eps, 1.0))


def project_l2(x_adv: jax.Array, x: jax.Array, eps) -> jax.Array:
  """Projection onto {|x_adv - x|_2 <= eps}, then clipped to [0, 1].

  Clipping after the ball projection keeps the point in the ball (x is in [0, 1], so clipping
  only moves coordinates towards x); it is not the exact projection onto the intersection.
  """
  delta = x_adv - x
  delta = delta * jnp.minimum(1.0, eps / jnp.maximum(_l2_norm(delta), _TINY))
  return jnp.clip(x + delta, 0.0, 1.0)


def random_init_linf(rng: jax.Array, x: jax.Array, eps, clip: bool = True) -> jax.Array:
  """x plus noise uniform in the L-inf box of radius eps, clipped to [0, 1] if `clip`."""
  delta = jax.random.uniform(rng, x.shape, x.dtype, -1.0, 1.0) * eps
  return jnp.clip(x + delta, 0.0, 1.0) if clip else x + delta


def random_init_l2(rng: jax.Array, x: jax.Array, eps, clip: bool = True) -> jax.Array:
  """x plus noise uniform in the L2 ball of radius eps, clipped to [0, 1] if `clip`.

  Uniform in the ball: a gaussian direction normalised, radius eps * u^(1/d), d = pixels per
  example.
  """
  k_dir, k_rad = jax.random.split(rng)
  d = math.prod(x.shape[1:])
  direction = jax.random.normal(k_dir, x.shape, x.dtype)
  direction = direction / jnp.maximum(_l2_norm(direction), _TINY)
  u = jax.random.uniform(k_rad, (x.shape[0],), x.dtype)
  delta = direction * _bcast(eps * u ** (1.0 / d), x)
  return jnp.clip(x + delta, 0.0, 1.0) if clip else x + delta


def _linf_direction(g: jax.Array) -> jax.Array:
  return jnp.sign(g)


def _l2_direction(g: jax.Array) -> jax.Array:
  return g / jnp.maximum(_l2_norm(g), _TINY)


# norm -> (steepest-ascent direction of unit norm, projection, random start)
_NORM_OPS = {
    'linf': (_linf_direction, project_linf, random_init_linf),
    'l2': (_l2_direction, project_l2, random_init_l2),
}


def _norm_ops(norm: str):
  if norm not in _NORM_OPS:
    raise ValueError(f'unknown norm {norm!r}; valid norms: {", ".join(NORMS)}')
  return _NORM_OPS[norm]


def _loss_and_grad(logits_fn: LogitsFn, objective, x_adv: jax.Array):
  """(per-example loss (b,), logits (b, C), d sum(loss) / d x_adv (b, ...))."""
  def total(xa):
    logits = logits_fn(xa)
    f = objective(logits)
    return jnp.sum(f), (f, logits)
  (_, (f, logits)), g = jax.value_and_grad(total, has_aux=True)(x_adv)
  return f, logits, g


# ----------------------------------------------------------------------------------------------
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


def _keep_better(best, new):
  """Merge (x_adv, loss, success) candidates: keep a success if `best` has one, else take
  `new` if it succeeds or has a strictly higher loss (ties keep the earlier restart)."""
  x_b, f_b, ok_b = best
  x_n, f_n, ok_n = new
  take = ~ok_b & (ok_n | (f_n > f_b))
  return (jnp.where(_bcast(take, x_b), x_n, x_b), jnp.where(take, f_n, f_b), ok_b | ok_n)


def _best_of_restarts(run, logits_fn, objective, success, rng, x, restarts, restart_batching):
  """Per example, the first successful restart of run(key) -> x_adv, else the highest loss.

  Returns (x_adv (b, ...), loss (b,), success bool (b,)) scored at the returned points.
  """
  if restart_batching not in RESTART_BATCHING:
    raise ValueError(f'unknown restart_batching {restart_batching!r}; '
                     f'valid: {", ".join(RESTART_BATCHING)}')
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
  init = (x, jnp.full(x.shape[:1], -jnp.inf, loss_dtype), jnp.zeros(x.shape[:1], bool))
  merge = lambda best, new: (_keep_better(best, new), None)
  if restart_batching == 'vmap':
    # All restarts at once (R times the memory), merged in restart order afterwards.
    return lax.scan(merge, init, jax.vmap(scored)(keys))[0]
  return lax.scan(lambda best, key: merge(best, scored(key)), init, keys)[0]


def _check_steps(steps):
  if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
    raise ValueError(f'steps must be a positive int, got {steps!r}')


# ----------------------------------------------------------------------------------------------
# Single-step attacks.


def clean(logits_fn: LogitsFn, rng: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
  """No attack: returns stop_gradient(x)."""
  del logits_fn, rng, y
  return lax.stop_gradient(x)


def fgsm(logits_fn: LogitsFn, rng: jax.Array, x: jax.Array, y: jax.Array, *, eps,
         norm: str = 'linf', loss: str = 'ce', target: jax.Array | None = None) -> jax.Array:
  """Fast gradient (sign) method: one step of size eps from x (rng unused).

  L-inf: x + eps * sign(g); L2: x + eps * g / |g|_2 (FGM); then clipped to [0, 1].
  """
  del rng
  direction, project, _ = _norm_ops(norm)
  _, _, g = _loss_and_grad(logits_fn, _objective(loss, y, target), x)
  return lax.stop_gradient(project(x + eps * direction(g), x, eps))


def fgsm_rs(logits_fn: LogitsFn, rng: jax.Array, x: jax.Array, y: jax.Array, *, eps,
            alpha=None, norm: str = 'linf', loss: str = 'ce',
            target: jax.Array | None = None, clip_start: bool = True) -> jax.Array:
  """FGSM with a random start (Wong et al. 2020; L2: Goodwin et al. 2020).

  Start uniform in the eps ball, one step of size alpha (default 1.25 * eps) along the signed
  (L-inf) or normalised (L2) gradient, project back to the eps ball and [0, 1].
  clip_start=False takes the gradient at the unclipped start x + delta, which may leave
  [0, 1], as Wong et al.'s MNIST code does (their CIFAR code clips); on MNIST, whose pixels
  are mostly 0, clipping removes half of the start noise from the background. The result is
  in [0, 1] either way.
  """
  direction, project, init = _norm_ops(norm)
  alpha = 1.25 * eps if alpha is None else alpha
  x0 = init(rng, x, eps, clip_start)
  _, _, g = _loss_and_grad(logits_fn, _objective(loss, y, target), x0)
  return lax.stop_gradient(project(x0 + alpha * direction(g), x, eps))


# ----------------------------------------------------------------------------------------------
# PGD family.


def _pgd_run(logits_fn, rng, x, objective, *, eps, steps, step_size, norm, random_start):
  """One PGD restart; returns the final iterate (b, ...)."""
  direction, project, init = _norm_ops(norm)
  x0 = init(rng, x, eps) if random_start else x

  def body(_, x_adv):
    _, _, g = _loss_and_grad(logits_fn, objective, x_adv)
    return project(x_adv + step_size * direction(g), x, eps)

  return lax.fori_loop(0, steps, body, x0)


def pgd(logits_fn: LogitsFn, rng: jax.Array, x: jax.Array, y: jax.Array, *, eps,
        steps: int = 10, step_size=None, norm: str = 'linf', random_start: bool = True,
        restarts: int = 1, loss: str = 'ce', target: jax.Array | None = None,
        restart_batching: str = 'loop') -> jax.Array:
  """Projected gradient ascent (Madry et al. 2018), returning the final iterate per restart.

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
  Returns:
    stop_gradient(x_adv), (b, ...) in [0, 1] and in the eps ball of x.
  """
  _check_steps(steps)
  step_size = 2.5 * eps / steps if step_size is None else step_size
  objective, success = _objective(loss, y, target), _success(y, target)
  run = lambda key: _pgd_run(logits_fn, key, x, objective, eps=eps, steps=steps,
                             step_size=step_size, norm=norm, random_start=random_start)
  x_adv, _, _ = _best_of_restarts(run, logits_fn, objective, success, rng, x, restarts,
                                  restart_batching)
  return lax.stop_gradient(x_adv)


def ifgsm(logits_fn: LogitsFn, rng: jax.Array, x: jax.Array, y: jax.Array, *, eps,
          steps: int = 10, step_size=None, norm: str = 'linf', loss: str = 'ce',
          target: jax.Array | None = None) -> jax.Array:
  """Iterative FGSM / BIM (Kurakin et al. 2017): PGD from x (no random start), step
  eps / steps by default, one restart."""
  _check_steps(steps)
  step_size = eps / steps if step_size is None else step_size
  return pgd(logits_fn, rng, x, y, eps=eps, steps=steps, step_size=step_size, norm=norm,
             random_start=False, loss=loss, target=target)


bim = ifgsm


def cw(logits_fn: LogitsFn, rng: jax.Array, x: jax.Array, y: jax.Array, *, eps,
       steps: int = 10, step_size=None, norm: str = 'linf', random_start: bool = True,
       restarts: int = 1, target: jax.Array | None = None,
       restart_batching: str = 'loop') -> jax.Array:
  """PGD on the CW margin loss (the 'CW-inf' attack of the robustness literature)."""
  return pgd(logits_fn, rng, x, y, eps=eps, steps=steps, step_size=step_size, norm=norm,
             random_start=random_start, restarts=restarts, loss='cw', target=target,
             restart_batching=restart_batching)


# ----------------------------------------------------------------------------------------------
# APGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
# diverse parameter-free attacks", Algorithm 1).


def apgd_checkpoints(steps: int) -> tuple[int, ...]:
  """APGD checkpoints w_j = ceil(p_j * steps) <= steps, deduplicated, starting with w_0 = 0.

  p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06). Exact rationals avoid
  ceil(0.22 * 100) = 23 from float rounding.
  """
  _check_steps(steps)
  F = fractions.Fraction
  p = [F(0), F(22, 100)]
  while p[-1] <= 1:
    p.append(p[-1] + max(p[-1] - p[-2] - F(3, 100), F(6, 100)))
  return tuple(sorted({math.ceil(pj * steps) for pj in p if math.ceil(pj * steps) <= steps}))


def _apgd_schedule(steps: int):
  """Static per-iterate arrays (steps + 1,): is iterate k a checkpoint, and w_j - w_{j-1}."""
  w = apgd_checkpoints(steps)
  is_ckpt = np.zeros(steps + 1, bool)
  window = np.ones(steps + 1, np.int32)
  for prev, cur in zip(w[:-1], w[1:]):
    is_ckpt[cur], window[cur] = True, cur - prev
  return jnp.asarray(is_ckpt), jnp.asarray(window)


def _apgd_run(logits_fn, rng, x, objective, success, *, eps, steps, norm, rho, alpha):
  """One APGD restart. Returns, per example, the highest-loss successful iterate if any
  iterate succeeded, else the highest-loss iterate; (b, ...)."""
  direction, project, init = _norm_ops(norm)
  is_ckpt, window = _apgd_schedule(steps)
  b = x.shape[0]

  x0 = init(rng, x, eps)
  f0, logits0, g0 = _loss_and_grad(logits_fn, objective, x0)
  ok0 = success(logits0)
  s0 = dict(
      x=x0, x_prev=x0, g=g0, f=f0,                       # current iterate x_k and x_{k-1}
      x_max=x0, g_max=g0, f_max=f0,                      # highest loss so far (restart point)
      x_adv=x0, f_adv=jnp.where(ok0, f0, -jnp.inf), found=ok0,  # best successful iterate
      eta=jnp.full((b,), 2.0, x.dtype) * eps,            # per-example step size, 2 * eps
      n_up=jnp.zeros((b,), jnp.int32),                   # loss increases since last checkpoint
      f_max_ckpt=f0, halved_ckpt=jnp.zeros((b,), bool),  # state at the last checkpoint
  )

  def body(k, s):  # computes iterate k + 1 from x_k
    z = project(s['x'] + _bcast(s['eta'], x) * direction(s['g']), x, eps)
    a = jnp.where(k == 0, 1.0, alpha)  # the first step has no momentum
    x_new = project(s['x'] + a * (z - s['x']) + (1 - a) * (s['x'] - s['x_prev']), x, eps)
    f, logits, g = _loss_and_grad(logits_fn, objective, x_new)
    ok = success(logits)

    sel = lambda c, u, v: jnp.where(_bcast(c, u), u, v)
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
        x=sel(halve, x_max, x_new), x_prev=s['x'], g=sel(halve, g_max, g),
        f=jnp.where(halve, f_max, f),
        x_max=x_max, g_max=g_max, f_max=f_max,
        x_adv=sel(better_adv, x_new, s['x_adv']),
        f_adv=jnp.where(better_adv, f, s['f_adv']), found=s['found'] | ok,
        eta=jnp.where(halve, s['eta'] / 2, s['eta']),
        n_up=jnp.where(at_ckpt, 0, n_up),
        f_max_ckpt=jnp.where(at_ckpt, f_max, s['f_max_ckpt']),
        halved_ckpt=jnp.where(at_ckpt, halve, s['halved_ckpt']),
    )

  s = lax.fori_loop(0, steps, body, s0)
  return jnp.where(_bcast(s['found'], x), s['x_adv'], s['x_max'])


def _check_apgd(rho, alpha):
  if not 0 < rho <= 1:
    raise ValueError(f'rho must be in (0, 1], got {rho}')
  if not 0 < alpha <= 1:
    raise ValueError(f'alpha (momentum) must be in (0, 1], got {alpha}')


def apgd(logits_fn: LogitsFn, rng: jax.Array, x: jax.Array, y: jax.Array, *, eps,
         norm: str = 'linf', steps: int = 100, loss: str = 'ce', restarts: int = 1,
         rho: float = 0.75, alpha: float = 0.75, target: jax.Array | None = None,
         restart_batching: str = 'loop') -> jax.Array:
  """Auto-PGD (Croce & Hein 2020, Algorithm 1), per example.

  Random start in the eps ball; step size 2 * eps, halved at the checkpoints
  `apgd_checkpoints(steps)` when under a fraction rho of the steps since the last checkpoint
  increased the loss, or when neither the step size nor the best loss changed since then; a
  halving restarts from the best point. Momentum:
  x_{k+1} = P(x_k + alpha (z_{k+1} - x_k) + (1 - alpha)(x_k - x_{k-1})), z_{k+1} = P(x_k + eta
  * d(g)) with d = sign (L-inf) or g / |g|_2 (L2).

  Args:
    eps: ball radius in pixel scale.
    norm: 'linf' | 'l2'.
    steps: gradient steps per restart (N_iter).
    loss: 'ce' | 'dlr' (needs >= 3 classes, >= 4 if targeted) | 'cw'.
    restarts, restart_batching: as in `pgd`.
    rho: checkpoint threshold on the fraction of loss-increasing steps.
    alpha: momentum weight of the new step (1 = no momentum).
    target: optional int (b,) targets (success = predicting the target).
  Returns:
    stop_gradient(x_adv) (b, ...): per example, the highest-loss successful iterate if any
    iterate succeeded, else the highest-loss iterate.
  """
  _check_steps(steps)
  _check_apgd(rho, alpha)
  objective, success = _objective(loss, y, target), _success(y, target)
  run = lambda key: _apgd_run(logits_fn, key, x, objective, success, eps=eps, steps=steps,
                              norm=norm, rho=rho, alpha=alpha)
  x_adv, _, _ = _best_of_restarts(run, logits_fn, objective, success, rng, x, restarts,
                                  restart_batching)
  return lax.stop_gradient(x_adv)


def apgd_ce(logits_fn: LogitsFn, rng: jax.Array, x: jax.Array, y: jax.Array, *, eps,
            norm: str = 'linf', steps: int = 100, restarts: int = 1, rho: float = 0.75,
            alpha: float = 0.75, target: jax.Array | None = None,
            restart_batching: str = 'loop') -> jax.Array:
  """APGD on the cross-entropy loss."""
  return apgd(logits_fn, rng, x, y, eps=eps, norm=norm, steps=steps, loss='ce',
              restarts=restarts, rho=rho, alpha=alpha, target=target,
              restart_batching=restart_batching)


def apgd_dlr(logits_fn: LogitsFn, rng: jax.Array, x: jax.Array, y: jax.Array, *, eps,
             norm: str = 'linf', steps: int = 100, restarts: int = 1, rho: float = 0.75,
             alpha: float = 0.75, target: jax.Array | None = None,
             restart_batching: str = 'loop') -> jax.Array:
  """APGD on the DLR loss (targeted DLR when `target` is given)."""
  return apgd(logits_fn, rng, x, y, eps=eps, norm=norm, steps=steps, loss='dlr',
              restarts=restarts, rho=rho, alpha=alpha, target=target,
              restart_batching=restart_batching)


def apgd_t(logits_fn: LogitsFn, rng: jax.Array, x: jax.Array, y: jax.Array, *, eps,
           norm: str = 'linf', steps: int = 100, restarts: int = 1,
           num_target_classes: int = 9, rho: float = 0.75, alpha: float = 0.75,
           restart_batching: str = 'loop') -> jax.Array:
  """APGD-T (Croce & Hein 2020): APGD on the targeted DLR loss, once per target class.

  An untargeted attack: the targets are the num_target_classes (at most C - 1; needs C >= 4)
  highest-logit classes at x other than y, success means misclassification. Per example the
  first target (in decreasing clean logit) whose run succeeds is kept, else the run with the
  highest targeted DLR. Target i (0-based) uses key jax.random.fold_in(rng, i), split per
  restart by `restart_keys`.

  Returns:
    stop_gradient(x_adv) (b, ...) in [0, 1] and the eps ball of x.
  """
  _check_steps(steps)
  _check_apgd(rho, alpha)
  clean_logits = _as_float(lax.stop_gradient(logits_fn(x)))
  num_classes = clean_logits.shape[-1]
  if num_classes < 4:
    raise ValueError(f'apgd_t needs at least 4 classes, got {num_classes}')
  n_targets = min(num_target_classes, num_classes - 1)
  mask = jax.nn.one_hot(y, num_classes, dtype=bool)
  targets = lax.top_k(jnp.where(mask, -jnp.inf, clean_logits), n_targets)[1]  # (b, T)
  untargeted = _success(y, None)

  def one_target(best, i):
    target = targets[:, i].astype(y.dtype)
    objective = lambda z: dlr_targeted(z, y, target)
    run = lambda key: _apgd_run(logits_fn, key, x, objective, untargeted, eps=eps,
                                steps=steps, norm=norm, rho=rho, alpha=alpha)
    new = _best_of_restarts(run, logits_fn, objective, untargeted,
                            jax.random.fold_in(rng, i), x, restarts, restart_batching)
    return _keep_better(best, new), None

  init = (x, jnp.full(x.shape[:1], -jnp.inf, clean_logits.dtype), jnp.zeros(x.shape[:1], bool))
  (x_adv, _, _), _ = lax.scan(one_target, init, jnp.arange(n_targets))
  return lax.stop_gradient(x_adv)


# ----------------------------------------------------------------------------------------------
# Attack specs for the evaluation runner.

ATTACKS: dict[str, Attack] = {
    'clean': clean,
    'fgsm': fgsm,
    'fgsm_rs': fgsm_rs,
    'ifgsm': ifgsm,
    'bim': bim,
    'pgd': pgd,
    'cw': cw,
    'apgd': apgd,
    'apgd_ce': apgd_ce,
    'apgd_dlr': apgd_dlr,
    'apgd_t': apgd_t,
}

TARGETS = ('random', 'worst')
# Canonical order of spec keys in str(spec).
_KEY_ORDER = ('norm', 'eps', 'steps', 'step_size', 'alpha', 'restarts', 'random_start',
              'clip_start', 'loss', 'target', 'rho', 'num_target_classes', 'restart_batching')
_BOOLEANS = ('random_start', 'clip_start')
_CHOICES = {'norm': NORMS, 'loss': LOSSES, 'target': TARGETS,
            'random_start': ('true', 'false'), 'clip_start': ('true', 'false'),
            'restart_batching': RESTART_BATCHING}
_POSITIVE_INTS = ('steps', 'restarts', 'num_target_classes')
Value = Any  # int | float | fractions.Fraction | bool | str


def _spec_keys(name: str) -> tuple[str, ...]:
  """The keyword-only arguments of ATTACKS[name], in canonical order."""
  params = inspect.signature(ATTACKS[name]).parameters.values()
  keys = {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
  return tuple(k for k in _KEY_ORDER if k in keys)


def _check_value(name: str, key: str, value: Value) -> Value:
  """Validates one spec value; returns it normalised (booleans as bool)."""
  if key in _CHOICES:
    text = str(value).lower() if isinstance(value, bool) else value
    if text not in _CHOICES[key]:
      raise ValueError(f'{key} must be one of {", ".join(_CHOICES[key])}, got {value!r}')
    return text == 'true' if key in _BOOLEANS else text
  is_number = isinstance(value, (int, float, fractions.Fraction)) and not isinstance(value, bool)
  if key in _POSITIVE_INTS:
    if not is_number or int(value) != value or value < 1:
      raise ValueError(f'{key} must be a positive integer, got {value!r}')
    return int(value)
  if not is_number or not math.isfinite(value):
    raise ValueError(f'{key} must be a finite number, got {value!r}')
  if key == 'eps' and value < 0:
    raise ValueError(f'eps must be >= 0, got {value}')
  if key in ('step_size', 'alpha') and value <= 0:
    raise ValueError(f'{key} must be > 0, got {value}')
  if (key == 'rho' or (key == 'alpha' and name.startswith('apgd'))) and not 0 < value <= 1:
    raise ValueError(f'{key} must be in (0, 1], got {value}')
  return value


def _format_value(value: Value) -> str:
  if isinstance(value, bool):
    return 'true' if value else 'false'
  if isinstance(value, fractions.Fraction):
    return str(value)  # 'a/b', or 'a' when the denominator is 1
  if isinstance(value, float):
    return repr(value)
  return str(value)


@dataclasses.dataclass(frozen=True)
class AttackSpec:
  """A validated attack spec: name (a key of ATTACKS) and the explicitly given params.

  params is a tuple of (key, value) pairs in canonical key order; values are numbers (int,
  float, or fractions.Fraction for a/b), bool (random_start) or str (norm, loss, target,
  restart_batching). Defaults are not stored; `describe()` resolves them.
  """
  name: str
  params: tuple[tuple[str, Value], ...] = ()

  def __post_init__(self):
    if self.name not in ATTACKS:
      raise ValueError(f'unknown attack {self.name!r}; valid attacks: {", ".join(ATTACKS)}')
    items = list(self.params.items() if isinstance(self.params, Mapping) else self.params)
    keys = _spec_keys(self.name)
    seen = set()
    for key, _ in items:
      if key not in keys:
        raise ValueError(f'unknown key {key!r} for attack {self.name!r}; valid keys: '
                         f'{", ".join(keys) or "(none)"}')
      if key in seen:
        raise ValueError(f'key {key!r} given twice')
      seen.add(key)
    if 'eps' in keys and 'eps' not in seen:
      raise ValueError(f'eps is required for attack {self.name!r}')
    params = tuple(sorted(((k, _check_value(self.name, k, v)) for k, v in items),
                          key=lambda kv: _KEY_ORDER.index(kv[0])))
    given = dict(params)
    if given.get('norm', 'linf') == 'linf' and given.get('eps', 0) > 1:
      raise ValueError(f'eps={_format_value(given["eps"])} must be <= 1 for norm=linf: '
                       'pixel scale, e.g. eps=8/255, not eps=8')
    if given.get('random_start') is False and given.get('restarts', 1) > 1:
      raise ValueError(f'restarts={given["restarts"]} with random_start=false runs the same '
                       'attack repeatedly; use restarts=1 or random_start=true')
    object.__setattr__(self, 'params', params)

  def __str__(self) -> str:
    if not self.params:
      return self.name
    args = ', '.join(f'{k}={_format_value(v)}' for k, v in self.params)
    return f'{self.name}({args})'

  @property
  def kwargs(self) -> dict[str, Value]:
    """The given params as Python keyword arguments (fractions as float)."""
    return {k: float(v) if isinstance(v, fractions.Fraction) else v for k, v in self.params}

  def describe(self) -> dict[str, Any]:
    """Resolved settings: attack, norm, eps, steps, step_size, restarts, loss, target,
    random_start.

    step_size is the per-step move (for APGD the initial 2 * eps); for apgd_t, loss is
    'dlr_targeted' and target 'top<T>' (T target classes, capped at C - 1 when run).
    random_start is the attack's random_start key (None for attacks without one).
    """
    if self.name == 'clean':
      return dict(attack='clean', norm=None, eps=0.0, steps=0, step_size=0.0, restarts=0,
                  loss=None, target=None, random_start=None)
    params = inspect.signature(ATTACKS[self.name]).parameters.values()
    kw = {p.name: p.default for p in params
          if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not p.empty}
    kw.update(self.kwargs)
    eps = float(kw['eps'])
    steps = kw.get('steps', 1)
    if self.name == 'fgsm':
      step_size = eps
    elif self.name == 'fgsm_rs':
      step_size = 1.25 * eps if kw['alpha'] is None else kw['alpha']
    elif self.name.startswith('apgd'):
      step_size = 2.0 * eps
    elif kw['step_size'] is not None:
      step_size = kw['step_size']
    else:  # ifgsm / bim: eps / steps; pgd / cw: 2.5 eps / steps
      step_size = (1.0 if self.name in ('ifgsm', 'bim') else 2.5) * eps / steps
    loss = {'cw': 'cw', 'apgd_ce': 'ce', 'apgd_dlr': 'dlr', 'apgd_t': 'dlr_targeted'}.get(
        self.name, kw.get('loss'))
    target = f'top{kw["num_target_classes"]}' if self.name == 'apgd_t' else kw.get('target')
    return dict(attack=self.name, norm=kw.get('norm', 'linf'), eps=eps, steps=int(steps),
                step_size=float(step_size), restarts=int(kw.get('restarts', 1)), loss=loss,
                target=target, random_start=kw.get('random_start'))


_SPEC_RE = re.compile(r'^\s*([A-Za-z_]\w*)\s*(?:\((.*)\))?\s*$', re.S)
_NUMBER = r'-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?'
_VALUE_RE = re.compile(rf'^(?:(?P<num>{_NUMBER})(?:\s*/\s*(?P<den>{_NUMBER}))?'
                       rf'|(?P<ident>[A-Za-z_]\w*))$')


def _parse_value(text: str) -> Value:
  m = _VALUE_RE.match(text)
  if not m:
    raise ValueError(f'cannot parse value {text!r} (expected a number, a fraction a/b or a '
                     'name)')
  if m['ident']:
    return m['ident']
  if m['den'] is not None:
    den = fractions.Fraction(m['den'])
    if den == 0:
      raise ValueError(f'division by zero in {text!r}')
    value = fractions.Fraction(m['num']) / den
    return int(value) if value.denominator == 1 else value
  return int(m['num']) if re.fullmatch(r'-?\d+', m['num']) else float(m['num'])


def parse_attack(spec: str) -> AttackSpec:
  """Parses an attack spec (no eval()).

  Grammar (whitespace is free around tokens):
    spec  := name | name '(' [arg (',' arg)*] ')'
    arg   := key '=' value
    value := number | number '/' number | identifier
  with number e.g. 10, 0.3, 1e-3, -1 and identifier e.g. linf, random, true. Names are the keys
  of ATTACKS; valid keys are the keyword arguments of that attack function (fgsm_rs's alpha is
  its step size, apgd's alpha its momentum). `target=random|worst` picks targets at run time.

  Examples: 'pgd(norm=linf, eps=8/255, steps=50, restarts=10)', 'fgsm(eps=0.3)',
  'apgd_ce(eps=0.3, steps=100)', 'apgd_t(eps=8/255)', 'cw(eps=8/255, steps=100)',
  'pgd(eps=0.3, steps=40, target=worst)', 'clean'.

  Raises:
    ValueError: one line naming the bad attack name / key / value and the valid choices.
  """
  m = _SPEC_RE.match(spec)
  try:
    if not m:
      raise ValueError("expected name or name(key=value, ...)")
    name, body = m[1], m[2]
    params = []
    if body is not None and body.strip():
      for arg in body.split(','):
        key, eq, value = arg.partition('=')
        if not eq or not key.strip():
          raise ValueError(f'expected key=value, got {arg.strip()!r}')
        try:
          params.append((key.strip(), _parse_value(value.strip())))
        except ValueError as e:
          raise ValueError(f'{key.strip()}: {e}') from None
    return AttackSpec(name, tuple(params))
  except ValueError as e:
    raise ValueError(f'invalid attack spec {spec!r}: {e}') from None


def make_attack(spec: AttackSpec | str) -> Callable[..., jax.Array]:
  """The attack of a spec as fn(logits_fn, rng, x, y) -> stop_gradient(x_adv).

  target=worst uses worst_target(logits_fn(x), y); target=random draws with the first half of
  jax.random.split(rng) and attacks with the second.
  """
  spec = parse_attack(spec) if isinstance(spec, str) else spec
  attack = ATTACKS[spec.name]
  kwargs = spec.kwargs
  target_rule = kwargs.pop('target', None)

  def fn(logits_fn: LogitsFn, rng: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    if target_rule == 'worst':
      kwargs_t = dict(kwargs, target=worst_target(lax.stop_gradient(logits_fn(x)), y))
    elif target_rule == 'random':
      k_target, rng = jax.random.split(rng)
      num_classes = jax.eval_shape(logits_fn, x).shape[-1]
      kwargs_t = dict(kwargs, target=random_target(k_target, y, num_classes))
    else:
      kwargs_t = kwargs
    return attack(logits_fn, rng, x, y, **kwargs_t)

  fn.__name__ = spec.name
  fn.__doc__ = f'{spec}: {attack.__doc__.splitlines()[0]}'
  return fn
