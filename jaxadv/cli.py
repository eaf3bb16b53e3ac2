"""What main.py does: run a mode, print a short table, map errors to
one-line messages and exit codes."""

import sys

from jaxadv import eval_run
from jaxadv.evaluation import reports
from jaxadv import train
from jaxadv import validation

EXIT_BAD_INPUT, EXIT_NONFINITE, EXIT_INTERRUPTED = 2, 3, 130


def _cell(v):
  if v is None or (isinstance(v, float) and v != v):
    return '-'
  if isinstance(v, float):
    return f'{v:.4f}' if abs(v) < 10 else f'{v:.1f}'
  return str(v)


def format_table(rows):
  """Markdown table from (name, value) or (name, value, examples) rows,
  its columns aligned."""
  cells = [('', 'value', 'examples')] + [
      (str(r[0]), _cell(r[1]), _cell(r[2]) if len(r) > 2 and r[2] else '')
      for r in rows
  ]
  widths = [max(len(c[i]) for c in cells) for i in range(3)]
  lines = [
      '| ' + ' | '.join(f'{c:{w}}' for c, w in zip(row, widths)) + ' |'
      for row in cells
  ]
  lines.insert(1, '|' + '|'.join('-' * (w + 2) for w in widths) + '|')
  return '\n'.join(lines)


def pct(v):
  return None if v is None else f'{100 * v:.2f}%'


def metric_rows(results, num_examples):
  """Rows of the method's clean test metrics ('test_<name>'): accuracies
  in %, other metrics (RMSEs, losses) as numbers."""
  rows = []
  for k, v in results.items():
    if not k.startswith('test_'):
      continue
    name = k[len('test_') :]
    label = 'clean test accuracy' if name == 'accuracy' else f'test {name}'
    shown = pct(v) if name.endswith('accuracy') else v
    rows.append((label, shown, num_examples))
  return rows


def summary_rows(results):
  epochs = results['epochs_done']
  rows = [
      ('dataset', results['dataset']),
      ('model', results['model']),
      ('method', results['method']),
      ('status', results['status']),
      ('epochs', f'{epochs:g}'),
      ('steps', results['steps']),
      ('device', f"{results['num_devices']} x {results['device_kind']}"),
      ('wall time (s)', f"{results['wall_time_s']:.1f}"),
      ('train images/s', results.get('images_per_s')),
  ]
  rows += metric_rows(results, results.get('num_test_examples'))
  for rec in results.get('robust', []):
    rows.append((rec['name'], pct(rec['accuracy']), rec['num_examples']))
  return rows


def _interrupted_message(workdir):
  """What is true of the workdir after a Ctrl-C outside the loop."""
  from jaxadv import build  # pylint: disable=g-import-not-at-top

  try:
    step_dir = build.latest_step_dir(workdir)
  except (FileNotFoundError, OSError):
    return (
        'interrupted before anything was saved: no checkpoint in '
        f'{workdir}; rerun the same command to start again'
    )
  return (
      f'interrupted; the newest checkpoint ({step_dir}) is kept: rerun '
      'the same command to resume, or --mode eval'
  )


def _viz(config, workdir):
  from jaxadv.tools import viz  # pylint: disable=g-import-not-at-top

  out = viz.run_viz(config, workdir)
  rows = []
  for label, n in out['numbers'].items():
    seed, after = n['feature_activation_seed'], n['feature_activation_after']
    rows.append(
        (
            f'{label}: feature activation seed -> after',
            f'{sum(seed) / len(seed):.3g} -> {sum(after) / len(after):.3g}',
        )
    )
    d = n['interp_distance_after']
    rows.append(
        (f'{label}: interpolation distance (relative)', f'{max(d):.3f} max')
    )
    hit = sum(p == t for p, t in zip(n['large_predicted'], n['large_targets']))
    rows.append(
        (
            f'{label}: large perturbations reaching the target',
            f'{hit}/{len(n["large_targets"])}',
        )
    )
  print(format_table(rows))
  for path in out['paths']:
    print(f'wrote {path}')
  return 0


def run(config, workdir, mode):
  """Returns the process exit code."""
  try:
    if mode == 'train':
      results = train.train_and_evaluate(config, workdir)
      print(format_table(summary_rows(results)))
      if results.get('robust'):
        print(reports.warnings_markdown(results.get('warnings', [])))
      if results['status'].startswith('interrupted'):
        print(
            f'{results["status"]}: checkpoint saved at step '
            f'{results["steps"]}; run the same command to resume.',
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
      return 0
    if mode == 'viz':
      return _viz(config, workdir)
    out = eval_run.evaluate_checkpoint(config, workdir)
    rows = [('checkpoint step', out['step'])] + metric_rows(
        out, out['num_examples']
    )
    print(format_table(rows))
    if out.get('table'):
      print(out['table'], flush=True)
      for path in eval_run.write_reports(out, workdir):
        print(f'wrote {path}')
    return 0
  except (validation.ConfigError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return EXIT_BAD_INPUT
  except train.NonFiniteError as e:
    print(f'error: {e}', file=sys.stderr)
    return EXIT_NONFINITE
  except KeyboardInterrupt:  # a second Ctrl-C, or one outside the loop
    print(_interrupted_message(workdir), file=sys.stderr)
    return EXIT_INTERRUPTED
