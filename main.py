"""jaxadv command line.

  python main.py --config configs/mnist_standard.py --workdir runs/mnist \
      [--config.key=value ...] [--mode train|eval]

Without --config it runs the quick-start demo, configs/mnist_fast_demo.py.
"""
import importlib.util
import os
import sys

from absl import app
from absl import logging
from absl import flags
from ml_collections import config_flags

flags.DEFINE_string('workdir', None, 'Directory for checkpoints and results.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval'],
                  'train: train (resuming if possible), then evaluate; '
                  'eval: evaluate the latest checkpoint in --workdir.')
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              'configs', 'mnist_fast_demo.py')
OVERRIDE_ERRORS = (AttributeError, KeyError, TypeError, ValueError)


def _config_path(argv):
  for i, a in enumerate(argv):
    if a.startswith('--config='):
      return a.split('=', 1)[1]
    if a == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return DEFAULT_CONFIG


def _override_error(argv, exc):
  """One line naming the first --config.* override whose key the config
  lacks, with the valid keys beside it (else the parser's own message)."""
  try:
    spec = importlib.util.spec_from_file_location('_cfg', _config_path(argv))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
  except Exception:  # pylint: disable=broad-except
    config = None
  overrides = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.')]
  for flag in overrides if config is not None else ():
    node, path = config, flag[len('--config.'):].split('.')
    for i, part in enumerate(path):
      if not hasattr(node, 'keys') or part not in node:
        parent = '.'.join(['config'] + path[:i])
        valid = ', '.join(sorted(node.keys())) if hasattr(node, 'keys') else '-'
        return (f'{flag}: {parent} has no key {part!r}; valid: {valid}. '
                'New keys go in the config file.')
      node = node[part]
  msg = str(exc).strip().strip('"\'').splitlines()
  return f'bad --config override: {msg[0] if msg else type(exc).__name__}'


def _fail(msg):
  print(f'error: {msg}', file=sys.stderr)
  sys.exit(2)


try:  # without --config, ml_collections applies the overrides right here
  config_flags.DEFINE_config_file('config', DEFAULT_CONFIG,
                                  'Experiment config file.', lock_config=True)
except OVERRIDE_ERRORS as e:
  _fail(_override_error(sys.argv, e))
flags.mark_flags_as_required(['workdir'])


def parse_flags(argv):
  """absl's parser, with bad flags and --config.* overrides as one-line
  errors (exit 2) instead of a traceback."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(f'{e}. Pass --help for usage.')
  except OVERRIDE_ERRORS as e:
    _fail(_override_error(argv, e))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  # Orbax logs every checkpoint step at INFO; keep the terminal for progress.
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  # Imported here so --help answers without initializing JAX.
  from jaxadv import cli  # pylint: disable=g-import-not-at-top
  sys.exit(cli.run(flags.FLAGS.config, flags.FLAGS.workdir, flags.FLAGS.mode))


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
