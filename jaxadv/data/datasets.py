"""Datasets as splits of examples with any features, and the subsets configs
ask for.

A split is random access: `len(split)`, `split.features` ({name: Feature})
and `split.batches(index_batches)`, which yields one dict of host arrays per
array of example indices, in order. In-memory splits (`ArraySplit`) gather
from numpy arrays; streamed splits (jaxadv.data.stream) read and decode
records in worker processes. Everything above this module (batching, the
trainer, evaluation) sees only that protocol.
"""

import dataclasses
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from jaxadv.data import info as info_lib
from jaxadv.data import offline
from jaxadv.data import tfds_source
from jaxadv.data.info import AUGMENTATIONS
from jaxadv.data.info import DATASET_INFO


class ArraySplit:
  """A split held in host memory: {feature name: array (N, ...)}."""

  def __init__(self, arrays, features=None):
    self.arrays = dict(arrays)
    n = {len(v) for v in self.arrays.values()}
    if len(n) != 1:
      raise ValueError(f'features of unequal lengths {sorted(n)}')
    self.features = dict(features) if features else _infer(self.arrays)

  def __len__(self):
    return len(next(iter(self.arrays.values())))

  @property
  def labels(self):
    return self.arrays.get('label')

  def gather(self, index):
    """{name: array[index]} (index: int array of any shape)."""
    return {k: v[index] for k, v in self.arrays.items()}

  def batches(self, index_batches: Iterable[np.ndarray]) -> Iterator[dict]:
    return (self.gather(np.asarray(i)) for i in index_batches)

  @property
  def nbytes(self):
    return sum(v.nbytes for v in self.arrays.values())

  def subset(self, index):
    return ArraySplit(self.gather(np.asarray(index)), self.features)


def _infer(arrays):
  """Features of arrays: 'image' and any 4-D array of the same H, W are
  image-shaped."""
  hw = arrays['image'].shape[1:3] if 'image' in arrays else None
  return {
      k: info_lib.Feature(
          tuple(v.shape[1:]),
          np.dtype(v.dtype).name,
          k == 'image' or (v.ndim == 4 and v.shape[1:3] == hw),
      )
      for k, v in arrays.items()
  }


@dataclasses.dataclass
class Dataset:
  """A train and a test split and the dataset's facts.

  `mean`/`std` are per channel in [0, 1] pixel scale (for the model's
  normalization layer); `augment` is one of AUGMENTATIONS (device side).
  Images are uint8 (N, H, W, C) in 0..255, labels int32 (N,).
  """

  name: str
  train: Any  # a split (ArraySplit or a streamed split)
  test: Any
  num_classes: int
  mean: tuple
  std: tuple
  augment: str

  @classmethod
  def from_arrays(
      cls,
      name,
      train_images,
      train_labels,
      test_images,
      test_labels,
      *,
      num_classes,
      mean,
      std,
      augment,
  ):
    """An in-memory classification dataset from its four arrays."""
    return cls(
        name=name,
        train=ArraySplit({'image': train_images, 'label': train_labels}),
        test=ArraySplit({'image': test_images, 'label': test_labels}),
        num_classes=num_classes,
        mean=tuple(mean),
        std=tuple(std),
        augment=augment,
    )

  @property
  def in_memory(self) -> bool:
    return isinstance(self.train, ArraySplit) and isinstance(
        self.test, ArraySplit
    )

  @property
  def num_train(self) -> int:
    return len(self.train)

  @property
  def num_test(self) -> int:
    return len(self.test)

  @property
  def features(self) -> dict:
    return self.train.features

  @property
  def image_shape(self) -> tuple:
    return tuple(self.train.features['image'].shape)

  def _array(self, split, key):
    if not isinstance(split, ArraySplit):
      raise ValueError(
          f'dataset {self.name!r} is streamed: its examples are read in '
          'batches (split.batches), not held as arrays'
      )
    return split.arrays[key]

  train_images = property(lambda self: self._array(self.train, 'image'))
  train_labels = property(lambda self: self._array(self.train, 'label'))
  test_images = property(lambda self: self._array(self.test, 'image'))
  test_labels = property(lambda self: self._array(self.test, 'label'))


def balanced_subset(
    labels: np.ndarray, num: int, seed: int, num_classes: Optional[int] = None
) -> np.ndarray:
  """Sorted indices of `num` examples with (as nearly as possible) equal counts per class.

  A class smaller than its share gives all it has and the rest is shared among
  the others; the classes getting one extra example and the examples taken are
  drawn with `seed`.
  """
  labels = np.asarray(labels)
  num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
  if not 0 <= num <= len(labels):
    raise ValueError(f'cannot take {num} of {len(labels)} examples')
  rng = np.random.default_rng([seed, 1])
  members = [np.flatnonzero(labels == c) for c in range(num_classes)]
  sizes = np.array([len(m) for m in members])
  counts = np.zeros(num_classes, int)
  left = num
  while left:  # water-filling: each round fills the classes with room equally
    open_ = np.flatnonzero(counts < sizes)
    share, extra = divmod(left, len(open_))
    add = np.full(len(open_), share)
    add[rng.permutation(len(open_))[:extra]] += 1
    add = np.minimum(add, sizes[open_] - counts[open_])
    counts[open_] += add
    left -= int(add.sum())
  picked = [rng.permutation(m)[:k] for m, k in zip(members, counts)]
  return np.sort(np.concatenate(picked)).astype(np.int64)


def random_subset(num_examples: int, num: int, seed: int) -> np.ndarray:
  """Sorted indices of a seeded random subset of `num` of `num_examples`."""
  if not 0 <= num <= num_examples:
    raise ValueError(f'cannot take {num} of {num_examples} examples')
  return np.sort(
      np.random.default_rng([seed, 2]).permutation(num_examples)[:num]
  )


def _validated(data_config) -> tuple[float, int, int, str]:
  fraction = float(getattr(data_config, 'train_fraction', 1.0))
  num_train = int(getattr(data_config, 'num_train_examples', 0))
  num_test = int(getattr(data_config, 'num_test_examples', 0))
  augment = getattr(data_config, 'augment', 'auto')
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f'config.data.train_fraction={fraction} must be in (0, 1]')
  if num_train < 0:
    raise ValueError(
        f'config.data.num_train_examples={num_train} must be >= 0 (0 = all)'
    )
  if num_test < 0:
    raise ValueError(
        f'config.data.num_test_examples={num_test} must be >= 0 (0 = all)'
    )
  if augment not in ('auto',) + AUGMENTATIONS:
    raise ValueError(
        f'config.data.augment={augment!r} must be one of '
        f'{", ".join(("auto",) + AUGMENTATIONS)}'
    )
  return fraction, num_train, num_test, augment


def load_dataset(data_config: Any, seed: int = 0) -> Dataset:
  """Loads config.data (name, data_dir, cache_dir, subsets, augment) into host memory.

  Subsets are applied in order: train_fraction (class-balanced, round(f * N)
  examples), then num_train_examples (class-balanced, exactly that many), then
  num_test_examples (seeded random); all are drawn with `seed`.
  """
  fraction, num_train, num_test, augment = _validated(data_config)
  name = data_config.name
  data_dir = getattr(data_config, 'data_dir', '') or ''
  folder = offline.offline_dir(name, data_dir)
  if folder is not None and name == 'mnist':
    arrays, num_classes = offline.load_mnist(folder), 10
  elif folder is not None and name == 'cifar10':
    arrays, num_classes = (
        offline.load_cifar10(folder, getattr(data_config, 'cache_dir', '')),
        10,
    )
  else:
    arrays, num_classes = tfds_source.load_arrays(
        name, data_dir if name not in offline.OFFLINE_DATASETS else ''
    )
  train = ArraySplit({'image': arrays[0], 'label': arrays[1]})
  test = ArraySplit({'image': arrays[2], 'label': arrays[3]})
  train, test = apply_subsets(
      train, test, fraction, num_train, num_test, seed, num_classes
  )
  info = DATASET_INFO.get(name)
  if info is not None:
    mean, std, default_augment = info.mean, info.std, info.augment
  else:
    pixels = arrays[0].reshape(-1, arrays[0].shape[-1])
    mean = tuple(float(m) / 255 for m in pixels.mean(0, dtype=np.float64))
    std = tuple(float(s) / 255 for s in pixels.std(0, dtype=np.float64))
    colour32 = arrays[0].shape[1:] == (32, 32, 3)
    default_augment = 'crop_flip' if colour32 else 'none'
  return Dataset(
      name=name,
      train=train,
      test=test,
      num_classes=num_classes,
      mean=tuple(mean),
      std=tuple(std),
      augment=default_augment if augment == 'auto' else augment,
  )


def apply_subsets(train, test, fraction, num_train, num_test, seed, classes):
  """The config's subsets of two splits (see load_dataset); class-balanced
  train subsets need the split's labels."""
  if fraction < 1.0:
    keep = balanced_subset(
        _labels(train, 'train_fraction'),
        max(1, round(fraction * len(train))),
        seed,
        classes,
    )
    train = train.subset(keep)
  if num_train:
    if num_train > len(train):
      raise ValueError(
          f'config.data.num_train_examples={num_train} exceeds the '
          f'{len(train)} train examples available'
      )
    labels = _labels(train, 'num_train_examples')
    train = train.subset(balanced_subset(labels, num_train, seed, classes))
  if num_test:
    if num_test > len(test):
      raise ValueError(
          f'config.data.num_test_examples={num_test} exceeds the '
          f'{len(test)} test examples available'
      )
    test = test.subset(random_subset(len(test), num_test, seed))
  return train, test


def _labels(split, key):
  if split.labels is None:
    raise ValueError(
        f'config.data.{key} takes a class-balanced subset, which needs the '
        'labels of the split; this source does not list them'
    )
  return split.labels
