"""The attacker-strength study end to end on tiny data (2 kappas)."""

import os

import pytest

from conftest import tiny_config
from jaxadv.tools import attacker_strength
from jaxadv import evaluation as evaluate
from jaxadv import runs
from jaxadv.tools import transfer


def test_study_writes_table_with_white_box_diagonal(tiny_data_dir, tmp_path):
  base = tiny_config(
      tiny_data_dir,
      **{'method.name': 'pgd', 'num_epochs': 1, 'model.name': 'cnn5'},
  )
  base.method.eps = 0.1
  base.method.steps = 1
  base.eval.batch_size = 80
  study = attacker_strength.run_study(
      base, str(tmp_path), [1, 2], num_examples=80
  )
  assert study['kappas'] == [1, 2]
  acc = study['accuracy']
  assert len(acc) == 2 and all(len(r) == 2 for r in acc)
  assert all(0.0 <= a <= 1.0 for r in acc for a in r)
  assert (
      study['attacks'][0].startswith('pgd(')
      and 'steps=1' in study['attacks'][0]
  )
  assert 'steps=2' in study['attacks'][1]
  # Each trained model has its own run and checkpoint.
  for k in (1, 2):
    assert os.path.isdir(tmp_path / f'kappa_{k}' / 'checkpoints')
  md = attacker_strength.markdown(study)
  assert 'PGD-2' in md and '**' in md

  # Row i is column i of the full transfer matrix of attack PGD-kappa_i (the
  # study evaluates only that target).
  models, ds = {}, None
  for k in (1, 2):
    _, state, specs, mesh, ds = runs.load_run(str(tmp_path / f'kappa_{k}'))
    models[f'kappa={k}'] = (state, specs, mesh)
  for i, k in enumerate((1, 2)):
    full = transfer.transfer_matrix(
        models,
        ds.test_images,
        ds.test_labels,
        attacker_strength.attack_spec(base, k),
        batch_size=80,
        num_examples=80,
        seed=0,
    )
    assert study['accuracy'][i] == pytest.approx(
        [row[i] for row in full['accuracy']], abs=1e-9
    )
    assert study['clean'][i] == pytest.approx(full['clean'][f'kappa={k}'])
