"""Staleness sweep (Bhat, Tsipras and Madry 2018, Section 5: Figures 5, 8).

  python -m jaxadv.tools.staleness --config configs/mnist_stale_cpu.py \
      --out runs/staleness [--staleness 0,1,2,4,8,16,32,64] [--curves 32,64] \
      [--config.KEY=VALUE ...]

Trains one `stale` run per staleness s into OUT/s<s> with
train.train_and_evaluate (a rerun resumes unfinished runs and re-evaluates
finished ones), then writes into OUT:
  staleness.md, staleness.json   per s: updates made, natural test accuracy,
                                 adversarial test accuracy under the first
                                 attack of config.eval.attacks, final stale
                                 and fresh training adversarial accuracy
  staleness_test_accuracy.png    Figure 8: adversarial (a) and natural (b)
                                 test accuracy versus s
  staleness_train_curves.png     Figure 5: fresh and stale training
                                 adversarial accuracy versus step, one panel
                                 per --curves s
The files are rewritten after every run. Every argument, the config of
every run and the output folders are checked before anything is trained: a
problem is one line on stderr and exit code 2.
"""

import argparse
import ast
import importlib.machinery
import importlib.util
import json
import os
import sys

import ml_collections

from jaxadv import build
from jaxadv import methods as methods_lib
from jaxadv.evaluation import reports
from jaxadv import rundir
from jaxadv import train
from jaxadv import validation
from jaxadv.errors import ConfigError
from jaxadv.errors import NonFiniteError

PAPER_STALENESS = (0, 1, 2, 4, 8, 16, 32, 64)
PAPER_CURVES = (32, 64)
FINAL_INTERVALS = 5  # log intervals averaged for the final train accuracy


class _Parser(argparse.ArgumentParser):
  """argparse with its errors as one line and exit code 2."""

  def error(self, message):
    raise ConfigError(f'{message}; pass --help for usage')


def _parser():
  p = _Parser(
      prog='python -m jaxadv.tools.staleness',
      description=__doc__.split('\n\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog='Any --config.KEY=VALUE overrides a key of the config.',
  )
  p.add_argument('--config', required=True, help='a stale config file')
  p.add_argument('--out', required=True, help='study folder (one run per s)')
  p.add_argument(
      '--staleness',
      default=','.join(map(str, PAPER_STALENESS)),
      help='comma-separated s values (default: %(default)s)',
  )
  p.add_argument(
      '--curves',
      default=None,
      help='s values whose training curves are plotted (default: 32,64 '
      'where swept)',
  )
  return p


def parse_ints(text, flag):
  """'0,1,2' -> [0, 1, 2]: distinct integers >= 0, else ConfigError."""
  items = [t.strip() for t in str(text).split(',') if t.strip()]
  if not items or not all(t.isdigit() for t in items):
    raise ConfigError(
        f'{flag}={text!r} must be comma-separated integers >= 0, e.g. 0,1,2'
    )
  values = [int(t) for t in items]
  if len(set(values)) != len(values):
    raise ConfigError(f'{flag}={text!r} names a value twice')
  return values


def load_config(arg):
  """The ConfigDict of a config file (PATH or PATH:ARG for get_config)."""
  path, *params = arg.split(':', 1)
  if not os.path.isfile(path):
    raise ConfigError(f'--config {path}: no such file (see configs/)')
  try:
    loader = importlib.machinery.SourceFileLoader('_staleness_config', path)
    module = importlib.util.module_from_spec(
        importlib.util.spec_from_loader(loader.name, loader)
    )
    loader.exec_module(module)
    config = module.get_config(*params)
  except Exception as e:  # pylint: disable=broad-except
    first = (str(e).strip().splitlines() or [''])[0]
    raise ConfigError(
        f'--config {path} does not load: {type(e).__name__}: {first}'
    ) from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f'--config {path}: get_config() returned no ConfigDict')
  return config


def _parse_value(text, old):
  """A --config.KEY value: a Python literal, else the string; items of a
  tuple of strings (attack lists) split at top-level commas."""
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text
  if isinstance(old, tuple) and isinstance(value, str):
    value = tuple(rundir.split_top_level(value))
  if isinstance(old, tuple) and isinstance(value, list):
    value = tuple(value)
  return value


def apply_overrides(config, overrides):
  """Applies ['--config.a.b=value', ...]; ConfigError names a bad one."""
  for arg in overrides:
    key, sep, text = arg[len('--config.') :].partition('=')
    if not arg.startswith('--config.') or not sep:
      raise ConfigError(
          f'unrecognized argument {arg!r}; overrides look like '
          '--config.KEY=VALUE'
      )
    *parents, leaf = key.split('.')
    node = config
    for i, part in enumerate(parents + [leaf]):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        where = '.'.join(['config'] + (parents + [leaf])[:i])
        valid = sorted(node.keys()) if hasattr(node, 'keys') else []
        raise ConfigError(
            f'--config.{key}: {where} has no key {part!r}; valid: '
            f'{", ".join(valid) or "-"}'
        )
      if i < len(parents):
        node = node[part]
    try:
      node[leaf] = _parse_value(text, node[leaf])
    except (TypeError, ValueError) as e:
      first = (str(e).splitlines() or [''])[0]
      raise ConfigError(f'--config.{key}={text}: {first}') from None
  return config


def run_config(base, s):
  """The config of the run with staleness s (final evaluation on)."""
  c = base.copy_and_resolve_references()
  c.method.staleness = s
  c.eval.at_end = True
  return c


def run_dir(out, s):
  return os.path.join(out, f's{s}')


def _check_base(base):
  if base.method.get('name') != 'stale':
    raise ConfigError(
        f"config.method.name='{base.method.get('name')}': the sweep trains "
        "method 'stale' (e.g. configs/mnist_stale_cpu.py)"
    )
  if not base.eval.attacks:
    raise ConfigError(
        'config.eval.attacks is empty: the sweep reports adversarial test '
        "accuracy; set e.g. ('pgd(eps=method, steps=20)',)"
    )


def _check_run(config, s, workdir, total_steps, curve):
  """Everything about one run that can fail before training it."""
  validation.validate_config(config)
  if s >= total_steps:
    raise ConfigError(
        f'--staleness {s} leaves nothing to train: each run has '
        f'{total_steps} steps and the first s only fill the queue; lower '
        's or raise config.num_epochs'
    )
  every = config.method.get('fresh_every', None)
  if curve and every == 0:
    raise ConfigError(
        f'--curves {s} needs fresh accuracy: config.method.fresh_every is 0'
    )
  rundir.check_workdir(workdir, 'train')
  if rundir.has_run(workdir):
    method = methods_lib.get_method('stale')
    rundir.record_config(
        workdir,
        json.loads(config.to_json_best_effort()),
        write=False,
        extra_fatal=methods_lib.restore_keys(method, config),
    )


def check_inputs(argv):
  """Parses and checks everything; returns (args, base config, s list,
  curves list). ConfigError (one line) on the first problem."""
  args, rest = _parser().parse_known_args(argv)
  staleness = parse_ints(args.staleness, '--staleness')
  if args.curves is None:
    curves = [s for s in PAPER_CURVES if s in staleness]
  else:
    curves = parse_ints(args.curves, '--curves')
    missing = [s for s in curves if s not in staleness]
    if missing:
      raise ConfigError(
          f'--curves {missing[0]} is not in --staleness {args.staleness}'
      )
  args.out = rundir.check_workdir(args.out, 'train')
  base = apply_overrides(load_config(args.config), rest)
  _check_base(base)
  ds = build.load_data(base)
  method = methods_lib.get_method('stale')
  _, _, total = build.step_counts(base, ds, method)
  for s in staleness:
    _check_run(run_config(base, s), s, run_dir(args.out, s), total, s in curves)
  return args, base, staleness, curves


# ----------------------------------------------------------------------------
# Results: the runs' final numbers and training curves.


def read_metrics(workdir):
  """The training records of <workdir>/metrics.jsonl (with adv_accuracy)."""
  path = os.path.join(workdir, 'metrics.jsonl')
  with open(path) as f:
    records = [json.loads(line) for line in f if line.strip()]
  return [r for r in records if 'adv_accuracy' in r]


def training_curve(records, s):
  """{'step', 'stale', 'fresh_step', 'fresh'}: stale adversarial training
  accuracy per log interval after the fill (record step > s), fresh where
  the interval held a fresh batch (fresh_steps > 0); accuracies in [0, 1]."""
  stale = [r for r in records if r['step'] > s]
  fresh = [r for r in records if r.get('fresh_steps', 0) > 0]
  return {
      'step': [r['step'] for r in stale],
      'stale': [r['adv_accuracy'] for r in stale],
      'fresh_step': [r['step'] for r in fresh],
      'fresh': [r['fresh_adv_accuracy'] for r in fresh],
  }


def _tail_mean(values):
  tail = values[-FINAL_INTERVALS:]
  return sum(tail) / len(tail) if tail else None


def run_row(s, workdir, results, previous=None):
  """The table row of one finished run. A run finished by an earlier sweep
  (only re-evaluated now) keeps the wall time of `previous`, its row in
  that sweep's staleness.json (None if absent)."""
  robust = results['robust'][0]
  seconds = results['wall_time_s']
  if not results.get('train_images', 1):
    seconds = (previous or {}).get('wall_time_s')
  curve = training_curve(read_metrics(workdir), s)
  return {
      'staleness': s,
      'workdir': workdir,
      'status': results['status'],
      'steps': results['steps'],
      'updates': max(results['steps'] - s, 0),
      'test_accuracy': results['test_accuracy'],
      'test_examples': results['num_test_examples'],
      'adv_test_accuracy': robust['accuracy'],
      'adv_attack': robust['name'],
      'adv_examples': robust['num_examples'],
      'train_stale_adv_accuracy': _tail_mean(curve['stale']),
      'train_fresh_adv_accuracy': _tail_mean(curve['fresh']),
      'wall_time_s': seconds,
  }


def _pct(v):
  return '-' if v is None else f'{100 * v:.2f}'


def markdown(study):
  """The sweep table (accuracies in %)."""
  rows = study['runs']
  lines = [
      '| s | updates | natural test | adversarial test | stale train adv '
      '| fresh train adv | wall time (s) |',
      '|---|---|---|---|---|---|---|',
  ]
  for r in rows:
    lines.append(
        f"| {r['staleness']} | {r['updates']} | {_pct(r['test_accuracy'])} "
        f"| {_pct(r['adv_test_accuracy'])} "
        f"| {_pct(r['train_stale_adv_accuracy'])} "
        f"| {_pct(r['train_fresh_adv_accuracy'])} "
        f"| {'-' if r['wall_time_s'] is None else round(r['wall_time_s'])} |"
    )
  if rows:
    r = rows[0]
    lines += [
        '',
        f"Accuracies in %. Natural: {r['test_examples']} test images; "
        f"adversarial: {r['adv_attack']} on {r['adv_examples']} seeded test "
        'images. Train columns: mean of the last '
        f'{FINAL_INTERVALS} log intervals (stale: the batches trained on, '
        'crafted s steps earlier, every step; fresh: the same attack with '
        'the current parameters on the same clean batches, one batch of '
        f"{study['batch_size']} every {study['fresh_every']} steps). "
        'updates = steps - s (the '
        'first s steps fill the queue). Wall time: the training call '
        '(compilation and final evaluation included).',
    ]
  return '\n'.join(lines)


# ----------------------------------------------------------------------------
# Figures.


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  return plt


def plot_test_accuracy(study, path):
  """Figure 8: (a) adversarial, (b) natural test accuracy (%) versus s, on
  a symmetric-log axis (s = 0 included)."""
  plt = _pyplot()
  rows = study['runs']
  s = [r['staleness'] for r in rows]
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  panels = (
      ('adv_test_accuracy', f"(a) adversarial: {rows[0]['adv_attack']}"),
      ('test_accuracy', '(b) natural'),
  )
  for ax, (key, title) in zip(axes, panels):
    ax.plot(s, [100 * r[key] for r in rows], marker='o')
    ax.set_xscale('symlog', linthresh=1)
    ax.set_xticks(s)
    ax.set_xticklabels([str(v) for v in s])
    ax.set_xlabel('staleness s (steps)')
    ax.set_ylabel('test accuracy (%)')
    ax.set_ylim(-2, 102)
    ax.grid(True, alpha=0.3)
    ax.set_title(title, fontsize=9)
  fig.suptitle(study['title'], fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_curves(study, path):
  """Figure 5: fresh and stale training adversarial accuracy (%) versus
  step, one panel per curve run; a dotted line where the fill ends."""
  plt = _pyplot()
  curves = study['curves']
  fig, axes = plt.subplots(
      1, len(curves), figsize=(5 * len(curves), 4), squeeze=False
  )
  for ax, (s, c) in zip(axes[0], curves.items()):
    ax.plot(c['step'], [100 * v for v in c['stale']], label='stale')
    ax.plot(c['fresh_step'], [100 * v for v in c['fresh']], label='fresh')
    ax.axvline(int(s), color='gray', linestyle=':', linewidth=1)
    ax.set_xlabel('training step')
    ax.set_ylabel('training adversarial accuracy (%)')
    ax.set_ylim(-2, 102)
    ax.grid(True, alpha=0.3)
    ax.set_title(f's = {s}', fontsize=9)
    ax.legend()
  fig.suptitle(study['title'], fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_outputs(study, out):
  """staleness.md/.json and the two PNGs; returns the paths written."""
  text = markdown(study)
  paths = [
      os.path.join(out, 'staleness.md'),
      os.path.join(out, 'staleness.json'),
  ]
  reports.write_text(paths[0], f"{study['title']}\n\n{text}")
  reports.write_json(paths[1], study)
  figures = [
      (plot_test_accuracy, 'staleness_test_accuracy.png', study['runs']),
      (plot_curves, 'staleness_train_curves.png', study['curves']),
  ]
  for plot, name, needed in figures:
    if needed:
      try:
        plot(study, os.path.join(out, name))
        paths.append(os.path.join(out, name))
      except ImportError:  # a bare image: the numbers still count
        print(f'matplotlib is not installed: no {name}', file=sys.stderr)
  return paths


def _title(args, base):
  m = base.method
  return (
      f'{args.config}: {base.model.name}, PGD-{m.steps} eps {m.eps}, '
      f'{base.num_epochs:g} epochs, batch {base.batch_size}'
  )


def _previous_rows(out):
  """{s: row} of an earlier sweep's staleness.json in `out` ({} if none)."""
  try:
    with open(os.path.join(out, 'staleness.json')) as f:
      return {r['staleness']: r for r in json.load(f)['runs']}
  except (OSError, ValueError, KeyError, TypeError):
    return {}


def sweep(args, base, staleness, curves):
  """Trains every run (in order), rewriting the outputs after each; returns
  (study, status of the last run)."""
  study = {
      'title': _title(args, base),
      'batch_size': base.batch_size,
      'fresh_every': (
          run_config(base, 0).method.get('fresh_every') or base.log_every
      ),
      'runs': [],
      'curves': {},
  }
  previous = _previous_rows(args.out)
  for s in staleness:
    workdir = run_dir(args.out, s)
    print(f'staleness {s}: {workdir}', file=sys.stderr, flush=True)
    results = train.train_and_evaluate(run_config(base, s), workdir)
    if results['status'].startswith('interrupted'):
      return study, results['status']
    study['runs'].append(run_row(s, workdir, results, previous.get(s)))
    if s in curves:
      study['curves'][str(s)] = training_curve(read_metrics(workdir), s)
    write_outputs(study, args.out)
  return study, 'completed'


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  try:
    args, base, staleness, curves = check_inputs(argv)
    study, status = sweep(args, base, staleness, curves)
  except ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except NonFiniteError as e:
    print(f'error: {e}', file=sys.stderr)
    return 3
  if status != 'completed':
    print(f'{status}: rerun the same command to resume', file=sys.stderr)
    return 130
  print(markdown(study))
  for path in write_outputs(study, args.out):
    print(f'wrote {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
