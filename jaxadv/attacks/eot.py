"""Randomized models and Expectation over Transformation (EOT, Athalye et al. 2018), as
AutoAttack's version='rand' uses them (APGD with eot_iter=20).

A JAX model has no hidden random state, so a randomized defense is given to the attacks as
`Randomized(fn, rng)` with fn(x, rng) -> logits: called as logits_fn(x), the contract of every
attack, it makes the one draw of its own key; the EOT gradient `eot_loss_and_grad` averages
the input gradient over `eot_iter` fresh draws. A deterministic logits_fn has nothing to
average: its EOT gradient is the plain gradient, computed once (the reference, fra31/auto-
attack's autopgd_base.py, recomputes the same gradient eot_iter times).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxadv.attacks.projections import loss_and_grad


class Randomized:
  """A randomized model: fn(x (b, ...), rng) -> logits (b, C), a new draw per key.

  Called as a plain logits_fn(x) it uses the draw of `rng` (so success tests and scoring are
  deterministic); `draw(x, key)` makes the draw of `key` (EOT).
  """

  def __init__(self, fn: Callable[[jax.Array, jax.Array], jax.Array], rng):
    self.fn, self.rng = fn, rng

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fn(x, self.rng)

  def draw(self, x: jax.Array, rng: jax.Array) -> jax.Array:
    return self.fn(x, rng)


def check_eot(eot_iter) -> None:
  if (
      not isinstance(eot_iter, int)
      or isinstance(eot_iter, bool)
      or eot_iter < 1
  ):
    raise ValueError(f'eot_iter must be a positive int, got {eot_iter!r}')


def eot_loss_and_grad(logits_fn, objective, eot_iter: int):
  """fn(x_adv, key) -> (loss (b,), logits (b, C), gradient (b, ...)).

  For a `Randomized` logits_fn: the gradient is the mean over eot_iter draws keyed
  jax.random.split(key, eot_iter) (one draw at a time, the memory of one), and the loss and
  logits are those of the last draw, as the reference's loop leaves them. Otherwise
  `loss_and_grad` at x_adv (key unused).
  """
  check_eot(eot_iter)
  if not isinstance(logits_fn, Randomized):
    return lambda x_adv, key: loss_and_grad(logits_fn, objective, x_adv)

  def fn(x_adv, key):
    def one(g_sum, k):
      f, logits, g = loss_and_grad(
          lambda v: logits_fn.draw(v, k), objective, x_adv
      )
      return g_sum + g, (f, logits)

    g_sum, (f, logits) = lax.scan(
        one, jnp.zeros_like(x_adv), jax.random.split(key, eot_iter)
    )
    return f[-1], logits[-1], g_sum / eot_iter

  return fn
