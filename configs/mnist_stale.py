"""Simulated staleness s on MNIST (Bhat et al. 2018, Section 5), paper scale.

  python main.py --config configs/mnist_stale.py --workdir runs/stale32
  python -m jaxadv.tools.staleness --config configs/mnist_stale.py \
      --out runs/staleness_paper      (s = 0, 1, 2, 4, ..., 64; Figures 5, 8)

configs/mnist_pgd.py's setting (Madry et al.'s CNN on raw [0, 1] pixels,
L-inf eps = 0.3, kappa = 8 PGD steps of 2.5 eps / kappa from a random start,
Adam 1e-4, batch 128, 60,000 steps) with method 'stale': every update trains
on the PGD batch crafted s steps earlier (the first s steps fill the queue;
jaxadv/methods/stale.py). Fresh adversarial training accuracy (the same
PGD with the current parameters on the same clean batch) is measured on one
batch every log interval (100 steps). Needs a GPU: on the shared 2-core CPU a
step of this model takes over 3 s (bench/RESULTS.md).
Expected (their Figures 5 and 8): s <= 32: about 90% adversarial and 98%
natural test accuracy, fresh training accuracy tracking stale; s = 64:
adversarial test accuracy near 5%, fresh far below stale. Evaluated here
with mnist_pgd's PGD-100 x 10 restarts (step 0.01) on the 10,000 test
images. Smoke-run on the CPU (2026-12-03): 2 steps with
--config.method.staleness=1 --config.data.num_train_examples=256
--config.num_epochs=1 --config.eval.num_examples=10 (a fill step, then one
update at staleness 1); the config's s = 32 on 2 steps is refused in one line
("leaves nothing to train").
"""

from configs import mnist_pgd


def get_config():
  c = mnist_pgd.get_config()
  c.method.name = 'stale'
  c.method.staleness = 32
  c.method.fresh_every = 100  # one fresh batch per log interval
  return c
