"""Datasets through TFDS (tensorflow-datasets, an optional import: a machine
without it still trains on the offline files)."""

import numpy as np

from jaxadv.data.offline import DATA_DIR_ENV
from jaxadv.data.offline import default_data_dirs
from jaxadv.data.offline import OFFLINE_DATASETS


def load_arrays(name: str, data_dir: str):
  """([train_images, train_labels, test_images, test_labels], num_classes) from TFDS."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError:
    searched = ''
    if name in OFFLINE_DATASETS:
      searched = (
          f' (no offline files in '
          f'{", ".join(str(d / name) for d in default_data_dirs())})'
      )
    raise ImportError(
        f'dataset {name!r} needs tensorflow-datasets, which is not installed{searched}: set '
        f'config.data.data_dir or ${DATA_DIR_ENV} to a folder with the offline '
        f'{"/".join(OFFLINE_DATASETS)} files (e.g. ../shared/data), or '
        f'pip install tensorflow-datasets'
    ) from None
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError:
    raise ValueError(
        f'config.data.name={name!r} is unknown: use one of the offline datasets '
        f'({", ".join(OFFLINE_DATASETS)}) or any TFDS image classification '
        f'dataset'
    ) from None
  splits = builder.info.splits
  test_split = (
      'validation'
      if 'validation' in splits and 'test' not in splits
      else 'test'
  )
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    tf.config.set_visible_devices(
        [], 'GPU'
    )  # keep TF off the accelerator JAX uses
  except Exception:  # pylint: disable=broad-except
    pass
  arrays = []
  for split in ('train', test_split):
    images, labels = tfds.as_numpy(
        tfds.load(
            name,
            split=split,
            batch_size=-1,
            as_supervised=True,
            data_dir=data_dir or None,
        )
    )
    arrays += [np.asarray(images, np.uint8), np.asarray(labels, np.int32)]
  return arrays, builder.info.features['label'].num_classes
