"""Run integrity (issue 12): a fault injected into a copy of a finished run
never damages it, and every failure is one true line.

In-process through jaxadv.cli.run (what main.py calls) on the tiny MNIST:
one finished 2-epoch cnn5 run (checkpoints at steps 8 and 16) is trained once
per module and copied into each test's tmp_path. Items 7, 8, 9, 11 and 14 and
the workdir helpers are tested in test_first_contact.py and test_rundir.py.
"""

import collections
import contextlib
import errno
import io
import json
import logging
import os
import shutil
import signal
import sys

import pytest

from conftest import make_tiny_mnist, tiny_config
from jaxadv import checkpoint as ckpt_lib
from jaxadv import cli
from jaxadv import data
from jaxadv import evaluation as evaluate
from jaxadv import rundir
from jaxadv import runs
from jaxadv import tb_events
from jaxadv.errors import ConfigError

ATTACK = 'fgsm(eps=0.1)'


def _config(data_dir, **overrides):
  base = {
      'model.name': 'cnn5',
      'num_epochs': 2,
      'eval.batch_size': 64,
      'eval.num_examples': 64,
  }
  base.update(overrides)
  return tiny_config(data_dir, **base)


def _run(config, workdir, mode='train'):
  """(exit code, stdout, stderr lines) of cli.run."""
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = cli.run(config, str(workdir), mode)
  return code, out.getvalue(), err.getvalue().strip().splitlines()


@pytest.fixture(scope='module')
def finished(tiny_data_dir, tmp_path_factory):
  """A finished run with eval.at_end: (workdir, exit code, stdout, stderr)."""
  workdir = tmp_path_factory.mktemp('finished') / 'run'
  config = _config(
      tiny_data_dir, **{'eval.at_end': True, 'eval.attacks': (ATTACK,)}
  )
  code, out, err = _run(config, workdir)
  assert code == 0, err
  assert _steps(workdir) == [8, 16]
  return workdir, code, out, err


def _copy(finished_run, tmp_path):
  dst = tmp_path / 'run'
  shutil.copytree(finished_run[0], dst)
  return dst


def _snapshot(workdir):
  """{relative path: bytes} of every file under `workdir`."""
  out = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, workdir)] = f.read()
  return out


def _steps(workdir):
  ckdir = os.path.join(workdir, 'checkpoints')
  return sorted(int(d) for d in os.listdir(ckdir) if d.isdigit())


def _truncate_state(workdir, step):
  """Cuts every data file of checkpoint `step`'s state in half."""
  state = os.path.join(workdir, 'checkpoints', str(step), 'state')
  n = 0
  for root, _, files in os.walk(state):
    if os.path.basename(root) == 'd':
      for name in files:
        path = os.path.join(root, name)
        with open(path, 'rb') as f:
          raw = f.read()
        with open(path, 'wb') as f:
          f.write(raw[: len(raw) // 2])
        n += 1
  assert n


def _remove_meta(workdir, step):
  shutil.rmtree(os.path.join(workdir, 'checkpoints', str(step), 'meta'))


DAMAGE = {'state truncated': _truncate_state, 'meta removed': _remove_meta}


def _metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]  # every line parses


def _assert_metrics_unique(workdir, last_step):
  records = _metrics(workdir)
  logged = [r['step'] for r in records if 'loss' in r]
  assert logged == list(range(2, last_step + 1, 2)), logged
  evals = [r['step'] for r in records if 'test_accuracy' in r]
  assert evals == sorted(set(evals)) and evals[-1] == last_step, evals
  # TensorBoard agrees: each step once per tag, the same steps as the jsonl.
  scalars = tb_events.read_scalars(os.path.join(workdir, 'tensorboard'))
  steps = collections.defaultdict(list)
  for tag, step, _ in scalars:
    steps[tag].append(step)
  assert steps['train/loss'] == logged, steps['train/loss']
  assert steps['test/accuracy'] == evals, steps['test/accuracy']
  by_step = {r['step']: r['loss'] for r in records if 'loss' in r}
  for tag, step, value in scalars:
    if tag == 'train/loss':
      assert value == pytest.approx(by_step[step], rel=1e-6)


def _table_row(text, name):
  """The cells of the markdown row whose first cell is `name`."""
  for line in text.splitlines():
    cells = [c.strip() for c in line.strip().strip('|').split('|')]
    if cells and cells[0] == name:
      return cells
  raise AssertionError(f'no row {name!r} in\n{text}')


# ----------------------------------------------------------------------------
# 1. A rerun with a different config.


def test_a_different_model_is_refused_and_the_run_is_untouched(
    finished, tiny_data_dir, tmp_path
):
  run = _copy(finished, tmp_path)
  before = _snapshot(run)
  code, out, err = _run(
      _config(tiny_data_dir, **{'model.name': 'mnist_cnn'}), run
  )
  assert code == 2 and out == ''
  assert len(err) == 1, err
  assert err[0].startswith(
      'error: config.model.name (cnn5 -> mnist_cnn) '
      f'differs from the run in {run}'
  ), err
  assert _snapshot(run) == before  # config.json byte-identical, no history
  # --mode eval on that run still works (it reads the run's own config).
  code, out, err = _run(
      _config(tiny_data_dir, **{'model.name': 'mnist_cnn'}), run, 'eval'
  )
  assert code == 0, err
  assert _table_row(out, 'checkpoint step')[1] == '16'


def test_a_risky_change_continues_with_a_warning_and_a_history(
    finished, tiny_data_dir, tmp_path
):
  run = _copy(finished, tmp_path)
  config_json = (run / 'config.json').read_bytes()
  code, out, err = _run(_config(tiny_data_dir, num_epochs=3), run)
  assert code == 0, err
  assert err == [
      'resumed from step 16 (epoch 2) in ' + str(run),
      f'warning: config.num_epochs (2 -> 3) differs from the run in {run}; '
      'continuing (recorded in config_history.jsonl)',
  ], err
  assert (run / 'config.json').read_bytes() == config_json
  history = [
      json.loads(l)
      for l in (run / 'config_history.jsonl').read_text().splitlines()
  ]
  assert len(history) == 1
  assert history[0]['resumed_from_step'] == 16
  assert history[0]['changed']['num_epochs'] == [2, 3]
  assert _table_row(out, 'steps')[1] == '24'
  _assert_metrics_unique(run, 24)


# ----------------------------------------------------------------------------
# 2. A damaged newest checkpoint.


def test_train_falls_back_past_a_truncated_checkpoint(
    finished, tiny_data_dir, tmp_path
):
  run = _copy(finished, tmp_path)
  _truncate_state(run, 16)
  code, out, err = _run(_config(tiny_data_dir), run)
  assert code == 0, err
  assert len(err) == 2, err
  assert err[0].startswith(
      f'warning: checkpoint {run}/checkpoints/16 does '
      'not restore (OUT_OF_RANGE: '
  ), err[0]
  assert err[0].endswith(
      f'moved to {run}/checkpoints_damaged/16, trying the ' 'previous one'
  ), err[0]
  assert err[1] == f'resumed from step 8 (epoch 1) in {run}'
  assert os.path.isdir(run / 'checkpoints_damaged' / '16')
  assert _steps(run) == [8, 16]  # 16 trained again from 8
  assert _table_row(out, 'status')[1] == 'completed'
  history = json.loads((run / 'config_history.jsonl').read_text())
  assert history['resumed_from_step'] == 8  # the step restored
  _assert_metrics_unique(run, 16)


@pytest.mark.parametrize('damage', sorted(DAMAGE))
def test_eval_falls_back_past_a_damaged_checkpoint(
    finished, tiny_data_dir, tmp_path, damage
):
  run = _copy(finished, tmp_path)
  DAMAGE[damage](run, 16)
  code, out, err = _run(_config(tiny_data_dir), run, 'eval')
  assert code == 0, err
  assert len(err) == 1, err  # no tracebacks of orbax's background threads
  assert err[0].startswith(
      f'warning: checkpoint {run}/checkpoints/16 does ' 'not restore ('
  ), err
  assert err[0].endswith('trying the previous one')
  assert _table_row(out, 'checkpoint step')[1] == '8'


@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_no_checkpoint_restores_is_exit_2(
    finished, tiny_data_dir, tmp_path, mode
):
  run = _copy(finished, tmp_path)
  _truncate_state(run, 16)
  _remove_meta(run, 8)
  code, out, err = _run(_config(tiny_data_dir), run, mode)
  assert code == 2 and out == ''
  assert [l[: len('warning: checkpoint')] for l in err[:-1]] == [
      'warning: checkpoint'
  ] * 2, err
  assert err[-1].startswith(
      f'error: no checkpoint in {run}/checkpoints ' 'restores'
  ), err


def test_short_reason_names_the_innermost_status():
  inner = ValueError(
      'OUT_OF_RANGE: Error reading "a/0" in OCDBT database at local file '
      '"/r/": Requested byte range [0, 9) is not valid for value of size 4 '
      "[source locations='x.cc:1'] [tensorstore_spec='{}']"
  )
  try:
    try:
      raise inner
    except ValueError as e:
      raise Exception(
          'Encountered error while reading array index: '
          '(slice(0, 3, 1),). See full TensorStore details'
      ) from e
  except Exception as e:  # pylint: disable=broad-except
    outer = e
  assert ckpt_lib.short_reason(outer) == (
      'OUT_OF_RANGE: Requested byte range [0, 9) is not valid for value of '
      'size 4'
  )
  assert ckpt_lib.short_reason(KeyError('x')) == "KeyError: 'x'"


# ----------------------------------------------------------------------------
# 3. --mode eval: writability first, the table before any file, reports kept.


def test_eval_on_a_read_only_run_fails_before_any_attack(
    finished, tiny_data_dir, tmp_path, monkeypatch
):
  run = _copy(finished, tmp_path)
  before = _snapshot(run)
  probe = rundir._writable_dir  # pylint: disable=protected-access
  monkeypatch.setattr(
      rundir,
      '_writable_dir',
      lambda folder: (
          'read-only file system'
          if os.path.samefile(folder, run)
          else probe(folder)
      ),
  )

  def no_compute(*args, **kwargs):
    raise AssertionError('compute started on a read-only workdir')

  monkeypatch.setattr(runs, 'load_run', no_compute)
  monkeypatch.setattr(evaluate, 'run_attacks', no_compute)
  code, out, err = _run(
      _config(tiny_data_dir, **{'eval.attacks': (ATTACK,)}), run, 'eval'
  )
  assert code == 2 and out == ''
  assert len(err) == 1 and err[0].startswith(
      f'error: --workdir {run} is not writable (read-only file system) and '
      '--mode eval writes its reports there'
  ), err
  assert _snapshot(run) == before


def test_eval_prints_the_table_before_writing(
    finished, tiny_data_dir, tmp_path, monkeypatch
):
  run = _copy(finished, tmp_path)

  def disk_full(path, text):
    raise ConfigError(f'no space left on device (ENOSPC) writing {path}')

  monkeypatch.setattr(rundir, 'write_atomic', disk_full)
  code, out, err = _run(
      _config(tiny_data_dir, **{'eval.attacks': (ATTACK,)}), run, 'eval'
  )
  assert code == 2
  assert len(err) == 1 and err[0].startswith(
      f'error: no space left on device (ENOSPC) writing {run}/eval-'
  ), err
  assert out.index('clean test accuracy') < out.index(ATTACK)
  assert '%' in _table_row(out, ATTACK)[-1] and 'wrote' not in out


def test_eval_reports_are_named_by_settings_and_kept(
    finished, tiny_data_dir, tmp_path
):
  run = _copy(finished, tmp_path)
  eval_json = (run / 'eval.json').read_bytes()  # the training's report
  written = []
  for attacks in ((ATTACK,), (ATTACK, 'fgsm(eps=0.2)'), (ATTACK,)):
    code, out, err = _run(
        _config(tiny_data_dir, **{'eval.attacks': attacks}), run, 'eval'
    )
    assert code == 0 and err == [], err
    paths = [
        l[len('wrote ') :] for l in out.splitlines() if l.startswith('wrote ')
    ]
    assert len(paths) == 2 and all(os.path.isfile(p) for p in paths), out
    assert out.index('| ' + ATTACK) < out.index('wrote ')
    written.append(paths)
  first, second, again = written
  assert first != second and first == again  # other settings: other files
  assert [os.path.basename(p) for p in first] == [
      os.path.basename(first[0])[: -len('.json')] + ext
      for ext in ('.json', '.md')
  ]
  records = json.load(open(second[0]))['records']
  assert [r['name'] for r in records] == [ATTACK, 'fgsm(eps=0.2)']
  assert (run / 'eval.json').read_bytes() == eval_json


# ----------------------------------------------------------------------------
# 4. Disk full during a checkpoint save.


def test_disk_full_during_a_save_is_one_line_and_keeps_the_last_checkpoint(
    finished, tiny_data_dir, tmp_path, monkeypatch
):
  run = _copy(finished, tmp_path)

  def full(self, step, state, meta=None, force=True):
    partial = os.path.join(
        self.directory, f'{step}.orbax-checkpoint-tmp-1234567'
    )
    os.makedirs(os.path.join(partial, 'state'))
    with open(os.path.join(partial, 'state', 'manifest.ocdbt'), 'wb') as f:
      f.write(b'\0' * 100)
    raise OSError(errno.ENOSPC, 'No space left on device')

  monkeypatch.setattr(ckpt_lib.Checkpointer, 'save', full)
  code, out, err = _run(_config(tiny_data_dir, num_epochs=3), run)
  assert code == 2 and out == ''
  notes = ('resumed from step 16', 'warning: config.num_epochs')
  errors = [l for l in err if not l.startswith(notes)]
  assert errors == [
      f'error: no space left on device (ENOSPC) writing {run}: free some '
      'space, then rerun the same command (it resumes from the last '
      'checkpoint)'
  ], err
  assert sorted(os.listdir(run / 'checkpoints')) == ['16', '8']
  monkeypatch.undo()
  ckpt = ckpt_lib.Checkpointer(str(run / 'checkpoints'))
  try:
    assert ckpt.latest_step() == 16 and ckpt.read_meta()['batches_done'] == 16
  finally:
    ckpt.close()


def test_orbax_background_errors_and_closed_loop_callbacks_are_quiet():
  # What made a real ENOSPC print hundreds of lines before the one that
  # matters: orbax's background threads log the error with a traceback
  # (then raise it in the main thread), tensorstore calls back into a
  # closed asyncio loop.
  ckpt_lib._quiet_background_noise()  # pylint: disable=protected-access
  absl_logger = logging.getLogger('absl')

  def record(pathname, level):
    return logging.LogRecord('absl', level, pathname, 1, 'msg', (), None)

  orbax_file = os.path.join('site-packages', 'orbax', 'checkpoint', 'f.py')
  assert not absl_logger.filter(record(orbax_file, logging.ERROR))
  assert absl_logger.filter(record(orbax_file, logging.WARNING))
  assert absl_logger.filter(record('/work/jaxadv/train.py', logging.ERROR))

  seen = []
  hook = sys.unraisablehook
  try:
    sys.unraisablehook = lambda info: seen.append(info.exc_value)
    ckpt_lib._quiet_background_noise()  # pylint: disable=protected-access

    class Info:
      exc_value = RuntimeError('Event loop is closed')

    sys.unraisablehook(Info)
    Info.exc_value = RuntimeError('something else')
    sys.unraisablehook(Info)
  finally:
    sys.unraisablehook = hook
  assert [str(e) for e in seen] == ['something else']


# ----------------------------------------------------------------------------
# 5. A kill during a save, then a rerun: no metrics record twice.


def test_no_duplicate_metrics_after_a_kill_during_a_save(
    finished, tiny_data_dir, tmp_path
):
  run = _copy(finished, tmp_path)
  # Killed while saving step 16: its records are logged, its checkpoint is
  # a partial orbax folder, the last line of metrics.jsonl is cut short.
  ckdir = run / 'checkpoints'
  os.replace(ckdir / '16', ckdir / '16.orbax-checkpoint-tmp-1234567')
  with open(run / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 18, "epoch": 2.25, "acc')
  code, _, err = _run(_config(tiny_data_dir), run)
  assert code == 0, err
  assert err == [f'resumed from step 8 (epoch 1) in {run}'], err
  _assert_metrics_unique(run, 16)
  assert sorted(os.listdir(ckdir)) == ['16', '8']  # the partial save removed


# ----------------------------------------------------------------------------
# 6. Two Ctrl-C: the message says what is on disk.


def test_two_ctrl_c_before_any_save_say_nothing_was_saved(
    tiny_data_dir, tmp_path, monkeypatch
):
  real_chunks = data.train_chunks

  def chunks_then_two_sigint(*args, **kwargs):
    for chunk in real_chunks(*args, **kwargs):
      os.kill(os.getpid(), signal.SIGINT)
      os.kill(os.getpid(), signal.SIGINT)  # 'a second Ctrl-C exits at once'
      yield chunk

  monkeypatch.setattr(data, 'train_chunks', chunks_then_two_sigint)
  run = tmp_path / 'run'
  code, out, err = _run(_config(tiny_data_dir), run)
  assert code == cli.EXIT_INTERRUPTED and out == ''
  assert err == [
      'interrupted before anything was saved: no checkpoint in '
      f'{run}; rerun the same command to start again'
  ], err
  assert _steps(run) == []


def test_interrupted_message_tells_what_is_on_disk(finished, tmp_path):
  nothing = 'interrupted before anything was saved'
  assert cli._interrupted_message(str(tmp_path / 'nope')).startswith(nothing)
  empty = tmp_path / 'empty'
  (empty / 'checkpoints' / '8.orbax-checkpoint-tmp-1').mkdir(parents=True)
  assert cli._interrupted_message(str(empty)).startswith(nothing)
  run = _copy(finished, tmp_path)
  assert cli._interrupted_message(str(run)) == (
      f'interrupted; the newest checkpoint ({run}/checkpoints/16) is kept: '
      'rerun the same command to resume, or --mode eval'
  )


# ----------------------------------------------------------------------------
# 10. Nothing is created until the inputs are known good.


def test_a_run_whose_data_fails_to_load_creates_nothing(finished, tmp_path):
  bad = make_tiny_mnist(str(tmp_path / 'data'), n_train=40, n_test=20)
  path = os.path.join(bad, 'mnist', 'train-images-idx3-ubyte.gz')
  with open(path, 'r+b') as f:
    f.truncate(100)
  fresh = tmp_path / 'fresh'
  code, out, err = _run(_config(bad), fresh)
  assert code == 2 and out == ''
  assert len(err) == 1 and err[0].startswith(f'error: {path} is damaged')
  assert not fresh.exists()
  run = _copy(finished, tmp_path)  # a rerun of a finished run: untouched
  before = _snapshot(run)
  code, _, err = _run(_config(bad), run)
  assert code == 2 and len(err) == 1, err
  assert _snapshot(run) == before


# ----------------------------------------------------------------------------
# 12. and 13. What a user reads.


def test_rerunning_a_finished_run_evaluates_only_without_nan(
    finished, tiny_data_dir, tmp_path
):
  run = _copy(finished, tmp_path)
  metrics = (run / 'metrics.jsonl').read_bytes()
  code, out, err = _run(
      _config(
          tiny_data_dir, **{'eval.at_end': True, 'eval.attacks': (ATTACK,)}
      ),
      run,
  )
  assert code == 0, err
  assert err == [f'already complete at step 16 in {run}: evaluating only']
  assert 'nan' not in out.lower(), out
  assert _table_row(out, 'train images/s')[1] == '-'
  assert _table_row(out, 'status')[1] == 'completed'
  assert (run / 'metrics.jsonl').read_bytes() == metrics
  assert _steps(run) == [8, 16]


def test_end_of_run_table_in_percent_with_example_counts(finished):
  _, _, out, err = finished
  assert err == []  # a fresh run says nothing about resuming
  assert _table_row(out, 'epochs')[1] == '2'
  assert _table_row(out, 'steps')[1] == '16'
  clean = _table_row(out, 'clean test accuracy')
  assert clean[1].endswith('%') and clean[2] == '200', clean
  robust = _table_row(out, ATTACK)
  assert robust[1].endswith('%') and robust[2] == '64', robust
  assert 'nan' not in out.lower()
  table = [l for l in out.splitlines() if l.startswith('|')]
  assert len({len(l) for l in table}) == 1, table  # columns aligned
  assert len(_table_row(out, 'wall time (s)')[1].split('.')[-1]) == 1


def test_eval_table_in_percent_with_example_counts(
    finished, tiny_data_dir, tmp_path
):
  run = _copy(finished, tmp_path)
  code, out, err = _run(
      _config(tiny_data_dir, **{'eval.attacks': (ATTACK,)}), run, 'eval'
  )
  assert code == 0, err
  clean = _table_row(out, 'clean test accuracy')
  assert clean[1].endswith('%') and clean[2] == '200', clean
  header = _table_row(out, 'name')
  robust = dict(zip(header, _table_row(out, ATTACK)))
  assert robust['num_examples'] == '64' and robust['accuracy'].endswith('%')
