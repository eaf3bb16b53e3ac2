"""AutoAttack (Croce & Hein, ICML 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks") as data: the ordered component attacks as attack
specs, so an evaluation runner can run each on the points still robust after the previous ones.

The runner that compacts to the still-robust points between components lives in
jaxadv/evaluation/suite.py (run_autoattack, via evaluators.robust_flags per component);
`autoattack_batch` here runs the same sequence on a fixed batch from plain JAX code.

Settings follow fra31/auto-attack's autoattack.py (set_version): 'standard' is APGD-CE (100
steps, 1 restart), APGD-T (100 steps, 9 targets, 1 restart), FAB-T (100 steps, 9 targets, 1
restart) and Square (5,000 queries, p_init 0.8, 1 restart, schedule not rescaled); 'plus' is
APGD-CE and APGD-DLR (5 restarts each), untargeted FAB (5 restarts), Square, APGD-T and FAB-T.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxadv.attacks.apgd import apgd_ce, apgd_dlr, apgd_t
from jaxadv.attacks.fab import fab, fab_t
from jaxadv.attacks.projections import NORMS, LogitsFn, bcast
from jaxadv.attacks.square import square

_ATTACKS = {
    'apgd_ce': apgd_ce,
    'apgd_dlr': apgd_dlr,
    'apgd_t': apgd_t,
    'fab': fab,
    'fab_t': fab_t,
    'square': square,
}

VERSIONS = ('standard', 'plus')


class Component(NamedTuple):
  """One attack of the ensemble: its display name (the reference's, e.g. 'apgd-t') and spec."""

  name: str
  spec: Any  # specs.AttackSpec (built by specs.autoattack_components)


def settings(version: str) -> list[tuple[str, str, dict[str, Any]]]:
  square = (
      'square',
      'square',
      dict(queries=5000, p_init=0.8, restarts=1, rescale_schedule=False),
  )
  if version == 'standard':
    return [
        ('apgd-ce', 'apgd_ce', dict(steps=100, restarts=1)),
        ('apgd-t', 'apgd_t', dict(steps=100, restarts=1, num_target_classes=9)),
        ('fab-t', 'fab_t', dict(steps=100, restarts=1, num_target_classes=9)),
        square,
    ]
  if version == 'plus':
    return [
        ('apgd-ce', 'apgd_ce', dict(steps=100, restarts=5)),
        ('apgd-dlr', 'apgd_dlr', dict(steps=100, restarts=5)),
        ('fab', 'fab', dict(steps=100, restarts=5)),
        square,
        ('apgd-t', 'apgd_t', dict(steps=100, restarts=1, num_target_classes=9)),
        ('fab-t', 'fab_t', dict(steps=100, restarts=1, num_target_classes=9)),
    ]
  raise ValueError(
      f'unknown AutoAttack version {version!r}; valid: {", ".join(VERSIONS)}'
  )


def autoattack_batch(
    logits_fn: LogitsFn,
    rng: jax.Array,
    x: jax.Array,
    y: jax.Array,
    *,
    eps,
    norm: str = 'linf',
    version: str = 'standard',
) -> jax.Array:
  """AutoAttack on one fixed batch: every component runs on the whole batch in turn, and per
  example the first component's point that the model misclassifies is kept; x where the clean
  point is already misclassified or no component succeeds (as the reference).

  Component i uses key jax.random.fold_in(rng, i); eps may be traced. The robust accuracy is
  the reference's (up to the attacks' random draws), but every component spends its full cost
  on every example; the evaluation runner (evaluation.run_attacks) instead compacts the batch to
  the points still robust between components, which is much faster on robust models.

  Returns:
    stop_gradient(x_adv), (b, ...) in [0, 1] and in the eps ball of x.
  """
  if norm not in NORMS:
    raise ValueError(f'unknown norm {norm!r}; valid norms: {", ".join(NORMS)}')
  wrong = lambda xx: jnp.argmax(logits_fn(xx), axis=-1) != y
  x_adv, broken = x, wrong(x)
  for i, (_, name, params) in enumerate(settings(version)):
    new = _ATTACKS[name](
        logits_fn,
        jax.random.fold_in(rng, i),
        x,
        y,
        eps=eps,
        norm=norm,
        **params,
    )
    take = ~broken & wrong(new)
    x_adv = jnp.where(bcast(take, x), new, x_adv)
    broken = broken | take
  return lax.stop_gradient(x_adv)
