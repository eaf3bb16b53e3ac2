"""jaxadv command line.

  python main.py --config configs/mnist_standard.py --workdir runs/mnist \
      [--config.key=value ...] [--mode train|eval]

Without --config it runs the quick-start demo, configs/mnist_fast_demo.py.
`python main.py --help` lists the experiment configs.
"""

import ast
import importlib.machinery
import importlib.util
import os
import sys
import textwrap

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from jaxadv import rundir
from jaxadv.errors import ConfigError

REPO = os.path.dirname(os.path.abspath(__file__))
CONFIG_DIR = os.path.join(REPO, 'configs')
DEFAULT_CONFIG = os.path.join(CONFIG_DIR, 'mnist_fast_demo.py')
NOT_EXPERIMENTS = ('__init__.py', 'default.py')
HELP_FLAGS = ('-h', '-help', '--help', '-?', '-helpshort', '--helpshort')

USAGE = """\
usage: python main.py [--config FILE] --workdir DIR [--mode train|eval|viz]
                      [--config.KEY=VALUE ...]

  --config FILE       experiment config (default: configs/mnist_fast_demo.py,
                      the quick-start demo)
  --workdir DIR       the run's directory: config.json, metrics.jsonl,
                      checkpoints/, results.json, eval reports
  --mode train|eval|viz  train: train (resuming the run in DIR), then
                      evaluate; eval: evaluate the latest checkpoint in DIR;
                      viz: PNG grids of what DIR (and config.viz.compare)
                      learned (configs/viz.py)
  --config.KEY=VALUE  override one key of the config, e.g.
                      --config.num_epochs=5 --config.method.eps=0.0313;
                      several attacks are separated by commas:
                      '--config.eval.attacks=fgsm(eps=0.1),pgd(eps=0.1)'

example:
  python main.py --config configs/mnist_standard.py --workdir runs/mnist \\
      --config.num_epochs=1
  python main.py --mode eval --config configs/mnist_eval_suite.py \\
      --workdir runs/mnist
"""


# ----------------------------------------------------------------------------
# --help: answered from the files' text, without importing configs or JAX.


def _summary(path):
  """The first paragraph of a config file's docstring, on one line."""
  try:
    with open(path, encoding='utf-8') as f:
      doc = ast.get_docstring(ast.parse(f.read(), path))
  except (OSError, SyntaxError, ValueError) as e:
    return f'(cannot read: {type(e).__name__})'
  if not doc:
    return '(no docstring)'
  return ' '.join(doc.strip().split('\n\n')[0].split())


def experiment_configs(folder=CONFIG_DIR):
  """[(file name, docstring summary)] of configs/*.py, sorted by name."""
  names = sorted(
      n
      for n in os.listdir(folder)
      if n.endswith('.py') and n not in NOT_EXPERIMENTS
  )
  return [(n, _summary(os.path.join(folder, n))) for n in names]


def usage():
  width = max([len(n) for n, _ in experiment_configs()] + [0]) + 2
  lines = [
      USAGE,
      'experiment configs (configs/; the docstring of each gives '
      'its command and\nthe result to expect):',
  ]
  for name, summary in experiment_configs():
    lines.append(
        textwrap.fill(
            summary,
            80,
            initial_indent=f'  {name:{width}}',
            subsequent_indent=' ' * (width + 2),
            break_on_hyphens=False,
        )
    )
  lines += [
      '',
      'Every config key, its default and meaning: ' 'configs/default.py.',
      'All absl flags (logging, verbosity): --helpfull.',
  ]
  return '\n'.join(lines)


def _wants_help(argv):
  args = argv[1 : argv.index('--')] if '--' in argv else argv[1:]
  return any(a in HELP_FLAGS for a in args)


# ----------------------------------------------------------------------------
# Bad --config files and overrides: one line, exit 2.


def _fail(msg):
  print(f'error: {msg}', file=sys.stderr)
  sys.exit(2)


def _first_line(exc):
  text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
  lines = str(text).strip().splitlines()
  return f'{type(exc).__name__}: {lines[0]}' if lines else type(exc).__name__


def _config_arg(argv):
  for i, a in enumerate(argv):
    for prefix in ('--config=', '-config='):
      if a.startswith(prefix):
        return a[len(prefix) :]
    if a in ('--config', '-config') and i + 1 < len(argv):
      return argv[i + 1]
  return DEFAULT_CONFIG


def load_config(arg):
  """(config, None) or (None, one line saying what is wrong) for the value
  of --config (a path, optionally ':argument' for get_config)."""
  path, *params = arg.split(':', 1)
  if not path:
    return None, '--config is empty; pass a config file (see --help)'
  if not os.path.exists(path):
    return None, (
        f'--config {path}: no such file; the experiment configs are '
        'in configs/ (python main.py --help lists them)'
    )
  if os.path.isdir(path):
    return None, f'--config {path} is a directory, not a config file'
  try:
    loader = importlib.machinery.SourceFileLoader('_jaxadv_config', path)
    module = importlib.util.module_from_spec(
        importlib.util.spec_from_loader(loader.name, loader)
    )
    loader.exec_module(module)
  except SyntaxError as e:
    return None, (
        f'--config {path} does not import: SyntaxError at line '
        f'{e.lineno}: {e.msg}'
    )
  except Exception as e:  # pylint: disable=broad-except
    return None, f'--config {path} does not import: {_first_line(e)}'
  if not callable(getattr(module, 'get_config', None)):
    return None, (
        f'--config {path} defines no get_config(); a config file '
        'returns a ConfigDict from get_config() (see '
        'configs/default.py)'
    )
  try:
    config = module.get_config(*params)
  except Exception as e:  # pylint: disable=broad-except
    return None, f'--config {path}: get_config() raised {_first_line(e)}'
  if not isinstance(config, ml_collections.ConfigDict):
    return None, (
        f'--config {path}: get_config() returned '
        f'{type(config).__name__}, not an ml_collections.ConfigDict'
    )
  return config, None


def _override_error(argv, exc):
  """One line for a failed parse: what is wrong with the --config file, else
  the first --config.* override whose key the config lacks (with the valid
  keys), else the parser's own message."""
  config, problem = load_config(_config_arg(argv))
  if problem:
    return problem
  overrides = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.')]
  for flag in overrides:
    node, path = config, flag[len('--config.') :].split('.')
    for i, part in enumerate(path):
      if not hasattr(node, 'keys') or part not in node:
        parent = '.'.join(['config'] + path[:i])
        valid = ', '.join(sorted(node.keys())) if hasattr(node, 'keys') else '-'
        return (
            f'{flag}: {parent} has no key {part!r}; valid: {valid}. '
            'New keys go in the config file.'
        )
      node = node[part]
  if isinstance(exc, flags.Error):
    first = str(exc).strip().splitlines()[0].rstrip('.')
    return f'{first}. Pass --help for usage.'
  return f'bad --config override: {_first_line(exc)}'


def define_flags(argv):
  flags.DEFINE_string('workdir', None, 'Directory for checkpoints and results.')
  flags.DEFINE_enum(
      'mode',
      'train',
      ['train', 'eval', 'viz'],
      'train: train (resuming if possible), then evaluate; '
      'eval: evaluate the latest checkpoint in --workdir; '
      'viz: pictures of what the run (and config.viz.compare) learned.',
  )
  try:  # without --config, ml_collections applies the overrides right here
    config_flags.DEFINE_config_file(
        'config', DEFAULT_CONFIG, 'Experiment config file.', lock_config=True
    )
  except Exception as e:  # pylint: disable=broad-except
    _fail(_override_error(argv, e))
  flags.mark_flags_as_required(['workdir'])


def _split_lists():
  """--config.eval.attacks=a(x=1),b(y=2): one item per top-level comma."""
  config = flags.FLAGS.config
  paths = flags.FLAGS['config'].override_values
  for path, value in rundir.split_list_overrides(config, paths).items():
    *parents, leaf = path.split('.')
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value


def parse_flags(argv):
  """absl's parser, with a bad --config file, bad flags and bad overrides
  as one-line errors (exit 2) instead of a traceback."""
  if _config_arg(argv) != DEFAULT_CONFIG:  # before ml_collections logs
    _, problem = load_config(_config_arg(argv))
    if problem:
      _fail(problem)
  try:
    rest = flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    _fail(_override_error(argv, e))
  # ml_collections defers a missing file's error to the first use.
  if not isinstance(flags.FLAGS.config, ml_collections.ConfigDict):
    _fail(load_config(_config_arg(argv))[1] or '--config did not load')
  _split_lists()
  return rest


def main(argv):
  if len(argv) > 1:
    _fail(
        f'unexpected arguments: {" ".join(argv[1:])}. Pass --help for ' 'usage.'
    )
  try:  # before JAX starts, and before anything is created
    rundir.check_workdir(flags.FLAGS.workdir, flags.FLAGS.mode)
  except ConfigError as e:
    _fail(str(e))
  # Orbax logs every checkpoint step at INFO; keep the terminal for progress.
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  # Imported here so --help answers without initializing JAX.
  from jaxadv import cli  # pylint: disable=g-import-not-at-top

  sys.exit(cli.run(flags.FLAGS.config, flags.FLAGS.workdir, flags.FLAGS.mode))


if __name__ == '__main__':
  if _wants_help(sys.argv):
    try:
      print(usage(), flush=True)
    except BrokenPipeError:  # python main.py --help | head
      os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)
  define_flags(sys.argv)
  app.run(main, flags_parser=parse_flags)
