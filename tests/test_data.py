"""Tests of jaxadv.data: readers, subsets, batching and augmentation."""

import collections
import gzip
import os
import struct
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from jaxadv import data

MNIST_TRAIN_COUNTS = [
    5923,
    6742,
    5958,
    6131,
    5842,
    5421,
    5918,
    6265,
    5851,
    5949,
]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
CIFAR10_TRAIN_MEAN = (0.4913, 0.4821, 0.4465)


def _config(**overrides):
  config = default.get_config().data
  config.update(overrides)
  return config


def _shared_dir(name):
  for root in data.default_data_dirs():
    if (root / name).is_dir():
      return root
  pytest.skip(
      f'no ../shared/data/{name} next to the working directory or the repo root'
  )


def _write_idx(path, array):
  header = struct.pack('>BBBB', 0, 0, 0x08, array.ndim)
  header += struct.pack(f'>{array.ndim}i', *array.shape)
  with gzip.open(path, 'wb') as f:
    f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


@pytest.fixture
def fake_mnist(tmp_path):
  """A tiny MNIST in the official layout: train grouped by class with unequal
  counts (class c has 8 + 2c examples), test grouped by class, 4 per class."""
  rng = np.random.default_rng(0)
  train_labels = np.repeat(np.arange(10), 8 + 2 * np.arange(10)).astype(
      np.uint8
  )
  test_labels = np.repeat(np.arange(10), 4).astype(np.uint8)
  arrays = {
      'train-images-idx3-ubyte.gz': rng.integers(
          0, 256, (len(train_labels), 28, 28)
      ),
      'train-labels-idx1-ubyte.gz': train_labels,
      't10k-images-idx3-ubyte.gz': rng.integers(
          0, 256, (len(test_labels), 28, 28)
      ),
      't10k-labels-idx1-ubyte.gz': test_labels,
  }
  (tmp_path / 'mnist').mkdir()
  for name, array in arrays.items():
    _write_idx(tmp_path / 'mnist' / name, array.astype(np.uint8))
  return tmp_path, arrays


# ---------------------------------------------------------------- shared files


def test_shared_mnist_matches_readme():
  ds = data.load_dataset(
      _config(name='mnist', data_dir=str(_shared_dir('mnist')))
  )
  assert ds.train_images.shape == (60000, 28, 28, 1)
  assert ds.test_images.shape == (10000, 28, 28, 1)
  assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int32
  assert np.bincount(ds.train_labels).tolist() == MNIST_TRAIN_COUNTS
  assert np.bincount(ds.test_labels).tolist() == MNIST_TEST_COUNTS
  assert ds.train_images.min() == 0 and ds.train_images.max() == 255
  assert abs(ds.train_images.mean() / 255 - 0.1307) < 1e-3
  assert (ds.num_classes, ds.mean, ds.augment) == (10, (0.1307,), 'none')


def test_shared_cifar10_decoder_on_a_few_images():
  npz = _shared_dir('cifar10') / 'cifar10' / 'cifar10_jpeg.npz'
  with np.load(npz) as z:
    images = data.decode_jpegs(z['train_jpeg'], z['train_offsets'], 0, 5)
    labels = z['train_labels'][:5]
  assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8
  assert labels.tolist() == [0] * 5  # the shared copy is grouped by class
  assert images.std() > 10  # real pictures, not a constant


def test_shared_cifar10_process_pool_decodes_like_one_process():
  npz = _shared_dir('cifar10') / 'cifar10' / 'cifar10_jpeg.npz'
  with np.load(npz) as z:
    splits = [
        (z[f'{s}_jpeg'], z[f'{s}_offsets'][: n + 1])
        for s, n in (('train', 300), ('test', 100))
    ]
  serial = [data.decode_jpegs(*s) for s in splits]
  pooled = data.offline._decode_all(splits, workers=2)  # pylint: disable=protected-access
  for a, b in zip(serial, pooled, strict=True):
    np.testing.assert_array_equal(a, b)


def test_shared_cifar10_full():
  root = _shared_dir('cifar10')
  cache = data.cifar10_cache_files(root / 'cifar10' / 'cifar10_jpeg.npz')
  if not (
      all(f.is_file() for f in cache.values())
      or os.environ.get('JAXADV_SLOW_TESTS') == '1'
  ):
    pytest.skip(
        'decoding all 60000 CIFAR-10 JPEGs takes ~5-10 s and no decoded cache '
        'exists; set JAXADV_SLOW_TESTS=1 to run it'
    )
  ds = data.load_dataset(_config(name='cifar10', data_dir=str(root)))
  assert (
      ds.train_images.shape == (50000, 32, 32, 3)
      and ds.train_images.dtype == np.uint8
  )
  assert ds.test_images.shape == (10000, 32, 32, 3)
  assert np.bincount(ds.train_labels).tolist() == [5000] * 10
  assert np.bincount(ds.test_labels).tolist() == [1000] * 10
  mean = ds.train_images.reshape(-1, 3).mean(0) / 255
  np.testing.assert_allclose(mean, CIFAR10_TRAIN_MEAN, atol=1e-3)
  assert ds.augment == 'crop_flip'


# ---------------------------------------------------------------- generated data


def test_idx_reader_round_trips_fake_mnist(fake_mnist):
  root, arrays = fake_mnist
  for data_dir in (
      root,
      root / 'mnist',
  ):  # the parent or the dataset folder itself
    ds = data.load_dataset(_config(name='mnist', data_dir=str(data_dir)))
    np.testing.assert_array_equal(
        ds.train_images[..., 0], arrays['train-images-idx3-ubyte.gz']
    )
    np.testing.assert_array_equal(
        ds.train_labels, arrays['train-labels-idx1-ubyte.gz']
    )
    np.testing.assert_array_equal(
        ds.test_images[..., 0], arrays['t10k-images-idx3-ubyte.gz']
    )
    assert ds.train_images.shape == (len(ds.train_labels), 28, 28, 1)
    assert ds.train_labels.dtype == np.int32


def test_env_var_data_dir(fake_mnist, monkeypatch):
  root, arrays = fake_mnist
  monkeypatch.setenv(data.DATA_DIR_ENV, str(root))
  ds = data.load_dataset(_config(name='mnist'))
  assert len(ds.train_labels) == len(arrays['train-labels-idx1-ubyte.gz'])


@pytest.mark.parametrize(
    'key,value', [('train_fraction', 0.5), ('num_train_examples', 30)]
)
def test_train_subsets_are_balanced_and_seeded(fake_mnist, key, value):
  root, _ = fake_mnist
  config = _config(name='mnist', data_dir=str(root), **{key: value})
  a = data.load_dataset(config, seed=0)
  again = data.load_dataset(config, seed=0)
  other = data.load_dataset(config, seed=1)
  n = (
      round(value * 170) if key == 'train_fraction' else value
  )  # 170 train examples
  counts = np.bincount(a.train_labels, minlength=10)
  assert counts.sum() == n and counts.max() - counts.min() <= 1
  np.testing.assert_array_equal(a.train_images, again.train_images)
  assert not np.array_equal(a.train_images, other.train_images)
  assert len(a.test_labels) == 40  # the test split is untouched


def test_balanced_subset_shares_out_small_classes():
  labels = np.repeat([0, 1, 2], [2, 50, 50])
  idx = data.balanced_subset(labels, 31, seed=0)
  assert sorted(np.bincount(labels[idx]).tolist()) == [2, 14, 15]
  assert len(np.unique(idx)) == 31
  np.testing.assert_array_equal(
      data.balanced_subset(labels, 102, 0), np.arange(102)
  )


def test_test_subset_is_random_not_the_first(fake_mnist):
  root, arrays = fake_mnist
  ds = data.load_dataset(
      _config(name='mnist', data_dir=str(root), num_test_examples=10)
  )
  assert len(ds.test_labels) == 10
  assert (
      len(set(ds.test_labels.tolist())) > 3
  )  # first 10 would be classes 0..2 only
  full = arrays['t10k-images-idx3-ubyte.gz']
  for image in ds.test_images[..., 0]:  # every kept image is a real test image
    assert (full == image).all(axis=(1, 2)).any()


def test_train_batches_cover_an_epoch_once():
  batches = list(data.train_batches(103, 10, seed=0, epoch=0))
  assert len(batches) == data.steps_per_epoch(103, 10) == 10
  flat = np.concatenate(batches)
  assert (
      len(flat) == 100 and len(np.unique(flat)) == 100
  )  # disjoint, remainder dropped
  assert flat.min() >= 0 and flat.max() < 103
  np.testing.assert_array_equal(
      flat, np.random.default_rng([0, 0]).permutation(103)[:100]
  )
  epoch1 = np.concatenate(list(data.train_batches(103, 10, seed=0, epoch=1)))
  assert not np.array_equal(flat, epoch1)
  seed1 = np.concatenate(list(data.train_batches(103, 10, seed=1, epoch=0)))
  assert not np.array_equal(flat, seed1)


def test_train_batches_processes_and_resume():
  whole = list(data.train_batches(50, 8, 3, 2))
  p0 = list(data.train_batches(50, 8, 3, 2, process_index=0, process_count=2))
  p1 = list(data.train_batches(50, 8, 3, 2, process_index=1, process_count=2))
  for g, a, b in zip(whole, p0, p1, strict=True):
    np.testing.assert_array_equal(np.concatenate([a, b]), g)
  resumed = list(data.train_batches(50, 8, 3, 2, start_step=4))
  assert len(resumed) == len(whole) - 4
  for a, b in zip(resumed, whole[4:]):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match='config.batch_size'):
    data.steps_per_epoch(5, 10)
  with pytest.raises(ValueError, match='config.batch_size'):
    next(data.train_batches(50, 9, 0, 0, process_count=2))


def test_train_chunks(fake_mnist):
  root, _ = fake_mnist
  ds = data.load_dataset(_config(name='mnist', data_dir=str(root)))
  chunks = list(
      data.train_chunks(ds, 16, seed=0, epoch=0, steps_per_call=4, start_step=1)
  )
  steps = data.steps_per_epoch(
      ds.num_train, 16
  )  # 10 steps, 9 left: chunks of 4, 4, 1
  assert [c['image'].shape[0] for c in chunks] == [4, 4, 1]
  assert (
      chunks[0]['image'].shape == (4, 16, 28, 28, 1)
      and chunks[0]['image'].dtype == np.uint8
  )
  assert (
      chunks[0]['label'].shape == (4, 16)
      and chunks[0]['label'].dtype == np.int32
  )
  batches = list(data.train_batches(ds.num_train, 16, 0, 0))[1:steps]
  images = np.concatenate([c['image'] for c in chunks])
  labels = np.concatenate([c['label'] for c in chunks])
  for idx, image, label in zip(batches, images, labels, strict=True):
    np.testing.assert_array_equal(image, ds.train_images[idx])
    np.testing.assert_array_equal(label, ds.train_labels[idx])


@pytest.mark.parametrize('process_count', [1, 2])
def test_eval_batches_cover_every_example_once(process_count):
  n, batch = 23, 10
  images = np.arange(1, n + 1, dtype=np.uint8).reshape(n, 1, 1, 1) * np.ones(
      (1, 2, 2, 3), np.uint8
  )
  labels = np.arange(n, dtype=np.int32) % 7
  seen, seen_labels, num_batches = [], [], 0
  for p in range(process_count):
    split = data.ArraySplit({'image': images, 'label': labels})
    for b in data.eval_batches(
        split, batch, process_index=p, process_count=process_count
    ):
      num_batches += 1
      assert b['image'].shape == (batch // process_count, 2, 2, 3)
      assert b['label'].shape == b['mask'].shape == (batch // process_count,)
      assert b['image'].dtype == np.uint8 and b['label'].dtype == np.int32
      assert b['mask'].dtype == bool
      assert (b['image'][~b['mask']] == 0).all() and (
          b['label'][~b['mask']] == 0
      ).all()
      seen += b['image'][b['mask'], 0, 0, 0].tolist()
      seen_labels += b['label'][b['mask']].tolist()
      # 'index' names each row's example (-1 for padding).
      np.testing.assert_array_equal(
          images[b['index'][b['mask']], 0, 0, 0], b['image'][b['mask'], 0, 0, 0]
      )
      assert (b['index'][~b['mask']] == -1).all()
  assert num_batches == 3 * process_count
  assert sorted(seen) == list(range(1, n + 1))  # each example exactly once
  assert collections.Counter(seen_labels) == collections.Counter(
      labels.tolist()
  )


def _images(b=32, h=8, w=8, c=3):
  return (
      np.random.default_rng(0).integers(1, 256, (b, h, w, c)).astype(np.uint8)
  )


@pytest.mark.parametrize('kind', data.AUGMENTATIONS)
def test_augment_shape_dtype_range(kind):
  x = _images()
  y = jax.jit(data.augment, static_argnums=2)(jax.random.key(0), x, kind)
  assert y.shape == x.shape and y.dtype == jnp.float32
  assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
  y_float = data.augment(jax.random.key(0), data.to_float(x), kind)
  np.testing.assert_allclose(
      y_float, y, atol=1e-6
  )  # float input augments the same way


def test_augment_none_is_to_float():
  x = _images()
  np.testing.assert_array_equal(
      data.augment(jax.random.key(1), x, 'none'), data.to_float(x)
  )
  np.testing.assert_array_equal(data.to_float(x), x.astype(np.float32) / 255)


def test_crop_flip_is_a_shifted_flipped_copy():
  x, pad = _images(b=64), 4
  y = np.asarray(data.augment(jax.random.key(3), x, 'crop_flip', pad)) * 255
  padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))).astype(
      np.float32
  )
  h, w = x.shape[1:3]
  kinds = set()
  for i in range(len(x)):
    matches = [
        (dy, dx, f)
        for dy in range(2 * pad + 1)
        for dx in range(2 * pad + 1)
        for f in (False, True)
        if np.allclose(
            (lambda c: c[:, ::-1] if f else c)(
                padded[i, dy : dy + h, dx : dx + w]
            ),
            y[i],
            atol=1e-3,
        )
    ]
    assert matches, f'example {i} is no crop of the padded input'
    kinds.add(matches[0])
  assert len(kinds) > 10  # offsets and flips vary per example
  assert {f for _, _, f in kinds} == {False, True}


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    'overrides,key',
    [
        ({'train_fraction': 0.0}, 'config.data.train_fraction'),
        ({'train_fraction': 1.5}, 'config.data.train_fraction'),
        ({'num_train_examples': -1}, 'config.data.num_train_examples'),
        ({'num_test_examples': -5}, 'config.data.num_test_examples'),
        ({'num_train_examples': 10**6}, 'config.data.num_train_examples'),
        ({'augment': 'rotate'}, 'config.data.augment'),
    ],
)
def test_bad_config_values_name_the_key(fake_mnist, overrides, key):
  root, _ = fake_mnist
  with pytest.raises(ValueError, match=key):
    data.load_dataset(_config(name='mnist', data_dir=str(root), **overrides))


@pytest.mark.parametrize('name', ['mnist', 'cifar10'])
def test_missing_files_with_explicit_data_dir(tmp_path, name):
  with pytest.raises(FileNotFoundError, match='config.data.data_dir') as err:
    data.load_dataset(_config(name=name, data_dir=str(tmp_path)))
  assert '\n' not in str(err.value)


def test_unknown_augment_kind():
  with pytest.raises(ValueError, match='crop_flip'):
    data.augment(jax.random.key(0), _images(), 'mixup')


def test_tfds_fallback_without_tfds(monkeypatch):
  monkeypatch.setitem(
      sys.modules, 'tensorflow_datasets', None
  )  # import now fails
  with pytest.raises(ImportError, match='config.data.data_dir'):
    data.load_dataset(_config(name='cifar100'))


def test_unknown_dataset_name():
  pytest.importorskip('tensorflow_datasets')
  with pytest.raises(ValueError, match='any TFDS image classification dataset'):
    data.load_dataset(_config(name='no_such_dataset_xyz'))
