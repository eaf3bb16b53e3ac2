"""Square's query batching (issue 23's Square speed): forward passes run only on the examples
still being attacked, in chunks, and chunking does not change what the attack finds.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxadv import attacks as A

# The package exports the function square under the name of its module.
square_lib = importlib.import_module('jaxadv.attacks.square')


def _model(seed=0, classes=4):
  w = jax.random.normal(jax.random.key(seed), (6 * 6 * 1, classes))
  return lambda x: x.reshape(x.shape[0], -1) @ w + 0.5


def test_active_logits_skips_chunks_of_finished_examples():
  fn = _model()
  x = jnp.asarray(
      np.random.default_rng(0).uniform(size=(8, 6, 6, 1)), jnp.float32
  )
  active = jnp.asarray([0, 1, 0, 0, 1, 0, 1, 0], bool)
  out = np.asarray(square_lib.active_logits(fn, x, active, 2))
  want = np.asarray(fn(x))
  # The 3 active rows fill chunk 0 and half of chunk 1 (with one finished row); chunks 2
  # and 3, holding only finished rows, are never computed and stay zero.
  np.testing.assert_allclose(
      out[np.asarray(active)], want[np.asarray(active)], atol=1e-5
  )
  assert (np.abs(out).sum(1) == 0).sum() == 4
  # All active: every row, whatever the chunking (the last chunk padded with real rows).
  everyone = jnp.ones(8, bool)
  np.testing.assert_allclose(
      square_lib.active_logits(fn, x, everyone, 3), want, atol=1e-5
  )
  assert (
      square_lib.query_chunk(467, 64) == 59
  )  # 8 balanced chunks, not 7 x 64 + 19
  assert square_lib.query_chunk(10, 64) == 10


def test_chunked_square_finds_what_the_whole_batch_finds():
  fn = _model(1)
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.uniform(0.3, 0.7, (8, 6, 6, 1)), jnp.float32)
  y = jnp.argmax(fn(x), -1)
  run = lambda rows: np.asarray(
      A.square(
          fn, jax.random.key(2), x, y, eps=0.1, queries=40, query_rows=rows
      )
  )
  whole, chunked = run(8), run(3)
  np.testing.assert_allclose(chunked, whole, atol=1e-6)
  assert np.abs(chunked - np.asarray(x)).max() <= 0.1 + 1e-6
