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
from jaxadv import build  # pylint: disable=g-import-not-at-top
from jaxadv import data
from jaxadv import parallel
from jaxadv import steps as steps_lib

config_flags.DEFINE_config_file(
    'config', None, 'Experiment config.', lock_config=False
)
flags.DEFINE_string('methods', 'standard,fast,free,pgd', 'Methods to time.')
flags.DEFINE_integer('batch_size', 0, "Global batch (0 = the config's).")
flags.DEFINE_integer('steps', 20, 'Timed steps per method (after warm-up).')
flags.DEFINE_integer('pgd_steps', 7, 'K for pgd when the config has none.')
flags.DEFINE_integer('free_replays', 8, 'm for free when the config has none.')
flags.DEFINE_string('out', 'bench/out/throughput.json', 'JSON output path.')
flags.DEFINE_float(
    'peak_tflops',
    0.0,
    'Peak TFLOP/s for MFU (0 = by device ' 'kind, see PEAK_TFLOPS).',
)
flags.mark_flags_as_required(['config'])
FLAGS = flags.FLAGS

DEFAULT_EPS = {'mnist': 0.3}


def method_config(base, name):
  """The config with `name`'s method keys: the config's own method section
  when it is `name` (so an L2 config times L2), else eps/steps/replays from
  it or the defaults."""
  c = base.copy_and_resolve_references()
  if base.method.name == name:
    return c
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
  return data.Dataset.from_arrays(
      config.data.name,
      images,
      labels,
      images[:8],
      labels[:8],
      num_classes=info.num_classes,
      mean=info.mean,
      std=info.std,
      augment=info.augment,
  )


# Peak dense bf16 tensor-core rates (TFLOP/s) for MFU, by device_kind prefix;
# --peak_tflops overrides (the measured H100 matmul rate is ~800).
PEAK_TFLOPS = {
    'NVIDIA H100': 989.4,
    'NVIDIA H200': 989.4,
    'NVIDIA A100': 312.0,
    'TPU v4': 275.0,
    'TPU v5e': 197.0,
    'TPU v5p': 459.0,
}


def peak_tflops(device_kind):
  if FLAGS.peak_tflops:
    return FLAGS.peak_tflops
  for prefix, peak in PEAK_TFLOPS.items():
    if device_kind.startswith(prefix):
      return peak
  return None


def _xla_flops(lowered):
  cost = lowered.compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get('flops', float('nan'))) if cost else float('nan')


def attack_grad_flops(state, image_shape, batch):
  """XLA FLOPs of one attack gradient (forward + input backward, inference
  BatchNorm) on `batch` images: the unit of PGD/FGSM cost."""

  def grad(x, y):
    f = state.logits_fn()
    return jax.grad(
        lambda x: jax.nn.log_softmax(f(x))[jax.numpy.arange(batch), y].sum()
    )(x)

  x = jax.ShapeDtypeStruct((batch,) + image_shape, jax.numpy.float32)
  y = jax.ShapeDtypeStruct((batch,), jax.numpy.int32)
  return _xla_flops(jax.jit(grad).lower(x, y))


def attack_grads_per_image(config):
  """Attack gradients per image and step, by method (Free's replays are
  counted as updates, each one forward/backward)."""
  m = config.method
  return {'standard': 0, 'free': 0, 'fast': 1}.get(
      m.name, m.get('steps', 0) if m.name == 'pgd' else 0
  )


def time_method(config, ds, mesh, steps):
  """Times train_and_evaluate's own jitted call with its data feed: with
  the device feed (data.feed, 'auto' puts CIFAR-10 there) the split sits on
  the devices and each call gathers its batches from indices inside the
  scan, as in training; with the host feed one prepared chunk is reused."""
  s = build.setup(config, ds, mesh)
  kind = ds.augment if config.data.augment == 'auto' else config.data.augment
  on_device = data.feed_on_device(config.data.get('feed', 'auto'), ds)
  fn = steps_lib.make_train_fn(s, mesh, kind, on_device=on_device)
  spc = steps_lib.steps_per_call(config)
  b = config.batch_size
  batch = P(None, parallel.AXIS)
  if on_device:
    arrays = ds.train.arrays
    resident = parallel.put_global(
        arrays, mesh, jax.tree_util.tree_map(lambda _: P(), arrays)
    )
    index = np.arange(spc * b, dtype=np.int32).reshape(spc, b)
    args = (resident, parallel.put_local_batch(index, mesh, batch))
    one = (resident, parallel.put_local_batch(index[:1], mesh, batch))
  else:
    images = ds.train_images[: spc * b].reshape((spc, b) + ds.image_shape)
    labels = ds.train_labels[: spc * b].reshape((spc, b))
    args = (
        parallel.put_local_batch(
            {'image': images, 'label': labels}, mesh, batch
        ),
    )
    one = (
        parallel.put_local_batch(
            {'image': images[:1], 'label': labels[:1]}, mesh, batch
        ),
    )
  state = s.state
  # FLOPs of ONE step, lowered without a loop (XLA counts a loop body once),
  # per device after partitioning: per image of the per-device batch.
  local_b = b // jax.device_count()
  flops = _xla_flops(fn.lower(state, *one))
  state, _ = fn(state, *args)  # warm-up
  jax.block_until_ready(state)
  calls = max(steps // spc, 1)
  t0 = time.perf_counter()
  for _ in range(calls):
    state, m = fn(state, *args)
  jax.block_until_ready((state, m))
  seconds = time.perf_counter() - t0
  images_done = calls * spc * b
  return {
      'images_per_s': images_done / seconds,
      'seconds_per_step': seconds / (calls * spc),
      'data_feed': 'device' if on_device else 'host',
      # XLA's count: a PGD attack loop inside the step counted once.
      'xla_flops_per_image': flops / local_b,
      'xla_tflops_per_s': flops / local_b * images_done / seconds / 1e12,
      'updates_per_step': s.updates_per_batch,
      'attack_grads_per_image': attack_grads_per_image(config),
  }


def main(argv):
  del argv
  base = FLAGS.config
  if FLAGS.batch_size:
    base.batch_size = FLAGS.batch_size
  mesh = parallel.make_mesh()
  base.steps_per_call = steps_lib.steps_per_call(base)
  ds = fake_dataset(base, base.batch_size * base.steps_per_call)
  rows = {}
  for name in FLAGS.methods.split(','):
    c = method_config(base, name)
    rows[name] = time_method(c, ds, mesh, FLAGS.steps)
    rows[name]['method'] = dict(c.method)
    print(f'{name}: {rows[name]["images_per_s"]:.1f} images/s', flush=True)
  std = rows.get('standard', {}).get('images_per_s')
  # Model FLOPs (loops counted in full, unlike XLA's count of a loop body):
  # the standard step's per update, plus one attack gradient per PGD/FGSM
  # step, all on the per-device batch.
  local_b = base.batch_size // jax.device_count()
  state0 = build.setup(method_config(base, 'standard'), ds, mesh).state
  grad_flops = attack_grad_flops(state0, ds.image_shape, local_b) / local_b
  std_flops = (
      rows['standard']['xla_flops_per_image'] if 'standard' in rows else None
  )
  peak = peak_tflops(jax.devices()[0].device_kind)
  total_peak = peak * jax.device_count() if peak else None  # images/s: all
  for r in rows.values():
    r['cost_ratio'] = std / r['images_per_s'] if std else None
    if r['cost_ratio']:
      r['cost_ratio_per_update'] = r['cost_ratio'] / r['updates_per_step']
    r['attack_grad_flops_per_image'] = grad_flops
    if std_flops:
      r['model_flops_per_image'] = (
          r['updates_per_step'] * std_flops
          + r['attack_grads_per_image'] * grad_flops
      )
      r['model_tflops_per_s'] = (
          r['model_flops_per_image'] * r['images_per_s'] / 1e12
      )
      r['mfu'] = r['model_tflops_per_s'] / total_peak if total_peak else None
  out = {
      'config': base.data.name + '/' + base.model.name,
      'device': jax.devices()[0].device_kind,
      'num_devices': jax.device_count(),
      'batch_size': base.batch_size,
      'dtype': base.dtype,
      'steps_per_call': base.steps_per_call,
      'peak_tflops': peak,
      'date': time.strftime('%Y-%m-%d'),
      'methods': rows,
  }
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
  with open(FLAGS.out, 'w') as f:
    json.dump(out, f, indent=2)
  print(
      f'\n{out["config"]} on {out["num_devices"]} x {out["device"]}, '
      f'batch {base.batch_size}, {base.dtype}'
  )
  print(
      '| method | images/s | cost ratio vs standard | per update | '
      'model GFLOP/image | model TFLOP/s | MFU |'
  )
  print('|---|---|---|---|---|---|---|')
  for name, r in rows.items():
    ratio = f'{r["cost_ratio"]:.2f}' if r['cost_ratio'] else '-'
    per = (
        f'{r["cost_ratio_per_update"]:.2f}'
        if r.get('cost_ratio_per_update')
        else '-'
    )
    mf = r.get('model_flops_per_image')
    mfu = f'{100 * r["mfu"]:.1f}%' if r.get('mfu') else '-'
    print(
        f'| {name} {r["method"]} | {r["images_per_s"]:.1f} | {ratio} | '
        f'{per} | {mf / 1e9 if mf else float("nan"):.3f} | '
        f'{r.get("model_tflops_per_s", float("nan")):.3f} | {mfu} |'
    )
  print(
      f"(model FLOPs: XLA's count of the standard step per update plus "
      f'{grad_flops / 1e9:.3f} GFLOP per attack gradient; MFU against '
      f'{peak or "no known"} TFLOP/s peak)'
  )
  print(f'wrote {FLAGS.out}')


if __name__ == '__main__':
  app.run(main)
