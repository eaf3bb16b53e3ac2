"""Train-step throughput of every training method, and cost ratios.

  python bench/throughput.py --config configs/cifar10_standard.py \
      [--methods standard,fast,free,pgd] [--batch_size 512] [--steps 20] \
      [--config.key=value ...] [--out bench/out/throughput.json]

Times the trainer's own jitted step (jit(shard_map(...)), augmentation on
the device) on random uint8 data of the config's dataset shape, after one
warm-up call that compiles. Prints images/s, the cost ratio to the standard
step measured in the same run (expected about: free 1 per replay, fast 2,
pgd-K K+1), XLA's FLOP count per image and the achieved TFLOP/s, and writes
the figures as JSON.
"""
import json
import os
import sys
import time

from absl import app
from absl import flags
import jax
from jax.sharding import PartitionSpec as P
import ml_collections
from ml_collections import config_flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jaxadv import data  # pylint: disable=g-import-not-at-top
from jaxadv import parallel
from jaxadv import train

config_flags.DEFINE_config_file('config', None, 'Experiment config.',
                                lock_config=False)
flags.DEFINE_string('methods', 'standard,fast,free,pgd', 'Methods to time.')
flags.DEFINE_integer('batch_size', 0, 'Global batch (0 = the config\'s).')
flags.DEFINE_integer('steps', 20, 'Timed steps per method (after warm-up).')
flags.DEFINE_integer('pgd_steps', 7, 'K for pgd when the config has none.')
flags.DEFINE_integer('free_replays', 8, 'm for free when the config has none.')
flags.DEFINE_string('out', 'bench/out/throughput.json', 'JSON output path.')
flags.mark_flags_as_required(['config'])
FLAGS = flags.FLAGS

DEFAULT_EPS = {'mnist': 0.3}


def method_config(base, name):
  """The config with `name`'s method keys filled from the config or defaults."""
  c = base.copy_and_resolve_references()
  eps = base.method.get('eps', DEFAULT_EPS.get(base.data.name, 8 / 255))
  c.method = ml_collections.ConfigDict({'name': name})
  if name in ('fast', 'pgd', 'free'):
    c.method.eps = eps
  if name == 'pgd':
    c.method.steps = base.method.get('steps', FLAGS.pgd_steps)
  if name == 'free':
    c.method.replays = base.method.get('replays', FLAGS.free_replays)
  return c


def fake_dataset(config, n):
  info = data.DATASET_INFO[config.data.name]
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (n,) + info.image_shape, dtype=np.uint8)
  labels = rng.integers(0, info.num_classes, (n,), dtype=np.int32)
  return data.Dataset(name=config.data.name, train_images=images,
                      train_labels=labels, test_images=images[:8],
                      test_labels=labels[:8], num_classes=info.num_classes,
                      mean=info.mean, std=info.std, augment=info.augment)


def time_method(config, ds, mesh, steps):
  s = train.setup(config, ds, mesh)
  kind = ds.augment if config.data.augment == 'auto' else config.data.augment
  fn = train.make_train_fn(config, s['model'], s['method'], mesh, s['specs'],
                           kind)
  spc = config.steps_per_call
  b = config.batch_size
  images = ds.train_images[:spc * b].reshape((spc, b) + ds.image_shape)
  labels = ds.train_labels[:spc * b].reshape((spc, b))
  g = parallel.put_local_batch((images, labels), mesh, P(None, 'data'))
  state = s['state']
  compiled = fn.lower(state, *g).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get('flops', float('nan'))) if cost else float('nan')
  state, _ = fn(state, *g)  # warm-up
  jax.block_until_ready(state)
  calls = max(steps // spc, 1)
  t0 = time.perf_counter()
  for _ in range(calls):
    state, m = fn(state, *g)
  jax.block_until_ready((state, m))
  seconds = time.perf_counter() - t0
  images_done = calls * spc * b
  return {'images_per_s': images_done / seconds,
          'seconds_per_step': seconds / (calls * spc),
          'flops_per_image': flops / (spc * b),
          'tflops_per_s': flops * calls / seconds / 1e12,
          'updates_per_step': s['updates_per_batch']}


def main(argv):
  del argv
  base = FLAGS.config
  if FLAGS.batch_size:
    base.batch_size = FLAGS.batch_size
  mesh = parallel.make_mesh()
  ds = fake_dataset(base, base.batch_size * base.steps_per_call)
  rows = {}
  for name in FLAGS.methods.split(','):
    c = method_config(base, name)
    rows[name] = time_method(c, ds, mesh, FLAGS.steps)
    rows[name]['method'] = dict(c.method)
    print(f'{name}: {rows[name]["images_per_s"]:.1f} images/s', flush=True)
  std = rows.get('standard', {}).get('images_per_s')
  for r in rows.values():
    r['cost_ratio'] = std / r['images_per_s'] if std else None
    if r['cost_ratio']:
      r['cost_ratio_per_update'] = r['cost_ratio'] / r['updates_per_step']
  out = {'config': base.data.name + '/' + base.model.name,
         'device': jax.devices()[0].device_kind,
         'num_devices': jax.device_count(), 'batch_size': base.batch_size,
         'dtype': base.dtype, 'steps_per_call': base.steps_per_call,
         'date': time.strftime('%Y-%m-%d'), 'methods': rows}
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
  with open(FLAGS.out, 'w') as f:
    json.dump(out, f, indent=2)
  print(f'\n{out["config"]} on {out["num_devices"]} x {out["device"]}, '
        f'batch {base.batch_size}, {base.dtype}')
  print('| method | images/s | cost ratio vs standard | per update | '
        'GFLOP/image | TFLOP/s |')
  print('|---|---|---|---|---|---|')
  for name, r in rows.items():
    ratio = f'{r["cost_ratio"]:.2f}' if r['cost_ratio'] else '-'
    per = (f'{r["cost_ratio_per_update"]:.2f}'
           if r.get('cost_ratio_per_update') else '-')
    print(f'| {name} {r["method"]} | {r["images_per_s"]:.1f} | {ratio} | '
          f'{per} | {r["flops_per_image"] / 1e9:.3f} | '
          f'{r["tflops_per_s"]:.3f} |')
  print(f'wrote {FLAGS.out}')


if __name__ == '__main__':
  app.run(main)
