"""Clean and robust accuracy with exact (sum, count) averaging.

Every test example is counted exactly once: the data module pads the last
global batch and masks the padding, and sums are reduced over devices.
"""
import json
import os
import time

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np

from jaxadv import attacks
from jaxadv import data
from jaxadv import parallel
from jaxadv.methods import common


def make_accuracy_fn(mesh, specs, attack=None):
  """jit(shard_map) of one eval batch -> (num_correct, num_counted).

  attack: None for clean accuracy, else fn(logits_fn, rng, x, y) -> x_adv
  run against the model in inference mode (no statistics updated).
  """
  def batch_accuracy(state, images, labels, mask, rng):
    x = data.to_float(images)
    if attack is not None:
      rng = jax.random.fold_in(rng, jax.lax.axis_index(parallel.AXIS))
      x = attack(common.logits_fn(state), rng, x, labels)
    logits = common.logits_fn(state)(x)
    ok = common.correct(logits, labels)
    return jax.lax.psum(common.summed(ok, mask), parallel.AXIS)

  b = P(parallel.AXIS)
  fn = jax.shard_map(batch_accuracy, mesh=mesh,
                     in_specs=(specs, b, b, b, P()), out_specs=P())
  return jax.jit(fn)


def accuracy(state, images, labels, *, mesh, specs, batch_size, attack=None,
             seed=0, accuracy_fn=None):
  """Accuracy of `state` on uint8 images (N, H, W, C), all N counted once.

  Returns (accuracy in [0, 1], number of examples).
  """
  fn = accuracy_fn or make_accuracy_fn(mesh, specs, attack)
  pidx, pcount = jax.process_index(), jax.process_count()
  total = None
  for i, batch in enumerate(data.eval_batches(
      images, labels, batch_size, process_index=pidx, process_count=pcount)):
    g = parallel.put_local_batch(
        (batch['image'], batch['label'], batch['mask']), mesh, P(parallel.AXIS))
    rng = jax.random.fold_in(jax.random.PRNGKey(seed), i)
    out = fn(state, *g, rng)
    total = out if total is None else jax.tree_util.tree_map(jnp.add, total, out)
  correct, count = (float(v) for v in parallel.fetch(total))
  return correct / max(count, 1.0), int(round(count))


def subset(images, labels, num_examples, seed):
  """A seeded random subset (never the first n: data may be sorted by
  class); the whole split when num_examples is 0 or >= N."""
  n = len(labels)
  if not num_examples or num_examples >= n:
    return images, labels
  idx = np.sort(np.random.default_rng(seed).permutation(n)[:num_examples])
  return images[idx], labels[idx]


def run_attacks(state, images, labels, attack_specs, *, mesh, specs,
                batch_size, num_examples=0, seed=0):
  """Accuracy under each attack spec; one record per attack.

  Each record: the spec's resolved settings (attack, norm, eps in pixel
  scale, steps, step_size, restarts, loss, target) plus name, seed,
  num_examples, accuracy and seconds.
  """
  images, labels = subset(images, labels, num_examples, seed)
  records = []
  for spec_text in attack_specs:
    spec = attacks.parse_attack(spec_text)
    fn = None if spec.name == 'clean' else attacks.make_attack(spec)
    t0 = time.time()
    acc, n = accuracy(state, images, labels, mesh=mesh, specs=specs,
                      batch_size=batch_size, attack=fn, seed=seed)
    records.append({'name': str(spec), **spec.describe(), 'seed': seed,
                    'num_examples': n, 'accuracy': acc,
                    'seconds': time.time() - t0})
  return records


def markdown_table(records, columns=('name', 'norm', 'eps', 'steps',
                                     'step_size', 'restarts', 'loss',
                                     'num_examples', 'accuracy')):
  """Markdown table of eval records (accuracy in percent)."""
  def fmt(key, v):
    if key == 'accuracy':
      return f'{100 * v:.2f}%'
    if isinstance(v, float):
      return f'{v:.4g}'
    return '' if v is None else str(v)
  lines = ['| ' + ' | '.join(columns) + ' |',
           '|' + '|'.join('---' for _ in columns) + '|']
  lines += ['| ' + ' | '.join(fmt(c, r.get(c)) for c in columns) + ' |'
            for r in records]
  return '\n'.join(lines)


def write_report(records, workdir, name='eval'):
  """Writes <workdir>/<name>.json and <name>.md; returns the markdown."""
  table = markdown_table(records)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, f'{name}.json'), 'w') as f:
      json.dump(records, f, indent=2)
    with open(os.path.join(workdir, f'{name}.md'), 'w') as f:
      f.write(table + '\n')
  return table
