"""Run by tests/test_multihost.py: one process of a 2-process (2-host) CPU
run, or the 1-process 2-device reference. Prints one RESULT JSON line.

  python multihost_check.py PROCESS_ID PORT WORKDIR DATA_DIR [sigterm]
  python multihost_check.py reference - WORKDIR DATA_DIR

With `sigterm`, process 0 alone receives SIGTERM after its second jit call:
both processes must leave the loop at the same step and save one checkpoint
(a process leaving alone would wait forever in the save's collectives).
"""

import json
import os
import signal
import sys

if sys.argv[1] == 'reference':
  os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from conftest import tiny_config  # pylint: disable=g-import-not-at-top
from jaxadv import build
from jaxadv import checkpoint as ckpt_lib
from jaxadv import data
from jaxadv import parallel
from jaxadv import train


def config_for(data_dir):
  # cnn5: BatchNorm statistics synchronized across the hosts.
  return tiny_config(
      data_dir,
      **{
          'model.name': 'cnn5',
          'num_epochs': 2,
          'data.num_train_examples': 256,
          'optim.name': 'sgd',
          'optim.lr': 0.05,
          'eval_every': 1,
      },
  )


def main(argv):
  who, port, workdir, data_dir = argv[:4]
  sigterm = len(argv) > 4 and argv[4] == 'sigterm'
  if who != 'reference':
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(
        coordinator_address=f'localhost:{port}',
        num_processes=2,
        process_id=int(who),
    )
  if sigterm and jax.process_index() == 0:
    real, calls = data.train_chunks, {'n': 0}

    def chunks_then_sigterm(*args, **kwargs):
      for chunk in real(*args, **kwargs):
        calls['n'] += 1
        if calls['n'] == 2:
          os.kill(os.getpid(), signal.SIGTERM)
        yield chunk

    data.train_chunks = chunks_then_sigterm
  config = config_for(data_dir)
  res = train.train_and_evaluate(config, workdir)
  ds = build.load_data(config)
  s = build.setup(config, ds, parallel.make_mesh())
  ck = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'))
  state, _ = ck.restore(s.state)
  ck.close()
  leaves = jax.tree_util.tree_leaves((state.params, state.batch_stats))
  out = {
      'process': jax.process_index(),
      'processes': jax.process_count(),
      'devices': jax.device_count(),
      'status': res['status'],
      'steps': res['steps'],
      'test_accuracy': res.get('test_accuracy'),
      'params': [np.asarray(x).ravel()[:64].tolist() for x in leaves],
      'files': sorted(os.listdir(workdir)),
  }
  print('RESULT ' + json.dumps(out), flush=True)


if __name__ == '__main__':
  main(sys.argv[1:])
