"""jaxadv command line.

  python main.py --config configs/mnist_standard.py --workdir runs/mnist \
      [--config.key=value ...] [--mode train|eval]
"""
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

flags.DEFINE_string('workdir', None, 'Directory for checkpoints and results.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval'],
                  'train: train (resuming if possible), then evaluate; '
                  'eval: evaluate the latest checkpoint in --workdir.')
config_flags.DEFINE_config_file('config', None, 'Experiment config file.',
                                lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  # Imported here so --help answers without initializing JAX.
  from jaxadv import cli  # pylint: disable=g-import-not-at-top
  sys.exit(cli.run(flags.FLAGS.config, flags.FLAGS.workdir, flags.FLAGS.mode))


if __name__ == '__main__':
  app.run(main)
