"""Fast (FGSM with random start) adversarial training on CIFAR-10 (Wong et al. 2020).

  python main.py --config configs/cifar10_fast.py --workdir runs/cifar10_fast

Setting of Wong et al. (2020), "Fast is better than free": PreActResNet18,
L-inf eps = 8/255, alpha = 10/255, 15 epochs, batch 128, SGD momentum 0.9,
weight decay 5e-4, cyclic learning rate 0 -> 0.2 (at half of training) -> 0,
mixed precision (bf16 here), crop + flip, PyTorch's default initialization
(model.kwargs.init='torch'). The catastrophic-overfitting
monitor (their early stopping) runs PGD-10 on a training minibatch each epoch.
Expected on the shared (JPEG) CIFAR-10: clean >= 76%, PGD-50 with 10 restarts
(step 2/255) >= 43% (Wong et al.: 83.8% / 46.1% on the PNG data).
"""

from configs import default


def get_config():
  c = default.get_config()
  c.data.name = 'cifar10'
  c.model.name = 'preact_resnet18'
  c.model.kwargs.init = 'torch'  # PyTorch's default init, as their code
  c.method.name = 'fast'
  c.method.eps = 8 / 255
  c.method.step_size = 10 / 255
  c.method.norm = 'linf'
  c.method.attack_bn = 'train'  # model.train() in their code
  c.optim.name = 'sgd'
  c.optim.lr = 0.2
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.weight_decay = 5e-4
  c.optim.schedule = 'onecycle'
  c.optim.onecycle_peak = 0.5  # torch CyclicLR, step_size_up = half the steps
  c.num_epochs = 15
  c.batch_size = 128
  c.eval_batch_size = 1024
  c.dtype = 'bfloat16'
  c.log_every = 100
  c.eval_every = 5
  c.monitor.attack = 'pgd(norm=linf, eps=method, steps=10, step_size=2/255)'
  c.monitor.max_drop = 0.2
  c.eval.attacks = (
      'pgd(norm=linf, eps=method, steps=50, step_size=2/255, ' 'restarts=10)',
  )
  c.eval.at_end = True
  return c
