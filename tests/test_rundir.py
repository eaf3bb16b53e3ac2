"""Workdir integrity helpers: a rerun never damages a run, every failure is
one line naming the path."""

import errno
import json
import os
import stat
import subprocess
import sys

import pytest

from conftest import REPO
from jaxadv import rundir
from jaxadv.errors import ConfigError


def _one_line(exc_info):
  msg = str(exc_info.value)
  assert '\n' not in msg and msg
  return msg


def _is_root():
  return hasattr(os, 'geteuid') and os.geteuid() == 0


# ----------------------------------------------------------------------------
# check_workdir


def test_module_does_not_import_jax():
  code = (
      'import sys; import jaxadv.rundir; ' 'sys.exit(int("jax" in sys.modules))'
  )
  assert subprocess.run([sys.executable, '-c', code], cwd=REPO).returncode == 0


def test_train_workdir_new_or_existing_passes_and_creates_nothing(tmp_path):
  new = tmp_path / 'a' / 'b'
  assert rundir.check_workdir(str(new), 'train') == str(new)
  assert not (tmp_path / 'a').exists()
  assert rundir.check_workdir(str(tmp_path), 'train') == str(tmp_path)
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_workdir_that_is_a_file(tmp_path, mode):
  f = tmp_path / 'f'
  f.write_text('x')
  with pytest.raises(ConfigError) as e:
    rundir.check_workdir(str(f), mode)
  assert 'is a file' in _one_line(e) and str(f) in str(e.value)
  with pytest.raises(ConfigError) as e:
    rundir.check_workdir(str(f / 'sub' / 'run'), mode)
  assert f'lies under {f}, which is a file' in _one_line(e)
  assert f.read_text() == 'x'


@pytest.mark.skipif(_is_root(), reason='root writes anywhere')
def test_workdir_not_writable(tmp_path):
  ro = tmp_path / 'ro'
  ro.mkdir()
  ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
  try:
    with pytest.raises(ConfigError) as e:
      rundir.check_workdir(str(ro / 'run'), 'train')
    assert 'not writable' in _one_line(e) and str(ro) in str(e.value)
    with pytest.raises(ConfigError) as e:
      rundir.check_workdir(str(ro), 'train')
    assert 'permission denied' in _one_line(e)
    assert os.listdir(ro) == []
  finally:
    ro.chmod(stat.S_IRWXU)


def test_write_test_catches_what_os_access_misses(tmp_path, monkeypatch):
  def refuse(*args, **kwargs):
    raise OSError(errno.EROFS, 'Read-only file system')

  monkeypatch.setattr(rundir.tempfile, 'mkstemp', refuse)
  with pytest.raises(ConfigError) as e:
    rundir.check_workdir(str(tmp_path / 'run'), 'train')
  assert 'read-only file system' in _one_line(e)


def test_eval_needs_an_existing_run_and_creates_nothing(tmp_path):
  missing = tmp_path / 'nope'
  with pytest.raises(ConfigError) as e:
    rundir.check_workdir(str(missing), 'eval')
  assert _one_line(e).startswith(f'no run in {missing}')
  assert not missing.exists()
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(ConfigError) as e:
    rundir.check_workdir(str(empty), 'eval')
  assert _one_line(e).startswith(f'no run in {empty}')
  assert os.listdir(empty) == []
  (empty / 'config.json').write_text('{}')
  assert rundir.check_workdir(str(empty), 'eval') == str(empty)
  os.remove(empty / 'config.json')
  (empty / 'checkpoints').mkdir()
  assert rundir.check_workdir(str(empty), 'eval') == str(empty)


@pytest.mark.skipif(_is_root(), reason='root writes anywhere')
def test_eval_on_a_read_only_run_fails_before_any_compute(tmp_path):
  run = tmp_path / 'run'
  (run / 'checkpoints').mkdir(parents=True)
  run.chmod(stat.S_IRUSR | stat.S_IXUSR)
  try:
    with pytest.raises(ConfigError) as e:
      rundir.check_workdir(str(run), 'eval')
    msg = _one_line(e)
    assert 'not writable' in msg and 'reports' in msg and 'copy' in msg
  finally:
    run.chmod(stat.S_IRWXU)


def test_bad_mode_and_empty_path():
  with pytest.raises(ConfigError):
    rundir.check_workdir('x', 'sweep')
  with pytest.raises(ConfigError):
    rundir.check_workdir('', 'train')


# ----------------------------------------------------------------------------
# compare_configs / record_config


def _config(**changes):
  c = {
      'seed': 0,
      'num_epochs': 2,
      'batch_size': 128,
      'progress': True,
      'dtype': 'float32',
      'log_every': 100,
      'data': {'name': 'mnist', 'data_dir': '', 'num_train_examples': 0},
      'model': {
          'name': 'cnn5',
          'activation': 'relu',
          'dual_bn': False,
          'kwargs': {},
      },
      'method': {'name': 'pgd', 'eps': 0.3, 'steps': 7},
      'optim': {
          'name': 'sgd',
          'lr': 0.1,
          'momentum': 0.9,
          'grad_clip': 0.0,
          'boundaries': [0.5, 0.75],
      },
      'eval': {'attacks': ['fgsm(eps=0.1)'], 'num_examples': 0},
  }
  for key, value in changes.items():
    node = c
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def test_identical_configs_and_tuples_equal_lists():
  new = _config(
      **{'optim.boundaries': (0.5, 0.75), 'eval.attacks': ('fgsm(eps=0.1)',)}
  )
  assert rundir.compare_configs(_config(), new) == ([], [])
  assert rundir.config_changes(_config(), new) == {}


@pytest.mark.parametrize(
    'key,value',
    [
        ('model.name', 'mnist_cnn'),
        ('model.activation', 'gelu'),
        ('model.dual_bn', True),
        ('model.kwargs.width', 4),
        ('data.name', 'cifar10'),
        ('method.name', 'free'),
        ('optim.name', 'adam'),
        ('optim.grad_clip', 1.0),
        ('optim.momentum', 0.0),
    ],
)
def test_fatal_changes(key, value):
  fatal, risky = rundir.compare_configs(_config(), _config(**{key: value}))
  assert fatal == [key] and risky == []


@pytest.mark.parametrize(
    'key,value',
    [
        ('num_epochs', 4),
        ('batch_size', 64),
        ('optim.lr', 0.2),
        ('optim.momentum', 0.5),
        ('seed', 1),
        ('dtype', 'bfloat16'),
        ('data.num_train_examples', 100),
        ('method.eps', 0.1),
    ],
)
def test_risky_changes(key, value):
  fatal, risky = rundir.compare_configs(_config(), _config(**{key: value}))
  assert fatal == [] and risky == [key]


def test_parameter_groups():
  saved = _config(
      **{
          'optim.groups': {
              'bn': {
                  'pattern': 'BatchNorm',
                  'weight_decay': 0.0,
                  'lr_scale': 1.0,
              }
          }
      }
  )
  for key, value, fatal in (
      ('pattern', 'bias', True),
      ('frozen', True, True),
      ('lr_scale', 0.5, False),
      ('weight_decay', 1e-4, False),
  ):
    new = _config(
        **{
            'optim.groups': {
                'bn': {**saved['optim']['groups']['bn'], key: value}
            }
        }
    )
    expected = [f'optim.groups.bn.{key}']
    assert rundir.compare_configs(saved, new) == (
        (expected, []) if fatal else ([], expected)
    )
  fatal, _ = rundir.compare_configs(saved, _config())  # group removed
  assert fatal == ['optim.groups.bn.pattern']


def test_grad_clip_is_fatal_only_when_switched_on_or_off():
  clip1, clip2 = _config(**{'optim.grad_clip': 1.0}), _config(
      **{'optim.grad_clip': 2.0}
  )
  assert rundir.compare_configs(clip1, clip2) == ([], ['optim.grad_clip'])
  assert rundir.compare_configs(clip1, _config()) == (['optim.grad_clip'], [])


@pytest.mark.parametrize(
    'key,value',
    [
        ('progress', False),
        ('log_every', 5),
        ('eval.num_examples', 100),
        ('eval.attacks', ['pgd(eps=0.3)']),
        ('data.data_dir', '/elsewhere'),
    ],
)
def test_ignored_changes(key, value):
  assert rundir.compare_configs(_config(), _config(**{key: value})) == ([], [])


def test_lists_are_sorted_and_extra_fatal_and_absent_keys():
  new = _config(
      **{
          'seed': 3,
          'num_epochs': 9,
          'model.name': 'x',
          'data.name': 'y',
          'method.replays': 4,
      }
  )
  fatal, risky = rundir.compare_configs(_config(), new)
  assert fatal == ['data.name', 'model.name']
  assert risky == ['method.replays', 'num_epochs', 'seed']
  fatal, risky = rundir.compare_configs(
      _config(), new, extra_fatal=('num_epochs',)
  )
  assert fatal == ['data.name', 'model.name', 'num_epochs']
  assert rundir.config_changes(_config(), new)['method.replays'] == (
      '(absent)',
      4,
  )


def test_first_run_writes_config_json(tmp_path):
  assert rundir.record_config(str(tmp_path), _config()) == {}
  assert json.loads((tmp_path / 'config.json').read_text()) == _config()
  assert not (tmp_path / 'config_history.jsonl').exists()


def test_fatal_change_leaves_the_run_byte_identical(tmp_path):
  rundir.record_config(str(tmp_path), _config())
  before = {p: (tmp_path / p).read_bytes() for p in os.listdir(tmp_path)}
  with pytest.raises(ConfigError) as e:
    rundir.record_config(
        str(tmp_path),
        _config(**{'model.name': 'mnist_cnn', 'num_epochs': 5}),
        resumed_from_step=40,
    )
  msg = _one_line(e)
  assert msg.startswith(
      'config.model.name (cnn5 -> mnist_cnn) differs from '
      f'the run in {tmp_path}'
  )
  assert 'cannot be restored' in msg and 'new --workdir' in msg
  assert 'num_epochs' not in msg
  after = {p: (tmp_path / p).read_bytes() for p in os.listdir(tmp_path)}
  assert after == before


def test_resume_appends_history_and_returns_risky(tmp_path):
  rundir.record_config(str(tmp_path), _config())
  original = (tmp_path / 'config.json').read_bytes()
  risky = rundir.record_config(
      str(tmp_path), _config(num_epochs=4, progress=False), resumed_from_step=40
  )
  assert risky == {'num_epochs': (2, 4)}
  warning = rundir.risky_warning(str(tmp_path), risky)
  assert '\n' not in warning
  assert warning.startswith('config.num_epochs (2 -> 4) differs from the run')
  rundir.record_config(str(tmp_path), _config(), resumed_from_step=80)
  assert (tmp_path / 'config.json').read_bytes() == original
  lines = (tmp_path / 'config_history.jsonl').read_text().splitlines()
  first, second = [json.loads(line) for line in lines]
  assert first['resumed_from_step'] == 40 and 'time' in first
  assert first['changed'] == {'num_epochs': [2, 4], 'progress': [True, False]}
  assert second == {**second, 'resumed_from_step': 80, 'changed': {}}


def test_write_false_checks_only(tmp_path):
  rundir.record_config(str(tmp_path), _config(), write=False)
  assert os.listdir(tmp_path) == []
  rundir.record_config(str(tmp_path), _config())
  rundir.record_config(str(tmp_path), _config(seed=2), write=False)
  assert sorted(os.listdir(tmp_path)) == ['config.json']
  with pytest.raises(ConfigError):
    rundir.record_config(
        str(tmp_path), _config(**{'data.name': 'c'}), write=False
    )


def test_damaged_config_json_is_one_line(tmp_path):
  (tmp_path / 'config.json').write_text('{"seed": ')
  with pytest.raises(ConfigError) as e:
    rundir.record_config(str(tmp_path), _config())
  assert 'config.json is damaged' in _one_line(e)


# ----------------------------------------------------------------------------
# truncate_metrics


def _metrics(path, steps, tail=b''):
  with open(path, 'wb') as f:
    for s in steps:
      f.write(json.dumps({'step': s, 'loss': 1.0 / (s + 1)}).encode() + b'\n')
    f.write(tail)


def test_truncate_metrics_drops_records_after_the_step(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  _metrics(path, [10, 20, 30, 40, 40, 50])
  with open(path, 'ab') as f:
    f.write(b'{"note": "no step"}\n')
  assert rundir.truncate_metrics(str(path), 30) == 3
  records = [json.loads(l) for l in path.read_text().splitlines()]
  assert [r.get('step') for r in records] == [10, 20, 30, None]
  assert rundir.truncate_metrics(str(path), 30) == 0
  assert not [p for p in os.listdir(tmp_path) if p != 'metrics.jsonl']


def test_truncate_metrics_tolerates_a_cut_last_line(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  _metrics(path, [10, 20], tail=b'{"step": 30, "lo')
  assert rundir.truncate_metrics(str(path), 20) == 1
  assert path.read_text().endswith('\n')
  assert [json.loads(l)['step'] for l in path.read_text().splitlines()] == [
      10,
      20,
  ]


def test_truncate_metrics_then_resume_never_duplicates(tmp_path):
  """A kill between the log at step 40 and its checkpoint: the rerun
  restores step 30 and logs 40 again; 40 appears once."""
  path = tmp_path / 'metrics.jsonl'
  _metrics(path, [10, 20, 30, 40])
  rundir.truncate_metrics(str(path), 30)
  with open(path, 'a') as f:
    f.write(json.dumps({'step': 40}) + '\n')
  steps = [json.loads(l)['step'] for l in path.read_text().splitlines()]
  assert steps == [10, 20, 30, 40]


def test_truncate_missing_file(tmp_path):
  assert rundir.truncate_metrics(str(tmp_path / 'nope.jsonl'), 5) == 0


# ----------------------------------------------------------------------------
# report_name, write_atomic, disk errors


def test_report_name_is_stable_and_distinct():
  a = rundir.report_name(['fgsm(eps=0.1)', 'pgd(eps=0.1)'], 100, 0)
  assert a == rundir.report_name(('fgsm(eps=0.1)', 'pgd(eps=0.1)'), 100, 0)
  assert a.startswith('eval-') and len(a) == len('eval-') + 8
  others = {
      rundir.report_name(['pgd(eps=0.1)', 'fgsm(eps=0.1)'], 100, 0),
      rundir.report_name(['fgsm(eps=0.1)', 'pgd(eps=0.1)'], 0, 0),
      rundir.report_name(['fgsm(eps=0.1)', 'pgd(eps=0.1)'], 100, 1),
      rundir.report_name(
          ['fgsm(eps=0.1)', 'pgd(eps=0.1)'], 100, 0, dtype='bfloat16'
      ),
      rundir.report_name(['fgsm(eps=0.1),pgd(eps=0.1)'], 100, 0),
  }
  assert a not in others and len(others) == 5
  # The name may be pinned in earlier runs' files: it must never change.
  assert (
      rundir.report_name([], 0, 0)
      == 'eval-'
      + __import__('hashlib')
      .sha1(b'{"attacks": [], "num_examples": 0, "seed": 0}')
      .hexdigest()[:8]
  )


def test_write_atomic_replaces_whole_and_leaves_no_temp(tmp_path):
  path = tmp_path / 'eval.json'
  rundir.write_atomic(str(path), 'old')
  rundir.write_atomic(str(path), b'new\n')
  assert path.read_bytes() == b'new\n'
  assert os.listdir(tmp_path) == ['eval.json']


def test_write_atomic_full_disk_is_one_line_and_keeps_the_old_file(
    tmp_path, monkeypatch
):
  path = tmp_path / 'eval.json'
  rundir.write_atomic(str(path), 'old')

  def full(*args):
    raise OSError(errno.ENOSPC, 'No space left on device')

  monkeypatch.setattr(rundir.os, 'fsync', full)
  with pytest.raises(ConfigError) as e:
    rundir.write_atomic(str(path), 'new')
  msg = _one_line(e)
  assert 'ENOSPC' in msg and str(path) in msg
  assert path.read_text() == 'old'
  assert os.listdir(tmp_path) == ['eval.json']


def test_disk_error_message():
  path = '/runs/x/checkpoints'
  nospace = OSError(errno.ENOSPC, 'No space left on device')
  msg = rundir.disk_error_message(nospace, path)
  assert 'ENOSPC' in msg and path in msg and '\n' not in msg
  try:  # wrapped, as orbax's async save reports it
    try:
      raise nospace
    except OSError as inner:
      raise RuntimeError('save failed') from inner
  except RuntimeError as outer:
    assert 'ENOSPC' in rundir.disk_error_message(outer, path)
  text = ValueError('INTERNAL: write failed: No space left on device [x]')
  assert 'ENOSPC' in rundir.disk_error_message(text, path)
  assert 'EROFS' in rundir.disk_error_message(
      OSError(errno.EROFS, 'Read-only file system'), path
  )
  assert rundir.disk_error_message(OSError(errno.ENOENT, 'gone'), path) is None
  assert rundir.disk_error_message(ValueError('bad'), path) is None


def test_check_free_space(tmp_path):
  free = rundir.check_free_space(str(tmp_path / 'not' / 'yet'), 1)
  assert free > 0
  with pytest.raises(ConfigError) as e:
    rundir.check_free_space(str(tmp_path), free + 2**60)
  assert 'free' in _one_line(e) and str(tmp_path) in str(e.value)


# ----------------------------------------------------------------------------
# List-valued --config overrides


@pytest.mark.parametrize(
    'text,items',
    [
        ('fgsm(eps=0.1),pgd(eps=0.1)', ['fgsm(eps=0.1)', 'pgd(eps=0.1)']),
        (
            'fgsm(eps=0.1), pgd(norm=l2, eps=1, steps=20)',
            ['fgsm(eps=0.1)', 'pgd(norm=l2, eps=1, steps=20)'],
        ),
        ('clean', ['clean']),
        ('', []),
        (' , ,', []),
        ('a(x=[1, 2]),b{c, d},"e, f"', ['a(x=[1, 2])', 'b{c, d}', '"e, f"']),
        ('pgd(eps=0.1, steps=10', ['pgd(eps=0.1, steps=10']),
        ('a),b', ['a)', 'b']),
    ],
)
def test_split_top_level(text, items):
  assert rundir.split_top_level(text) == items


def test_split_list_overrides():
  import ml_collections  # pylint: disable=g-import-not-at-top

  c = ml_collections.ConfigDict(
      {
          'eval': {'attacks': ('fgsm(eps=0.1),pgd(eps=0.1)',), 'other': ('',)},
          'optim': {'boundaries': (0.5, 0.75)},
          'name': 'a,b',
          'ok': ('x', 'y'),
      }
  )
  out = rundir.split_list_overrides(
      c,
      [
          'eval.attacks',
          'eval.other',
          'optim.boundaries',
          'name',
          'ok',
          'missing.key',
      ],
  )
  assert out == {
      'eval.attacks': ('fgsm(eps=0.1)', 'pgd(eps=0.1)'),
      'eval.other': (),
  }
