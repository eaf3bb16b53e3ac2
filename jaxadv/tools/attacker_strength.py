"""Attacker-strength study (Bhat, Tsipras and Madry 2018, Section 4, Table 1).

  python -m jaxadv.tools.attacker_strength --config configs/mnist_pgd.py \
      --workdir runs/kappa [--kappas 1,4,8,128] [--num_examples 1000] \
      [--config.num_epochs=4 ...]

Trains one PGD model per kappa (kappa steps of 2.5 eps / kappa, random start;
everything else from --config, so a shorter schedule is one override), then
writes the paper's Table 1: row = target model (trained with kappa_t); each
cell = accuracy of that target on PGD-kappa_t examples crafted on the column's
source model. The diagonal is white-box, the rest black-box. Their finding:
kappa <= 4 models look robust white-box but fall to transferred examples
(gradient shattering); kappa >= 8 models do not. Training resumes per model,
so an interrupted study continues where it stopped.
"""

import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from jaxadv import runs
from jaxadv import train
from jaxadv.tools import transfer

config_flags.DEFINE_config_file(
    'config',
    None,
    'Base PGD config (e.g. ' 'configs/mnist_pgd.py).',
    lock_config=False,
)
flags.DEFINE_string('workdir', None, 'Study directory; one run per kappa.')
flags.DEFINE_string(
    'kappas',
    '1,4,8,128',
    "PGD steps of the trained models (default: the paper's " 'Table 1).',
)
flags.DEFINE_integer('num_examples', 1000, 'Seeded random test subset.')
flags.DEFINE_integer('seed', 0, 'Seed of the subset and attack starts.')
flags.mark_flags_as_required(['config', 'workdir'])
FLAGS = flags.FLAGS


def kappa_config(base, kappa):
  c = base.copy_and_resolve_references()
  c.method.steps = kappa
  c.method.step_size = 2.5 * c.method.eps / kappa
  c.eval.at_end = False
  return c


def attack_spec(base, kappa):
  """PGD-kappa with the training step rule, as the paper's adversaries."""
  eps = base.method.eps
  return (
      f'pgd(norm={base.method.get("norm", "linf")}, eps={eps}, '
      f'steps={kappa}, step_size={2.5 * eps / kappa})'
  )


def run_study(base, workdir, kappas, num_examples=1000, seed=0):
  """Trains (or resumes) every kappa model and returns the Table 1 dict:
  {'kappas', 'accuracy': [target][source], 'clean': [...], 'attacks'}."""
  if base.method.name != 'pgd':
    raise ValueError(
        'the study trains PGD models: use a config with '
        "method.name='pgd' (e.g. configs/mnist_pgd.py)"
    )
  dirs = {}
  for k in kappas:
    dirs[k] = os.path.join(workdir, f'kappa_{k}')
    train.train_and_evaluate(kappa_config(base, k), dirs[k])
  models, ds = {}, None
  for k in kappas:
    _, state, specs, mesh, ds = runs.load_run(dirs[k])
    models[f'kappa={k}'] = (state, specs, mesh)
  names = list(models)
  table, attacks_used, clean = [], [], []
  for t, k in zip(names, kappas):
    # Row t: PGD-kappa_t examples from every source, evaluated on t only.
    result = transfer.transfer_matrix(
        models,
        ds.test_images,
        ds.test_labels,
        attack_spec(base, k),
        batch_size=base.eval.batch_size,
        num_examples=num_examples,
        seed=seed,
        targets=[t],
    )
    table.append([row[0] for row in result['accuracy']])
    attacks_used.append(result['attack'])
    clean.append(result['clean'][t])
  return {
      'kappas': list(kappas),
      'accuracy': table,
      'clean': clean,
      'attacks': attacks_used,
      'num_examples': num_examples,
  }


def markdown(study):
  ks = study['kappas']
  lines = [
      '| target kappa | clean | '
      + ' | '.join(f'source kappa={k}' for k in ks)
      + ' | adversary |',
      '|---' * (len(ks) + 3) + '|',
  ]
  for i, k in enumerate(ks):
    cells = [
        (f'**{100 * a:.2f}%**' if j == i else f'{100 * a:.2f}%')
        for j, a in enumerate(study['accuracy'][i])
    ]
    lines.append(
        f'| {k} | {100 * study["clean"][i]:.2f}% | '
        + ' | '.join(cells)
        + f' | PGD-{k} |'
    )
  lines.append('')
  lines.append(
      'Diagonal (bold): white-box. Off-diagonal: black-box, examples '
      f'crafted on the source. {study["num_examples"]} seeded test '
      'images.'
  )
  flags_ = [
      f'target kappa={k}: black-box from kappa={ks[j]} '
      f'({100 * a:.2f}%) below its white-box accuracy '
      f'({100 * study["accuracy"][i][i]:.2f}%): gradient masking'
      for i, k in enumerate(ks)
      for j, a in enumerate(study['accuracy'][i])
      if j != i and a < study['accuracy'][i][i] - 0.01
  ]
  lines += (
      ['', 'Sanity checks:'] + [f'- WARNING {f}' for f in flags_]
      if (flags_)
      else ['', 'Sanity checks: no warnings.']
  )
  return '\n'.join(lines)


def main(argv):
  del argv
  if not FLAGS['verbosity'].present:  # orbax logs every save at INFO
    logging.set_verbosity(logging.WARNING)
  kappas = [int(k) for k in FLAGS.kappas.split(',')]
  try:
    study = run_study(
        FLAGS.config, FLAGS.workdir, kappas, FLAGS.num_examples, FLAGS.seed
    )
  except (ValueError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  table = markdown(study)
  with open(os.path.join(FLAGS.workdir, 'table1.json'), 'w') as f:
    json.dump(study, f, indent=2)
  with open(os.path.join(FLAGS.workdir, 'table1.md'), 'w') as f:
    f.write(table + '\n')
  print(table)
  return 0


if __name__ == '__main__':
  app.run(lambda argv: sys.exit(main(argv)))
