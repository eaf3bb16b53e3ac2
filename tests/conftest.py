"""Shared fixtures: tiny generated datasets in the offline file formats, so
most of the suite runs anywhere (no ../shared/data, no TFDS)."""

import gzip
import os
import struct

import jax
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get('JAXADV_DATA_DIR') or os.path.join(
    REPO, '..', 'shared', 'data'
)


# Many tests build the same small programs; the persistent compilation cache
# lets every later build (also in subprocesses) skip XLA compilation.
CACHE = os.path.join(REPO, '.cache', 'jax_compilation_cache')
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', CACHE)
jax.config.update('jax_compilation_cache_dir', CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def shared_data_dir(name):
  """Path of a shared dataset folder, or skip the test with the reason."""
  path = os.path.join(SHARED_DATA, name)
  if not os.path.isdir(path):
    pytest.skip(
        f'needs the offline dataset folder {path} (absent on a fresh '
        'clone; set JAXADV_DATA_DIR to run it)'
    )
  return path


def _write_idx(path, array):
  header = struct.pack('>I', 0x800 + array.ndim) + b''.join(
      struct.pack('>I', d) for d in array.shape
  )
  with gzip.open(path, 'wb') as f:
    f.write(header + array.astype(np.uint8).tobytes())


def make_tiny_mnist(root, n_train=512, n_test=200, seed=0):
  """MNIST-format files whose classes are learnable: class k lights a 6x6
  square at a class-specific place, under noise. Returns the data_dir."""
  rng = np.random.default_rng(seed)
  out = os.path.join(root, 'mnist')
  os.makedirs(out, exist_ok=True)
  for split, n in (('train', n_train), ('t10k', n_test)):
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.int32)
    for i, k in enumerate(labels):
      r, c = 3 + 7 * (k // 4), 3 + 7 * (k % 4)
      images[i, r : r + 6, c : c + 6] += 180
    _write_idx(
        os.path.join(out, f'{split}-images-idx3-ubyte.gz'),
        np.clip(images, 0, 255),
    )
    _write_idx(os.path.join(out, f'{split}-labels-idx1-ubyte.gz'), labels)
  return root


@pytest.fixture(scope='session')
def tiny_data_dir(tmp_path_factory):
  return make_tiny_mnist(str(tmp_path_factory.mktemp('tiny_data')))


def tiny_config(data_dir, **overrides):
  """A config that trains in seconds on the tiny data."""
  from configs import default  # pylint: disable=g-import-not-at-top

  c = default.get_config()
  c.data.data_dir = data_dir
  c.data.cache_dir = os.path.join(data_dir, 'cache')
  c.model.name = 'mnist_cnn'
  c.optim.name = 'adam'
  c.optim.lr = 1e-3
  c.num_epochs = 2
  c.batch_size = 64
  c.eval_batch_size = 80
  c.log_every = 2
  c.progress = False
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c
