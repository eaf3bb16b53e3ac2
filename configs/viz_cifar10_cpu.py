"""Issue 20 at CPU scale: standard, fast (1-step) and 7-step PGD L2 models.

  python main.py --config configs/viz_cifar10_cpu.py:standard --workdir runs/viz_std
  python main.py --config configs/viz_cifar10_cpu.py:fast_l2 --workdir runs/viz_fast
  python main.py --config configs/viz_cifar10_cpu.py:pgd_l2 --workdir runs/viz_pgd
  python main.py --mode viz --config configs/viz.py --workdir runs/viz_std \
      --config.viz.compare=runs/viz_fast,runs/viz_pgd \
      --config.viz.labels=standard,fast-1,pgd-7

The three rows of configs/cifar10_standard.py, cifar10_fast_l2.py and
cifar10_pgd_l2.py (Goodwin et al. 2020: L2 eps 1.0, fast alpha 1.5 eps,
PGD-7 alpha 2.5 eps / 7) shrunk so that all three train in about 45 minutes
on a 2-core CPU: a BN ResNet-18 at a quarter width (`resnet18`, width 16,
~0.7M parameters), a class-balanced 10,000-image training subset, 6 epochs,
float32, one-cycle lr to 0.2. Evaluation: clean accuracy on the whole test
set, L2 PGD-20 at eps 0.5 and 1.0 on a seeded 500. Expected: the robust
rows clearly above the standard one under attack; their --mode viz pictures
more object-like (the paper's claim, to be looked at).
"""

import ml_collections

from configs import cifar10_fast_l2
from configs import cifar10_pgd_l2
from configs import cifar10_standard

ROWS = {
    'standard': cifar10_standard,
    'fast_l2': cifar10_fast_l2,
    'pgd_l2': cifar10_pgd_l2,
}


def get_config(row='fast_l2'):
  if row not in ROWS:
    raise ValueError(f'unknown row {row!r}; valid: {", ".join(ROWS)}')
  c = ROWS[row].get_config()
  c.model.name = 'resnet18'
  c.model.kwargs = ml_collections.ConfigDict(dict(width=16))
  c.data.num_train_examples = 10_000
  c.num_epochs = 6
  c.batch_size = 128
  c.dtype = 'float32'
  c.optim.schedule = 'onecycle'
  c.optim.lr = 0.2
  c.optim.onecycle_peak = 0.5
  c.eval_every = 2
  c.monitor.attack = ''
  c.eval.attacks = (
      'pgd(norm=l2, eps=0.5, steps=20)',
      'pgd(norm=l2, eps=1.0, steps=20)',
  )
  c.eval.num_examples = 500
  c.eval.at_end = True
  return c
