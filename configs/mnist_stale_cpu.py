"""Simulated staleness on MNIST at CPU scale (the sweep of Bhat et al. 2018,
Section 5, cut to run in about an hour on a shared 2-core CPU).

  python -m jaxadv.tools.staleness --config configs/mnist_stale_cpu.py \
      --out runs/staleness           (s = 0, 1, 2, 4, 8, 16, 32, 64)
  python main.py --config configs/mnist_stale_cpu.py --workdir runs/s32 \
      --config.method.staleness=32   (one run)

Wong et al.'s small MNIST network (wong_mnist, 166,406 parameters) on raw
[0, 1] pixels instead of Madry et al.'s 3.3M-parameter CNN; L-inf eps = 0.3
with PGD-K steps of 2.5 eps / K from a random start (the paper's rule); a
class-balanced 20,000-image train subset, batch 128, Adam. Final
evaluation: clean accuracy on the 10,000 test images and PGD-20 at the
training eps (step 2.5 eps / 20, one random start) on a seeded 1,000 of them.
Fresh adversarial training accuracy: one batch every 25 steps.
Measured figures and the comparison with the paper's "robust up to s = 32":
see the docstring's table below once measured.
"""

from configs import mnist_stale

EPS, STEPS = 0.3, 5


def get_config():
  c = mnist_stale.get_config()
  c.model.name = 'wong_mnist'
  c.method.steps = STEPS
  c.method.step_size = 2.5 * EPS / STEPS
  c.method.fresh_every = 25
  c.data.num_train_examples = 20000
  c.optim.lr = 1e-3
  c.num_epochs = 6
  c.log_every = 25
  c.eval_every = 0
  c.checkpoint_every = 1
  c.eval.attacks = ('pgd(norm=linf, eps=method, steps=20)',)
  c.eval.num_examples = 1000
  return c
