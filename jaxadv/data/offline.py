"""The offline copies of MNIST (IDX) and CIFAR-10 (JPEG npz): locating them,
reading them, naming a damaged file in one line, and caching the decoded
CIFAR-10 arrays (see ../shared/data/README.md).
"""

import concurrent.futures
import gzip
import hashlib
import io
import multiprocessing
import os
import pathlib
import socket
from typing import Optional, Sequence
import zipfile
import zlib

import numpy as np

from jaxadv.errors import ConfigError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA_DIR_ENV = 'JAXADV_DATA_DIR'

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


def load_mnist(folder: pathlib.Path):
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


def load_cifar10(folder: pathlib.Path, cache_dir: str):
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
