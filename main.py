"""jaxadv command line.

  python main.py --config configs/mnist_standard.py --workdir runs/mnist \
      [--config.key=value ...] [--mode train|eval]

Without --config it runs the quick-start demo, configs/mnist_fast_demo.py.
"""
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
config_flags.DEFINE_config_file('config', DEFAULT_CONFIG,
                                'Experiment config file.', lock_config=True)
flags.mark_flags_as_required(['workdir'])


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
  app.run(main)
