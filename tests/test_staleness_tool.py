"""python -m jaxadv.tools.staleness: every bad argument is one line with exit
code 2 before anything is trained or created; a sweep trains one run per s
in order (train_and_evaluate replaced by a fake here: test_stale.py trains
the method for real) and writes the table, JSON and both figures."""

import json
import os

import pytest

from conftest import REPO
from jaxadv import train
from jaxadv.tools import staleness

CPU_CONFIG = os.path.join(REPO, 'configs', 'mnist_stale_cpu.py')


def _argv(tiny_data_dir, out, *extra):
  return [
      '--config',
      CPU_CONFIG,
      '--out',
      str(out),
      f'--config.data.data_dir={tiny_data_dir}',
      f'--config.data.cache_dir={os.path.join(tiny_data_dir, "cache")}',
      '--config.data.num_train_examples=0',
      '--config.batch_size=64',  # 8 steps an epoch on the 512 tiny images
      '--config.num_epochs=1',
      '--config.log_every=2',
      '--config.method.fresh_every=2',
      *extra,
  ]


@pytest.mark.parametrize(
    'extra, needle',
    [
        (['--staleness', '0,a'], "--staleness='0,a' must be comma-separated"),
        (['--staleness', '1,1'], 'names a value twice'),
        (['--staleness', '0,1', '--curves', '4'], '--curves 4 is not in'),
        (['--staleness', '0,2', '--curves', '2,x'], "--curves='2,x' must be"),
        (['--staleness', '0,8'], '--staleness 8 leaves nothing to train'),
        (['--config.method.stalenes=3'], "has no key 'stalenes'; valid: "),
        (['--config.num_epochs=x'], '--config.num_epochs=x: '),
        (['--config.method.name=pgd'], "the sweep trains method 'stale'"),
        (['--config.eval.attacks=()'], 'config.eval.attacks is empty'),
        (
            [
                '--staleness',
                '0,2',
                '--curves',
                '2',
                '--config.method.fresh_every=0',
            ],
            '--curves 2 needs fresh accuracy',
        ),
        (['--config.method.eps=3.0'], 'config.method.eps=3.0 must be <= 1'),
        (['--frob'], "unrecognized argument '--frob'"),
    ],
)
def test_bad_arguments_are_one_line_before_any_work(
    tiny_data_dir, tmp_path, capsys, monkeypatch, extra, needle
):
  monkeypatch.setattr(train, 'train_and_evaluate', None)  # never reached
  out = tmp_path / 'study'
  assert staleness.main(_argv(tiny_data_dir, out, *extra)) == 2
  err = capsys.readouterr().err.strip()
  assert needle in err and '\n' not in err, err
  assert not out.exists()


def test_bad_out_and_config_paths(tmp_path, capsys):
  a_file = tmp_path / 'file'
  a_file.write_text('x')
  cases = [
      (['--config', CPU_CONFIG, '--out', str(a_file)], 'is a file'),
      (['--config', str(tmp_path / 'no.py'), '--out', 'x'], 'no such file'),
      (['--out', str(tmp_path)], 'the following arguments are required'),
  ]
  for argv, needle in cases:
    assert staleness.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and '\n' not in err, err


def _fake_run(calls, trained=True):
  """train_and_evaluate stand-in: records the config, writes metrics.jsonl
  as the trainer would (log_every 2, fresh_every 2) and returns results
  (trained=False: a finished run only re-evaluated)."""

  def fake(config, workdir):
    s = config.method.staleness
    calls.append((s, config.eval.at_end, workdir))
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
      for step in range(2, 9, 2):
        trained = step > s
        fresh = step - 2 >= s  # the interval's first step made one
        record = {
            'step': step,
            'adv_accuracy': 0.5 + 0.01 * step if trained else 0.0,
            'fresh_adv_accuracy': 0.3 if fresh else 0.0,
            'fresh_steps': 0.5 if fresh else 0.0,
            'loss': 1.0,
        }
        f.write(json.dumps(record) + '\n')
      f.write(json.dumps({'epoch': 1.0, 'step': 8, 'test_accuracy': 0.9}))
    return {
        'status': 'completed',
        'steps': 8,
        'test_accuracy': 0.9 - 0.1 * s,
        'num_test_examples': 200,
        'robust': [{'name': 'PGD-20', 'accuracy': 0.6, 'num_examples': 40}],
        'train_images': 512 if trained else 0,
        'wall_time_s': 1.0 if trained else 99.0,
    }

  return fake


def test_sweep_writes_table_json_and_both_figures(
    tiny_data_dir, tmp_path, monkeypatch, capsys
):
  calls = []
  monkeypatch.setattr(train, 'train_and_evaluate', _fake_run(calls))
  out = tmp_path / 'study'
  argv = _argv(tiny_data_dir, out, '--staleness', '0,2,4', '--curves', '2,4')
  assert staleness.main(argv) == 0
  assert [c[:2] for c in calls] == [(0, True), (2, True), (4, True)]
  assert calls[1][2] == os.path.join(str(out), 's2')
  study = json.loads((out / 'staleness.json').read_text())
  rows = study['runs']
  assert [r['staleness'] for r in rows] == [0, 2, 4]
  assert [r['updates'] for r in rows] == [8, 6, 4]
  assert [round(r['test_accuracy'], 6) for r in rows] == [0.9, 0.7, 0.5]
  # Stale curve: only intervals after the fill; fresh: only intervals that
  # held a fresh batch (a logged 0.0 with fresh_steps 0 is no measurement).
  c4 = study['curves']['4']
  assert c4['step'] == [6, 8] and c4['fresh_step'] == [6, 8]
  assert c4['fresh'] == [0.3, 0.3]
  assert rows[2]['train_stale_adv_accuracy'] == pytest.approx(0.57)
  table = (out / 'staleness.md').read_text()
  assert '| 4 | 4 | 50.00 | 60.00 | 57.00 | 30.00 | 1 |' in table
  assert 'PGD-20 on 40 seeded test' in table
  for png in ('staleness_test_accuracy.png', 'staleness_train_curves.png'):
    assert (out / png).read_bytes()[:4] == b'\x89PNG'
  assert 'wrote ' in capsys.readouterr().out

  # A rerun re-evaluates the finished runs: their training wall time stays.
  monkeypatch.setattr(train, 'train_and_evaluate', _fake_run([], False))
  for plot in ('plot_test_accuracy', 'plot_curves'):  # drawn above
    monkeypatch.setattr(staleness, plot, lambda study, path: None)
  assert staleness.main(argv) == 0
  study = json.loads((out / 'staleness.json').read_text())
  assert [r['wall_time_s'] for r in study['runs']] == [1.0] * 3
