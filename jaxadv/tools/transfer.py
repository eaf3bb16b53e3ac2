"""Black-box transfer: adversarial examples crafted white-box on each source
model, evaluated on every target model.

  python -m jaxadv.tools.transfer --workdirs runs/a,runs/b,runs/c \
      --attack 'pgd(eps=0.3, steps=40)' --out runs/transfer \
      [--num_examples N] [--labels a,b,c] [--seed S]

The result is a source x target accuracy matrix: row = the model the attack
ran on (source), column = the model evaluated (target). The diagonal is
white-box accuracy, the off-diagonal black-box (transfer) accuracy; a column
whose off-diagonal entries fall below its diagonal entry means the white-box
attack on that target is failing (see jaxadv.evaluation.sanity). Every model
sees the same seeded test subset, and each source's examples are crafted
once and reused for every target.
"""

import argparse
import os
import sys
import time

from jaxadv import attacks
from jaxadv import evaluation
from jaxadv.tools import common as tool_args
from jaxadv import runs
from jaxadv.evaluation import reports
from jaxadv.evaluation import sanity


def transfer_matrix(
    models,
    images,
    labels,
    attack,
    *,
    batch_size,
    num_examples=0,
    seed=0,
    targets=None,
):
  """Accuracy of every target under examples crafted on every source.

  Args:
    models: {name: (state, specs, mesh)}, each both a source and a target;
      architectures may differ, inputs must share one shape.
    images, labels: uint8 (N, H, W, C) test images and int labels (N,).
    attack: spec string or AttackSpec (eps in pixel scale).
    batch_size: global batch of crafting and evaluation.
    num_examples: seeded random subset size (0 = all N); seed also keys the
      attacks' random starts.
    targets: names of the models to evaluate on (default: all of them);
      every model is still a source.
  Returns a dict with
    'attack': str, 'sources': names in order, 'targets': the evaluated
      names, 'num_examples',
    'accuracy': nested list [source][target] in [0, 1] (diagonal: white-box
      when targets are all models),
    'clean': {name: clean accuracy on the subset},
    'records': one eval record per (source, target) with 'source' and
      'model' (the target) set, 'seconds_crafting': {source: seconds}.
  """
  spec = attacks.parse_attack(attack) if isinstance(attack, str) else attack
  attack_fn = attacks.make_attack(spec)
  images, labels = evaluation.subset(images, labels, num_examples, seed)
  names = list(models)
  targets = names if targets is None else list(targets)
  unknown = sorted(set(targets) - set(names))
  if unknown:
    raise ValueError(f'unknown target models {unknown}; valid: {names}')
  # One compiled clean-accuracy function per target, reused for every source.
  fns = {
      t: evaluation.make_accuracy_fn(models[t][2], models[t][1])
      for t in targets
  }
  clean = {}
  for t in targets:
    state, specs, mesh = models[t]
    clean[t] = evaluation.accuracy(
        state,
        images,
        labels,
        mesh=mesh,
        specs=specs,
        batch_size=batch_size,
        accuracy_fn=fns[t],
    )[0]
  matrix, records, crafting = [], [], {}
  for s in names:
    row, recs, crafting[s] = _source_row(
        models,
        s,
        targets,
        images,
        labels,
        attack_fn,
        spec,
        fns,
        batch_size=batch_size,
        seed=seed,
    )
    matrix.append(row)
    records += recs
  return {
      'attack': str(spec),
      'sources': names,
      'targets': targets,
      'num_examples': len(labels),
      'accuracy': matrix,
      'clean': clean,
      'records': records,
      'seconds_crafting': crafting,
  }


def _source_row(
    models,
    s,
    targets,
    images,
    labels,
    attack_fn,
    spec,
    fns,
    *,
    batch_size,
    seed,
):
  """Crafts once on source `s`, evaluates every target: (accuracies,
  records, crafting seconds)."""
  state, specs, mesh = models[s]
  t0 = time.time()
  x_adv = adversarial_examples(
      state,
      images,
      labels,
      attack_fn,
      mesh=mesh,
      specs=specs,
      batch_size=batch_size,
      seed=seed,
  )
  crafting = time.time() - t0
  row, records = [], []
  for t in targets:
    t_state, t_specs, t_mesh = models[t]
    t1 = time.time()
    # Counted as robust accuracy: correct on x_adv and on x.
    acc, n = evaluation.accuracy(
        t_state,
        (x_adv, images),
        labels,
        mesh=t_mesh,
        specs=t_specs,
        batch_size=batch_size,
        accuracy_fn=fns[t],
    )
    row.append(acc)
    records.append(
        evaluation.record(
            spec, acc, n, seed, time.time() - t1, source=s, model=t
        )
    )
  return row, records, crafting


def adversarial_examples(*args, **kwargs):
  """evaluation.adversarial_examples (a module attribute so tests can count
  the calls)."""
  return evaluation.adversarial_examples(*args, **kwargs)


def transfer_markdown(result):
  """The matrix as markdown: rows = source (crafted on), columns = target
  (evaluated on), white-box diagonal marked with *, plus clean accuracy."""
  t = result['targets']
  lines = [
      f'Transfer: {result["attack"]}, {result["num_examples"]} '
      'examples; accuracy of the target (column) on examples crafted '
      'on the source (row); * = white-box (diagonal)',
      '',
      '| source \\ target | ' + ' | '.join(t) + ' |',
      '|---|' + '|'.join('---' for _ in t) + '|',
  ]
  for s, row in zip(result['sources'], result['accuracy']):
    cells = [
        f'{100 * a:.2f}%' + ('*' if s == name else '')
        for name, a in zip(t, row)
    ]
    lines.append(f'| {s} | ' + ' | '.join(cells) + ' |')
  lines.append(
      '| (clean) | '
      + ' | '.join(f'{100 * result["clean"][name]:.2f}%' for name in t)
      + ' |'
  )
  return '\n'.join(lines)


def write_transfer_report(result, out_dir, name='transfer'):
  """Writes <out_dir>/<name>.json (the result plus "warnings") and
  <name>.md; returns the markdown with the sanity flags."""
  warnings = sanity.sanity_flags(result['records'])
  text = (
      transfer_markdown(result) + '\n\n' + reports.warnings_markdown(warnings)
  )
  reports.write_json(
      os.path.join(out_dir, f'{name}.json'), {**result, 'warnings': warnings}
  )
  reports.write_text(os.path.join(out_dir, f'{name}.md'), text)
  return text


def main(argv=None):
  p = argparse.ArgumentParser(
      prog='python -m jaxadv.tools.transfer',
      description=__doc__.split('\n\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument(
      '--workdirs', required=True, help='comma-separated trained workdirs'
  )
  p.add_argument(
      '--attack',
      required=True,
      help="attack spec, e.g. 'pgd(eps=0.3, steps=40)'",
  )
  tool_args.add_report_args(p)
  p.add_argument(
      '--batch_size',
      type=int,
      default=0,
      help="global batch (default: the first config's " 'eval.batch_size)',
  )
  args = p.parse_args(argv)
  try:
    spec = attacks.parse_attack(args.attack)
    workdirs = tool_args.parse_list(args.workdirs)
    labels = tool_args.workdir_labels(args.labels, workdirs)
    models, mesh, first = {}, None, None
    for label, workdir in zip(labels, workdirs):
      config, state, specs, mesh, ds = runs.load_run(workdir, mesh)
      if first is None:
        first = (config, ds)
      elif ds.test_images.shape[1:] != first[1].test_images.shape[1:]:
        raise ValueError(
            f'{workdir} uses {ds.name} images of shape '
            f'{ds.test_images.shape[1:]}, unlike '
            f'{first[1].test_images.shape[1:]} of {workdirs[0]}'
        )
      models[label] = (state, specs, mesh)
    config, ds = first
    t0 = time.time()
    result = transfer_matrix(
        models,
        ds.test_images,
        ds.test_labels,
        spec,
        batch_size=args.batch_size or config.eval.batch_size,
        num_examples=(
            config.eval.num_examples
            if args.num_examples is None
            else args.num_examples
        ),
        seed=args.seed,
    )
  except (ValueError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  result['workdirs'] = dict(zip(labels, workdirs))
  result['seconds'] = time.time() - t0
  text = write_transfer_report(result, args.out)
  print(text)
  print(f'wrote {os.path.join(args.out, "transfer.{json,md}")}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
