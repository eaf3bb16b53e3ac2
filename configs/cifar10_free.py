"""Free adversarial training, Free-8, on CIFAR-10 (Shafahi et al. 2019).

  python main.py --config configs/cifar10_free.py --workdir runs/cifar10_free

Free-m with m = 8 replays per minibatch, L-inf eps = 8/255, step eps,
10 passes over the data (= 80 gradient passes per example), as Wong et al.'s
Free baseline for PreActResNet18 (train_free.py), including its peak
learning rate 0.04 (each of the 8 x 3,900 replays is an SGD update, so the
fast runs' 0.2 would take 5x larger total steps); otherwise as
configs/cifar10_fast.py (batch 128, SGD 0.9, wd 5e-4, one-cycle, bf16).
Shafahi et al. report 46.8% PGD-20 for WRN-32-10 after 80k iterations.
Expected on the shared (JPEG) CIFAR-10: PGD-50 with 10 restarts (step 2/255)
>= 42%.
"""

import ml_collections

from configs import cifar10_fast


def get_config():
  c = cifar10_fast.get_config()
  c.method = ml_collections.ConfigDict(
      dict(name='free', eps=8 / 255, replays=8, step_size=8 / 255)
  )
  c.optim.lr = 0.04
  c.num_epochs = 10
  c.monitor.attack = ''
  return c
