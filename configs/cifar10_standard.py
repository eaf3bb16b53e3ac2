"""Standard training of PreActResNet18 on CIFAR-10, one-cycle, bf16.

  python main.py --config configs/cifar10_standard.py --workdir runs/cifar10_standard

Expected on one H100: >= 90% clean test accuracy in 30 epochs (the shared copy
is JPEG-encoded; a strong PyTorch implementation gets 90.2% in 132 s).
"""

from configs import default


def get_config():
  c = default.get_config()
  c.data.name = 'cifar10'
  c.model.name = 'preact_resnet18'
  c.method.name = 'standard'
  c.optim.name = 'sgd'
  c.optim.lr = 0.2
  c.optim.momentum = 0.9
  c.optim.nesterov = True
  c.optim.weight_decay = 5e-4
  c.optim.schedule = 'onecycle'
  c.optim.onecycle_peak = 0.4
  c.num_epochs = 30
  c.batch_size = 512
  c.eval_batch_size = 1024
  c.dtype = 'bfloat16'
  c.log_every = 100
  c.eval_every = 5
  return c
