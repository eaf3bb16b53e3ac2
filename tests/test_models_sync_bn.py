"""Synchronized BatchNorm under shard_map equals BatchNorm on the whole batch.

Needs 8 host devices, which must be configured before jax is first imported, so the check runs
in a fresh subprocess (pytest imports every test file into one process).
"""

import os
import pathlib
import subprocess
import sys

CODE = r"""
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, PartitionSpec as P
from jaxadv.models import get_model

assert jax.device_count() == 8, jax.devices()
mesh = Mesh(np.array(jax.devices()), ('data',))
kw = dict(num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3)
x = jax.random.uniform(jax.random.key(0), (16, 8, 8, 3))
model, synced = get_model('cnn5', **kw), get_model('cnn5', **kw, bn_axis_name='data')
v = jax.jit(model.init)(jax.random.key(1), x)
train = lambda m: (lambda v, x: m.apply(v, x, train=True, mutable=['batch_stats']))

ref_out, ref = jax.jit(train(model))(v, x)
out, got = jax.jit(jax.shard_map(train(synced), mesh=mesh, in_specs=(P(), P('data')),
                                 out_specs=(P('data'), P())))(v, x)
for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
np.testing.assert_allclose(out, ref_out, atol=1e-5, rtol=1e-5)
# the check has teeth: statistics of one 2-sample shard differ from the global ones
_, local = jax.jit(train(model))(v, x[:2])
assert not np.allclose(local['batch_stats']['bn1']['mean'], ref['batch_stats']['bn1']['mean'],
                       atol=1e-3)
print('OK')
"""


def test_sync_bn_matches_unsharded_statistics():
  root = pathlib.Path(__file__).resolve().parents[1]
  env = dict(
      os.environ,
      JAX_PLATFORMS='cpu',
      PYTHONPATH=str(root),
      XLA_FLAGS=(
          os.environ.get('XLA_FLAGS', '')
          + ' --xla_force_host_platform_device_count=8'
      ).strip(),
  )
  proc = subprocess.run(
      [sys.executable, '-c', CODE],
      cwd=root,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode == 0 and 'OK' in proc.stdout, proc.stdout + proc.stderr
