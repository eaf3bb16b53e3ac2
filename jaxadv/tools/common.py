"""What the paper-study tools share: parsing their comma-separated
arguments and the report options."""

import os


def parse_list(text):
  """'a,b, c' -> ['a', 'b', 'c'] (empty items dropped)."""
  return [t.strip() for t in text.split(',') if t.strip()]


def workdir_labels(text, workdirs):
  """Model names from a comma-separated --labels (default: folder names)."""
  if not workdirs:
    raise ValueError('--workdirs names no workdir')
  labels = (
      parse_list(text)
      if text
      else [os.path.basename(os.path.normpath(w)) for w in workdirs]
  )
  if len(labels) != len(workdirs) or len(set(labels)) != len(labels):
    raise ValueError(
        f'--labels needs {len(workdirs)} distinct names, got ' f'{labels}'
    )
  return labels


def add_report_args(parser):
  """The options the sweep and transfer CLIs share (argparse)."""
  parser.add_argument('--out', required=True, help='output folder')
  parser.add_argument(
      '--num_examples',
      type=int,
      default=None,
      help='seeded test subset size (default: the first '
      "workdir's config.eval.num_examples; 0 = all)",
  )
  parser.add_argument(
      '--labels',
      default='',
      help='comma-separated names of the models (default: ' 'folder names)',
  )
  parser.add_argument(
      '--seed',
      type=int,
      default=0,
      help='seed of the subset and of the random starts',
  )
