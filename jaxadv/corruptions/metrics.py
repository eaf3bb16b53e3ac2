"""The numbers of a corruption report, as Hendrycks & Dietterich (2019,
section 3) define them, from accuracies per corruption and severity.

Inputs are mappings {corruption name: accuracies at severities 1..5} with
accuracies as fractions in [0, 1] (errors are 1 - accuracy); outputs are
fractions too (multiply by 100 for the paper's percentages).

- mean corruption accuracy: the mean over corruptions and severities;
- corruption error CE_c = sum_s E_{s,c} / sum_s E^base_{s,c}, the model's
  errors summed over severities relative to a baseline model's (AlexNet for
  ImageNet-C; here any run given as the baseline); mCE = mean_c CE_c;
- relative CE_c = sum_s (E_{s,c} - E_clean) / sum_s (E^base_{s,c} -
  E^base_clean), the degradation relative to the baseline's; relative mCE =
  its mean.
Plain Python and numpy, no JAX: these run on a handful of numbers.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

Accuracies = Mapping[str, Sequence[float]]


def _errors(acc: Accuracies, what: str) -> dict:
  out = {}
  for name, values in acc.items():
    a = np.asarray(values, np.float64)
    if a.ndim != 1 or a.size == 0 or np.any((a < 0) | (a > 1)):
      raise ValueError(
          f'{what}[{name!r}] must be accuracies in [0, 1] per severity, '
          f'got {values!r}'
      )
    out[name] = 1.0 - a
  if not out:
    raise ValueError(f'{what} holds no corruption')
  return out


def _paired(acc: Accuracies, base_acc: Accuracies):
  model, base = _errors(acc, 'acc'), _errors(base_acc, 'base_acc')
  missing = sorted(set(model) - set(base))
  if missing:
    raise ValueError(f'the baseline has no accuracies for {missing}')
  for name, e in model.items():
    if e.shape != base[name].shape:
      raise ValueError(
          f'{name!r}: {e.size} severities for the model but '
          f'{base[name].size} for the baseline'
      )
  return model, base


def mean_corruption_accuracy(acc: Accuracies) -> float:
  """Mean accuracy over all corruptions and severities."""
  errors = np.concatenate(list(_errors(acc, 'acc').values()))
  return float(1.0 - np.mean(errors))


def corruption_errors(acc: Accuracies, base_acc: Accuracies) -> dict:
  """{name: CE_c}: the model's summed errors over the baseline's."""
  model, base = _paired(acc, base_acc)
  out = {}
  for name, e in model.items():
    denom = base[name].sum()
    if denom <= 0:
      raise ValueError(f'{name!r}: the baseline makes no errors; CE undefined')
    out[name] = float(e.sum() / denom)
  return out


def mce(acc: Accuracies, base_acc: Accuracies) -> float:
  """Mean corruption error: the mean of corruption_errors over the model's
  corruptions."""
  return float(np.mean(list(corruption_errors(acc, base_acc).values())))


def relative_corruption_errors(
    acc: Accuracies, clean_acc: float, base_acc: Accuracies,
    base_clean_acc: float,
) -> dict:  # fmt: skip
  """{name: relative CE_c}: the model's error increase over clean, summed
  over severities, relative to the baseline's."""
  model, base = _paired(acc, base_acc)
  e0, b0 = 1.0 - float(clean_acc), 1.0 - float(base_clean_acc)
  out = {}
  for name, e in model.items():
    denom = (base[name] - b0).sum()
    if denom <= 0:
      raise ValueError(
          f'{name!r}: the baseline loses no accuracy under it; relative CE '
          'undefined'
      )
    out[name] = float((e - e0).sum() / denom)
  return out


def relative_mce(acc, clean_acc, base_acc, base_clean_acc) -> float:
  """Relative mCE: the mean of relative_corruption_errors."""
  rel = relative_corruption_errors(acc, clean_acc, base_acc, base_clean_acc)
  return float(np.mean(list(rel.values())))
