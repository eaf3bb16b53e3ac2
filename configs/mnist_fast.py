"""Fast (FGSM with random start) adversarial training on MNIST (Wong et al. 2020).

  python main.py --config configs/mnist_fast.py --workdir runs/mnist_fast

Setting of Wong et al. (2020), "Fast is better than free", MNIST code: their
network (wong_mnist: conv4x4-16/2, conv4x4-32/2, fc100, fc10) on raw [0, 1]
pixels, L-inf eps = 0.3, alpha = 0.375 (1.25 eps), the FGSM gradient taken at
the unclipped random start x + U(-eps, eps) (clip_start=False: clipping it to
[0, 1] first, as their CIFAR code does, made every run overfit
catastrophically from epoch 1), 10 epochs, Adam with a cyclic (one-cycle)
learning rate peaking at 5e-3 after 2/5 of training. Batch 128 (theirs: 100,
which 8 devices cannot split).
Expected (issue 4): natural test accuracy >= 97%, PGD-50 with 10 restarts
(step 0.01) >= 85%. Measured on CPU (bench/RESULTS.md; PGD on a seeded 1,000
test images): seed 0: 98.32% / 84.3%; seeds 2, 3: 83.2%, 83.0%; seed 1
overfits catastrophically in epoch 2 (0%). About 2 minutes on a 2-core CPU.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.data.name = 'mnist'
  c.model.name = 'wong_mnist'
  c.model.normalize = False
  c.method.name = 'fast'
  c.method.eps = 0.3
  c.method.step_size = 0.375
  c.method.norm = 'linf'
  c.method.clip_start = False
  c.optim.name = 'adam'
  c.optim.lr = 5e-3
  c.optim.schedule = 'onecycle'
  c.optim.onecycle_peak = 0.4
  c.num_epochs = 10
  c.batch_size = 128
  c.log_every = 100
  c.eval_every = 2
  # Catastrophic-overfitting guard (Wong et al.'s early stopping).
  c.monitor.attack = 'pgd(norm=linf, eps=method, steps=10, step_size=0.05)'
  c.monitor.max_drop = 0.2
  c.eval.attacks = (
      'pgd(norm=linf, eps=method, steps=50, step_size=0.01, ' 'restarts=10)',
  )
  c.eval.at_end = True
  return c
