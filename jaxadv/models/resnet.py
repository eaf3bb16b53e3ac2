"""ResNets: PreActResNet-18, ResNet-18/34/50, WideResNet and the GREAT auxiliary ResNet-11.

All take NHWC inputs with pixels in [0, 1] (normalized inside the model) and return float32
logits (N, num_classes). Convs are bias-free with torch-style padding (k // 2), so shapes and
parameter counts match the PyTorch reference implementations.
"""

import functools
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxadv.models.layers import (
    INITS,
    ModelBase,
    conv,
    conv_init,
    dense,
    get_activation,
    torch_default_init,
)

ModuleDef = Any


class PreActBlock(nn.Module):
  """Pre-activation basic block (He et al. 2016; also the WideResNet block).

  The 1x1 projection shortcut, used when the shape changes, sees the pre-activated input.
  """

  features: int
  strides: int
  norm: ModuleDef
  act: Callable
  dtype: Any
  kernel_init: Callable = conv_init

  @nn.compact
  def __call__(self, x, adv: bool = False):
    conv_ = functools.partial(
        conv, dtype=self.dtype, kernel_init=self.kernel_init
    )
    out = self.act(self.norm(name='bn1')(x, adv))
    shortcut = x
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = conv_(self.features, 1, self.strides, name='shortcut')(out)
    out = conv_(self.features, 3, self.strides, name='conv1')(out)
    out = self.act(self.norm(name='bn2')(out, adv))
    out = conv_(self.features, 3, name='conv2')(out)
    return out + shortcut


class BasicBlock(nn.Module):
  """Post-activation basic block: conv-BN-act-conv-BN, + (projected) shortcut, act."""

  features: int
  strides: int
  norm: ModuleDef
  act: Callable
  dtype: Any

  @nn.compact
  def __call__(self, x, adv: bool = False):
    out = conv(self.features, 3, self.strides, dtype=self.dtype, name='conv1')(
        x
    )
    out = self.act(self.norm(name='bn1')(out, adv))
    out = conv(self.features, 3, dtype=self.dtype, name='conv2')(out)
    out = self.norm(name='bn2')(out, adv)
    shortcut = _projection(
        x, self.features, self.strides, self.norm, self.dtype, adv
    )
    return self.act(out + shortcut)


class Bottleneck(nn.Module):
  """Bottleneck block 1x1 - 3x3 (strided, as torchvision v1.5) - 1x1 (4x features)."""

  features: int
  strides: int
  norm: ModuleDef
  act: Callable
  dtype: Any

  @nn.compact
  def __call__(self, x, adv: bool = False):
    out = conv(self.features, 1, dtype=self.dtype, name='conv1')(x)
    out = self.act(self.norm(name='bn1')(out, adv))
    out = conv(self.features, 3, self.strides, dtype=self.dtype, name='conv2')(
        out
    )
    out = self.act(self.norm(name='bn2')(out, adv))
    out = conv(4 * self.features, 1, dtype=self.dtype, name='conv3')(out)
    out = self.norm(name='bn3')(out, adv)
    shortcut = _projection(
        x, 4 * self.features, self.strides, self.norm, self.dtype, adv
    )
    return self.act(out + shortcut)


def _projection(x, features, strides, norm, dtype, adv):
  """Identity, or 1x1 conv + BN when the shape changes (called inside a block's compact)."""
  if strides == 1 and x.shape[-1] == features:
    return x
  x = conv(features, 1, strides, dtype=dtype, name='shortcut_conv')(x)
  return norm(name='shortcut_bn')(x, adv)


class PreActResNet(ModelBase):
  """Pre-activation ResNet: 3x3 stem conv, stages of PreActBlocks, BN + act, global avg pool, fc.

  Defaults give PreActResNet-18 (Wong et al. 2020): 11,172,170 parameters on CIFAR-10.
  init_scheme='he': convs He-normal (fan_out), fc flax's default (lecun normal, zero bias);
  'torch': PyTorch's defaults, as the PyTorch code of Wong et al. initializes it
  (convs and fc U(+-1/sqrt(fan_in)), fc bias likewise).
  """

  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  widths: Sequence[int] = (64, 128, 256, 512)
  strides: Sequence[int] = (1, 2, 2, 2)
  stem_width: int = 64
  init_scheme: str = 'he'  # not `init`: that is Module.init

  @nn.compact
  def __call__(
      self, x, train: bool = False, adv: bool = False, features: bool = False
  ):
    kernel_init = (
        torch_default_init if self.init_scheme == 'torch' else conv_init
    )
    act, norm = get_activation(self.activation), self.norm(train)
    x = conv(
        self.stem_width,
        3,
        dtype=self.dtype,
        name='stem',
        kernel_init=kernel_init,
    )(self.prepare(x))
    for i, (n, width, strides) in enumerate(
        zip(self.stage_sizes, self.widths, self.strides)
    ):
      for j in range(n):
        x = PreActBlock(
            width,
            strides if j == 0 else 1,
            norm,
            act,
            self.dtype,
            kernel_init,
            name=f'stage{i + 1}_block{j + 1}',
        )(x, adv)
    x = act(norm(name='bn_final')(x, adv))
    x = jnp.mean(x, axis=(1, 2))
    logits = dense(
        self.num_classes,
        dtype=self.dtype,
        name='fc',
        fan_in=x.shape[-1],
        init=self.init_scheme,
    )(x)
    return self.output(logits, x, features)


class ResNet(ModelBase):
  """ResNet v1 (basic or bottleneck blocks), widths 64/128/256/512, strides 1/2/2/2.

  stem='cifar': 3x3 conv stride 1, no max pool (32x32 inputs);
  stem='imagenet': 7x7 conv stride 2 + 3x3 max pool stride 2.
  `in_channels`, if set, is checked against the input's last axis.
  """

  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block: str = 'basic'  # 'basic' | 'bottleneck'
  stem: str = 'cifar'  # 'cifar' | 'imagenet'
  in_channels: Optional[int] = None
  width: int = 64  # channels of the first stage (stage i: width * 2**i)

  @nn.compact
  def __call__(
      self, x, train: bool = False, adv: bool = False, features: bool = False
  ):
    if self.in_channels is not None and x.shape[-1] != self.in_channels:
      raise ValueError(
          f'expected {self.in_channels} input channels, got shape {x.shape}'
      )
    act, norm = get_activation(self.activation), self.norm(train)
    block_cls = {'basic': BasicBlock, 'bottleneck': Bottleneck}[self.block]
    x = self.prepare(x)
    if self.stem == 'imagenet':
      x = act(
          norm(name='stem_bn')(
              conv(self.width, 7, 2, dtype=self.dtype, name='stem')(x), adv
          )
      )
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    else:
      x = act(
          norm(name='stem_bn')(
              conv(self.width, 3, dtype=self.dtype, name='stem')(x), adv
          )
      )
    for i, n in enumerate(self.stage_sizes):
      for j in range(n):
        strides = 2 if i > 0 and j == 0 else 1
        x = block_cls(
            self.width * 2**i,
            strides,
            norm,
            act,
            self.dtype,
            name=f'stage{i + 1}_block{j + 1}',
        )(x, adv)
    x = jnp.mean(x, axis=(1, 2))
    logits = dense(self.num_classes, dtype=self.dtype, name='fc')(x)
    return self.output(logits, x, features)


_STEMS = ('cifar', 'imagenet')


def _check_stem(stem):
  if stem not in _STEMS:
    raise ValueError(f"unknown stem {stem!r}; valid: {', '.join(_STEMS)}")
  return stem


def preact_resnet18(*, init: str = 'he', **common):
  """PreActResNet-18 as in Wong et al. (2020) fast adversarial training; init='torch'
  initializes it as their PyTorch code does."""
  if init not in INITS:
    raise ValueError(
        f"init={init!r} (config.model.kwargs.init); valid: {', '.join(INITS)}"
    )
  return PreActResNet(init_scheme=init, **common)


def resnet18(*, stem: str = 'cifar', width: int = 64, **common):
  """width: channels of the first stage (64; smaller for CPU-scale runs)."""
  return ResNet(
      width=width,
      stage_sizes=(2, 2, 2, 2),
      block='basic',
      stem=_check_stem(stem),
      **common,
  )


def resnet34(*, stem: str = 'cifar', width: int = 64, **common):
  """width: channels of the first stage (64; smaller for CPU-scale runs)."""
  return ResNet(
      width=width,
      stage_sizes=(3, 4, 6, 3),
      block='basic',
      stem=_check_stem(stem),
      **common,
  )


def resnet50(*, stem: str = 'cifar', width: int = 64, **common):
  """width: channels of the first stage (64; smaller for CPU-scale runs)."""
  return ResNet(
      width=width,
      stage_sizes=(3, 4, 6, 3),
      block='bottleneck',
      stem=_check_stem(stem),
      **common,
  )


def wide_resnet(*, depth: int = 28, width: int = 10, **common):
  """WideResNet-depth-width (Zagoruyko & Komodakis 2016), pre-activation blocks, no dropout.

  Stem 3x3 conv 16, three groups of n = (depth - 4) // 6 blocks, widths 16k/32k/64k, strides
  1/2/2. The floor division follows common robust-training code, so depth 32 builds the same
  network as 28 (n = 4) and 34 gives n = 5. WRN-28-10: 36,479,194 and WRN-34-10: 46,160,474
  parameters on CIFAR-10.
  """
  n = (depth - 4) // 6
  if n < 1 or width < 1:
    raise ValueError(
        f'wide_resnet needs depth >= 10 and width >= 1, got {depth}-{width}'
    )
  return PreActResNet(
      stage_sizes=(n, n, n),
      widths=(16 * width, 32 * width, 64 * width),
      strides=(1, 2, 2),
      stem_width=16,
      **common,
  )


def resnet11(
    *,
    in_channels: Optional[int] = None,
    activation: str = 'leaky_relu',
    **common,
):
  """GREAT's auxiliary / discriminator network, a small ResNet on non-image inputs.

  Built here as: 3x3 stem conv 64 + BN + act, four basic blocks (one per stage, widths
  64/128/256/512, strides 1/2/2/2, 1x1 conv + BN projection shortcuts on stages 2-4), global
  average pool, fc. That is 10 weight layers on the main path (1 + 4 x 2 + 1) plus 3 projection
  convs. Leaky ReLU (slope 0.2) by default. Its input (gradients, feature maps) need not be an
  image: pass mean=None, std=None to skip normalization; `in_channels` is checked if given.
  """
  return ResNet(
      stage_sizes=(1, 1, 1, 1),
      block='basic',
      stem='cifar',
      in_channels=in_channels,
      activation=activation,
      **common,
  )
