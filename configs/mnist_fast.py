"""Fast (FGSM with random start) adversarial training on MNIST (Wong et al. 2020).

  python main.py --config configs/mnist_fast.py --workdir runs/mnist_fast

Setting of Wong et al. (2020), "Fast is better than free", MNIST: L-inf
eps = 0.3, alpha = 0.375 (1.25 eps), 10 epochs, Adam with a cyclic
(one-cycle) learning rate peaking at 5e-3 after 2/5 of training. Batch 128
(theirs: 100, which 8 devices cannot split); Madry et al.'s CNN.
Expected: natural test accuracy >= 97%, PGD-50 with 10 restarts (step 0.01)
>= 85%.
"""
from configs import default


def get_config():
  c = default.get_config()
  c.data.name = 'mnist'
  c.model.name = 'mnist_cnn'
  c.method.name = 'fast'
  c.method.eps = 0.3
  c.method.step_size = 0.375
  c.method.norm = 'linf'
  c.optim.name = 'adam'
  c.optim.lr = 5e-3
  c.optim.schedule = 'onecycle'
  c.optim.onecycle_peak = 0.4
  c.num_epochs = 10
  c.batch_size = 128
  c.steps_per_call = 10
  c.log_every = 100
  c.eval_every = 2
  # Catastrophic-overfitting guard (Wong et al.'s early stopping): FGSM-RS at
  # eps = 0.3 overfit catastrophically in short CPU runs of this recipe.
  c.monitor.attack = 'pgd(norm=linf, eps=0.3, steps=10, step_size=0.05)'
  c.monitor.max_drop = 0.2
  c.eval.attacks = ('pgd(norm=linf, eps=0.3, steps=50, step_size=0.01, '
                    'restarts=10)',)
  c.eval.at_end = True
  return c
