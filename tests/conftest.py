"""Shared fixtures: tiny generated datasets in the offline file formats, so
most of the suite runs anywhere (no ../shared/data, no TFDS).

Speed (the suite runs under pytest-xdist, one worker per core):
* JAX's persistent compilation cache lives in a folder made for this pytest
  run, shared by its workers and the subprocesses they start, and removed
  when the run ends: identical programs compile once per run and never come
  from an earlier run (a stale cache must never hide a failure).
* `shared_dir` builds an expensive read-only fixture (the tiny data, a tiny
  finished run) once per pytest run, whichever worker gets there first; a
  test that changes such a run copies it first (`copy_run`).
"""

import atexit
import contextlib
import fcntl
import gzip
import os
import shutil
import struct
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get('JAXADV_DATA_DIR') or os.path.join(
    REPO, '..', 'shared', 'data'
)

# Set before jax is imported, so that the environment subprocesses inherit
# carries the same cache settings (JAX reads JAX_* variables at import).
_CACHE_ENV = 'JAXADV_TEST_COMPILATION_CACHE'
if not os.environ.get(_CACHE_ENV):  # the first pytest process of this run
  os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix='jaxadv-jit-cache-')
  atexit.register(shutil.rmtree, os.environ[_CACHE_ENV], True)
os.environ['JAX_COMPILATION_CACHE_DIR'] = os.environ[_CACHE_ENV]
os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update('jax_compilation_cache_dir', os.environ[_CACHE_ENV])
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def pytest_configure(config):
  import timing_plugin  # pylint: disable=g-import-not-at-top

  timing_plugin.register(config)


# Modules that take longest (bench/RESULTS.md, per-file table) start first,
# so that under `--dist loadscope` (one module per worker at a time) the
# long ones overlap instead of ending the run alone.
SLOW_FIRST = (
    'test_parallel.py',
    'test_golden.py',
    'test_multihost.py',
    'test_evaluate.py',
    'test_train.py',
    'test_models.py',
    'test_models_sync_bn.py',
    'test_methods.py',
    'test_great.py',
)


def pytest_collection_modifyitems(config, items):
  del config
  rank = {name: i for i, name in enumerate(SLOW_FIRST)}
  items.sort(key=lambda it: rank.get(it.path.name, len(SLOW_FIRST)))


def _cgroup_cpus():
  """The CPU quota of this container in cores, or None if unlimited."""
  for path, parse in (
      ('/sys/fs/cgroup/cpu.max', lambda t: t.split()),
      ('/sys/fs/cgroup/cpu/cpu.cfs_quota_us', lambda t: [t.strip(), None]),
  ):
    try:
      with open(path) as f:
        quota, period = parse(f.read())
    except (OSError, ValueError):
      continue
    if quota in ('max', '-1'):
      return None
    if period is None:
      with open('/sys/fs/cgroup/cpu/cpu.cfs_period_us') as f:
        period = f.read().strip()
    return max(1, int(int(quota) / int(period)))
  return None


def pytest_xdist_auto_num_workers(config):
  """`-n auto`: one worker per core this process may run on (its affinity
  and the container's quota), not the host's core count."""
  del config
  cores = (
      len(os.sched_getaffinity(0))
      if hasattr(os, 'sched_getaffinity')
      else (os.cpu_count() or 1)
  )
  return max(1, min(cores, _cgroup_cpus() or cores))


@contextlib.contextmanager
def _locked(path):
  """An exclusive lock on `path` (a file) across processes."""
  with open(path, 'a') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def run_temp_root(tmp_path_factory):
  """The temp folder of this pytest run, the same for all its workers."""
  root = tmp_path_factory.getbasetemp()
  return root.parent if os.environ.get('PYTEST_XDIST_WORKER') else root


def shared_dir(tmp_path_factory, name, make):
  """<run temp>/shared/<name>, filled once per pytest run by make(path)
  (the first worker to ask builds it while the others wait). A build that
  failed is retried by the next caller. Treat the result as read-only."""
  base = run_temp_root(tmp_path_factory) / 'shared'
  base.mkdir(parents=True, exist_ok=True)
  path = base / name
  with _locked(str(base / f'{name}.lock')):
    if not (base / f'{name}.done').exists():
      shutil.rmtree(path, ignore_errors=True)
      path.mkdir()
      make(str(path))
      (base / f'{name}.done').touch()
  return str(path)


def copy_run(workdir, tmp_path):
  """A private copy of a shared run, for a test that changes it."""
  dst = tmp_path / os.path.basename(str(workdir))
  shutil.copytree(workdir, dst)
  return dst


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
  return shared_dir(tmp_path_factory, 'tiny_data', make_tiny_mnist)


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
