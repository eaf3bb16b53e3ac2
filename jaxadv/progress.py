"""Training progress (tqdm on a terminal, log lines elsewhere) and the
metrics.jsonl writer."""

import json
import os
import sys
import time

SHOWN = ('loss', 'accuracy', 'adv_accuracy')


class Progress:
  """The training progress: a tqdm bar on a terminal (steps, steps/s, ETA,
  loss and accuracies), plain log lines elsewhere (a log file, CI).

  tqdm (a well-kept progress bar) draws the terminal bar. Rates and the ETA
  count from the first update, not from the start: the first call of a run
  compiles, and counting it would make the early ETA far too long.
  """

  def __init__(self, total_steps, start_step=0, enabled=True, stream=None):
    self.total, self.start = total_steps, start_step
    self.stream = stream or sys.stderr
    self.enabled = enabled
    self.tty = (
        enabled and hasattr(self.stream, 'isatty') and self.stream.isatty()
    )
    self.t0, self.step0, self.bar = None, start_step, None

  def _shown(self, metrics):
    return {k: f'{v:.4f}' for k, v in metrics.items() if k in SHOWN}

  def update(self, step, metrics):
    if not self.enabled:
      return
    now = time.time()
    if self.t0 is None:  # after the compiling call: rates from here
      self.t0, self.step0 = now, step
    if self.tty:
      self._bar_update(step, metrics)
      return
    elapsed = max(now - self.t0, 1e-9)
    rate = (step - self.step0) / elapsed
    eta = (self.total - step) / rate if rate > 0 else float('nan')
    shown = ' '.join(f'{k} {v}' for k, v in self._shown(metrics).items())
    self.stream.write(
        f'{step}/{self.total} {rate:.2f} steps/s {shown} ETA {_hms(eta)}\n'
    )
    self.stream.flush()

  def _bar_update(self, step, metrics):
    if self.bar is None:
      import tqdm  # pylint: disable=g-import-not-at-top

      self.bar = tqdm.tqdm(
          total=self.total,
          initial=step,
          file=self.stream,
          unit='step',
          dynamic_ncols=True,
      )
    else:
      self.bar.update(step - self.bar.n)
    self.bar.set_postfix(self._shown(metrics), refresh=True)

  def close(self):
    if self.bar is not None:
      self.bar.close()
      self.bar = None


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
