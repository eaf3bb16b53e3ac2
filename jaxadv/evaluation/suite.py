"""An evaluation suite: clean accuracy and each attack of a list of specs on
one seeded subset of a split, one record per attack, and the AutoAttack
runner that gives each component only the examples still robust.

Records (one dict per evaluated attack) carry the attack's resolved settings
(`AttackSpec.describe()`: attack, norm, eps in pixel scale, steps, step_size,
restarts, loss, target, random_start) plus name, seed, num_examples,
accuracy (in [0, 1]) and seconds. Records of several models also carry
`model` (the evaluated model) and, for black-box transfer, `source` (the
model the attack ran on).
"""

import time

import numpy as np

from jaxadv import attacks
from jaxadv.evaluation import evaluators


def subset_indices(num_total, num_examples, seed):
  """Sorted indices of a seeded random subset (never the first n: data may
  be sorted by class); None (all) when num_examples is 0 or >= num_total."""
  if not num_examples or num_examples >= num_total:
    return None
  return np.sort(
      np.random.default_rng(seed).permutation(num_total)[:num_examples]
  )


def subset(images, labels, num_examples, seed):
  """subset_indices applied to arrays: (images, labels) of the subset."""
  idx = subset_indices(len(labels), num_examples, seed)
  return (images, labels) if idx is None else (images[idx], labels[idx])


def record(spec, accuracy_value, num_examples, seed, seconds, **extra):
  """One eval record for an AttackSpec (see the module docstring)."""
  return {
      'name': str(spec),
      **spec.describe(),
      'seed': seed,
      'num_examples': num_examples,
      'accuracy': accuracy_value,
      'seconds': seconds,
      **extra,
  }


def run_attacks(
    model,
    data,
    attack_specs,
    *,
    mesh,
    specs,
    batch_size,
    num_examples=0,
    seed=0,
    dtype=None,
    method_settings=None,
    labels=None,
):
  """Accuracy under each attack spec on the same seeded subset of `data` (a
  split or (images, labels)); one record per attack (see the module
  docstring). 'clean' is a valid spec. `dtype`, the model's compute dtype,
  is recorded when given; `method_settings` resolves `key=method` in the
  specs (the training method's values)."""
  split = evaluators.as_split(data if labels is None else (data, labels))
  extra = {} if dtype is None else {'dtype': dtype}
  idx = subset_indices(len(split), num_examples, seed)
  common = dict(mesh=mesh, specs=specs, batch_size=batch_size, seed=seed)
  records = []
  for spec_text in attack_specs:
    spec = attacks.parse_attack(spec_text, method_settings)
    if spec.name == 'autoattack':
      records += run_autoattack(
          model, split, spec, indices=idx, **common, **extra
      )
      continue
    fn = None if spec.name == 'clean' else attacks.make_attack(spec)
    t0 = time.time()
    acc, n = evaluators.accuracy(model, split, attack=fn, indices=idx, **common)
    records.append(record(spec, acc, n, seed, time.time() - t0, **extra))
  return records


def run_autoattack(
    model,
    data,
    spec,
    *,
    mesh,
    specs,
    batch_size,
    seed=0,
    indices=None,
    **extra,
):
  """AutoAttack as its reference runs it: each component (APGD-CE, APGD-T,
  FAB-T, Square for 'standard') attacks only the examples still robust after
  the ones before it (their indices are kept on the host and the next
  component reads just those), and an example is robust only if the clean
  input and every component's point are classified correctly.

  Returns one record per component (accuracy = robust accuracy after it,
  over all examples; 'component_of' names the ensemble) and the final
  record of `spec` with 'components' {name: accuracy}.
  """
  split = evaluators.as_split(data)
  t_start = time.time()
  keep = np.arange(len(split)) if indices is None else np.asarray(indices)
  n = len(keep)
  common = dict(mesh=mesh, specs=specs, batch_size=batch_size)
  ok = evaluators.robust_flags(
      model, split, attacks.clean, seed=seed, indices=keep, **common
  )
  keep = keep[ok]
  out, after = [], {}
  for i, comp in enumerate(attacks.specs.autoattack_spec_components(spec)):
    t0 = time.time()
    if keep.size:
      ok = evaluators.robust_flags(
          model,
          split,
          attacks.make_attack(comp.spec),
          seed=seed + 1 + i,
          indices=keep,
          **common,
      )
      keep = keep[ok]
    after[comp.name] = keep.size / max(n, 1)
    out.append(
        record(
            comp.spec,
            after[comp.name],
            n,
            seed,
            time.time() - t0,
            component_of=str(spec),
            **extra,
        )
    )
  out.append(
      record(
          spec,
          keep.size / max(n, 1),
          n,
          seed,
          time.time() - t_start,
          components=after,
          **extra,
      )
  )
  return out
