"""A composable iterative attack, in the spirit of DeepMind's adversarial_robustness/jax
(attacks built from an optimizer, an initialisation, a projection and a loss): `iterative`
runs `steps` of

  g = d sum(loss(logits_fn(x_adv), y)) / d x_adv
  x_adv = project(x_adv + move(g), x, eps)

from init(rng, x, eps), in lax.fori_loop, with restarts and keep-best. `pgd`, `fgsm`,
`fgsm_rs` and `ifgsm`/`bim` (jaxadv/attacks/pgd.py) are presets of it.

Parts:
  init     'zero' (x itself), 'uniform_linf', 'uniform_l2' (uniform in the eps ball, clipped
           to [0, 1]) or a callable (rng, x, eps) -> x0.
  step     'sign' (step_size * sign(g), steepest L-inf ascent), 'l2' (step_size * g / |g|_2)
           or an optax.GradientTransformation, which is given -g (optax minimises) and whose
           updates are added to x_adv; its state is carried through the loop and starts
           fresh each restart.
  project  'linf' | 'l2' (the eps ball intersected with [0, 1]) or a callable
           (x_adv, x, eps) -> point.
  loss     a name ('ce', 'cw', 'dlr') or a callable (logits, labels) -> (b,) to maximise.

Unlike DeepMind's, whose PGD minimises a loss through optax and whose presets wrap an
optimizer object, here the named step rules are plain functions (so the presets compile to
the same program as before the refactor) and optax enters only when asked for.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxadv.attacks.losses import TINY, objective_fn, success_fn
from jaxadv.attacks.precision import float32_inside
from jaxadv.attacks.projections import (
    LogitsFn,
    bcast,
    l2_norm,
    loss_and_grad,
    project_l2,
    project_linf,
    random_init_l2,
    random_init_linf,
)
from jaxadv.attacks.restarts import (
    batch_full,
    best_of_restarts,
    check_restarts,
    check_steps,
)


class StepRule(NamedTuple):
  """How a gradient becomes a move: init(x0) -> state; update(g, state, x_adv) -> (move,
  state), with move of x's shape added to x_adv before the projection."""

  init: Callable[[jax.Array], Any]
  update: Callable[[jax.Array, Any, jax.Array], tuple[jax.Array, Any]]


def sign_step(step_size) -> StepRule:
  """step_size * sign(g): the steepest ascent step of L-inf size step_size (FGSM, PGD)."""
  return StepRule(lambda x0: (), lambda g, s, xa: (step_size * jnp.sign(g), s))


def l2_step(step_size) -> StepRule:
  """step_size * g / |g|_2 per example: the steepest ascent step of L2 size step_size."""
  return StepRule(
      lambda x0: (),
      lambda g, s, xa: (step_size * (g / jnp.maximum(l2_norm(g), TINY)), s),
  )


def optax_step(tx) -> StepRule:
  """An optax.GradientTransformation as a step rule: it minimises -loss, so it receives -g;
  its updates (optax.apply_updates adds them) are the move."""
  return StepRule(
      tx.init, lambda g, s, xa: tx.update(jax.tree.map(jnp.negative, g), s, xa)
  )


def _zero_init(rng, x, eps):
  del rng, eps
  return x


INITS = {
    'zero': _zero_init,
    'uniform_linf': random_init_linf,
    'uniform_l2': random_init_l2,
}
STEPS = {'sign': sign_step, 'l2': l2_step}
PROJECTIONS = {'linf': project_linf, 'l2': project_l2}


def _pick(kind: str, value, table: dict):
  """value itself if callable, else table[value], naming the valid choices otherwise."""
  if callable(value):
    return value
  if value not in table:
    raise ValueError(
        f'unknown {kind} {value!r}; valid: {", ".join(table)}, or a callable'
    )
  return table[value]


def step_rule(step, step_size) -> StepRule:
  """A StepRule from 'sign' | 'l2' (with step_size), a StepRule, or an optax transform."""
  if isinstance(step, StepRule):
    return step
  if hasattr(step, 'init') and hasattr(step, 'update'):
    if step_size is not None:
      raise ValueError(
          'step_size applies to the sign and l2 steps; an optax transformation '
          'carries its own learning rate'
      )
    return optax_step(step)
  if step not in STEPS:
    raise ValueError(
        f'unknown step {step!r}; valid: {", ".join(STEPS)}, a StepRule or an '
        'optax.GradientTransformation'
    )
  if step_size is None:
    raise ValueError(f'step={step!r} needs a step_size')
  return STEPS[step](step_size)


def run_iterations(
    logits_fn,
    rng,
    x,
    objective,
    success,
    *,
    eps,
    steps,
    init,
    rule,
    project,
    keep_best,
):
  """One run (restart) of the iteration. keep_best: per example, the highest-loss iterate
  among those that succeed, else the highest-loss iterate (iterates 0..steps; the losses
  come with the gradients, plus one forward pass for the last iterate); else the final
  iterate (Madry et al.'s training). Returns x_adv (b, ...)."""
  x0 = init(rng, x, eps)

  def advance(x_adv, state, g):
    move, state = rule.update(g, state, x_adv)
    return project(x_adv + move, x, eps), state

  if not keep_best:
    grad = lambda xa: loss_and_grad(logits_fn, objective, xa)[2]
    if steps == 1:  # single-step attacks (FGSM, FGSM-RS) need no loop
      return advance(x0, rule.init(x0), grad(x0))[0]
    body = lambda _, c: advance(c[0], c[1], grad(c[0]))
    return lax.fori_loop(0, steps, body, (x0, rule.init(x0)))[0]

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
    x_adv, state, best = carry
    f, logits, g = loss_and_grad(logits_fn, objective, x_adv)
    x_next, state = advance(x_adv, state, g)
    return x_next, state, merge(best, x_adv, f, logits)

  f_dtype = jax.eval_shape(lambda v: objective(logits_fn(v)), x).dtype
  best = (x0, batch_full(x, -jnp.inf, f_dtype), batch_full(x, False, bool))
  x_last, _, best = lax.fori_loop(0, steps, body, (x0, rule.init(x0), best))
  logits = logits_fn(x_last)
  return merge(best, x_last, objective(logits), logits)[0]


@float32_inside(norm_key='project')
def iterative(
    logits_fn: LogitsFn,
    rng: jax.Array,
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    steps: int = 10,
    step='sign',
    step_size=None,
    init='zero',
    project='linf',
    loss='ce',
    target: jax.Array | None = None,
    restarts: int = 1,
    keep_best: bool = True,
    restart_batching: str = 'loop',
) -> jax.Array:
  """The generic iterative attack (see the module docstring for the parts).

  Args:
    eps: radius in pixel scale, passed to init and project; may be traced.
    steps: gradient steps per restart (static).
    step: 'sign' | 'l2' (both need step_size), a StepRule, or an optax transformation.
    step_size: the move of the named step rules (e.g. 2.5 * eps / steps for PGD).
    init: 'zero' | 'uniform_linf' | 'uniform_l2' | callable (rng, x, eps) -> x0. x0 is used as
      given (not projected): the first gradient is taken there and, with keep_best, it is a
      candidate for the result, so a custom init should return a point in the projection's
      set (fgsm_rs's clip_start=False start, outside [0, 1], runs with keep_best=False).
    project: 'linf' | 'l2' | callable (x_adv, x, eps) -> point in the constraint set.
    loss: 'ce' | 'cw' | 'dlr' | callable (logits, labels) -> (b,), maximised; targeted
      variants (and labels = target for a callable) when `target` is given.
    target: optional int (b,) targets; success then means predicting the target.
    restarts, restart_batching: independent runs keyed by `restart_keys`, merged per example
      (first success, else highest loss), as in `pgd`.
    keep_best: return each run's best iterate (highest loss among successes, else highest
      loss) instead of its last.
  Returns:
    stop_gradient(x_adv) (b, ...) in x's dtype; in [0, 1] and the eps ball for the named
    projections (a custom projection's set otherwise).
  """
  check_steps(steps)
  check_restarts(restarts, restart_batching)
  rule = step_rule(step, step_size)
  init_fn = _pick('init', init, INITS)
  project_fn = _pick('projection', project, PROJECTIONS)
  objective, success = objective_fn(loss, y, target), success_fn(y, target)
  run = lambda key: run_iterations(
      logits_fn,
      key,
      x,
      objective,
      success,
      eps=eps,
      steps=steps,
      init=init_fn,
      rule=rule,
      project=project_fn,
      keep_best=keep_best,
  )
  if (
      restarts == 1
  ):  # rng is used as is (and may be None for deterministic inits)
    return lax.stop_gradient(run(rng))
  x_adv, _, _ = best_of_restarts(
      run, logits_fn, objective, success, rng, x, restarts, restart_batching
  )
  return lax.stop_gradient(x_adv)
