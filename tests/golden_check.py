"""Golden values of fixed tiny runs, independent of jaxadv's internals.

Trains each method for 3 steps of a fixed tiny config through
`train.train_and_evaluate` (the public entry point), reads the final
checkpoint back without a template (so the state's layout does not matter)
and digests the main network's parameters and BatchNorm statistics; the
standard run also evaluates a fixed attack suite, whose records are kept.

  python tests/golden_check.py DATA_DIR WORKDIR [NUM_DEVICES]

prints one line 'RESULT {json}'. tests/test_golden.py runs it on 1 and on 8
forced CPU devices and compares with tests/golden/values.json, recorded
before the foundation-v2 refactor (issue 10).
"""

import hashlib
import json
import os
import platform
import sys

if len(sys.argv) > 3:  # kept: other XLA flags (e.g. --xla_cpu_max_isa)
  os.environ['XLA_FLAGS'] = (
      os.environ.get('XLA_FLAGS', '')
      + f' --xla_force_host_platform_device_count={sys.argv[3]}'
  ).strip()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np
import orbax.checkpoint as ocp

from conftest import tiny_config  # pylint: disable=g-import-not-at-top
from jaxadv import build
from jaxadv import parallel
from jaxadv import train
from jaxadv import train_state

# Buckets of the CountSketch of the parameters (see sketch()); the bucket of
# a value is a draw from 1024 folded to SKETCH_SIZE (sketches of 1024 buckets
# summed in groups of 4 give the same vector).
SKETCH_SIZE = 256
_DRAW = 1024

# name -> config overrides (3 steps: 48 examples, batch 16, one epoch).
METHODS = {
    'standard': {'method.name': 'standard'},
    'pgd': {'method.name': 'pgd', 'method.eps': 0.1, 'method.steps': 3},
    'pgd_dual_bn': {
        'method.name': 'pgd',
        'method.eps': 0.1,
        'method.steps': 2,
        'method.clean_weight': 0.5,
        'model.dual_bn': True,
    },
    'free': {'method.name': 'free', 'method.eps': 0.1, 'method.replays': 2},
    'fast': {'method.name': 'fast', 'method.eps': 0.1},
    'fast_l2': {'method.name': 'fast', 'method.eps': 1.0, 'method.norm': 'l2'},
}
EVAL_ATTACKS = (
    'clean',
    'fgsm(eps=0.15)',
    'pgd(norm=linf, eps=0.15, steps=5, restarts=2)',
    'pgd(norm=l2, eps=1.5, steps=5)',
    'cw(eps=0.15, steps=5)',
    'apgd_ce(eps=0.15, steps=5)',
    'apgd_t(eps=0.15, steps=5, num_target_classes=3)',
)
RECORD_KEYS = (
    'name',
    'attack',
    'norm',
    'eps',
    'steps',
    'step_size',
    'restarts',
    'loss',
    'target',
    'num_examples',
    'accuracy',
)


def config_for(data_dir, overrides):
  c = tiny_config(
      data_dir,
      **{
          'model.name': 'cnn5',
          'batch_size': 16,
          'num_epochs': 1,
          'data.num_train_examples': 48,
          'optim.name': 'sgd',
          'optim.lr': 0.05,
          'eval_every': 0,
          'checkpoint_every': 0,
          'steps_per_call': 1,
          **overrides,
      },
  )
  return c


def _path_key(path):
  return tuple(str(getattr(p, 'key', getattr(p, 'idx', p))) for p in path)


def main_network_leaves(tree):
  """{('params'|'batch_stats'|..., *path): array} of the main network in a
  raw checkpoint tree, whatever the layout around it."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    keys = _path_key(path)
    for i, k in enumerate(keys):
      if k in ('params', 'batch_stats', 'batch_stats_adv'):
        if 'opt_state' in keys[:i] or any(n in keys[:i] for n in ('frozen',)):
          break
        # v2 layout: nets/<name>/...: keep only the main network.
        if 'nets' in keys[:i] and 'main' not in keys[:i]:
          break
        out[keys[i:]] = np.asarray(leaf)
        break
  return out


def digest(leaves):
  h = hashlib.sha256()
  total, total_abs, head = 0.0, 0.0, []
  for key in sorted(leaves):
    a = np.ascontiguousarray(leaves[key])
    h.update('/'.join(key).encode())
    h.update(a.tobytes())
    total += float(a.astype(np.float64).sum())
    total_abs += float(np.abs(a.astype(np.float64)).sum())
    head.extend(a.reshape(-1)[:2].astype(np.float64).tolist())
  return {
      'sha256': h.hexdigest(),
      'sum': total,
      'abs_sum': total_abs,
      'head': head,
      'num_leaves': len(leaves),
  }


def sketch(leaves):
  """CountSketch of all leaves as one float64 vector (SKETCH_SIZE,): every
  value goes, with a seeded random sign, into a seeded random bucket. It is
  linear, so sketch(a) - sketch(b) = sketch(a - b), and its norm estimates
  the L2 norm of a - b to about 10% (sqrt(2 / SKETCH_SIZE)) over ~900k
  parameters: the test compares whole parameter vectors of two machines
  through 256 numbers."""
  rng = np.random.default_rng(20261203)
  out = np.zeros(SKETCH_SIZE)
  for key in sorted(leaves):
    a = np.asarray(leaves[key], np.float64).reshape(-1)
    bucket = rng.integers(0, _DRAW, a.size) // (_DRAW // SKETCH_SIZE)
    sign = rng.choice(np.array([-1.0, 1.0]), a.size)
    out += np.bincount(bucket, sign * a, minlength=SKETCH_SIZE)
  return [float(f'{v:.12g}') for v in out]


def initial_leaves(config):
  """The main network's leaves before the first step (build.setup's state,
  the same tree a checkpoint holds)."""
  built = build.setup(config, build.load_data(config), parallel.make_mesh())
  tree = train_state.saved_tree(jax.device_get(built.state))
  return main_network_leaves(tree)


_INIT_SKETCHES = {}


def init_sketch(config):
  """sketch(initial_leaves(config)), computed once per model and seed (every
  method here starts from the same initial network; dual BN adds leaves)."""
  key = (config.model.name, config.model.dual_bn, config.seed)
  if key not in _INIT_SKETCHES:
    _INIT_SKETCHES[key] = sketch(initial_leaves(config))
  return _INIT_SKETCHES[key]


def latest_checkpoint_tree(workdir):
  ckdir = os.path.join(workdir, 'checkpoints')
  step = max(int(d) for d in os.listdir(ckdir) if d.isdigit())
  return step, ocp.StandardCheckpointer().restore(
      os.path.join(ckdir, str(step), 'state')
  )


def cpu_signature():
  try:
    with open('/proc/cpuinfo') as f:
      model = next(
          (l.split(':', 1)[1].strip() for l in f if l.startswith('model name')),
          '',
      )
  except OSError:
    model = ''
  # XLA's instruction-set cap changes the code XLA:CPU emits, so runs under
  # it round like another CPU model would.
  isa = [f for f in os.environ.get('XLA_FLAGS', '').split() if 'max_isa' in f]
  return ' '.join([platform.machine(), model] + isa)


def main(data_dir, workdir):
  out = {
      'devices': jax.device_count(),
      'jax': jax.__version__,
      'cpu': cpu_signature(),
      'methods': {},
  }
  for name, overrides in METHODS.items():
    config = config_for(data_dir, overrides)
    if name == 'standard':
      config.eval.attacks = EVAL_ATTACKS
      config.eval.at_end = True
      config.eval.num_examples = 64
      config.eval.batch_size = 32
    wd = os.path.join(workdir, name)
    res = train.train_and_evaluate(config, wd)
    step, tree = latest_checkpoint_tree(wd)
    leaves = main_network_leaves(tree)
    out['methods'][name] = {
        'step': step,
        **digest(leaves),
        'sketch': sketch(leaves),
        'init_sketch': init_sketch(config),
    }
    if name == 'standard':
      out['test_accuracy'] = res['test_accuracy']
      out['eval'] = [{k: r.get(k) for k in RECORD_KEYS} for r in res['robust']]
  print('RESULT ' + json.dumps(out))


if __name__ == '__main__':
  main(sys.argv[1], sys.argv[2])
