"""Standard training of Madry et al.'s CNN on MNIST.

  python main.py --config configs/mnist_standard.py --workdir runs/mnist_standard

Expected: >= 99.0% clean test accuracy after 3 epochs (Adam 1e-3, batch 128).
Measured on a 2-core CPU: see README.md.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.data.name = 'mnist'
  c.model.name = 'mnist_cnn'
  c.method.name = 'standard'
  c.optim.name = 'adam'
  c.optim.lr = 1e-3
  c.optim.schedule = 'cosine'
  c.num_epochs = 3
  c.batch_size = 128
  c.log_every = 50
  return c
