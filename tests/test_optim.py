"""Learning-rate schedules: boundaries, warm-up and peaks at the right steps."""

import ml_collections
import numpy as np
import pytest

from jaxadv import optim


def _cfg(**kw):
  c = ml_collections.ConfigDict(
      dict(
          lr=1.0,
          schedule='constant',
          warmup_epochs=0.0,
          boundaries=(0.5, 0.75),
          scales=(0.1, 0.1),
          onecycle_peak=0.4,
          poly_power=0.9,
      )
  )
  c.update(kw)
  return c


def _lrs(cfg, total, spe=10):
  fn = optim.make_schedule(cfg, total, spe)
  return np.array([float(fn(s)) for s in range(total)])


@pytest.mark.parametrize('warmup_epochs', [0.0, 1.0, 2.5])
def test_piecewise_boundaries_are_fractions_of_all_steps(warmup_epochs):
  lr = _lrs(_cfg(schedule='piecewise', warmup_epochs=warmup_epochs), 100)
  warm = int(round(warmup_epochs * 10))
  if warm:
    np.testing.assert_allclose(lr[:warm], np.arange(warm) / warm, atol=1e-6)
  np.testing.assert_allclose(lr[warm:50], 1.0, rtol=1e-6)
  np.testing.assert_allclose(
      lr[50:75], 0.1, rtol=1e-6
  )  # from step 50, not 50 + warm
  np.testing.assert_allclose(lr[75:], 0.01, rtol=1e-5)


def test_onecycle_cosine_poly_shapes():
  lr = _lrs(_cfg(schedule='onecycle'), 100)
  assert lr.argmax() == 40 and lr.max() == pytest.approx(1.0)
  assert lr[0] == 0.0 and lr[-1] == pytest.approx(1 / 60, rel=1e-4)
  assert np.all(np.diff(lr[:41]) > 0) and np.all(np.diff(lr[40:]) < 0)
  lr = _lrs(_cfg(schedule='cosine', warmup_epochs=1.0), 100)
  assert lr[10] == pytest.approx(1.0) and lr[-1] < 0.01
  assert np.all(np.diff(lr[10:]) <= 1e-7)
  lr = _lrs(_cfg(schedule='poly'), 100)
  assert lr[0] == 1.0 and lr[50] == pytest.approx(0.5**0.9, rel=1e-5)


def _sgd(**kw):
  cfg = _cfg(schedule='constant', lr=0.1)
  cfg.update(
      dict(
          name='sgd',
          weight_decay=5e-4,
          momentum=0.0,
          nesterov=False,
          grad_clip=0.0,
          b1=0.9,
          b2=0.999,
      )
  )
  cfg.update(kw)
  return optim.make_optimizer(cfg, 100)[0]


def test_sgd_weight_decay_is_l2_on_the_gradient_once():
  # torch.optim.SGD(weight_decay=wd): d = g + wd p, then momentum on d.
  p = {'w': np.linspace(-1.0, 1.0, 7, dtype=np.float32)}
  g = {'w': np.full((7,), 0.2, np.float32)}
  tx = _sgd()
  upd, _ = tx.update(g, tx.init(p), p)
  np.testing.assert_allclose(
      upd['w'], -0.1 * (g['w'] + 5e-4 * p['w']), rtol=1e-6
  )
  tx = _sgd(momentum=0.9)
  state = tx.init(p)
  d = g['w'] + 5e-4 * p['w']
  _, state = tx.update(g, state, p)
  upd, _ = tx.update(g, state, p)  # buffer = 0.9 d + d
  np.testing.assert_allclose(upd['w'], -0.1 * 1.9 * d, rtol=1e-6)
