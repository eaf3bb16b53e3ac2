"""What main.py does: run a mode, print a short table, map errors to
one-line messages and exit codes."""
import sys

from jaxadv import eval_run
from jaxadv import reports
from jaxadv import train
from jaxadv import validation

EXIT_BAD_INPUT, EXIT_NONFINITE, EXIT_INTERRUPTED = 2, 3, 130


def format_table(rows):
  """Markdown table from a list of (name, value) pairs."""
  width = max(len(k) for k, _ in rows)
  lines = [f'| {"":{width}} | value |', f'|{"-" * (width + 2)}|-------|']
  for k, v in rows:
    if isinstance(v, float):
      v = f'{v:.4f}' if abs(v) < 10 else f'{v:.1f}'
    lines.append(f'| {k:{width}} | {v} |')
  return '\n'.join(lines)


def summary_rows(results):
  rows = [('dataset', results['dataset']), ('model', results['model']),
          ('method', results['method']), ('status', results['status']),
          ('epochs', results['epochs_done']), ('steps', results['steps']),
          ('device', f"{results['num_devices']} x {results['device_kind']}"),
          ('wall time (s)', results['wall_time_s']),
          ('train images/s', results['images_per_s'])]
  if 'test_accuracy' in results:
    rows.append(('clean test accuracy', results['test_accuracy']))
  for rec in results.get('robust', []):
    rows.append((rec['name'], rec['accuracy']))
  return rows


def run(config, workdir, mode):
  """Returns the process exit code."""
  try:
    if mode == 'train':
      results = train.train_and_evaluate(config, workdir)
      print(format_table(summary_rows(results)))
      if results.get('robust'):
        print(reports.warnings_markdown(results.get('warnings', [])))
      if results['status'].startswith('interrupted'):
        print(f'{results["status"]}: checkpoint saved at step '
              f'{results["steps"]}; run the same command to resume.',
              file=sys.stderr)
        return EXIT_INTERRUPTED
      return 0
    out = eval_run.evaluate_checkpoint(config, workdir)
    rows = [('checkpoint step', out['step']),
            ('examples', out['num_examples']),
            ('clean test accuracy', out['test_accuracy'])]
    print(format_table(rows))
    if out.get('table'):
      print(out['table'])
    return 0
  except (validation.ConfigError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return EXIT_BAD_INPUT
  except train.NonFiniteError as e:
    print(f'error: {e}', file=sys.stderr)
    return EXIT_NONFINITE
  except KeyboardInterrupt:  # outside the training loop (final evaluation)
    print('interrupted outside training (evaluation); the trained state is '
          'checkpointed: rerun the same command, or --mode eval',
          file=sys.stderr)
    return EXIT_INTERRUPTED
