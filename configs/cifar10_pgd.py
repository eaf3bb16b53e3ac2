"""PGD-7 adversarial training on CIFAR-10 (Madry et al. 2018, Wong et al.'s
fast schedule).

  python main.py --config configs/cifar10_pgd.py --workdir runs/cifar10_pgd

PGD with 7 steps of 2/255 from a random start, L-inf eps = 8/255; otherwise
as configs/cifar10_fast.py (PreActResNet18, 15 epochs, batch 128, SGD 0.9,
wd 5e-4, one-cycle lr up to 0.2, bf16). Costs 8 passes per step (4x fast).
Expected on the shared (JPEG) CIFAR-10: clean >= 73%, PGD-50 with 10 restarts
(step 2/255) >= 45%.
"""

import ml_collections

from configs import cifar10_fast


def get_config():
  c = cifar10_fast.get_config()
  c.method = ml_collections.ConfigDict(
      dict(
          name='pgd',
          eps=8 / 255,
          steps=7,
          step_size=2 / 255,
          norm='linf',
          random_start=True,
          clean_weight=0.0,
          attack_bn='train',
      )
  )
  c.monitor.attack = ''  # multi-step PGD does not overfit catastrophically
  return c
