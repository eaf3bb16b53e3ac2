"""Robust accuracy versus eps: one attack template, a list of eps, one curve
per model, saved as numbers (sweep.json, sweep.md) and a plot (sweep.png).

  python -m jaxadv.tools.sweep --workdirs runs/a,runs/b \
      --attack 'pgd(norm=l2, steps=20)' --eps 0,0.25,0.5,1,1.5,2 \
      --out runs/sweep [--num_examples N] [--labels a,b] [--seed S]

Each workdir is a trained run (config.json + checkpoints/, see
runs.load_run). Every model is attacked on the same seeded test
subset (taken from the first workdir's test split). eps is in pixel scale
and overrides any eps in the template.
"""

import argparse
import os
import re
import sys
import time

import jax
import jax.numpy as jnp

from jaxadv import attacks
from jaxadv import evaluation
from jaxadv.tools import common as tool_args
from jaxadv import runs
from jaxadv.evaluation import reports
from jaxadv.evaluation import sanity

_SPEC_RE = re.compile(r'^\s*([A-Za-z_]\w*)\s*(?:\((.*)\))?\s*$', re.S)


def _eps_text(eps):
  """Spec text of an eps: strings verbatim ('8/255'), numbers exactly."""
  if isinstance(eps, str):
    return eps.strip()
  if float(eps) == int(eps):
    return str(int(eps))
  return repr(float(eps))


def attack_at_eps(template, eps):
  """The AttackSpec of `template` (a spec string, eps optional) with
  eps replaced; eps is a number or spec text such as '8/255'."""
  m = _SPEC_RE.match(str(template))
  if not m:
    raise ValueError(
        f'invalid attack template {template!r}: expected name '
        'or name(key=value, ...)'
    )
  args = [
      a.strip()
      for a in (m[2] or '').split(',')
      if a.strip() and a.partition('=')[0].strip() != 'eps'
  ]
  spec = attacks.parse_attack(
      f'{m[1]}({", ".join(args + [f"eps={_eps_text(eps)}"])})'
  )
  if spec.name == 'clean':
    raise ValueError('the sweep needs an attack with an eps, not clean')
  return spec


def _traced_eps_attack(spec):
  """fn(logits_fn, rng, x, y, eps) running `spec` at a traced eps, so one
  compilation serves every eps; None for target rules (make_attack only)."""
  kwargs = spec.kwargs
  if 'target' in kwargs:
    return None
  kwargs.pop('eps')
  attack = attacks.ATTACKS[spec.name]
  return lambda logits_fn, rng, x, y, eps: attack(
      logits_fn, rng, x, y, eps=eps, **kwargs
  )


def robust_accuracy_vs_eps(
    state,
    images,
    labels,
    attack_template,
    eps_list,
    *,
    mesh,
    specs,
    batch_size,
    num_examples=0,
    seed=0,
):
  """Accuracy under `attack_template` at each eps (pixel scale), one record
  per eps (evaluation.run_attacks' format), on one seeded subset.

  Every point uses the same examples and the same attack keys (`seed`).
  """
  images, labels = evaluation.subset(images, labels, num_examples, seed)
  point_specs = [attack_at_eps(attack_template, e) for e in eps_list]
  shared = _traced_eps_attack(point_specs[0]) if point_specs else None
  shared_fn = (
      evaluation.make_accuracy_fn(mesh, specs, shared) if shared else None
  )
  records = []
  for spec in point_specs:
    t0 = time.time()
    if shared_fn is not None:
      eps = jnp.asarray(spec.kwargs['eps'], jnp.float32)
      acc, n = evaluation.accuracy(
          state,
          images,
          labels,
          mesh=mesh,
          specs=specs,
          batch_size=batch_size,
          seed=seed,
          accuracy_fn=shared_fn,
          attack_args=(eps,),
      )
    else:
      acc, n = evaluation.accuracy(
          state,
          images,
          labels,
          mesh=mesh,
          specs=specs,
          batch_size=batch_size,
          attack=attacks.make_attack(spec),
          seed=seed,
      )
    records.append(evaluation.record(spec, acc, n, seed, time.time() - t0))
  return records


def plot_sweep(curves, path, title=''):
  """One line per model: accuracy (%) against eps; saves a PNG at `path`.

  curves: {label: records of robust_accuracy_vs_eps}.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, ax = plt.subplots(figsize=(6, 4.5))
  for label, records in curves.items():
    pts = sorted((r['eps'], 100 * r['accuracy']) for r in records)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker='o', label=label)
  norms = sorted({str(r['norm']) for rs in curves.values() for r in rs})
  ax.set_xlabel(f'eps ({"/".join(norms)}, pixel scale [0, 1])')
  ax.set_ylabel('accuracy under attack (%)')
  ax.set_ylim(-2, 102)
  ax.grid(True, alpha=0.3)
  ax.set_title(title, fontsize=9)
  ax.legend()
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def sweep_markdown(curves):
  """Markdown: one row per eps, one accuracy column per model."""
  labels = list(curves)
  eps = sorted({r['eps'] for rs in curves.values() for r in rs})
  acc = {(l, r['eps']): r['accuracy'] for l, rs in curves.items() for r in rs}
  n = {r['num_examples'] for rs in curves.values() for r in rs}
  lines = [
      '| eps | ' + ' | '.join(labels) + ' |',
      '|---|' + '|'.join('---' for _ in labels) + '|',
  ]
  for e in eps:
    cells = [
        f'{100 * acc[(l, e)]:.2f}%' if (l, e) in acc else '' for l in labels
    ]
    lines.append(f'| {e:.4g} | ' + ' | '.join(cells) + ' |')
  lines.append(f'\n{", ".join(map(str, sorted(n)))} examples per point.')
  return '\n'.join(lines)


def _parser():
  p = argparse.ArgumentParser(
      prog='python -m jaxadv.tools.sweep',
      description=__doc__.split('\n\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument(
      '--workdirs', required=True, help='comma-separated trained workdirs'
  )
  p.add_argument(
      '--attack',
      required=True,
      help="attack template, e.g. 'pgd(norm=l2, steps=20)'",
  )
  p.add_argument(
      '--eps',
      required=True,
      help='comma-separated eps in pixel scale, e.g. 0,0.5,8/255',
  )
  tool_args.add_report_args(p)
  p.add_argument(
      '--batch_size',
      type=int,
      default=0,
      help="attack batch (default: each config's eval.batch_size)",
  )
  return p


def _curves(args):
  """Loads every run, then sweeps each: (labels, workdirs, curves)."""
  workdirs = tool_args.parse_list(args.workdirs)
  labels = tool_args.workdir_labels(args.labels, workdirs)
  eps_list = tool_args.parse_list(args.eps)
  if not eps_list:
    raise ValueError('--eps names no eps')
  for e in eps_list:
    attack_at_eps(args.attack, e)  # a bad spec fails before any loading
  loaded, mesh = [], None
  for workdir in workdirs:  # all of them first: fail before any attack
    loaded.append(runs.load_run(workdir, mesh))
    mesh = loaded[-1][3]
  config, ds = loaded[0][0], loaded[0][4]
  num = (
      config.eval.num_examples
      if args.num_examples is None
      else args.num_examples
  )
  curves = {}
  for label, (config, state, specs, mesh, _) in zip(labels, loaded):
    t0 = time.time()
    curves[label] = robust_accuracy_vs_eps(
        state,
        ds.test_images,
        ds.test_labels,
        args.attack,
        eps_list,
        mesh=mesh,
        specs=specs,
        batch_size=args.batch_size or config.eval.batch_size,
        num_examples=num,
        seed=args.seed,
    )
    for r in curves[label]:
      r['model'] = label
    print(
        f'{label}: {len(eps_list)} eps in {time.time() - t0:.1f}s',
        file=sys.stderr,
    )
  return labels, workdirs, curves


def _write(args, labels, workdirs, curves):
  """Prints the table and flags; writes sweep.json/md/png."""
  warnings = sanity.sanity_flags(
      [r for records in curves.values() for r in records]
  )
  title = f'{args.attack}, eps swept'
  text = (
      f'Robust accuracy vs eps: {args.attack}\n\n'
      + sweep_markdown(curves)
      + '\n\n'
      + reports.warnings_markdown(warnings)
  )
  reports.write_json(
      os.path.join(args.out, 'sweep.json'),
      {
          'attack': args.attack,
          'eps': [r['eps'] for r in curves[labels[0]]],
          'workdirs': dict(zip(labels, workdirs)),
          'curves': curves,
          'warnings': warnings,
      },
  )
  reports.write_text(os.path.join(args.out, 'sweep.md'), text)
  wrote = 'json,md'
  if jax.process_index() == 0:
    try:
      plot_sweep(curves, os.path.join(args.out, 'sweep.png'), title)
      wrote += ',png'
    except ImportError:  # a bare accelerator image: the numbers still count
      print(
          'matplotlib is not installed: no sweep.png (pip install '
          'matplotlib, then rerun for the plot)',
          file=sys.stderr,
      )
  print(text)
  print(f'wrote {os.path.join(args.out, "sweep.{" + wrote + "}")}')


def main(argv=None):
  args = _parser().parse_args(argv)
  try:
    labels, workdirs, curves = _curves(args)
  except (ValueError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  _write(args, labels, workdirs, curves)
  return 0


if __name__ == '__main__':
  sys.exit(main())
