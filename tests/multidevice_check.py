"""Run by tests/test_parallel.py in a subprocess with 8 forced CPU devices:
compares 8-device and 1-device steps, sharded eval, and cross-device-count
checkpoint restore. Prints one JSON line."""

import json
import os
import sys

os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8'
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # pylint: disable=g-import-not-at-top
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np

from conftest import tiny_config  # pylint: disable=g-import-not-at-top
from jaxadv import build
from jaxadv import checkpoint as ckpt_lib
from jaxadv import evaluation as evaluate
from jaxadv import parallel
from jaxadv import steps as steps_lib
from jaxadv import train


def run_steps(config, ds, devices, steps=3):
  mesh = parallel.make_mesh(devices)
  s = build.setup(config, ds, mesh)
  fn = steps_lib.make_train_fn(s, mesh, 'none')
  state = s.state
  b = config.batch_size
  for i in range(steps):
    images = ds.train_images[None, i * b : (i + 1) * b]
    labels = ds.train_labels[None, i * b : (i + 1) * b]
    g = parallel.put_local_batch(
        {'image': images, 'label': labels}, mesh, P(None, 'data')
    )
    state, metrics = fn(state, g)
  return state, parallel.fetch(metrics), mesh, s.specs


def max_abs_diff(a, b):
  """Largest |difference| over params and BatchNorm statistics."""
  leaves = lambda s: jax.tree_util.tree_leaves(
      {k: (n.params, n.collections) for k, n in s.nets.items()}
  )
  return max(
      float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
      for x, y in zip(leaves(a), leaves(b))
  )


def main(workdir, data_dir):
  out = {'devices': jax.device_count()}
  diffs, updates = {}, {}
  for method in ('standard', 'free', 'stale', 'great'):
    # SGD: Adam's normalized update would amplify float rounding differences.
    config = tiny_config(
        data_dir,
        **{
            'model.name': 'cnn5',
            'batch_size': 64,
            'method.name': method,
            'optim.name': 'sgd',
            'optim.lr': 0.05,
        },
    )
    if method == 'free':
      config.method.eps = 0.1
      config.method.replays = 2
    if method == 'great':  # double backprop through synchronized BatchNorm
      config.method.variant = 'both'
      config.method.alpha_max = 1.0
      config.method.aux_optim = ml_collections.ConfigDict(
          dict(name='sgd', lr=0.05, schedule='constant')
      )
    if method == 'stale':  # the queue is sharded like the batch
      config.method = ml_collections.ConfigDict(
          dict(name='stale', eps=0.1, steps=2, staleness=1, fresh_every=1)
      )
      # Per-device keys draw other random starts on 8 devices than on 1.
      config.method.random_start = False
    ds = build.load_data(config)
    # Free: one call (2 replays). Later calls take sign() of input gradients
    # that differ by float rounding (XLA:CPU sums convolutions in loops in a
    # batch-size-dependent order), which flips a few delta entries by 2 eps.
    # Stale (s = 1): a fill step, then two updates on queued PGD batches.
    steps = 3 if method in ('standard', 'stale') else 1
    s8, m8, mesh8, specs8 = run_steps(config, ds, jax.devices(), steps)
    s1, m1, _, _ = run_steps(config, ds, jax.devices()[:1], steps)
    s0 = build.setup(config, ds, parallel.make_mesh(jax.devices()[:1])).state
    diffs[method] = max_abs_diff(s8, s1)
    updates[method] = max_abs_diff(s1, s0)  # how far the steps moved
    if method == 'free':
      d8 = np.asarray(s8.method_state['per_example']['delta'])
      d1 = np.asarray(s1.method_state['per_example']['delta'])
      out['free_delta_mismatch_fraction'] = float(np.mean(d8 != d1))
    if method == 'stale':
      q8, q1 = (
          np.asarray(s.method_state['per_example']['queue']['x_adv'])
          for s in (s8, s1)
      )
      out['stale_queue_mismatch_fraction'] = float(
          np.mean(np.abs(q8 - q1) > 1e-5)
      )
      out['stale_fresh'] = [
          float(m['fresh_adv_accuracy'][i]) for m in (m8, m1) for i in (0, 1)
      ]
    out[f'loss_{method}'] = [float(m8['loss'][0]), float(m1['loss'][0])]
  out['max_abs_diff'] = diffs
  out['max_abs_update'] = updates

  # Sharded eval: 200 test examples, batch 80 -> padded and masked.
  acc8, n8 = evaluate.accuracy(
      s8,
      ds.test_images,
      ds.test_labels,
      mesh=mesh8,
      specs=specs8,
      batch_size=80,
  )
  logits = s1.apply_fn(s1.variables(), ds.test_images / 255.0, train=False)
  out['eval'] = {
      'count': n8,
      'num_test': int(len(ds.test_labels)),
      'acc8': acc8,
      'acc_direct': float(np.mean(np.argmax(logits, -1) == ds.test_labels)),
  }

  # Checkpoint written on 8 devices restores onto 1 device (and back).
  ck = ckpt_lib.Checkpointer(os.path.join(workdir, 'ck'))
  ck.save(int(s8.step), s8)
  ck.wait()
  mesh1 = parallel.make_mesh(jax.devices()[:1])
  template = build.setup(config, ds, mesh1).state
  restored, _ = ck.restore(template)
  out['restore_diff'] = max(
      float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
      for a, b in zip(
          jax.tree_util.tree_leaves(restored.params),
          jax.tree_util.tree_leaves(s8.params),
      )
  )
  out['restored_devices'] = len(
      jax.tree_util.tree_leaves(restored.params)[0].sharding.device_set
  )
  ck.close()

  # Whole train split on all 8 devices, batches gathered there: the same
  # training as host-gathered batches.
  finals = {}
  for feed in ('host', 'device'):
    config = tiny_config(
        data_dir,
        **{
            'model.name': 'cnn5',
            'batch_size': 64,
            'num_epochs': 1,
            'data.num_train_examples': 256,  # 4 steps: two calls of 2
            'optim.name': 'sgd',
            'optim.lr': 0.05,
            'data.feed': feed,
            'data.augment': 'crop_flip',
            'steps_per_call': 2,
            'eval_every': 0,
        },
    )
    res = train.train_and_evaluate(config, os.path.join(workdir, feed))
    out[f'feed_{feed}'] = res['data_feed']
    ck = ckpt_lib.Checkpointer(os.path.join(workdir, feed, 'checkpoints'))
    finals[feed], _ = ck.restore(build.setup(config, ds, mesh8).state)
    ck.close()
  out['feed_max_abs_diff'] = max(
      float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
      for a, b in zip(
          jax.tree_util.tree_leaves(finals['host'].params),
          jax.tree_util.tree_leaves(finals['device'].params),
      )
  )
  print('RESULT ' + json.dumps(out))


if __name__ == '__main__':
  main(sys.argv[1], sys.argv[2])
