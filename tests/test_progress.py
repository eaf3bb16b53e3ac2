"""The training progress display: tqdm on a terminal, log lines elsewhere,
rates counted from the first update (the compiling call excluded)."""

import io

from jaxadv import progress


class _Tty(io.StringIO):

  def isatty(self):
    return True


def test_log_lines_when_not_a_terminal(monkeypatch):
  out = io.StringIO()
  clock = iter([110.0, 112.0])
  monkeypatch.setattr(progress.time, 'time', lambda: next(clock))
  p = progress.Progress(10, 0, True, out)  # t0 is not the construction time
  p.update(2, {'loss': 1.0, 'lr': 0.1})  # compiled here: rates start now
  p.update(4, {'loss': 0.5, 'accuracy': 0.25})
  p.close()
  lines = out.getvalue().splitlines()
  assert lines[0].startswith('2/10 0.00 steps/s loss 1.0000 ETA ?')
  # 2 steps in 2 s after the first update: 1 step/s, 6 steps left.
  assert lines[1] == '4/10 1.00 steps/s loss 0.5000 accuracy 0.2500 ETA 0:00:06'
  assert 'lr' not in out.getvalue()


def test_tqdm_bar_on_a_terminal():
  out = _Tty()
  p = progress.Progress(10, 3, True, out)
  p.update(5, {'loss': 1.0})
  p.update(7, {'loss': 0.25})
  p.close()
  text = out.getvalue()
  assert '7/10' in text and 'loss=0.2500' in text and text.endswith('\n')


def test_disabled_writes_nothing():
  out = _Tty()
  p = progress.Progress(10, 0, False, out)
  p.update(5, {'loss': 1.0})
  p.close()
  assert out.getvalue() == ''
