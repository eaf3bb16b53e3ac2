"""Evaluation suite: exact clean accuracy, seeded subsets, eval records and
reports, sanity flags, transfer matrices, eps sweeps and the three CLIs.

Two tiny models (Madry's MNIST CNN and the BatchNorm CNN5) are trained once
on the generated tiny data; attacks run a few steps on a few dozen examples
(XLA:CPU differentiates slowly inside lax loops)."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, tiny_config
from jaxadv import attacks
from jaxadv import data
from jaxadv import evaluation as evaluate
from jaxadv.evaluation import evaluators
from jaxadv.evaluation import reports
from jaxadv import runs
from jaxadv.evaluation import sanity
from jaxadv.tools import sweep
from jaxadv import train
from jaxadv.tools import transfer

REQUIRED = (
    'attack',
    'norm',
    'eps',
    'steps',
    'step_size',
    'restarts',
    'loss',
    'seed',
    'num_examples',
    'accuracy',
)


def _standard_config(data_dir, cache_dir):
  """configs/mnist_standard.py on the tiny data, as main.py --mode eval
  rebuilds it from flags."""
  from configs import mnist_standard  # pylint: disable=g-import-not-at-top

  c = mnist_standard.get_config()
  c.data.data_dir = data_dir
  c.data.cache_dir = cache_dir
  c.num_epochs = 2
  c.batch_size = 64
  c.eval_batch_size = 80
  c.progress = False
  return c


@pytest.fixture(scope='session')
def workdirs(tiny_data_dir, tmp_path_factory):
  """{'cnn': workdir of mnist_standard's CNN, 'cnn5': a BatchNorm CNN5}."""
  root = tmp_path_factory.mktemp('eval_runs')
  out = {'cnn': str(root / 'cnn'), 'cnn5': str(root / 'cnn5')}
  train.train_and_evaluate(
      _standard_config(tiny_data_dir, str(root / 'cache')), out['cnn']
  )
  train.train_and_evaluate(
      tiny_config(tiny_data_dir, **{'model.name': 'cnn5', 'num_epochs': 1}),
      out['cnn5'],
  )
  return out


@pytest.fixture(scope='session')
def loaded(workdirs):
  """{name: (config, state, specs, mesh, dataset)} via runs.load_run."""
  return {k: runs.load_run(w) for k, w in workdirs.items()}


def _predictions(state, images):
  logits = state.apply_fn(state.variables(), data.to_float(images), train=False)
  return np.argmax(np.asarray(logits), -1)


def test_clean_accuracy_counts_every_example_once(loaded):
  _, state, specs, mesh, ds = loaded['cnn']
  images = ds.test_images[:75]
  # Half the labels wrong, so counting an example twice or a padded row
  # changes the result.
  rng = np.random.default_rng(0)
  labels = (ds.test_labels[:75] + rng.integers(0, 2, 75)) % 10
  acc, n = evaluate.accuracy(
      state, images, labels, mesh=mesh, specs=specs, batch_size=32
  )  # 75 = 2 * 32 + 11
  assert n == 75
  expected = np.mean(_predictions(state, images) == labels)
  assert 0.2 < expected < 0.8
  assert acc == pytest.approx(expected, abs=1e-9)
  # A batch larger than the data: one batch, still every example once.
  assert evaluate.accuracy(
      state, images, labels, mesh=mesh, specs=specs, batch_size=500
  ) == (acc, 75)


def test_robust_accuracy_needs_the_clean_input_right(loaded):
  """An attack returning a point the model classifies correctly does not make
  a misclassified example robust: x itself is in the threat model."""
  _, state, specs, mesh, ds = loaded['cnn']
  images = ds.test_images[:75]
  rng = np.random.default_rng(0)
  labels = (ds.test_labels[:75] + rng.integers(0, 2, 75)) % 10

  # An "attack" answering with the previous example's image (one batch).
  def previous_image(logits_fn, rng, x, y):
    del logits_fn, rng, y
    return jnp.roll(x, 1, axis=0)

  acc, n = evaluate.accuracy(
      state,
      images,
      labels,
      mesh=mesh,
      specs=specs,
      batch_size=500,
      attack=previous_image,
  )
  pred = _predictions(state, images)
  clean_ok, adv_ok = pred == labels, np.roll(pred, 1) == labels
  assert (adv_ok & ~clean_ok).sum() >= 3  # the case the rule is for
  assert n == 75
  assert acc == pytest.approx(np.mean(adv_ok & clean_ok), abs=1e-9)
  assert acc < np.mean(adv_ok)
  # Precomputed (x_adv, x) pairs, as transfer evaluates them, count alike,
  # across batch boundaries.
  x_adv = np.roll(np.asarray(data.to_float(images)), 1, axis=0)
  assert evaluate.accuracy(
      state, (x_adv, images), labels, mesh=mesh, specs=specs, batch_size=32
  ) == (acc, 75)


def test_subset_is_seeded_random_and_class_mixed():
  labels = np.repeat(np.arange(10), 30)  # sorted by class
  images = np.arange(300)[:, None]  # image i holds i
  a_img, a_lbl = evaluate.subset(images, labels, 50, seed=3)
  b_img, _ = evaluate.subset(images, labels, 50, seed=3)
  c_img, _ = evaluate.subset(images, labels, 50, seed=4)
  np.testing.assert_array_equal(a_img, b_img)  # seeded
  assert not np.array_equal(a_img, c_img)
  assert not np.array_equal(a_img[:, 0], np.arange(50))  # not the first n
  assert len(np.unique(a_img)) == 50
  np.testing.assert_array_equal(labels[a_img[:, 0]], a_lbl)
  assert len(np.unique(a_lbl)) >= 8  # class-mixed
  for n in (0, 300, 1000):
    assert evaluate.subset(images, labels, n, seed=3)[0] is images


def test_run_attacks_records_and_report(loaded, tmp_path):
  _, state, specs, mesh, ds = loaded['cnn']
  records = evaluate.run_attacks(
      state,
      (ds.test_images, ds.test_labels),
      ['clean', 'fgsm(eps=8/255)', 'pgd(eps=0.25, steps=2, restarts=2)'],
      mesh=mesh,
      specs=specs,
      batch_size=16,
      num_examples=20,
      seed=5,
      dtype='float32',
  )
  assert [r['attack'] for r in records] == ['clean', 'fgsm', 'pgd']
  for r in records:
    assert set(REQUIRED) <= set(r), set(REQUIRED) - set(r)
    assert r['num_examples'] == 20 and r['seed'] == 5
    assert r['dtype'] == 'float32'
  assert records[1]['eps'] == pytest.approx(8 / 255)  # pixel scale
  assert records[2]['restarts'] == 2 and records[2]['steps'] == 2
  assert records[2]['step_size'] == pytest.approx(2.5 * 0.25 / 2)
  sub_img, sub_lbl = evaluate.subset(ds.test_images, ds.test_labels, 20, 5)
  assert records[0]['accuracy'] == pytest.approx(
      np.mean(_predictions(state, sub_img) == sub_lbl)
  )
  assert records[2]['accuracy'] <= records[0]['accuracy']

  text = reports.write_report(records, str(tmp_path))
  saved = json.load(open(tmp_path / 'eval.json'))
  assert saved['records'] == records
  assert saved['warnings'] == sanity.sanity_flags(records)
  assert 'pgd(eps=0.25, steps=2, restarts=2)' in text
  assert 'Sanity checks' in text
  assert open(tmp_path / 'eval.md').read().strip() == text.strip()


# ----------------------------------------------------------------------------
# Sanity flags on crafted records.


def _rec(spec, acc, n=1000, **extra):
  s = attacks.parse_attack(spec)
  return evaluate.record(s, acc, n, 0, 0.0, **extra)


PGD40 = 'pgd(norm=linf, eps=0.3, steps=40, step_size=0.01)'
PGD100 = 'pgd(norm=linf, eps=0.3, steps=100, step_size=0.01, restarts=10)'


def _consistent():
  return [
      _rec('clean', 0.99),
      _rec('fgsm(eps=0.3)', 0.30),
      _rec(PGD40, 0.05),
      _rec(PGD100, 0.02),
      _rec('cw(eps=0.3, steps=100, step_size=0.01)', 0.04),
      _rec('apgd_ce(eps=0.3, steps=100)', 0.02),
      _rec('apgd_t(eps=0.3, steps=100)', 0.01),
      _rec('fgsm(eps=0.1)', 0.60),  # other eps: not compared with PGD
      _rec('pgd(norm=l2, eps=2, steps=20)', 0.50),
      _rec('fgsm(norm=l2, eps=2)', 0.70),
      # transfer: black-box above white-box on every target
      _rec(PGD40, 0.05, source='a', model='a'),
      _rec(PGD40, 0.40, source='b', model='a'),
      _rec(PGD40, 0.10, source='b', model='b'),
      _rec(PGD40, 0.10, source='a', model='b'),
  ]


def test_sanity_flags_silent_on_consistent_records():
  assert sanity.sanity_flags(_consistent()) == []
  # Within one example's worth: noise, no flag.
  assert (
      sanity.sanity_flags(
          [
              _rec('fgsm(eps=0.3)', 0.049),
              _rec(PGD40, 0.0495),
              _rec(PGD100, 0.050),
          ]
      )
      == []
  )


@pytest.mark.parametrize(
    'bad,names,needle',
    [
        # 1. FGSM stronger than PGD at the same norm and eps.
        (
            [_rec('fgsm(eps=0.3)', 0.01)],
            ['fgsm(eps=0.3)', PGD40],
            'single-step',
        ),
        # 2. more steps and restarts, higher accuracy.
        (
            [
                _rec(
                    'pgd(norm=linf, eps=0.3, steps=100, step_size=0.01, restarts=20)',
                    0.30,
                )
            ],
            [PGD100, 'restarts=20'],
            'more steps/restarts',
        ),
        # 3. transfer from b beats white-box on a.
        (
            [_rec(PGD40, 0.01, source='b', model='a')],
            [PGD40, 'from b'],
            'black-box',
        ),
        # 4. accuracy rising with eps.
        (
            [_rec('pgd(norm=l2, eps=3, steps=20)', 0.9)],
            ['pgd(norm=l2, eps=2, steps=20)', 'pgd(norm=l2, eps=3, steps=20)'],
            'rise with eps',
        ),
    ],
)
def test_sanity_flags_fire_and_name_the_attacks(bad, names, needle):
  warnings = sanity.sanity_flags(_consistent() + bad)
  assert len(warnings) >= 1, warnings
  hits = [w for w in warnings if needle in w]
  assert hits, warnings
  assert any(all(n in h for n in names) for h in hits), hits


# ----------------------------------------------------------------------------
# Transfer and sweeps on the tiny trained models.


def test_transfer_matrix_crafts_once_per_source(loaded, monkeypatch):
  models = {k: v[1:4] for k, v in loaded.items()}  # (state, specs, mesh)
  ds = loaded['cnn'][4]
  spec = 'pgd(eps=0.25, steps=2)'
  calls = []
  real = transfer.adversarial_examples

  def counting(state, images, labels, attack, **kw):
    x_adv = real(state, images, labels, attack, **kw)
    calls.append((state, images, x_adv))
    return x_adv

  monkeypatch.setattr(transfer, 'adversarial_examples', counting)
  result = transfer.transfer_matrix(
      models,
      ds.test_images,
      ds.test_labels,
      spec,
      batch_size=16,
      num_examples=24,
      seed=1,
  )
  assert len(calls) == 2  # once per source
  assert [c[0] for c in calls] == [models['cnn'][0], models['cnn5'][0]]
  matrix = np.asarray(result['accuracy'])
  assert matrix.shape == (2, 2)
  assert result['sources'] == result['targets'] == ['cnn', 'cnn5']
  assert len(result['records']) == 4
  for _, images, x_adv in calls:  # in the ball
    assert x_adv.shape == images.shape and x_adv.dtype == np.float32
    assert np.abs(x_adv - data.to_float(images)).max() <= 0.25 + 1e-6

  images, labels = evaluate.subset(ds.test_images, ds.test_labels, 24, 1)
  for i, (state, specs, mesh) in enumerate(models.values()):
    white, n = evaluate.accuracy(
        state,
        images,
        labels,
        mesh=mesh,
        specs=specs,
        batch_size=16,
        seed=1,
        attack=attacks.make_attack(spec),
    )
    assert n == 24
    assert matrix[i, i] == pytest.approx(white, abs=1e-9)
    clean = np.mean(_predictions(state, images) == labels)
    assert result['clean'][list(models)[i]] == pytest.approx(clean)
  text = transfer.transfer_markdown(result)
  assert 'source \\ target' in text and '*' in text


def test_sweep_starts_at_clean_and_falls_with_eps(loaded, tmp_path):
  _, state, specs, mesh, ds = loaded['cnn']
  eps = [0, 0.1, 0.2, 0.3]
  records = sweep.robust_accuracy_vs_eps(
      state,
      ds.test_images,
      ds.test_labels,
      'pgd(eps=0.9, steps=3)',
      eps,
      mesh=mesh,
      specs=specs,
      batch_size=16,
      num_examples=40,
      seed=2,
  )
  assert [r['eps'] for r in records] == eps  # template eps replaced
  assert all(r['num_examples'] == 40 for r in records)
  images, labels = evaluate.subset(ds.test_images, ds.test_labels, 40, 2)
  clean, _ = evaluate.accuracy(
      state, images, labels, mesh=mesh, specs=specs, batch_size=16
  )
  assert records[0]['accuracy'] == clean
  acc = [r['accuracy'] for r in records]
  assert all(b <= a + 1 / 40 + 1e-9 for a, b in zip(acc, acc[1:])), acc
  assert acc[-1] < acc[0]  # the attack does something
  path = sweep.plot_sweep(
      {'cnn': records, 'copy': records}, str(tmp_path / 'sweep.png'), 'test'
  )
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  assert os.path.getsize(path) > 1000


# ----------------------------------------------------------------------------
# Command lines.


def _run(args, tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run(
      [sys.executable] + args,
      cwd=str(tmp_path),
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )


def test_main_eval_end_to_end(workdirs, tiny_data_dir, tmp_path):
  workdir = workdirs['cnn']
  out = _run(
      [
          os.path.join(REPO, 'main.py'),
          '--mode',
          'eval',
          '--config',
          os.path.join(REPO, 'configs', 'mnist_standard.py'),
          '--workdir',
          workdir,
          f'--config.data.data_dir={tiny_data_dir}',
          f'--config.data.cache_dir={tmp_path}/cache',
          '--config.eval_batch_size=80',
          "--config.eval.attacks=('clean', 'fgsm(eps=0.2)', "
          "'pgd(eps=0.2, steps=2)')",
          '--config.eval.num_examples=30',
          '--config.eval.batch_size=16',
      ],
      tmp_path,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert '| pgd(eps=0.2, steps=2) | linf | 0.2 | 2 |' in out.stdout
  assert 'Sanity checks' in out.stdout
  written = [
      l.split(' ', 1)[1]
      for l in out.stdout.splitlines()
      if l.startswith('wrote ')
  ]
  assert len(written) == 2 and written[0].endswith('.json'), out.stdout
  assert written[1] == written[0][: -len('.json')] + '.md'
  assert os.path.basename(written[0]).startswith('eval-')
  report = json.load(open(written[0]))
  assert {'records', 'warnings', 'test_accuracy'} <= set(report)
  assert [r['name'] for r in report['records']] == [
      'clean',
      'fgsm(eps=0.2)',
      'pgd(eps=0.2, steps=2)',
  ]
  assert all(r['num_examples'] == 30 for r in report['records'])


def test_sweep_and_transfer_clis_end_to_end(workdirs, tmp_path):
  dirs = f'{workdirs["cnn"]},{workdirs["cnn5"]}'
  out = _run(
      [
          '-m',
          'jaxadv.tools.sweep',
          '--workdirs',
          dirs,
          '--attack',
          'pgd(norm=l2, steps=2)',
          '--eps',
          '0,1,2/1',
          '--out',
          str(tmp_path / 'sweep'),
          '--num_examples',
          '24',
          '--batch_size',
          '16',
          '--labels',
          'std,bn',
      ],
      REPO,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.load(open(tmp_path / 'sweep' / 'sweep.json'))
  assert set(result['curves']) == {'std', 'bn'}
  assert [r['eps'] for r in result['curves']['bn']] == [0, 1, 2]
  assert all(r['norm'] == 'l2' for r in result['curves']['std'])
  assert 'warnings' in result
  assert os.path.getsize(tmp_path / 'sweep' / 'sweep.png') > 1000
  assert '| eps | std | bn |' in out.stdout
  assert (tmp_path / 'sweep' / 'sweep.md').exists()

  out = _run(
      [
          '-m',
          'jaxadv.tools.transfer',
          '--workdirs',
          dirs,
          '--attack',
          'fgsm(eps=0.2)',
          '--out',
          str(tmp_path / 'tr'),
          '--num_examples',
          '24',
          '--batch_size',
          '16',
      ],
      REPO,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.load(open(tmp_path / 'tr' / 'transfer.json'))
  assert np.asarray(result['accuracy']).shape == (2, 2)
  assert result['sources'] == ['cnn', 'cnn5']
  assert 'warnings' in result and 'source \\ target' in out.stdout
  assert (tmp_path / 'tr' / 'transfer.md').exists()


def test_clis_reject_bad_input_in_one_line(workdirs, tmp_path, capsys):
  dirs = f'{workdirs["cnn"]},{workdirs["cnn5"]}'
  assert (
      transfer.main(
          [
              '--workdirs',
              dirs,
              '--attack',
              'pgd(eps=0.2, ' 'stepz=2)',
              '--out',
              str(tmp_path / 'bad'),
          ]
      )
      == 2
  )
  assert "unknown key 'stepz'" in capsys.readouterr().err.splitlines()[-1]
  assert (
      sweep.main(
          [
              '--workdirs',
              dirs,
              '--attack',
              'pgd(steps=2)',
              '--eps',
              '0,-1',
              '--out',
              str(tmp_path / 'bad'),
          ]
      )
      == 2
  )
  assert 'eps must be >= 0' in capsys.readouterr().err.splitlines()[-1]
  assert (
      sweep.main(
          [
              '--workdirs',
              f'{dirs},{tmp_path}',
              '--attack',
              'pgd(steps=2)',
              '--eps',
              '0',
              '--out',
              str(tmp_path / 'bad'),
          ]
      )
      == 2
  )
  assert 'config.json not found' in capsys.readouterr().err
  assert not (tmp_path / 'bad').exists()


def test_autoattack_runs_each_component_on_the_still_robust_points(
    loaded, monkeypatch
):
  """autoattack(...) gives one record per component (robust accuracy after
  it, non-increasing) and a final record; each component is given only the
  examples that survived the ones before it."""
  _, state, specs, mesh, ds = loaded['cnn5']
  images, labels = evaluate.subset(ds.test_images, ds.test_labels, 24, 3)
  sizes = []
  real = evaluators.robust_flags

  def counting(state, split, attack, **kw):
    sizes.append(len(kw['indices']))
    return real(state, split, attack, **kw)

  monkeypatch.setattr(evaluators, 'robust_flags', counting)
  spec = 'autoattack(eps=0.15, norm=linf)'
  records = evaluate.run_attacks(
      state,
      (images, labels),
      [spec, 'clean'],
      mesh=mesh,
      specs=specs,
      batch_size=24,
  )
  parts, final, clean = records[:4], records[4], records[5]
  assert [r['attack'] for r in parts] == [
      'apgd_ce',
      'apgd_t',
      'fab_t',
      'square',
  ]
  assert all(r['component_of'] == final['name'] for r in parts)
  accs = [clean['accuracy']] + [r['accuracy'] for r in parts]
  assert all(a >= b for a, b in zip(accs, accs[1:])), accs
  assert final['attack'] == 'autoattack'
  assert final['accuracy'] == parts[-1]['accuracy']
  assert list(final['components']) == ['apgd-ce', 'apgd-t', 'fab-t', 'square']
  # clean pass on all 24, then each component on the survivors only.
  assert sizes[0] == 24
  survivors = [round(a * 24) for a in accs]
  assert sizes[1:] == [n for n in survivors[:-1] if n > 0][: len(sizes) - 1]
