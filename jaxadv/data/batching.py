"""Host-side batching: which examples each step and each evaluation batch
holds, as a pure function of (seed, epoch, step), so a resumed run sees the
same batches as an uninterrupted one and every process takes its own slice
of each global batch. Batches are dicts of every feature of the split.
"""

from typing import Iterator, Optional

import jax
import numpy as np

FEEDS = ('auto', 'device', 'host', 'stream')


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


def index_chunks(
    num_examples: int,
    batch_size: int,
    seed: int,
    epoch: int,
    steps_per_call: int = 1,
    **kwargs,
) -> Iterator[np.ndarray]:
  """train_batches grouped `steps_per_call` at a time: int32 (steps, b); the
  epoch's last chunk may hold fewer steps. kwargs: train_batches'."""
  if steps_per_call < 1:
    raise ValueError(f'config.steps_per_call={steps_per_call} must be >= 1')
  chunk = []
  for idx in train_batches(num_examples, batch_size, seed, epoch, **kwargs):
    chunk.append(idx)
    if len(chunk) == steps_per_call:
      yield np.stack(chunk).astype(np.int32)
      chunk = []
  if chunk:
    yield np.stack(chunk).astype(np.int32)


def train_chunks(
    dataset,
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

  gather=True: every feature of the train split, (steps, b, ...) (read by
  the split: gathered in memory, or decoded by stream workers);
  gather=False: {'index': int32 (steps, b)} only, for a train split that is
  already on the device. Chunks start at `start_step`; the epoch's last chunk
  may hold fewer steps (its leading dimension says how many).
  """
  chunks = index_chunks(
      dataset.num_train,
      batch_size,
      seed,
      epoch,
      steps_per_call,
      process_index=process_index,
      process_count=process_count,
      start_step=start_step,
  )
  if not gather:
    return ({'index': c} for c in chunks)
  return dataset.train.batches(chunks)


# Train splits up to this size go on the device under config.data.feed='auto'.
DEVICE_FEED_MAX_BYTES = 2 << 30


def feed_on_device(feed: str, dataset, device=None) -> bool:
  """Whether config.data.feed puts the whole train split on every device.

  'device': always; 'host'/'stream': never (each chunk is gathered or read
  on the host and transferred); 'auto': the device when the dataset is in
  memory, its train split (every feature) is at most 2 GiB and, where the
  device reports its memory, at most a quarter of it (MNIST 47 MB and
  CIFAR-10 154 MB go on the device; ImageNet does not).
  """
  if feed not in FEEDS:
    raise ValueError(f"config.data.feed='{feed}'; valid: {', '.join(FEEDS)}")
  if feed != 'auto':
    return feed == 'device'
  if not dataset.in_memory:
    return False
  limit = DEVICE_FEED_MAX_BYTES
  device = jax.devices()[0] if device is None else device
  try:
    stats = device.memory_stats() or {}
  except Exception:  # pylint: disable=broad-except  (backends without stats)
    stats = {}
  if stats.get('bytes_limit'):
    limit = min(limit, stats['bytes_limit'] // 4)
  return dataset.train.nbytes <= limit


def eval_index_batches(
    num_examples: int,
    batch_size: int,
    *,
    indices: Optional[np.ndarray] = None,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[np.ndarray]:
  """This process's example indices of each global eval batch, int64
  (batch_size // process_count,) padded with -1: every example of `indices`
  (default all) exactly once, in order."""
  if batch_size < 1 or batch_size % process_count:
    raise ValueError(
        f'config.eval_batch_size={batch_size} must be positive and '
        f'divisible by the {process_count} processes'
    )
  indices = np.arange(num_examples) if indices is None else indices
  local = batch_size // process_count
  n = len(indices)
  for start in range(0, n, batch_size):
    lo = min(start + process_index * local, n)
    hi = min(lo + local, n)
    out = np.full(local, -1, np.int64)
    out[: hi - lo] = indices[lo:hi]
    yield out


def eval_batches(
    split,
    batch_size: int,
    *,
    indices: Optional[np.ndarray] = None,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict]:
  """Yields every feature of `split` plus 'mask' (bool) and 'index' (int32,
  the example's index in the split, -1 for padding) per global batch,
  covering every example of `indices` (default all) exactly once.

  Every global batch has `batch_size` rows (the last is padded with zeros,
  mask False), so one compiled function serves them all; each process gets
  its (batch_size // process_count) slice of every global batch.
  """
  index_batches = list(
      eval_index_batches(
          len(split),
          batch_size,
          indices=indices,
          process_index=process_index,
          process_count=process_count,
      )
  )
  real = (i[i >= 0] for i in index_batches)
  for index, batch in zip(index_batches, split.batches(real)):
    mask = index >= 0
    pad = len(index) - int(mask.sum())
    if pad:
      batch = {
          k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)])
          for k, v in batch.items()
      }
    yield {**batch, 'mask': mask, 'index': index.astype(np.int32)}
