"""GREAT's Table 1 (Sinha et al. 2018) from trained runs, plus the attacks
that see through gradient masking.

  python -m jaxadv.tools.great_table --workdirs runs/b,runs/a,runs/ce,runs/at,runs/both \
      --labels Baseline,Adversarial,GREACE,GREAT,'GRE(AT+CE)' --out runs/table1

For every run: accuracy on its own training split (the paper's "train"
column), then the attacks of the run's config.eval.attacks (for
configs/great_cifar10*.py: clean, FGSM / iFGSM untargeted and targeted at
the worst / a random class at eps 0.1 and 8/255, PGD-50 x 10 and AutoAttack
at 8/255) on the same seeded test subset; writes table1.md / table1.json
with the sanity flags of every model (gradient masking suspected when a
gradient-free or minimal-perturbation attack beats the gradient attacks).
"""

import argparse
import os
import sys
import time

from jaxadv import evaluation
from jaxadv.tools import common as tool_args
from jaxadv import methods as methods_lib
from jaxadv.evaluation import reports
from jaxadv import runs
from jaxadv.evaluation import sanity


def _column(record):
  """A short column name for a Table 1 record."""
  a, target = record['attack'], record.get('target')
  name = {
      'fgsm': 'FGSM',
      'ifgsm': 'iFGSM',
      'pgd': 'PGD',
      'clean': 'clean',
      'autoattack': 'AutoAttack',
  }.get(a, a)
  if a == 'pgd':
    name = f'PGD-{record["steps"]}x{record["restarts"]}'
  if target in ('worst', 'random'):
    name += f' {target}'
  if a != 'clean':
    eps = record['eps']
    name += ' @' + ('8/255' if abs(eps - 8 / 255) < 1e-9 else f'{eps:g}')
  return name


def evaluate_run(workdir, label, num_examples=None):
  """Train accuracy and the eval records of one run (records carry
  model=label)."""
  run = runs.load_run(workdir)
  c = run.config
  train_acc, n_train = evaluation.accuracy(
      run.state,
      run.dataset.train_images,
      run.dataset.train_labels,
      mesh=run.mesh,
      specs=run.specs,
      batch_size=c.eval_batch_size,
  )
  settings = methods_lib.settings(methods_lib.get_method(c.method.name), c)
  t0 = time.time()
  records = evaluation.run_attacks(
      run.state,
      run.dataset.test,
      c.eval.attacks,
      mesh=run.mesh,
      specs=run.specs,
      batch_size=c.eval.batch_size,
      num_examples=c.eval.num_examples
      if num_examples is None
      else num_examples,
      seed=c.eval.seed,
      method_settings=settings,
  )
  for r in records:
    r['model'] = label
  return {
      'label': label,
      'workdir': workdir,
      'train_accuracy': train_acc,
      'train_examples': n_train,
      'eval_seconds': time.time() - t0,
      'records': records,
  }


def table(rows):
  """Markdown: one row per model, train accuracy then every attack (not
  AutoAttack's components) in percent."""
  cols = [
      _column(r) for r in rows[0]['records'] if r.get('component_of') is None
  ]
  lines = [
      '| model | train | ' + ' | '.join(cols) + ' |',
      '|---|---|' + '---|' * len(cols),
  ]
  for row in rows:
    vals = [
        f'{100 * r["accuracy"]:.1f}'
        for r in row['records']
        if r.get('component_of') is None
    ]
    lines.append(
        f'| {row["label"]} | {100 * row["train_accuracy"]:.1f} | '
        + ' | '.join(vals)
        + ' |'
    )
  return '\n'.join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--workdirs', required=True, help='comma-separated runs')
  p.add_argument('--labels', default='', help='comma-separated row names')
  p.add_argument('--out', required=True, help='output folder')
  p.add_argument(
      '--num_examples',
      type=int,
      default=None,
      help="test subset (default: each run's eval.num_examples)",
  )
  args = p.parse_args(argv)
  try:
    workdirs = tool_args.parse_list(args.workdirs)
    labels = tool_args.workdir_labels(args.labels, workdirs)
    for w in workdirs:
      if not os.path.isdir(w):
        raise ValueError(f'--workdirs: {w} is not a run folder')
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  rows = []
  for w, label in zip(workdirs, labels):
    rows.append(evaluate_run(w, label, args.num_examples))
    print(f'{label}: evaluated in {rows[-1]["eval_seconds"]:.0f} s', flush=True)
  records = [r for row in rows for r in row['records']]
  warnings = sanity.sanity_flags(records)
  text = (
      table(rows)
      + '\n\n'
      + reports.markdown_table(
          records, columns=('model', 'name', 'num_examples', 'accuracy')
      )
      + '\n\n'
      + reports.warnings_markdown(warnings)
  )
  print(text)
  reports.write_json(
      os.path.join(args.out, 'table1.json'),
      {'rows': rows, 'warnings': warnings},
  )
  reports.write_text(os.path.join(args.out, 'table1.md'), text)
  print(f'wrote {args.out}/table1.md and table1.json')
  return 0


if __name__ == '__main__':
  sys.exit(main())
