"""Attack objectives: per-example losses (b,) the attacker maximises, success tests and target
rules. Computed in at least float32."""

from __future__ import annotations

from typing import Callable, Union

import jax
import jax.numpy as jnp
from jax import lax

LOSSES = ('ce', 'cw', 'dlr')
TINY = 1e-12  # guards divisions by a zero gradient or perturbation norm

# Losses: per-example, shape (b,), computed in at least float32.


def as_float(logits: jax.Array) -> jax.Array:
  """Losses are computed in at least float32 (bfloat16 logits lose the small differences
  APGD compares)."""
  return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))


def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
  """Softmax cross-entropy -log p_y. logits (b, C), y int (b,) -> (b,) in nats.

  Written as softplus(logsumexp_{j!=y} z_j - z_y): unlike logsumexp(z) - z_y it keeps full
  relative precision when p_y is close to 1, where APGD would otherwise see a flat loss.
  """
  logits = as_float(logits)
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
  logits = as_float(logits)
  z_y = jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
  return _max_other(logits, y) - z_y


def cw_margin_targeted(logits: jax.Array, target: jax.Array) -> jax.Array:
  """Targeted CW margin z_t - max_{j!=t} z_j, (b,); > 0 iff x is classified as the target."""
  return -cw_margin(logits, target)


def _sorted_logits(logits: jax.Array, k: int, name: str) -> jax.Array:
  if logits.shape[-1] < k:
    raise ValueError(
        f'{name} needs at least {k} classes, got {logits.shape[-1]}'
    )
  return lax.top_k(as_float(logits), k)[0]


def dlr(logits: jax.Array, y: jax.Array) -> jax.Array:
  """Difference of Logits Ratio (Croce & Hein 2020), (b,); needs C >= 3.

  -(z_y - max_{i!=y} z_i) / (z_pi1 - z_pi3), pi = classes sorted by decreasing logit. Invariant
  to shifting and scaling the logits; > 0 iff misclassified.
  """
  z = _sorted_logits(logits, 3, 'dlr')
  return cw_margin(logits, y) / (z[:, 0] - z[:, 2] + TINY)


def dlr_targeted(
    logits: jax.Array, y: jax.Array, target: jax.Array
) -> jax.Array:
  """Targeted DLR (Croce & Hein 2020), (b,); needs C >= 4.

  -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2): maximising it pushes z_t above z_y.
  """
  z = _sorted_logits(logits, 4, 'dlr_targeted')
  logits = as_float(logits)
  z_y = jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
  z_t = jnp.take_along_axis(logits, target[:, None], axis=-1)[:, 0]
  return (z_t - z_y) / (z[:, 0] - 0.5 * (z[:, 2] + z[:, 3]) + TINY)


Loss = Union[str, Callable[[jax.Array, jax.Array], jax.Array]]


def check_loss(loss) -> None:
  """Raises ValueError unless `loss` is a name in LOSSES or a callable."""
  if callable(loss):
    return
  if loss not in LOSSES:
    raise ValueError(
        f'unknown loss {loss!r}; valid losses: {", ".join(LOSSES)}, or a '
        'callable (logits, labels) -> per-example loss (b,)'
    )


def _callable_objective(loss, labels):
  """logits -> loss(logits, labels) as float32 (b,), its shape checked at trace time."""

  def objective(z):
    f = loss(z, labels)
    if jnp.shape(f) != jnp.shape(labels):
      raise ValueError(
          f'a loss callable must return one value per example, shape '
          f'{jnp.shape(labels)}; got shape {jnp.shape(f)}'
      )
    return as_float(jnp.asarray(f))

  return objective


def objective_fn(loss: Loss, y: jax.Array, target: jax.Array | None):
  """logits (b, C) -> per-example loss to maximise (b,).

  `loss` is a name in LOSSES (targeted variants when `target` is given) or any callable
  `(logits (b, C), labels int (b,)) -> (b,)`, higher = more adversarial, called with the
  true labels `y`, or with `target` when one is given (so a targeted callable maximises
  towards the labels it receives, e.g. `lambda z, t: -cross_entropy(z, t)`).
  """
  check_loss(loss)
  if callable(loss):
    return _callable_objective(loss, y if target is None else target)
  if target is None:
    return {
        'ce': lambda z: cross_entropy(z, y),
        'cw': lambda z: cw_margin(z, y),
        'dlr': lambda z: dlr(z, y),
    }[loss]
  return {
      'ce': lambda z: -cross_entropy(z, target),
      'cw': lambda z: cw_margin_targeted(z, target),
      'dlr': lambda z: dlr_targeted(z, y, target),
  }[loss]


def success_fn(y: jax.Array, target: jax.Array | None):
  """logits (b, C) -> bool (b,): misclassified, or classified as the target when targeted."""
  if target is None:
    return lambda z: jnp.argmax(z, axis=-1) != y
  return lambda z: jnp.argmax(z, axis=-1) == target


def random_target(rng: jax.Array, y: jax.Array, num_classes: int) -> jax.Array:
  """A target drawn uniformly from the num_classes - 1 wrong classes, int (b,)."""
  shift = jax.random.randint(rng, y.shape, 1, num_classes, dtype=y.dtype)
  return (y + shift) % num_classes


def worst_target(logits: jax.Array, y: jax.Array) -> jax.Array:
  """The least likely wrong class (GREAT's 'worst' target), int (b,)."""
  mask = jax.nn.one_hot(y, logits.shape[-1], dtype=bool)
  return jnp.argmin(jnp.where(mask, jnp.inf, logits), axis=-1).astype(y.dtype)
