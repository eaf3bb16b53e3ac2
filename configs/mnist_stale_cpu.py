"""Simulated staleness on MNIST at CPU scale (the sweep of Bhat et al. 2018,
Section 5, cut to run in about an hour on a shared 2-core CPU).

  python -m jaxadv.tools.staleness --config configs/mnist_stale_cpu.py \
      --out runs/staleness           (s = 0, 1, 2, 4, 8, 16, 32, 64)
  python main.py --config configs/mnist_stale_cpu.py --workdir runs/s32 \
      --config.method.staleness=32   (one run)

Changes from the paper's setting (configs/mnist_stale.py), each for time:
Wong et al.'s small MNIST network (wong_mnist, 166,406 parameters) instead
of Madry et al.'s 3.3M-parameter CNN, raw [0, 1] pixels as theirs; L-inf
eps = 0.1 instead of 0.3 (at 0.3 this network sat at chance, loss 2.30, for
the 312 steps tried: a PGD-trained MNIST model needs far more steps to leave
that plateau); PGD-4 with steps of 2.5 eps / 4 from a random start (the
paper's rule; kappa = 8 there); batch 64; Adam 1e-3 (1e-4 there); 3 epochs
of a class-balanced 16,000-image train subset = 750 steps (60,000 there).
The fresh adversarial training accuracy is measured on one batch every 25
steps (the log interval). Final evaluation: clean accuracy on the 10,000 test
images and PGD-20 at the training eps (step 2.5 eps / 20, one random start)
on a seeded 1,000 of them.
"""

from configs import mnist_stale

EPS, STEPS = 0.1, 4


def get_config():
  c = mnist_stale.get_config()
  c.model.name = 'wong_mnist'
  c.method.eps = EPS
  c.method.steps = STEPS
  c.method.step_size = 2.5 * EPS / STEPS
  c.method.fresh_every = 25
  c.data.num_train_examples = 16000
  c.batch_size = 64
  c.optim.lr = 1e-3
  c.num_epochs = 3
  c.log_every = 25
  c.eval_every = 0
  c.checkpoint_every = 1
  c.eval.attacks = ('pgd(norm=linf, eps=method, steps=20)',)
  c.eval.num_examples = 1000
  return c
