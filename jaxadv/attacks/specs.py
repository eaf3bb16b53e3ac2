"""Attack specs for evaluation: `parse_attack('pgd(norm=linf, eps=8/255, steps=50)')` -> a validated
AttackSpec, `make_attack(spec)` -> fn(logits_fn, rng, x, y) -> x_adv."""

from __future__ import annotations

import dataclasses
import fractions
import inspect
import math
import re
from typing import Any, Callable, Mapping

import jax
from jax import lax

from jaxadv.attacks.apgd import (
    APGD_NORMS,
    apgd,
    apgd_ce,
    apgd_dlr,
    apgd_step_size,
    apgd_t,
)
from jaxadv.attacks import autoattack
from jaxadv.attacks.autoattack import autoattack_batch
from jaxadv.attacks.fab import fab, fab_t
from jaxadv.attacks.losses import LOSSES, random_target, worst_target
from jaxadv.attacks.pgd import (
    RESTART_BATCHING,
    bim,
    clean,
    cw,
    fgsm,
    fgsm_rs,
    fgsm_rs_step_size,
    ifgsm,
    ifgsm_step_size,
    ifgsm_steps,
    pgd,
    pgd_step_size,
)
from jaxadv.attacks.projections import NORMS, LogitsFn
from jaxadv.attacks.square import square

Attack = Callable[..., jax.Array]

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
    'square': square,
    'fab': fab,
    'fab_t': fab_t,
    'autoattack': autoattack_batch,
}
# Attacks without a per-step move (describe() gives step_size None).
_NO_STEP_SIZE = ('square', 'fab', 'fab_t', 'autoattack')

TARGETS = ('random', 'worst')
# Canonical order of spec keys in str(spec).
_KEY_ORDER = (
    'norm',
    'eps',
    'steps',
    'queries',
    'step_size',
    'alpha',
    'restarts',
    'random_start',
    'clip_start',
    'loss',
    'target',
    'rho',
    'num_target_classes',
    'p_init',
    'rescale_schedule',
    'keep_best',
    'eot_iter',
    'largereps',
    'version',
    'restart_batching',
)
_BOOLEANS = (
    'random_start',
    'clip_start',
    'rescale_schedule',
    'keep_best',
    'largereps',
)
_CHOICES = {
    'norm': APGD_NORMS,
    'version': autoattack.VERSIONS,
    'loss': LOSSES,
    'target': TARGETS,
    'random_start': ('true', 'false'),
    'clip_start': ('true', 'false'),
    'rescale_schedule': ('true', 'false'),
    'keep_best': ('true', 'false'),
    'largereps': ('true', 'false'),
    'restart_batching': RESTART_BATCHING,
}
_POSITIVE_INTS = (
    'steps',
    'queries',
    'restarts',
    'num_target_classes',
    'eot_iter',
)
# Attacks that take norm=l1 (the others: linf and l2).
_L1_ATTACKS = (
    'apgd',
    'apgd_ce',
    'apgd_dlr',
    'apgd_t',
    'fab',
    'fab_t',
    'autoattack',
)
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
      raise ValueError(
          f'{key} must be one of {", ".join(_CHOICES[key])}, got {value!r}'
      )
    return text == 'true' if key in _BOOLEANS else text
  is_number = isinstance(
      value, (int, float, fractions.Fraction)
  ) and not isinstance(value, bool)
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
  if (
      key in ('rho', 'p_init') or (key == 'alpha' and name.startswith('apgd'))
  ) and not (0 < value <= 1):
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


def _step_size(
    name: str, kw: dict[str, Any], eps: float, steps: int
) -> float | None:
  """The per-step move an attack takes with keyword arguments `kw` (defaults from the attack
  modules' step-size rules)."""
  if name in _NO_STEP_SIZE:
    return None
  if name == 'fgsm':
    return eps
  if name == 'fgsm_rs':
    return fgsm_rs_step_size(eps) if kw['alpha'] is None else kw['alpha']
  if name.startswith('apgd'):
    return apgd_step_size(eps)
  if kw['step_size'] is not None:
    return kw['step_size']
  rule = ifgsm_step_size if name in ('ifgsm', 'bim') else pgd_step_size
  return rule(eps, steps)


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
      raise ValueError(
          f'unknown attack {self.name!r}; valid attacks: {", ".join(ATTACKS)}'
      )
    items = list(
        self.params.items() if isinstance(self.params, Mapping) else self.params
    )
    keys = _spec_keys(self.name)
    seen = set()
    for key, _ in items:
      if key not in keys:
        raise ValueError(
            f'unknown key {key!r} for attack {self.name!r}; valid keys: '
            f'{", ".join(keys) or "(none)"}'
        )
      if key in seen:
        raise ValueError(f'key {key!r} given twice')
      seen.add(key)
    if 'eps' in keys and 'eps' not in seen:
      raise ValueError(f'eps is required for attack {self.name!r}')
    params = tuple(
        sorted(
            ((k, _check_value(self.name, k, v)) for k, v in items),
            key=lambda kv: _KEY_ORDER.index(kv[0]),
        )
    )
    given = dict(params)
    if given.get('norm', 'linf') == 'linf' and given.get('eps', 0) > 1:
      raise ValueError(
          f'eps={_format_value(given["eps"])} must be <= 1 for norm=linf: '
          'pixel scale, e.g. eps=8/255, not eps=8'
      )
    if given.get('norm') == 'l1' and self.name not in _L1_ATTACKS:
      raise ValueError(
          f'norm=l1 is supported by {", ".join(_L1_ATTACKS)}; '
          f'{self.name} takes norm=linf or norm=l2'
      )
    if given.get('largereps') and given.get('norm', 'linf') != 'l1':
      raise ValueError('largereps=true is the L1 eps schedule; add norm=l1')
    if (
        given.get('version') in autoattack.L1_UNSUPPORTED
        and given.get('norm') == 'l1'
    ):
      raise ValueError(
          f'version={given["version"]} is not available for norm=l1 (its '
          'Square component has no L1 version here); use version=standard or '
          'version=rand'
      )
    if given.get('random_start') is False and given.get('restarts', 1) > 1:
      raise ValueError(
          f'restarts={given["restarts"]} with random_start=false runs the same '
          'attack repeatedly; use restarts=1 or random_start=true'
      )
    object.__setattr__(self, 'params', params)

  def __str__(self) -> str:
    if not self.params:
      return self.name
    args = ', '.join(f'{k}={_format_value(v)}' for k, v in self.params)
    return f'{self.name}({args})'

  @property
  def kwargs(self) -> dict[str, Value]:
    """The given params as Python keyword arguments (fractions as float)."""
    return {
        k: float(v) if isinstance(v, fractions.Fraction) else v
        for k, v in self.params
    }

  def describe(self) -> dict[str, Any]:
    """Resolved settings: attack, norm, eps, steps, step_size, restarts, loss, target,
    random_start.

    step_size is the per-step move (for APGD the initial 2 * eps; None for square, fab,
    fab_t and autoattack); for apgd_t, loss is 'dlr_targeted' and target 'top<T>' (T target
    classes, capped at C - 1 when run), as fab_t's target. For square, steps is the number of
    queries and loss the objective it maximises ('cw', the margin, untargeted; 'ce' with a
    target rule, unless given). autoattack, an ensemble, has steps, step_size, restarts,
    loss and target None. random_start is the attack's random_start key (None for attacks
    without one).
    """
    if self.name == 'clean':
      return dict(
          attack='clean',
          norm=None,
          eps=0.0,
          steps=0,
          step_size=0.0,
          restarts=0,
          loss=None,
          target=None,
          random_start=None,
      )
    params = inspect.signature(ATTACKS[self.name]).parameters.values()
    kw = {
        p.name: p.default
        for p in params
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not p.empty
    }
    kw.update(self.kwargs)
    eps = float(kw['eps'])
    if self.name == 'autoattack':
      return dict(
          attack='autoattack',
          norm=kw['norm'],
          eps=eps,
          steps=None,
          step_size=None,
          restarts=None,
          loss=None,
          target=None,
          random_start=None,
      )
    if self.name == 'square':
      kw['steps'] = kw['queries']
      kw['loss'] = kw['loss'] or ('cw' if kw.get('target') is None else 'ce')
    steps = kw.get('steps', 1)
    if self.name in ('ifgsm', 'bim') and steps is None:
      steps = ifgsm_steps(eps)
    step_size = _step_size(self.name, kw, eps, steps)
    step_size = None if step_size is None else float(step_size)
    loss = {
        'cw': 'cw',
        'apgd_ce': 'ce',
        'apgd_dlr': 'dlr',
        'apgd_t': 'dlr_targeted',
    }.get(self.name, kw.get('loss'))
    target = (
        f'top{kw["num_target_classes"]}'
        if self.name in ('apgd_t', 'fab_t')
        else kw.get('target')
    )
    return dict(
        attack=self.name,
        norm=kw.get('norm', 'linf'),
        eps=eps,
        steps=int(steps),
        step_size=step_size,
        restarts=int(kw.get('restarts', 1)),
        loss=loss,
        target=target,
        random_start=kw.get('random_start'),
    )


_SPEC_RE = re.compile(r'^\s*([A-Za-z_]\w*)\s*(?:\((.*)\))?\s*$', re.S)
_NUMBER = r'-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?'
_VALUE_RE = re.compile(
    rf'^(?:(?P<num>{_NUMBER})(?:\s*/\s*(?P<den>{_NUMBER}))?'
    rf'|(?P<ident>[A-Za-z_]\w*))$'
)


def _parse_value(text: str) -> Value:
  m = _VALUE_RE.match(text)
  if not m:
    raise ValueError(
        f'cannot parse value {text!r} (expected a number, a fraction a/b or a '
        'name)'
    )
  if m['ident']:
    return m['ident']
  if m['den'] is not None:
    den = fractions.Fraction(m['den'])
    if den == 0:
      raise ValueError(f'division by zero in {text!r}')
    value = fractions.Fraction(m['num']) / den
    return int(value) if value.denominator == 1 else value
  return int(m['num']) if re.fullmatch(r'-?\d+', m['num']) else float(m['num'])


def _method_value(
    key: str, value: Value, method: Mapping[str, Any] | None
) -> Value:
  """`value`, or the training method's value of `key` when value is the name 'method'."""
  if value != 'method':
    return value
  if method is None or method.get(key) is None:
    known = (
        ', '.join(sorted(k for k, v in (method or {}).items() if v is not None))
        or 'none'
    )
    raise ValueError(
        f'{key}=method needs a training method with a {key!r} setting (config.method.'
        f'{key}); the method has: {known}. Give the value instead, e.g. '
        f"'--config.eval.attacks=pgd(eps=0.3, steps=20)'"
    )
  return method[key]


def parse_attack(
    spec: str, method: Mapping[str, Any] | None = None
) -> AttackSpec:
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
  'pgd(eps=0.3, steps=40, target=worst)', 'square(eps=8/255, queries=5000)',
  'fab_t(norm=l2, eps=0.5)', 'autoattack(eps=8/255, norm=linf)', 'clean'.

  `key=method` takes the training method's resolved value of that key from `method` (e.g.
  `pgd(eps=method, steps=20)` attacks at config.method.eps), so one override of the training eps
  moves training, the monitor and the evaluation together.

  Raises:
    ValueError: one line naming the bad attack name / key / value and the valid choices.
  """
  m = _SPEC_RE.match(spec)
  try:
    if not m:
      raise ValueError('expected name or name(key=value, ...)')
    name, body = m[1], m[2]
    params = []
    if body is not None and body.strip():
      for arg in body.split(','):
        key, eq, value = arg.partition('=')
        if not eq or not key.strip():
          raise ValueError(f'expected key=value, got {arg.strip()!r}')
        try:
          params.append(
              (
                  key.strip(),
                  _method_value(
                      key.strip(), _parse_value(value.strip()), method
                  ),
              )
          )
        except ValueError as e:
          raise ValueError(f'{key.strip()}: {e}') from None
    return AttackSpec(name, tuple(params))
  except ValueError as e:
    raise ValueError(f'invalid attack spec {spec!r}: {e}') from None


def make_attack(
    spec: AttackSpec | str, method: Mapping[str, Any] | None = None
) -> Callable[..., jax.Array]:
  """The attack of a spec as fn(logits_fn, rng, x, y) -> stop_gradient(x_adv).

  target=worst uses worst_target(logits_fn(x), y); target=random draws with the first half of
  jax.random.split(rng) and attacks with the second.

  For 'autoattack' this is `autoattack_batch`: every component on the whole batch. The
  evaluation runner instead runs `autoattack.spec_components(spec)` one after another on the
  points still robust.
  """
  spec = parse_attack(spec, method) if isinstance(spec, str) else spec
  attack = ATTACKS[spec.name]
  kwargs = spec.kwargs
  target_rule = kwargs.pop('target', None)

  def fn(
      logits_fn: LogitsFn, rng: jax.Array, x: jax.Array, y: jax.Array
  ) -> jax.Array:
    if target_rule == 'worst':
      kwargs_t = dict(
          kwargs, target=worst_target(lax.stop_gradient(logits_fn(x)), y)
      )
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


def autoattack_components(
    eps, norm: str = 'linf', version: str = 'standard'
) -> list[autoattack.Component]:
  """The AutoAttack sequence at (eps, norm), in the order the reference runs it.

  eps is in pixel scale (an int, float or fractions.Fraction such as 8/255 from a parsed
  spec, kept as given so the components' names read eps=8/255). Each component is an attack
  with the same contract as every attack here: it returns points in the eps ball, and an
  example counts as broken when the model misclassifies the returned point. A runner records
  each component under its display name and the robust accuracy after it; the final robust
  accuracy is the one after the last component.
  """
  return [
      autoattack.Component(
          display, AttackSpec(name, dict(norm=norm, eps=eps, **params))
      )
      for display, name, params in autoattack.settings(version, norm)
  ]


def autoattack_spec_components(spec) -> list[autoattack.Component]:
  """The components of an `autoattack(eps=..., norm=..., version=...)` AttackSpec."""
  if spec.name != 'autoattack':
    raise ValueError(f'expected an autoattack spec, got {spec}')
  given = dict(spec.params)
  return autoattack_components(
      given['eps'], given.get('norm', 'linf'), given.get('version', 'standard')
  )
