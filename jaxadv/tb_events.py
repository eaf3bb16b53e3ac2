"""TensorBoard event files beside metrics.jsonl: every record the trainer
logs (train metrics every log_every steps, test metrics every eval_every
epochs) becomes scalars at its step, under <workdir>/tensorboard.

Written with tensorboardX, which writes TensorBoard's event files with only
protobuf. CLU's metric writers, which the Flax examples use, were the first
choice, but `clu.metric_writers` imports TensorFlow when the package is
imported (its SummaryWriter), a ~600 MB dependency this library does not
otherwise need; the files are the same.

After a resume each step appears once, as in metrics.jsonl: events past the
restored step are removed from the earlier event files (truncate_events,
rewritten atomically), and the new writer also records TensorBoard's purge
marker at the first step it writes.
"""

import glob
import math
import os
import struct

TB_DIR = 'tensorboard'
# Record keys that are coordinates, not metrics.
_NOT_SCALARS = ('step', 'epoch')


def tag(key):
  """The TensorBoard tag of a metrics.jsonl key: test_accuracy ->
  test/accuracy, monitor_accuracy -> monitor/accuracy, loss -> train/loss."""
  for prefix in ('test', 'monitor'):
    if key.startswith(prefix + '_'):
      return f'{prefix}/{key[len(prefix) + 1:]}'
  return f'train/{key}'


class EventWriter:
  """Scalars of metric records to <logdir> (process 0 only; a no-op when
  disabled or when tensorboardX is not installed, which is said once)."""

  def __init__(self, logdir, enabled=True, purge_step=None):
    self.writer = None
    if not enabled:
      return
    try:
      import tensorboardX  # pylint: disable=g-import-not-at-top
    except ImportError:
      print(
          'note: tensorboardX is not installed: no TensorBoard files '
          '(metrics.jsonl has every record; pip install tensorboardX)'
      )
      return
    # The suffix keeps a resume within the same second from reusing (and
    # truncating) the earlier writer's file name.
    self.writer = tensorboardX.SummaryWriter(
        logdir,
        purge_step=purge_step,
        flush_secs=30,
        filename_suffix=f'.{os.getpid()}.{purge_step or 0}',
    )

  def write(self, record):
    """Each numeric field of `record` but step/epoch, at record['step']."""
    if self.writer is None or 'step' not in record:
      return
    for key, value in record.items():
      if key in _NOT_SCALARS or isinstance(value, bool):
        continue
      if isinstance(value, (int, float)) and math.isfinite(value):
        self.writer.add_scalar(tag(key), value, record['step'])

  def flush(self):
    if self.writer is not None:
      self.writer.flush()

  def close(self):
    if self.writer is not None:
      self.writer.close()
      self.writer = None


# ----------------------------------------------------------------------------
# Reading and truncating event files (TFRecord framing of Event protos).


def _records(path):
  """The raw records of a TFRecord file; a record cut short by a kill ends
  the file."""
  with open(path, 'rb') as f:
    raw = f.read()
  pos, out = 0, []
  while pos + 12 <= len(raw):
    (length,) = struct.unpack('<Q', raw[pos : pos + 8])
    end = pos + 12 + length + 4
    if end > len(raw):
      break
    out.append(raw[pos + 12 : pos + 12 + length])
    pos = end
  return out


def _framed(data):
  from tensorboardX.record_writer import masked_crc32c  # pylint: disable=g-import-not-at-top

  header = struct.pack('<Q', len(data))
  return (
      header
      + struct.pack('<I', masked_crc32c(header))
      + data
      + struct.pack('<I', masked_crc32c(data))
  )


def event_files(logdir):
  """Event files of `logdir` in creation order (their names start with the
  creation time in seconds; the writer's suffix breaks ties)."""
  paths = glob.glob(os.path.join(logdir, 'events.out.tfevents.*'))

  def key(path):
    parts = os.path.basename(path).split('.')
    created = int(parts[3]) if parts[3].isdigit() else 0
    purge = int(parts[-1]) if parts[-1].isdigit() else 0
    return created, purge, path

  return sorted(paths, key=key)


def read_scalars(logdir):
  """[(tag, step, value)] of every scalar in the event files of `logdir`,
  file by file in name (creation time) order."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top

  out = []
  for path in event_files(logdir):
    for data in _records(path):
      event = event_pb2.Event.FromString(data)
      for v in event.summary.value:
        out.append((v.tag, event.step, v.simple_value))
  return out


def truncate_events(logdir, step):
  """Removes the events past `step` from the event files of `logdir` (a
  resume from the checkpoint at `step` writes them again); each changed
  file is rewritten atomically. Returns the number of events removed."""
  try:
    from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  except ImportError:
    return 0
  removed = 0
  for path in event_files(logdir):
    records = _records(path)
    keep = [r for r in records if event_pb2.Event.FromString(r).step <= step]
    if len(keep) == len(records) and os.path.getsize(path) == sum(
        len(r) + 16 for r in records
    ):
      continue
    removed += len(records) - len(keep)
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
      f.write(b''.join(_framed(r) for r in keep))
    os.replace(tmp, path)
  return removed
