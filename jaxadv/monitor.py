"""Wong et al.'s catastrophic-overfitting monitor, for any method."""

import os

import numpy as np

from jaxadv import attacks
from jaxadv import checkpoint as ckpt_lib
from jaxadv import data
from jaxadv import evaluation
from jaxadv import loop
from jaxadv.errors import NonFiniteError


class OverfitMonitor:
  """Every epoch: accuracy under `config.monitor.attack` on a fixed training
  minibatch. The best state is kept in <workdir>/best; a fall of more than
  `max_drop` below the best asks the trainer to stop.

  `method_settings` resolves `key=method` in the attack spec (the training
  eps), so `--config.method.eps=...` moves the monitor with training.
  """

  def __init__(self, config, ds, mesh, specs, workdir, method_settings=None):
    m = config.monitor
    n = min(m.num_examples, ds.num_train)
    idx = np.sort(
        np.random.default_rng([config.seed, 7]).permutation(ds.num_train)[:n]
    )
    # Read once (also from a streamed split) and kept in host memory.
    self.batch = data.ArraySplit(next(ds.train.batches([idx])))
    ndev = mesh.devices.size
    self.batch_size = -(-n // ndev) * ndev
    self.mesh, self.specs, self.max_drop = mesh, specs, m.max_drop
    self.spec = attacks.parse_attack(m.attack, method_settings)
    self.acc_fn = evaluation.make_accuracy_fn(
        mesh, specs, attacks.make_attack(self.spec)
    )
    self.ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, 'best'), 1)
    self.best = -1.0
    if self.ckpt.latest_step() is not None:
      self.best = self.ckpt.read_meta().get('robust_accuracy', -1.0)

  def update(self, state, epoch):
    """Returns (robust accuracy, True if training should stop)."""
    if not loop.all_finite(state):  # never keep a NaN state as the best one
      raise NonFiniteError(
          f'parameters or statistics became NaN/Inf by step '
          f'{int(state.step)}; the monitor did not keep this state'
      )
    acc = self.robust_accuracy(state)
    if acc > self.best:
      self.best = acc
      step = int(state.step)
      if step in self.ckpt.all_steps():  # a resumed run redoing this epoch
        self.ckpt.delete(step)
      self.ckpt.save(step, state, {'robust_accuracy': acc, 'epoch': epoch})
      self.ckpt.wait()
    return acc, acc < self.best - self.max_drop

  def robust_accuracy(self, state):
    """Accuracy under the monitor's attack on its fixed training batch."""
    return evaluation.accuracy(
        state,
        self.batch,
        mesh=self.mesh,
        specs=self.specs,
        batch_size=self.batch_size,
        accuracy_fn=self.acc_fn,
    )[0]

  def best_state(self, template):
    return self.ckpt.restore(template)[0]

  def close(self):
    self.ckpt.close()
