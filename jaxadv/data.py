"""Datasets, host-side batching and device-side augmentation.

Images stay uint8 (N, H, W, C) on the host and travel to the device as uint8;
`to_float` / `augment` turn them into float32 pixels in [0, 1] inside the jitted
step. Normalization (mean/std) belongs to the model, so attacks work in [0, 1].

Sources, in order: the offline copies of MNIST and CIFAR-10 (see
../shared/data/README.md) in `config.data.data_dir`, $JAXADV_DATA_DIR or an
auto-detected ../shared/data; otherwise TFDS (imported lazily, so a machine
without tensorflow-datasets can still train on the offline files).

Batching is a pure function of (seed, epoch, step), so a resumed run sees the
same batches as an uninterrupted one, and every process takes its contiguous
slice of each global batch.
"""

import concurrent.futures
import dataclasses
import gzip
import hashlib
import io
import multiprocessing
import os
import pathlib
import socket
from typing import Any, Iterator, NamedTuple, Optional, Sequence
import zipfile
import zlib

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from jaxadv.errors import ConfigError

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA_DIR_ENV = 'JAXADV_DATA_DIR'
AUGMENTATIONS = ('none', 'flip', 'crop', 'crop_flip')
FEEDS = ('auto', 'device', 'host')


class DatasetInfo(NamedTuple):
  num_classes: int
  image_shape: tuple  # (H, W, C)
  mean: tuple  # per channel, pixel scale [0, 1]
  std: tuple
  augment: str  # what config.data.augment='auto' resolves to


DATASET_INFO = {
    'mnist': DatasetInfo(10, (28, 28, 1), (0.1307,), (0.3081,), 'none'),
    'cifar10': DatasetInfo(
        10,
        (32, 32, 3),
        (0.4914, 0.4822, 0.4465),
        (0.2471, 0.2435, 0.2616),
        'crop_flip',
    ),
    'cifar100': DatasetInfo(
        100,
        (32, 32, 3),
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        'crop_flip',
    ),
    'svhn_cropped': DatasetInfo(
        10,
        (32, 32, 3),
        (0.4377, 0.4438, 0.4728),
        (0.1980, 0.2010, 0.1970),
        'crop',
    ),
    # Source images vary in size; (224, 224, 3) is the usual training crop.
    'imagenet2012': DatasetInfo(
        1000,
        (224, 224, 3),
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
        'none',
    ),
}

_MNIST_FILES = {
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
}
_CIFAR10_FILE = 'cifar10_jpeg.npz'
_OFFLINE_FILES = {
    'mnist': [f for pair in _MNIST_FILES.values() for f in pair],
    'cifar10': [_CIFAR10_FILE],
}
OFFLINE_DATASETS = tuple(_OFFLINE_FILES)


@dataclasses.dataclass
class Dataset:
  """Both splits in host memory.

  Images are uint8 (N, H, W, C) in 0..255, labels int32 (N,). `mean`/`std` are
  per channel in [0, 1] pixel scale (for the model's normalization layer);
  `augment` is one of AUGMENTATIONS.
  """

  name: str
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  mean: tuple
  std: tuple
  augment: str

  @property
  def num_train(self) -> int:
    return len(self.train_labels)

  @property
  def num_test(self) -> int:
    return len(self.test_labels)

  @property
  def image_shape(self) -> tuple:
    return tuple(self.train_images.shape[1:])


# ----------------------------------------------------------------------------
# Locating and reading the offline files.


def _explicit_dir(data_dir: str) -> tuple[Optional[pathlib.Path], str]:
  if data_dir:
    return pathlib.Path(data_dir).expanduser(), 'config.data.data_dir'
  if os.environ.get(DATA_DIR_ENV):
    return pathlib.Path(os.environ[DATA_DIR_ENV]).expanduser(), DATA_DIR_ENV
  return None, ''


def default_data_dirs() -> list[pathlib.Path]:
  """../shared/data relative to the working directory and to the repo root."""
  dirs = []
  for base in (pathlib.Path.cwd(), REPO_ROOT):
    d = (base / '..' / 'shared' / 'data').resolve()
    if d not in dirs:
      dirs.append(d)
  return dirs


def _has_files(folder: pathlib.Path, name: str) -> bool:
  return all((folder / f).is_file() for f in _OFFLINE_FILES[name])


def offline_dir(name: str, data_dir: str = '') -> Optional[pathlib.Path]:
  """The folder holding the offline files of `name`, or None (use TFDS).

  `data_dir` (config.data.data_dir), else $JAXADV_DATA_DIR, may be the parent
  of `<name>/` or that folder itself; when one of them is set the files must be
  there (FileNotFoundError otherwise). Else ../shared/data is auto-detected.
  """
  if name not in _OFFLINE_FILES:
    return None
  root, origin = _explicit_dir(data_dir)
  if root is not None:
    for folder in (root / name, root):
      if _has_files(folder, name):
        return folder
    raise FileNotFoundError(
        f'{origin}={str(root)!r} holds no offline {name}: expected '
        f'{root / name}/{{{", ".join(_OFFLINE_FILES[name])}}} '
        f'(or clear {origin} to auto-detect ../shared/data or use TFDS)'
    )
  for root in default_data_dirs():
    if _has_files(root / name, name):
      return root / name
  return None


def damaged(path, reason: str) -> ConfigError:
  """The one-line error for a data file that cannot be read as what it is."""
  return ConfigError(
      f'{path} is damaged ({reason}); replace it with a good ' 'copy'
  )


def _reason(exc: BaseException) -> str:
  """Why reading a compressed file failed, in a few words."""
  if isinstance(exc, EOFError):
    return 'truncated'
  if isinstance(exc, gzip.BadGzipFile):
    return f'not a valid gzip file: {exc}'
  if isinstance(exc, zipfile.BadZipFile):
    return f'not a valid zip archive: {exc}'
  if isinstance(exc, zlib.error):
    return f'corrupt compressed data: {exc}'
  text = str(exc).strip().splitlines()
  return f'{type(exc).__name__}: {text[0]}' if text else type(exc).__name__


def read_idx(path) -> np.ndarray:
  """Reads an IDX file (gzipped if the name ends in .gz) into a uint8 array.

  A truncated or corrupt file raises ConfigError naming it (damaged()).
  """
  path = pathlib.Path(path)
  opener = gzip.open if path.suffix == '.gz' else open
  try:
    with opener(path, 'rb') as f:
      raw = f.read()
  except EOFError:
    raise damaged(path, 'truncated gzip stream') from None
  except (gzip.BadGzipFile, zlib.error) as e:
    raise damaged(path, _reason(e)) from None
  if not raw:
    raise damaged(path, 'empty')
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
    raise damaged(path, f'not an IDX file: bad magic {raw[:4]!r}')
  if raw[2] != 0x08:
    raise damaged(
        path, f'IDX element type 0x{raw[2]:02x}, expected 0x08 ' '(uint8)'
    )
  ndim = raw[3]
  if len(raw) < 4 + 4 * ndim:
    raise damaged(path, f'{len(raw)} bytes, shorter than its IDX header')
  dims = tuple(int(d) for d in np.frombuffer(raw, '>i4', count=ndim, offset=4))
  data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
  if data.size != int(np.prod(dims)):
    raise damaged(path, f'{data.size} bytes of data, its header says {dims}')
  return data.reshape(dims)


def _load_mnist(folder: pathlib.Path):
  splits = []
  for split in ('train', 'test'):
    images_file, labels_file = _MNIST_FILES[split]
    images = read_idx(folder / images_file)[..., None]  # (N, 28, 28, 1)
    labels = read_idx(folder / labels_file).astype(np.int32)
    if len(images) != len(labels):
      raise ConfigError(
          f'{folder / images_file} holds {len(images)} images but '
          f'{folder / labels_file} {len(labels)} labels: one of them is '
          'damaged; replace it with a good copy'
      )
    splits += [images, labels]
  return splits


def decode_jpegs(
    blob: np.ndarray,
    offsets: np.ndarray,
    start: int = 0,
    stop: Optional[int] = None,
) -> np.ndarray:
  """Decodes images start..stop of concatenated JPEGs: uint8 (n, H, W, C)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  stop = len(offsets) - 1 if stop is None else stop
  out = None
  for i in range(start, stop):
    with Image.open(
        io.BytesIO(blob[offsets[i] : offsets[i + 1]].tobytes())
    ) as im:
      pixels = np.asarray(im)
    if pixels.ndim == 2:
      pixels = pixels[..., None]
    if out is None:
      out = np.empty((stop - start,) + pixels.shape, np.uint8)
    out[i - start] = pixels
  return out


def _decode_all(splits: Sequence[tuple], workers: Optional[int] = None) -> list:
  """decode_jpegs of each (blob, offsets), in one process pool when there are cores."""
  if workers is None:
    cores = (
        len(os.sched_getaffinity(0))
        if hasattr(os, 'sched_getaffinity')
        else os.cpu_count()
    )
    workers = min(cores or 1, 16)
    if workers < 4 or sum(len(offsets) - 1 for _, offsets in splits) < 2000:
      workers = (
          1  # starting workers (spawn + import) costs ~1 s: 2 cores gain little
      )
  if workers < 2:
    return [decode_jpegs(blob, offsets) for blob, offsets in splits]
  total = sum(len(offsets) - 1 for _, offsets in splits)
  jobs, owner = [], []
  for k, (blob, offsets) in enumerate(splits):
    n = len(offsets) - 1
    parts = max(1, min(n, round(4 * workers * n / total)))
    bounds = np.linspace(0, n, parts + 1).astype(int)
    for a, b in zip(bounds[:-1], bounds[1:]):
      jobs.append(
          (blob[offsets[a] : offsets[b]], offsets[a : b + 1] - offsets[a])
      )
      owner.append(k)
  try:
    # spawn, not fork: forking a process that runs JAX can deadlock.
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context('spawn')
    ) as pool:
      parts = list(pool.map(decode_jpegs, *zip(*jobs)))
  except (OSError, RuntimeError, concurrent.futures.process.BrokenProcessPool):
    return [
        decode_jpegs(blob, offsets) for blob, offsets in splits
    ]  # e.g. unguarded __main__
  return [
      np.concatenate([p for p, o in zip(parts, owner) if o == k])
      for k in range(len(splits))
  ]


def cifar10_cache_files(npz_path, cache_dir: str = '') -> dict:
  """split -> .npy path of the decoded images, keyed by the npz's size+mtime."""
  stat = pathlib.Path(npz_path).stat()
  key = hashlib.sha1(
      f'v1:{stat.st_size}:{stat.st_mtime_ns}'.encode()
  ).hexdigest()[:12]
  folder = (
      pathlib.Path(cache_dir).expanduser()
      if cache_dir
      else REPO_ROOT / '.cache' / 'jaxadv'
  )
  return {
      s: folder / f'cifar10_{s}_images_{key}.npy' for s in ('train', 'test')
  }


# What np.load and reading an npz member raise for a damaged file.
_NPZ_ERRORS = (zipfile.BadZipFile, EOFError, ValueError, zlib.error)


def _read_cache(cache: dict, labels: dict) -> Optional[dict]:
  """The decoded images from the .npy cache, or None if a file is missing or
  damaged (a damaged one is deleted, so the caller decodes and rewrites)."""
  if not all(f.is_file() for f in cache.values()):
    return None
  images = {}
  for s, f in cache.items():
    try:
      images[s] = np.load(f)
      good = (
          images[s].dtype == np.uint8
          and images[s].ndim == 4
          and len(images[s]) == len(labels[s])
      )
    except (OSError, EOFError, ValueError):
      good = False
    if not good:
      for g in cache.values():
        try:
          g.unlink()
        except OSError:
          pass
      return None
  return images


def _write_cache(cache: dict, images: dict) -> None:
  """Saves the decoded images; a cache that cannot be written (read-only,
  full disk) is skipped, leaving no temporary file."""
  for s, f in cache.items():
    # Unique per host and process: caches may sit on shared storage.
    tmp = f.with_name(
        f'{f.stem}.{socket.gethostname()}.{os.getpid()}' '.tmp.npy'
    )
    try:
      f.parent.mkdir(parents=True, exist_ok=True)
      np.save(tmp, images[s])
      os.replace(tmp, f)  # atomic: a concurrent reader never sees half a file
    except OSError:
      try:
        tmp.unlink()
      except OSError:
        pass
      return  # decode again next time


def _not_npz(path: pathlib.Path, exc: BaseException) -> str:
  """Why np.load could not open `path` as an .npz archive."""
  try:
    with open(path, 'rb') as f:
      head = f.read(64)
  except OSError:
    head = b''
  if head.startswith(b'version https://git-lfs'):
    return 'a Git LFS pointer, not the data: git lfs pull'
  if isinstance(exc, ValueError):
    return 'not an .npz archive'
  return _reason(exc)


def _load_cifar10(folder: pathlib.Path, cache_dir: str):
  path = folder / _CIFAR10_FILE
  cache = cifar10_cache_files(path, cache_dir)
  try:
    z = np.load(path)
  except _NPZ_ERRORS as e:
    raise damaged(path, _not_npz(path, e)) from None
  if not hasattr(z, 'files'):  # a plain .npy
    raise damaged(path, 'not an .npz archive')
  try:
    with z:
      wanted = [
          f'{s}_{k}' for s in cache for k in ('jpeg', 'offsets', 'labels')
      ]
      missing = [k for k in wanted if k not in z.files]
      if missing:
        raise damaged(path, f'no array {", ".join(missing)}')
      labels = {s: z[f'{s}_labels'].astype(np.int32) for s in cache}
      images = _read_cache(cache, labels)
      if images is None:
        blobs = [(z[f'{s}_jpeg'], z[f'{s}_offsets']) for s in cache]
  except ConfigError:
    raise
  except _NPZ_ERRORS as e:
    raise damaged(path, _reason(e)) from None
  if images is None:
    try:
      decoded = _decode_all(blobs)
    except (OSError, ValueError, IndexError, TypeError) as e:
      raise damaged(
          path, f'a JPEG does not decode: {type(e).__name__}'
      ) from None
    images = dict(zip(cache, decoded))
    for s in cache:
      if images[s] is None or len(images[s]) != len(labels[s]):
        raise damaged(
            path,
            f'{s}: {len(labels[s])} labels, '
            f'{0 if images[s] is None else len(images[s])} images',
        )
    _write_cache(cache, images)
  return images['train'], labels['train'], images['test'], labels['test']


def _load_tfds(name: str, data_dir: str):
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


# ----------------------------------------------------------------------------
# Subsets.


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
  folder = offline_dir(name, data_dir)
  if folder is not None and name == 'mnist':
    arrays, num_classes = _load_mnist(folder), 10
  elif folder is not None and name == 'cifar10':
    arrays, num_classes = (
        _load_cifar10(folder, getattr(data_config, 'cache_dir', '')),
        10,
    )
  else:
    arrays, num_classes = _load_tfds(
        name, data_dir if name not in OFFLINE_DATASETS else ''
    )
  train_images, train_labels, test_images, test_labels = arrays

  if fraction < 1.0:
    keep = balanced_subset(
        train_labels,
        max(1, round(fraction * len(train_labels))),
        seed,
        num_classes,
    )
    train_images, train_labels = train_images[keep], train_labels[keep]
  if num_train:
    if num_train > len(train_labels):
      raise ValueError(
          f'config.data.num_train_examples={num_train} exceeds the '
          f'{len(train_labels)} train examples available'
      )
    keep = balanced_subset(train_labels, num_train, seed, num_classes)
    train_images, train_labels = train_images[keep], train_labels[keep]
  if num_test:
    if num_test > len(test_labels):
      raise ValueError(
          f'config.data.num_test_examples={num_test} exceeds the '
          f'{len(test_labels)} test examples available'
      )
    keep = random_subset(len(test_labels), num_test, seed)
    test_images, test_labels = test_images[keep], test_labels[keep]

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
      train_images=train_images,
      train_labels=train_labels,
      test_images=test_images,
      test_labels=test_labels,
      num_classes=num_classes,
      mean=tuple(mean),
      std=tuple(std),
      augment=default_augment if augment == 'auto' else augment,
  )


# ----------------------------------------------------------------------------
# Host-side batching.


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Full global batches per epoch (the remainder is dropped)."""
  if not 0 < batch_size <= num_examples:
    raise ValueError(
        f'config.batch_size={batch_size} must be in [1, {num_examples}] '
        f'(the number of train examples)'
    )
  return num_examples // batch_size


def train_batches(
    num_examples: int,
    batch_size: int,
    seed: int,
    epoch: int,
    *,
    process_index: int = 0,
    process_count: int = 1,
    start_step: int = 0,
) -> Iterator[np.ndarray]:
  """Yields this process's int64 indices (batch_size // process_count,) per step.

  The epoch's order is `default_rng([seed, epoch]).permutation(num_examples)`,
  cut into global batches (remainder dropped); process p takes slice
  [p * B / P, (p + 1) * B / P] of each. The first `start_step` batches are
  skipped (resume mid-epoch).
  """
  steps = steps_per_epoch(num_examples, batch_size)
  if batch_size % process_count:
    raise ValueError(
        f'config.batch_size={batch_size} is not divisible by the '
        f'{process_count} processes'
    )
  if not 0 <= process_index < process_count or start_step < 0:
    raise ValueError(
        f'bad process_index={process_index} / process_count='
        f'{process_count} / start_step={start_step}'
    )
  local = batch_size // process_count
  order = np.random.default_rng([seed, epoch]).permutation(num_examples)
  for step in range(start_step, steps):
    start = step * batch_size + process_index * local
    yield order[start : start + local]


def stack_batches(
    dataset: Dataset, index_batches: Sequence[np.ndarray]
) -> dict:
  """{'image': uint8 (steps, b, H, W, C), 'label': int32 (steps, b)} for train indices."""
  idx = np.stack(index_batches)
  return {
      'image': dataset.train_images[idx],
      'label': dataset.train_labels[idx],
  }


def train_chunks(
    dataset: Dataset,
    batch_size: int,
    seed: int,
    epoch: int,
    steps_per_call: int = 1,
    *,
    process_index: int = 0,
    process_count: int = 1,
    start_step: int = 0,
    gather: bool = True,
) -> Iterator[dict]:
  """Yields chunks of `steps_per_call` consecutive train_batches.

  gather=True: stack_batches (the images and labels, for a host feed);
  gather=False: {'index': int32 (steps, b)} only, for a train split that is
  already on the device. Chunks start at `start_step`; the epoch's last chunk
  may hold fewer steps (its leading dimension says how many).
  """
  if steps_per_call < 1:
    raise ValueError(f'config.steps_per_call={steps_per_call} must be >= 1')

  def emit(chunk):
    if gather:
      return stack_batches(dataset, chunk)
    return {'index': np.stack(chunk).astype(np.int32)}

  chunk = []
  for idx in train_batches(
      dataset.num_train,
      batch_size,
      seed,
      epoch,
      process_index=process_index,
      process_count=process_count,
      start_step=start_step,
  ):
    chunk.append(idx)
    if len(chunk) == steps_per_call:
      yield emit(chunk)
      chunk = []
  if chunk:
    yield emit(chunk)


# Train splits up to this size go on the device under config.data.feed='auto'.
DEVICE_FEED_MAX_BYTES = 2 << 30


def feed_on_device(feed: str, dataset: Dataset, device=None) -> bool:
  """Whether config.data.feed puts the whole train split on every device.

  'device': always; 'host': never (each chunk's images are gathered on the
  host and transferred); 'auto': the device when the uint8 train split is at
  most 2 GiB and, where the device reports its memory, at most a quarter of
  it (MNIST 47 MB and CIFAR-10 154 MB go on the device; ImageNet does not).
  """
  if feed not in FEEDS:
    raise ValueError(f"config.data.feed='{feed}'; valid: {', '.join(FEEDS)}")
  if feed != 'auto':
    return feed == 'device'
  nbytes = dataset.train_images.nbytes + dataset.train_labels.nbytes
  limit = DEVICE_FEED_MAX_BYTES
  device = jax.devices()[0] if device is None else device
  try:
    stats = device.memory_stats() or {}
  except Exception:  # pylint: disable=broad-except  (backends without stats)
    stats = {}
  if stats.get('bytes_limit'):
    limit = min(limit, stats['bytes_limit'] // 4)
  return nbytes <= limit


def eval_batches(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict]:
  """Yields {'image', 'label', 'mask'} covering every example exactly once.

  Every global batch has `batch_size` rows (the last is padded with zero images,
  label 0 and mask False), so one compiled function serves them all; each
  process gets its (batch_size // process_count) slice of every global batch.
  """
  if batch_size < 1 or batch_size % process_count:
    raise ValueError(
        f'config.eval_batch_size={batch_size} must be positive and '
        f'divisible by the {process_count} processes'
    )
  local = batch_size // process_count
  n = len(labels)
  for start in range(0, n, batch_size):
    lo = min(start + process_index * local, n)
    hi = min(lo + local, n)
    pad = local - (hi - lo)
    image, label = images[lo:hi], np.asarray(labels[lo:hi], np.int32)
    mask = np.ones(hi - lo, bool)
    if pad:
      image = np.concatenate(
          [image, np.zeros((pad,) + image.shape[1:], image.dtype)]
      )
      label = np.concatenate([label, np.zeros(pad, np.int32)])
      mask = np.concatenate([mask, np.zeros(pad, bool)])
    yield {'image': image, 'label': label, 'mask': mask}


# ----------------------------------------------------------------------------
# Device-side preprocessing (pure, jit-able).


def to_float(images: jax.Array) -> jax.Array:
  """uint8 0..255 -> float32 in [0, 1]; float input is assumed in [0, 1] already."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def random_crop(rng: jax.Array, images: jax.Array, pad: int = 4) -> jax.Array:
  """Per-example random HxW crop of the batch zero-padded by `pad` pixels: (b, H, W, C)."""
  b, h, w, c = images.shape
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  offsets = jax.random.randint(rng, (b, 2), 0, 2 * pad + 1)
  crop = lambda img, o: lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c))
  return jax.vmap(crop)(padded, offsets)


def random_flip(rng: jax.Array, images: jax.Array) -> jax.Array:
  """Flips each example of (b, H, W, C) left-right with probability 0.5."""
  flip = jax.random.bernoulli(rng, 0.5, (images.shape[0],))
  return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)


def augment(
    rng: jax.Array, images: jax.Array, kind: str, pad: int = 4
) -> jax.Array:
  """Train augmentation of a (b, H, W, C) batch: float32 pixels in [0, 1].

  kind: 'none' | 'flip' | 'crop' (random crop with `pad`-pixel zero padding) |
  'crop_flip'. uint8 input is augmented before conversion (cheaper).
  """
  if kind not in AUGMENTATIONS:
    raise ValueError(
        f'augment kind {kind!r} must be one of {", ".join(AUGMENTATIONS)}'
    )
  crop_rng, flip_rng = jax.random.split(rng)
  if kind in ('crop', 'crop_flip'):
    images = random_crop(crop_rng, images, pad)
  if kind in ('flip', 'crop_flip'):
    images = random_flip(flip_rng, images)
  return to_float(images)
