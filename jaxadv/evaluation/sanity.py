"""Sanity flags: warnings about evaluation results that point to gradient
masking (Athalye et al. 2018; Carlini et al. 2019's checklist)."""

from jaxadv import attacks

# Single-step attacks: a multi-step attack at the same norm and eps must be
# at least as strong, else gradients are masked (Athalye et al. 2018).
SINGLE_STEP = ('fgsm', 'fgsm_rs')
MULTI_STEP = (
    'ifgsm',
    'bim',
    'pgd',
    'cw',
    'apgd',
    'apgd_ce',
    'apgd_dlr',
    'apgd_t',
)
GRADIENT = SINGLE_STEP + MULTI_STEP
# Attacks that do not follow the gradient (score-based Square) or that seek
# minimal perturbations by linearising the boundary (FAB): when they beat
# every gradient attack by a margin, the gradients are masked (Croce & Hein
# 2020; RobustBench's AutoAttack).
NON_GRADIENT = ('square', 'fab', 'fab_t')
MASKING_MARGIN = 0.02  # 2 points of accuracy


def _pct(r):
  return f'{100 * r["accuracy"]:.2f}%'


def _slack(*records):
  """One example's worth of accuracy: differences within it are noise."""
  n = min(max(int(r.get('num_examples') or 1), 1) for r in records)
  return 1.0 / n + 1e-9


def _whitebox(records):
  return [
      r
      for r in records
      if r.get('source') is None or r.get('source') == r.get('model')
  ]


def _model_note(r):
  return f' on {r["model"]}' if r.get('model') is not None else ''


def sanity_flags(records):
  """Warnings (strings) about results that point to gradient masking.

  Differences of at most one example's worth are ignored. Rules:
    1. a single-step attack (FGSM family) leaves a lower accuracy than a
       multi-step one (PGD, APGD, CW, ...) of the same model, norm and eps;
    2. more steps or restarts of the same attack, norm, eps, loss and target
       rule leave a higher accuracy;
    3. a black-box (transfer) attack on a model leaves a lower accuracy than
       the same attack run white-box on that model (off-diagonal < diagonal);
    4. a larger eps of the same attack settings leaves a higher accuracy;
    5. a gradient-free or minimal-perturbation attack (square, fab, fab_t)
       leaves an accuracy more than 2 points (and more than one example)
       below the best (lowest-accuracy) gradient attack of the same model,
       norm and eps: "gradient masking suspected".
  Untargeted comparisons (1) skip attacks with a target rule (random/worst).
  """
  wb = _whitebox(records)
  return (
      _single_step_flags(wb)
      + _more_steps_flags(wb)
      + _transfer_flags(records)
      + _eps_flags(wb)
      + _masking_flags(wb)
  )


def _same(a, b, keys):
  return all(a.get(k) == b.get(k) for k in keys)


def _single_step_flags(wb):
  """Rule 1: a single-step attack stronger than a multi-step one."""
  warnings = []
  for a in wb:
    if a.get('attack') not in SINGLE_STEP or a.get('target') in attacks.TARGETS:
      continue
    for b in wb:
      if (
          b.get('attack') in MULTI_STEP
          and _same(a, b, ('model', 'norm', 'eps'))
          and b.get('target') not in attacks.TARGETS
          and a['accuracy'] < b['accuracy'] - _slack(a, b)
      ):
        warnings.append(
            f'single-step {a["name"]} ({_pct(a)}) is stronger than multi-step '
            f'{b["name"]} ({_pct(b)}){_model_note(a)} at {a["norm"]} '
            f'eps={a["eps"]:.4g}: gradient masking? (the multi-step attack '
            'is failing)'
        )
  return warnings


def _more_steps_flags(wb):
  """Rule 2: more steps or restarts leave a higher accuracy."""
  warnings = []
  family = ('model', 'attack', 'norm', 'eps', 'loss', 'target', 'random_start')
  for a in wb:
    for b in wb:
      if a is b or a.get('attack') == 'clean' or not _same(a, b, family):
        continue
      # Ensembles (autoattack) have no steps or restarts: None counts as 0.
      more = (
          (b.get('steps') or 0) >= (a.get('steps') or 0)
          and (b.get('restarts') or 1) >= (a.get('restarts') or 1)
          and (b.get('steps'), b.get('restarts'))
          != (a.get('steps'), a.get('restarts'))
      )
      if more and b['accuracy'] > a['accuracy'] + _slack(a, b):
        warnings.append(
            f'{b["name"]} ({_pct(b)}, {b.get("steps")} steps x '
            f'{b.get("restarts")} restarts) leaves a higher accuracy than '
            f'{a["name"]} ({_pct(a)}, {a.get("steps")} x {a.get("restarts")})'
            f'{_model_note(a)}: more steps/restarts should not help the '
            'model (randomness or a broken attack?)'
        )
  return warnings


def _transfer_flags(records):
  """Rule 3: black-box below white-box on the same model and attack."""
  warnings = []
  for r in records:
    if r.get('source') is None or r.get('source') == r.get('model'):
      continue
    for d in records:
      if (
          d.get('source') == d.get('model') == r.get('model')
          and d.get('name') == r.get('name')
          and r['accuracy'] < d['accuracy'] - _slack(r, d)
      ):
        warnings.append(
            f'black-box {r["name"]} transferred from {r["source"]} leaves '
            f'{r["model"]} at {_pct(r)}, below its white-box accuracy '
            f'{_pct(d)} under the same attack: the white-box attack on '
            f'{r["model"]} is failing (gradient masking?)'
        )
  return warnings


def _eps_flags(wb):
  """Rule 4: accuracy rising with eps."""
  warnings = []
  settings = (
      'model',
      'attack',
      'norm',
      'steps',
      'restarts',
      'loss',
      'target',
      'random_start',
  )
  for a in wb:
    for b in wb:
      if (
          a.get('attack') != 'clean'
          and _same(a, b, settings)
          and b.get('eps', 0) > a.get('eps', 0)
          and b['accuracy'] > a['accuracy'] + _slack(a, b)
      ):
        warnings.append(
            f'{b["name"]} ({_pct(b)}) leaves a higher accuracy than the '
            f'smaller-eps {a["name"]} ({_pct(a)}){_model_note(a)}: accuracy '
            'should not rise with eps (gradient masking?)'
        )
  return warnings


def _masking_flags(records):
  """Rule 5: a non-gradient attack far below the best gradient attack."""
  warnings = []
  for a in records:
    if a.get('attack') not in NON_GRADIENT:
      continue
    rivals = [
        b
        for b in records
        if b.get('attack') in GRADIENT
        and all(b.get(k) == a.get(k) for k in ('model', 'norm', 'eps'))
    ]
    if not rivals:
      continue
    best = min(rivals, key=lambda b: b['accuracy'])
    if a['accuracy'] < best['accuracy'] - max(MASKING_MARGIN, _slack(a, best)):
      warnings.append(
          f'{a["name"]} ({_pct(a)}) leaves a lower accuracy than the best '
          f'gradient attack {best["name"]} ({_pct(best)}){_model_note(a)} at '
          f'{a["norm"]} eps={a["eps"]:.4g}: gradient masking suspected (the '
          'gradient attacks are failing; trust the lower number)'
      )
  return warnings
