"""Small CNNs: Madry et al.'s and Wong et al.'s MNIST networks and the 5-layer CNN of the
GREAT supplement."""

import flax.linen as nn
import jax.numpy as jnp

from jaxadv.models.layers import (
    ModelBase,
    conv,
    conv_init,
    dense,
    get_activation,
    torch_default_init,
)


class MnistCNN(ModelBase):
  """Madry et al. (2018) MNIST CNN: conv5x5-32, pool, conv5x5-64, pool, fc1024, fc.

  Input (N, 28, 28, 1) in [0, 1]; no BatchNorm (train / adv are accepted and ignored).
  3,274,634 parameters with 10 classes.
  """

  @nn.compact
  def __call__(
      self, x, train: bool = False, adv: bool = False, features: bool = False
  ):
    act = get_activation(self.activation)
    x = self.prepare(x)
    for i, channels in enumerate((32, 64)):
      x = nn.Conv(
          channels,
          (5, 5),
          padding='SAME',
          dtype=self.dtype,
          param_dtype=jnp.float32,
          kernel_init=conv_init,
          name=f'conv{i + 1}',
      )(x)
      x = nn.max_pool(act(x), (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)
    x = act(dense(1024, dtype=self.dtype, name='fc1')(x))
    logits = dense(self.num_classes, dtype=self.dtype, name='fc2')(x)
    return self.output(logits, x, features)


class WongMnistNet(ModelBase):
  """Wong et al. (2020) MNIST network ("Fast is better than free", from Wong & Kolter's
  convex-relaxation work): conv4x4-16 stride 2, conv4x4-32 stride 2 (padding 1), fc100, fc.

  Input (N, 28, 28, 1) in [0, 1]; no BatchNorm. 166,406 parameters with 10 classes.
  """

  @nn.compact
  def __call__(
      self, x, train: bool = False, adv: bool = False, features: bool = False
  ):
    act = get_activation(self.activation)
    x = self.prepare(x)
    for i, channels in enumerate((16, 32)):
      x = act(
          nn.Conv(
              channels,
              (4, 4),
              (2, 2),
              padding=((1, 1), (1, 1)),
              dtype=self.dtype,
              param_dtype=jnp.float32,
              kernel_init=torch_default_init,
              name=f'conv{i + 1}',
          )(x)
      )
    x = x.reshape(x.shape[0], -1)
    x = act(
        nn.Dense(
            100,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=torch_default_init,
            name='fc1',
        )(x)
    )
    logits = nn.Dense(
        self.num_classes,
        dtype=self.dtype,
        param_dtype=jnp.float32,
        kernel_init=torch_default_init,
        name='fc2',
    )(x)
    return self.output(logits, x, features)


class CNN5(ModelBase):
  """GREAT supplement CNN: 3 convs 3x3 (32/64/128, strides 1/2/2), each BN + activation,
  flatten, fc128 + activation, fc. Input (N, H, W, C) in [0, 1]."""

  @nn.compact
  def __call__(
      self, x, train: bool = False, adv: bool = False, features: bool = False
  ):
    act = get_activation(self.activation)
    norm = self.norm(train)
    x = self.prepare(x)
    for i, (channels, strides) in enumerate(((32, 1), (64, 2), (128, 2))):
      x = conv(channels, 3, strides, dtype=self.dtype, name=f'conv{i + 1}')(x)
      x = act(norm(name=f'bn{i + 1}')(x, adv))
    x = x.reshape(x.shape[0], -1)
    x = act(dense(128, dtype=self.dtype, name='fc1')(x))
    logits = dense(self.num_classes, dtype=self.dtype, name='fc2')(x)
    return self.output(logits, x, features)


def mnist_cnn(**common):
  return MnistCNN(**common)


def wong_mnist(**common):
  return WongMnistNet(**common)


def cnn5(**common):
  return CNN5(**common)
