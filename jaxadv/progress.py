"""Terminal progress bar and the metrics.jsonl writer."""

import json
import os
import sys
import time


class Progress:
  """One-line progress bar (steps/s, loss, ETA) on a terminal, plain log lines
  elsewhere."""

  def __init__(self, total_steps, start_step=0, enabled=True, stream=None):
    self.total, self.start = total_steps, start_step
    self.stream = stream or sys.stderr
    self.tty = (
        enabled and hasattr(self.stream, 'isatty') and self.stream.isatty()
    )
    self.enabled = enabled
    self.t0 = time.time()

  def update(self, step, metrics):
    if not self.enabled:
      return
    done = step - self.start
    elapsed = max(time.time() - self.t0, 1e-9)
    rate = done / elapsed
    eta = (self.total - step) / rate if rate > 0 else float('nan')
    frac = step / max(self.total, 1)
    shown = ' '.join(
        f'{k} {v:.4f}'
        for k, v in metrics.items()
        if k in ('loss', 'accuracy', 'adv_accuracy')
    )
    text = f'{step}/{self.total} {rate:.2f} steps/s {shown} ' f'ETA {_hms(eta)}'
    if self.tty:
      bar = '#' * int(30 * frac)
      self.stream.write(f'\r[{bar:<30}] {text}\033[K')
    else:
      self.stream.write(text + '\n')
    self.stream.flush()

  def close(self):
    if self.tty:
      self.stream.write('\n')
      self.stream.flush()


def _hms(seconds):
  if seconds != seconds or seconds == float('inf'):
    return '?'
  seconds = int(seconds)
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


class JsonlWriter:
  """Appends one JSON record per line (process 0 only), and hands each
  record to `events` (a tb_events.EventWriter) when one is set."""

  def __init__(self, path, enabled=True, events=None):
    self.path, self.enabled, self.events = path, enabled, events
    if enabled:
      os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

  def write(self, record):
    if self.enabled:
      with open(self.path, 'a') as f:
        f.write(json.dumps(record) + '\n')
    if self.events is not None:
      self.events.write(record)

  def close(self):
    if self.events is not None:
      self.events.close()
