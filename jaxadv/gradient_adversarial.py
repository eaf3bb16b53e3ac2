"""Building blocks of gradient adversarial training (GREAT) and GREACE.

Sinha, Badrinarayanan, Chen, Rabinovich, "Gradient Adversarial Training of
Neural Networks" (2018), Section 2.1 and Algorithm 1. An auxiliary network
classifies g, the gradient of the main network's masked cross-entropy with
respect to the input x (line 4), and the main network is trained as its
adversary through a gradient-reversal op (line 7), which reaches the main
parameters by double backprop. GREACE (line 8, eq. 6) adds beta times the
auxiliary network's softmax on the negative classes to the gradient of the
cross-entropy with respect to the main logits.

Everything here is pure and jit-able; nothing reads a config:

- `grad_reversal(x, alpha)`: identity forward, -alpha * cotangent backward.
- `masked_input_gradient(logits_fn, x, y)`: g = grad_x of the masked
  cross-entropy J-bar, differentiable w.r.t. the parameters in logits_fn.
- `greace_cross_entropy(logits, y, aux_probs, beta)`: CE forward, GREACE
  gradient backward.
- `poly_decay` / `poly_ramp`: the supplement's (1 - e/e_max)^0.9 multiplier
  and the ramp alpha_max (1 - multiplier) of alpha and beta.
- `great_losses(...)`: the whole objective of one batch as ONE scalar whose
  gradient w.r.t. (main params, aux params) is both networks' update.

Networks are seen as closures `logits_fn(x) -> logits` (b, classes), as the
attacks see them; with `has_aux=True` they return `(logits, aux)` (e.g. the
BatchNorm statistic updates of `methods.common.forward`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

LogitsFn = Callable[[jax.Array], Any]
# loss_fn(log_probs (b, C), y (b,)) -> per-example loss (b,).
ProbLossFn = Callable[[jax.Array, jax.Array], jax.Array]


def _as_float(a: jax.Array) -> jax.Array:
  """Losses are computed in at least float32 (bfloat16 logits are cast)."""
  return a.astype(jnp.promote_types(a.dtype, jnp.float32))


def _log_softmax_nll(log_probs: jax.Array, y: jax.Array) -> jax.Array:
  """-log p_y per example, (b,)."""
  return -jnp.take_along_axis(log_probs, y[:, None], axis=-1)[:, 0]


def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
  """Softmax cross-entropy -log p_y. logits (b, C), y int (b,) -> (b,) nats.

  Computed in at least float32.
  """
  return _log_softmax_nll(jax.nn.log_softmax(_as_float(logits)), y)


# ----------------------------------------------------------------------------
# Gradient reversal (Algorithm 1 line 7).


@jax.custom_vjp
def _reverse(x, alpha):
  del alpha
  return x


def _reverse_fwd(x, alpha):
  return x, alpha


def _reverse_bwd(alpha, ct):
  flipped = jax.tree.map(lambda c: (-alpha * c).astype(c.dtype), ct)
  return flipped, jnp.zeros_like(alpha)


_reverse.defvjp(_reverse_fwd, _reverse_bwd)


def grad_reversal(x: Any, alpha: float | jax.Array) -> Any:
  """Gradient reversal layer: identity forward, -alpha * cotangent backward.

  Algorithm 1 line 7: the auxiliary loss's gradient w.r.t. g reaches the main
  network as -alpha * dC'/dg (the reversal of Ganin & Lempitsky, the paper's
  ref. [6]). The backward pass is linear in the cotangent, so the op works
  under jit, vmap and grad-of-grad (reverse mode only, like any custom_vjp).

  Args:
    x: an array or a pytree of float arrays, any shapes.
    alpha: non-negative float or traced float scalar; it receives a zero
      cotangent (the ramp of alpha is a schedule, not a parameter).

  Returns:
    x unchanged.
  """
  alpha = jnp.asarray(alpha)
  if not jnp.issubdtype(alpha.dtype, jnp.floating):
    alpha = alpha.astype(jnp.float32)
  return _reverse(x, alpha)


# ----------------------------------------------------------------------------
# The masked input gradient g (Algorithm 1 line 4).


def logits_and_masked_input_gradient(
    logits_fn: LogitsFn,
    x: jax.Array,
    y: jax.Array,
    *,
    loss_fn: ProbLossFn | None = None,
    has_aux: bool = False,
):
  """One forward pass of the main network: its logits and the masked g.

  Same as `masked_input_gradient` (see there), but also returns the logits of
  the pass that g is the gradient of, so the classification loss needs no
  second forward pass (Algorithm 1 lines 3-4 share it), and `logits_fn`'s
  aux output when `has_aux`.

  Returns:
    (logits, g), or (logits, g, aux) when has_aux. logits (b, C) as
    logits_fn returns them; g (b, ...) as x.
  """

  def log_probs_fn(x):
    out = logits_fn(x)
    logits, aux = out if has_aux else (out, None)
    return jax.nn.log_softmax(_as_float(logits)), (logits, aux)

  log_probs, vjp_fn, (logits, aux) = jax.vjp(log_probs_fn, x, has_aux=True)
  loss_fn = _log_softmax_nll if loss_fn is None else loss_fn
  dloss = jax.grad(lambda lp: jnp.sum(loss_fn(lp, y)))(log_probs)
  # The mask 1_y: only the true class's component of the loss's gradient
  # w.r.t. the softmax output goes back into the network. Masking the
  # gradient w.r.t. log a equals masking it w.r.t. a (a -> log a acts
  # elementwise), and avoids dividing by a_y, which underflows.
  mask = jax.nn.one_hot(y, log_probs.shape[-1], dtype=dloss.dtype)
  (g,) = vjp_fn(dloss * mask)
  return (logits, g, aux) if has_aux else (logits, g)


def masked_input_gradient(
    logits_fn: LogitsFn,
    x: jax.Array,
    y: jax.Array,
    *,
    loss_fn: ProbLossFn | None = None,
) -> jax.Array:
  """g = grad_x of the masked cross-entropy J-bar (Algorithm 1 line 4).

  The gradient of the loss w.r.t. the softmax output a = softmax(z) is masked
  to its true-class component (the paper's nabla C_a 1_y, Section 2.1: "the
  gradient fed into the auxiliary network is masked after passing through the
  soft-max function"), then back-propagated through the softmax and the
  network to x. For the default loss C = -log a_y, dC/da = -e_y / a_y has
  no other component, so g equals the gradient of -log p_y; the mask matters
  for losses with negative-class terms (label smoothing, GREACE's addition),
  which `loss_fn` can express.

  Built from jax.vjp, with no stop_gradient: g is differentiable w.r.t. the
  parameters logits_fn closes over (double backprop). The cotangent of every
  example is seeded at once (the gradient of the batch sum), so g is the
  per-example gradient when examples do not interact inside logits_fn; with
  BatchNorm in train mode they do, through the batch statistics, as in a
  framework's autograd of the summed loss.

  Args:
    logits_fn: x -> logits (b, C), a closure over the main parameters.
    x: float (b, H, W, C) in [0, 1] (any (b, ...) works).
    y: int labels (b,).
    loss_fn: loss_fn(log_probs (b, C), y) -> (b,), the loss whose gradient
      is masked; default -log p_y (the cross-entropy).

  Returns:
    g, same shape and dtype as x: per-pixel gradient in nats per unit pixel.
  """
  return logits_and_masked_input_gradient(logits_fn, x, y, loss_fn=loss_fn)[1]


# ----------------------------------------------------------------------------
# GREACE (Algorithm 1 line 8, eq. 6).


# dtype (static) is the logits' dtype, which their cotangent must have.
@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _greace(logits, y, aux_probs, beta, dtype):
  del aux_probs, beta, dtype
  return cross_entropy(logits, y)


def _greace_fwd(logits, y, aux_probs, beta, dtype):
  del dtype
  log_probs = jax.nn.log_softmax(_as_float(logits))
  loss = _log_softmax_nll(log_probs, y)
  return loss, (log_probs, y, aux_probs, beta)


def _greace_bwd(dtype, res, ct):
  log_probs, y, aux_probs, beta = res
  onehot = jax.nn.one_hot(y, log_probs.shape[-1], dtype=log_probs.dtype)
  grad = (
      jnp.exp(log_probs)
      - onehot
      + beta * aux_probs.astype(log_probs.dtype) * (1 - onehot)
  )
  dlogits = (ct[:, None].astype(grad.dtype) * grad).astype(dtype)
  return dlogits, None, jnp.zeros_like(aux_probs), jnp.zeros_like(beta)


_greace.defvjp(_greace_fwd, _greace_bwd)


def greace_cross_entropy(
    logits: jax.Array,
    y: jax.Array,
    aux_probs: jax.Array,
    beta: float | jax.Array,
) -> jax.Array:
  """Gradient-adversarial cross-entropy (GREACE, eq. 6), per example.

  Forward: the ordinary softmax cross-entropy -log p_y. Backward: the
  gradient w.r.t. the logits is
    softmax(z) - onehot(y) + beta * aux_probs * (1 - onehot(y)),
  times the upstream cotangent of each example. The paper writes the added
  term on nabla_a C, the gradient "flowing backward from the soft-max
  activation"; Figure 2 and this implementation add it to the gradient w.r.t.
  the logits. It is not the gradient of any loss of the logits alone, hence
  the custom_vjp; first-order differentiation through it (an outer jax.grad
  w.r.t. the parameters producing the logits) is what training needs.

  Args:
    logits: main network logits (b, C), any float dtype.
    y: int labels (b,).
    aux_probs: (b, C) softmax of the auxiliary network's logits, in [0, 1].
      Treated as a constant: zero cotangent.
    beta: penalty, float or traced scalar; zero cotangent.

  Returns:
    (b,) loss in nats, at least float32.
  """
  beta = jnp.asarray(beta)
  if not jnp.issubdtype(beta.dtype, jnp.floating):
    beta = beta.astype(jnp.float32)
  return _greace(logits, y, aux_probs, beta, logits.dtype)


# ----------------------------------------------------------------------------
# Schedules (supplement, "GREAT for adversarial defense").


def poly_decay(epoch_fraction, power: float = 0.9):
  """The supplement's multiplier (1 - e/e_max)^power, from 1 down to 0.

  The paper's learning-rate multiplier for both networks' Adam.
  epoch_fraction = e/e_max, float or traced; clipped to [0, 1].
  """
  f = jnp.clip(jnp.asarray(epoch_fraction, jnp.float32), 0.0, 1.0)
  return (1.0 - f) ** power


def poly_ramp(epoch_fraction, max_value, power: float = 0.9):
  """alpha = alpha_max (1 - m), m = (1 - e/e_max)^power (supplement).

  Rises from 0 at e = 0 to max_value at e = e_max; used for alpha and beta.

  Args:
    epoch_fraction: e/e_max in [0, 1] (clipped), float or traced scalar;
      fractional epochs (step / steps_per_epoch / epochs) are fine.
    max_value: alpha_max or beta_max.
    power: 0.9 in the paper.

  Returns:
    float32 scalar (or an array shaped like epoch_fraction).
  """
  return max_value * (1.0 - poly_decay(epoch_fraction, power))


# ----------------------------------------------------------------------------
# The whole objective of one batch.


class GreatOutputs(NamedTuple):
  """What `great_losses` returns next to the scalar objective.

  cls_loss: (b,) main classification loss (its value is the plain CE also
    with GREACE, which only changes the gradient).
  aux_loss: (b,) auxiliary CE(aux(g), y).
  main_logits: (b, C). aux_logits: (b, C).
  g: the masked input gradient, shaped like x.
  main_aux, aux_aux: the logits_fns' aux outputs (None unless has_aux).
  """

  cls_loss: jax.Array
  aux_loss: jax.Array
  main_logits: jax.Array
  aux_logits: jax.Array
  g: jax.Array
  main_aux: Any = None
  aux_aux: Any = None


def great_losses(
    main_logits_fn: LogitsFn,
    aux_logits_fn: LogitsFn,
    x: jax.Array,
    y: jax.Array,
    *,
    alpha: float | jax.Array,
    beta: float | jax.Array,
    use_great: bool = True,
    use_greace: bool = True,
    has_aux: bool = False,
) -> tuple[jax.Array, GreatOutputs]:
  """GREAT / GREACE / GRE(AT+CE) objective of one batch (Algorithm 1).

  Returns (total, outputs) with
    total = mean(cls_loss) + mean(aux_loss),
    g = masked_input_gradient(main, x, y)                          (line 4)
    aux_logits = aux(grad_reversal(g, alpha))                      (line 5)
    cls_loss = greace_cross_entropy(main_logits, y,
                 stop_gradient(softmax(aux_logits)), beta)          (line 8)
               or plain CE when not use_greace,
  so that ONE jax.grad of `total` w.r.t. (main params, aux params), e.g.
  `jax.grad(f, argnums=(0, 1), has_aux=True)` with f returning this tuple,
  gives both networks' updates, each to be minimized by its own optimizer:
    aux params:  d mean(aux_loss) / d aux params (line 6; cls_loss does not
                 depend on them: aux_probs is stop_gradient'ed and has a zero
                 cotangent in GREACE);
    main params: d mean(cls_loss) / d main params
                 - alpha * d mean(aux_loss) / d main params       (lines 7, 9)
                 where the second term reaches the main parameters only
                 through g (the reversal flips its sign; double backprop).
  This is eq. 7, min_theta J-hat + alpha max_theta' J(theta', g, y): the aux
  network descends its loss and the main network ascends alpha times it.

  Switches: use_great=False (GREACE only) still trains the aux network on g,
  so its softmax means something, but g is stop_gradient'ed and no reversal
  signal reaches the main network (alpha is ignored). use_greace=False is
  GREAT only (beta is ignored). Both off gives plain CE for the main network
  plus an aux network watching it.

  Departures from Algorithm 1: both networks' gradients are taken at the
  same (pre-update) aux parameters, a simultaneous update as with a gradient
  reversal layer, where the listing updates the aux network (line 6) before
  evaluating the reversed gradient (line 7). g and the main logits come from
  one forward pass of the main network (lines 3-4 share it).

  Args:
    main_logits_fn: x -> logits (b, C), a closure over the main parameters
      (e.g. `lambda x: common.forward(state, params, x, train=True)` with
      has_aux=True); called once.
    aux_logits_fn: g -> logits (b, C), a closure over the aux parameters; it
      must not close over the main parameters. Called once.
    x: float (b, H, W, C) in [0, 1].
    y: int labels (b,).
    alpha: reversal weight >= 0, float or traced (e.g. `poly_ramp`).
    beta: GREACE penalty >= 0, float or traced.
    use_great: reverse the aux loss's gradient into the main network.
    use_greace: GREACE instead of CE for the main network.
    has_aux: both logits_fns return (logits, aux); the auxes come back in
      outputs.main_aux and outputs.aux_aux.

  Returns:
    (total scalar float32, GreatOutputs).
  """
  if not has_aux:
    main_fn, aux_fn = main_logits_fn, aux_logits_fn
    main_logits_fn = lambda x: (main_fn(x), None)
    aux_logits_fn = lambda g: (aux_fn(g), None)
  main_logits, g, main_aux = logits_and_masked_input_gradient(
      main_logits_fn, x, y, has_aux=True
  )
  g_in = grad_reversal(g, alpha) if use_great else jax.lax.stop_gradient(g)
  aux_logits, aux_aux = aux_logits_fn(g_in)
  aux_loss = cross_entropy(aux_logits, y)
  if use_greace:
    aux_probs = jax.lax.stop_gradient(jax.nn.softmax(_as_float(aux_logits)))
    cls_loss = greace_cross_entropy(main_logits, y, aux_probs, beta)
  else:
    cls_loss = cross_entropy(main_logits, y)
  total = jnp.mean(cls_loss) + jnp.mean(aux_loss)
  return total, GreatOutputs(
      cls_loss, aux_loss, main_logits, aux_logits, g, main_aux, aux_aux
  )
