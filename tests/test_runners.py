"""Runners chosen by config (the source protocol, close() on every exit) and
batches that carry any features (augmented together with the image)."""

import os
import signal
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from jaxadv import build
from jaxadv import data
from jaxadv import methods
from jaxadv import parallel
from jaxadv import runners
from jaxadv import steps
from jaxadv import train
from jaxadv import validation
from jaxadv.errors import ConfigError
from jaxadv.methods import common

# ---------------------------------------------------------------------------
# This module is also a runner ('recording') and a method ('feature_probe').

EVENTS = []


class RecordingSource:
  """The sync source, recording close() and optionally failing."""

  fail_at = None

  def __init__(self, inner):
    self.inner = inner
    self.data_feed, self.steps_per_call = inner.data_feed, inner.steps_per_call

  def chunks(self, state, epoch, offset, epoch_stop):
    for i, out in enumerate(
        self.inner.chunks(state, epoch, offset, epoch_stop)
    ):
      if RecordingSource.fail_at == ('error', i):
        raise RuntimeError('a failing runner')
      if RecordingSource.fail_at == ('sigterm', i):
        os.kill(os.getpid(), signal.SIGTERM)
      yield out

  def close(self):
    EVENTS.append('closed')
    self.inner.close()


def make_source(config, built, ds, mesh):
  EVENTS.append(f'mesh of {mesh.devices.size}')
  return RecordingSource(steps.make_source(config, built, ds, mesh))


def mesh_devices(config):
  del config
  return jax.devices()[:1]


@pytest.fixture
def recording_runner(monkeypatch):
  monkeypatch.setitem(runners.RUNNERS, 'recording', __name__)
  EVENTS.clear()
  RecordingSource.fail_at = None
  yield
  RecordingSource.fail_at = None


def test_unknown_runner_is_one_line_listing_the_valid_ones(tiny_data_dir):
  config = tiny_config(tiny_data_dir, runner='threads')
  with pytest.raises(ConfigError, match="config.runner='threads'.*valid: sync"):
    validation.validate_config(config)


@pytest.mark.parametrize('how', ['completed', 'error', 'sigterm'])
def test_the_source_is_closed_whatever_happens(
    tiny_data_dir, tmp_path, recording_runner, how
):
  config = tiny_config(
      tiny_data_dir, runner='recording', num_epochs=1, log_every=1
  )
  if how != 'completed':
    RecordingSource.fail_at = (how, 1)
  if how == 'error':
    with pytest.raises(RuntimeError, match='a failing runner'):
      train.train_and_evaluate(config, str(tmp_path / 'run'))
  else:
    res = train.train_and_evaluate(config, str(tmp_path / 'run'))
    assert res['status'].startswith(
        'interrupted' if how == 'sigterm' else 'completed'
    )
  # The runner chose the mesh's devices, and its source was closed once.
  assert EVENTS == ['mesh of 1', 'closed'], EVENTS


# ---------------------------------------------------------------------------
# Batches with any features.

KEYS = ()


def validate(config):
  common.check_method_keys(config, KEYS)


def make_train_step(ctx):
  """A method that only measures: the 'target' feature must arrive cropped
  and flipped exactly as the image (it is a copy of it on disk), and the
  'weight' feature (not image-shaped) unchanged."""
  del ctx

  def train_step(state, batch, rngs):
    del rngs
    gap = jnp.abs(batch['target'] - batch['image']).max((1, 2, 3))
    return state.replace(step=state.step + 1), {
        'target_gap': common.summed(gap),
        'weight': common.summed(batch['weight']),
    }

  return train_step


def _dataset(n=64):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (n, 12, 12, 3), dtype=np.uint8)
  split = data.ArraySplit(
      {
          'image': images,
          'target': images.copy(),
          'weight': np.full((n,), 0.5, np.float32),
          'label': rng.integers(0, 10, n).astype(np.int32),
      }
  )
  return data.Dataset(
      name='probe',
      train=split,
      test=split,
      num_classes=10,
      mean=(0.5,) * 3,
      std=(0.25,) * 3,
      augment='crop_flip',
  )


def test_extra_features_travel_with_the_image(tiny_data_dir, monkeypatch):
  monkeypatch.setitem(methods.METHODS, 'feature_probe', __name__)
  ds = _dataset()
  assert data.image_keys(ds.features) == ['image', 'target']
  config = tiny_config(tiny_data_dir, **{'model.name': 'cnn5'})
  config.method.name = 'feature_probe'
  config.batch_size = 16
  mesh = parallel.make_mesh()
  built = build.setup(config, ds, mesh)
  fn = steps.make_train_fn(built, mesh, 'crop_flip')
  chunk = next(data.train_chunks(ds, 16, 0, 0, steps_per_call=2))
  assert set(chunk) == {'image', 'target', 'weight', 'label'}
  batch = parallel.put_local_batch(
      chunk, mesh, jax.sharding.PartitionSpec(None, parallel.AXIS)
  )
  _, m = fn(built.state, batch)
  assert float(m['target_gap'][0]) == 0.0  # same crop, same flip
  assert float(m['weight'][0]) == pytest.approx(0.5 * 32)
  # And the augmentation did something: crops differ from the raw images.
  aug = data.augment_batch(
      jax.random.PRNGKey(0),
      {k: jnp.asarray(chunk[k][0]) for k in ('image', 'target')},
      'crop_flip',
      ('image', 'target'),
  )
  assert not np.allclose(np.asarray(aug['image']), chunk['image'][0] / 255.0)
  np.testing.assert_array_equal(aug['image'], aug['target'])


def test_augment_batch_matches_augment_on_the_image():
  """augment_batch draws the keys augment draws: the image is augmented
  bit for bit as before (the golden values depend on it)."""
  x = jnp.asarray(
      np.random.default_rng(1).integers(0, 256, (8, 10, 10, 3), np.uint8)
  )
  rng = jax.random.PRNGKey(3)
  for kind in data.AUGMENTATIONS:
    out = data.augment_batch(rng, {'image': x, 'label': jnp.zeros(8)}, kind)
    np.testing.assert_array_equal(out['image'], data.augment(rng, x, kind))
