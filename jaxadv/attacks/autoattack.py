"""AutoAttack (Croce & Hein, ICML 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks") as data: the ordered component attacks as attack
specs, so an evaluation runner can run each on the points still robust after the previous ones.

The runner that compacts to the still-robust points between components lives in
jaxadv/evaluation/suite.py (run_autoattack, via evaluators.robust_flags per component);
`autoattack_batch` here runs the same sequence on a fixed batch from plain JAX code.

Settings follow fra31/auto-attack's autoattack.py (set_version, and the attack objects its
constructor builds):
- 'standard', L-inf and L2: APGD-CE (100 steps, 1 restart), APGD-T (100 steps, 9 targets, 1
  restart), FAB-T (100 steps, 9 targets, 1 restart) and Square (5,000 queries, p_init 0.8, 1
  restart, schedule not rescaled).
- 'standard', L1: APGD-CE (5 restarts) and APGD-T (5 targets, 1 restart), both with the L1 eps
  schedule (use_largereps: runs at 3 eps, 2 eps, eps), and FAB-T in L1 (9 targets). The
  reference also runs Square in L1; this package has no L1 Square, so it is left out here (a
  departure: the ensemble is weaker than the reference's in L1).
- 'plus' (L-inf, L2): APGD-CE and APGD-DLR (5 restarts each), untargeted FAB (5 restarts),
  Square (5,000 queries; 1 restart: the reference's Square object is built with n_restarts=1
  and set_version('plus') does not change it, though issue texts say 5), APGD-T (9 targets, 1
  restart) and FAB-T (9 targets, 1 restart: the reference's fab-t branch sets n_restarts=1).
- 'rand' (randomized defenses): APGD-CE and APGD-DLR, 1 restart, EOT over 20 draws per
  gradient (`eot.Randomized`; a deterministic model gives the plain gradient). Also in L1
  (plain L1 APGD, no eps schedule, as the reference's rand version leaves use_largereps off).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxadv.attacks.apgd import APGD_NORMS, apgd_ce, apgd_dlr, apgd_t
from jaxadv.attacks.fab import fab, fab_t
from jaxadv.attacks.precision import float32_inside
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

VERSIONS = ('standard', 'plus', 'rand')
# Versions that need an L1 Square, which this package does not have.
L1_UNSUPPORTED = ('plus',)


class Component(NamedTuple):
  """One attack of the ensemble: its display name (the reference's, e.g. 'apgd-t') and spec."""

  name: str
  spec: Any  # specs.AttackSpec (built by specs.autoattack_components)


_SQUARE = (
    'square',
    'square',
    dict(queries=5000, p_init=0.8, restarts=1, rescale_schedule=False),
)


def settings(
    version: str, norm: str = 'linf'
) -> list[tuple[str, str, dict[str, Any]]]:
  """(display name, attack name, keyword arguments) of each component, in order."""
  if version not in VERSIONS:
    raise ValueError(
        f'unknown AutoAttack version {version!r}; valid: {", ".join(VERSIONS)}'
    )
  if norm not in APGD_NORMS:
    raise ValueError(
        f'unknown norm {norm!r}; valid norms: {", ".join(APGD_NORMS)}'
    )
  if version == 'rand':
    eot = dict(steps=100, restarts=1, eot_iter=20)
    return [('apgd-ce', 'apgd_ce', eot), ('apgd-dlr', 'apgd_dlr', eot)]
  if norm == 'l1':
    if version in L1_UNSUPPORTED:
      raise ValueError(
          f'version {version!r} is not available for norm l1 (no L1 Square '
          'here); use standard or rand'
      )
    return [
        ('apgd-ce', 'apgd_ce', dict(steps=100, restarts=5, largereps=True)),
        (
            'apgd-t',
            'apgd_t',
            dict(steps=100, restarts=1, num_target_classes=5, largereps=True),
        ),
        ('fab-t', 'fab_t', dict(steps=100, restarts=1, num_target_classes=9)),
    ]
  if version == 'standard':
    return [
        ('apgd-ce', 'apgd_ce', dict(steps=100, restarts=1)),
        ('apgd-t', 'apgd_t', dict(steps=100, restarts=1, num_target_classes=9)),
        ('fab-t', 'fab_t', dict(steps=100, restarts=1, num_target_classes=9)),
        _SQUARE,
    ]
  return [
      ('apgd-ce', 'apgd_ce', dict(steps=100, restarts=5)),
      ('apgd-dlr', 'apgd_dlr', dict(steps=100, restarts=5)),
      ('fab', 'fab', dict(steps=100, restarts=5)),
      _SQUARE,
      ('apgd-t', 'apgd_t', dict(steps=100, restarts=1, num_target_classes=9)),
      ('fab-t', 'fab_t', dict(steps=100, restarts=1, num_target_classes=9)),
  ]


@float32_inside
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
  components = settings(version, norm)
  wrong = lambda xx: jnp.argmax(logits_fn(xx), axis=-1) != y
  x_adv, broken = x, wrong(x)
  for i, (_, name, params) in enumerate(components):
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
