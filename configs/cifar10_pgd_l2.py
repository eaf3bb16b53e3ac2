"""L2 PGD-7 adversarial training on CIFAR-10 (Goodwin et al. 2020's baseline).

  python main.py --config configs/cifar10_pgd_l2.py --workdir runs/cifar10_pgd_l2

7 steps of alpha = 2.5 eps / 7 (normalized gradient) from a random start in
the L2 ball of eps = 1.0; eps in pixel scale: L2 norm over all 32 x 32 x 3
values of images in [0, 1], as in the paper (Madry lab's robustness
package). Otherwise as configs/cifar10_fast_l2.py (PreActResNet18, 15 epochs,
one-cycle lr up to 0.2, bf16; eval L2 PGD-20 with 10 restarts at eps = 1.0).
Costs 8 passes per step (Goodwin et al.: ~3x the 1-step run's time).
Expected: the paper gives only curves (Fig. 2, not in the text copy), so
these are estimates to confirm by a run: clean >= 70%, PGD-20x10 (L2,
eps = 1.0) >= 35%.
"""

import ml_collections

from configs import cifar10_fast_l2

EPS, STEPS = 1.0, 7


def get_config():
  c = cifar10_fast_l2.get_config()
  c.method = ml_collections.ConfigDict(
      dict(
          name='pgd',
          eps=EPS,
          steps=STEPS,
          step_size=2.5 * EPS / STEPS,
          norm='l2',
          random_start=True,
          clean_weight=0.0,
          attack_bn='train',
      )
  )
  c.monitor.attack = ''
  return c
