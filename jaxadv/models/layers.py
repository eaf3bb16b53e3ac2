"""Shared layers: (dual, synchronizable) BatchNorm, input normalization, activations.

Every model builds its normalization layers through `make_norm`, so switching a model to
AdvProp-style dual BatchNorm or to synchronized BN is a constructor flag, not a model edit.
"""

import functools
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# He-normal with fan_out, as torchvision / most CIFAR ResNet code initializes convolutions.
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
# PyTorch's default Conv/Linear init (kaiming_uniform with a=sqrt(5)): U(+-1/sqrt(fan_in)).
torch_default_init = nn.initializers.variance_scaling(
    1 / 3, 'fan_in', 'uniform'
)


def torch_bias_init(fan_in: int):
  """PyTorch's default Conv/Linear bias init: U(+-1/sqrt(fan_in))."""
  bound = 1.0 / fan_in**0.5
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
      key, shape, dtype, -bound, bound
  )


INITS = ('he', 'torch')  # kernel init choices of models that take `init`


class BatchNorm(nn.Module):
  """BatchNorm over all axes but the last, optionally dual (clean / adversarial statistics).

  Call as `bn(x, adv)` with `adv` a Python bool. Variables:
    params        scale, bias                 (+ scale_adv, bias_adv if dual), float32 (C,)
    batch_stats   mean, var                   float32 (C,)
    batch_stats_adv  mean, var  (only if dual) float32 (C,)
  With `adv=True` and `dual=True` only the adversarial set is used and updated; with `dual=False`
  `adv` is ignored, so attacks that ask for adversarial BN work on any model.

  Statistics are computed in float32 whatever `dtype` is; the output is cast to `dtype`.
  With `axis_name` set (inside shard_map / pmap), batch mean and mean of squares are averaged
  over that axis, so every shard normalizes with the statistics of the global batch
  (assumes equal per-shard batch sizes, which shard_map guarantees).
  """

  use_running_average: bool
  momentum: float = 0.9
  epsilon: float = 1e-5
  axis_name: Optional[str] = None
  dual: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, adv: bool = False):
    c = x.shape[-1]
    f32 = jnp.float32

    def stats(col):
      return (
          self.variable(col, 'mean', lambda: jnp.zeros((c,), f32)),
          self.variable(col, 'var', lambda: jnp.ones((c,), f32)),
      )

    # Both sets are always declared so that `init` creates the full variable tree.
    scale = self.param('scale', nn.initializers.ones, (c,), f32)
    bias = self.param('bias', nn.initializers.zeros, (c,), f32)
    ra_mean, ra_var = stats('batch_stats')
    if self.dual:
      scale_adv = self.param('scale_adv', nn.initializers.ones, (c,), f32)
      bias_adv = self.param('bias_adv', nn.initializers.zeros, (c,), f32)
      ra_mean_adv, ra_var_adv = stats('batch_stats_adv')
      if adv:
        scale, bias, ra_mean, ra_var = (
            scale_adv,
            bias_adv,
            ra_mean_adv,
            ra_var_adv,
        )

    x32 = x.astype(f32)
    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      axes = tuple(range(x.ndim - 1))
      moments = jnp.stack(
          [jnp.mean(x32, axes), jnp.mean(jnp.square(x32), axes)]
      )
      if self.axis_name is not None:
        moments = jax.lax.pmean(moments, self.axis_name)
      mean, mean_sq = moments[0], moments[1]
      var = jnp.maximum(mean_sq - jnp.square(mean), 0.0)
      # Like flax's BatchNorm: init must not move the running statistics.
      if not self.is_initializing():
        m = self.momentum
        ra_mean.value = m * ra_mean.value + (1.0 - m) * mean
        ra_var.value = m * ra_var.value + (1.0 - m) * var

    y = (x32 - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias
    return y.astype(self.dtype)


def make_norm(train: bool, dual: bool, axis_name: Optional[str], dtype: Dtype):
  """BatchNorm constructor shared by all models: batch statistics iff `train`."""
  return functools.partial(
      BatchNorm,
      use_running_average=not train,
      dual=dual,
      axis_name=axis_name,
      dtype=dtype,
  )


def normalize(
    x, mean: Optional[Sequence[float]], std: Optional[Sequence[float]]
):
  """Per-channel `(x - mean) / std` in float32; x is NHWC, pixels in [0, 1].

  `mean=None` / `std=None` skip the respective step (inputs that are not images).
  """
  for stat in (mean, std):
    # Guard against silent broadcasting, e.g. 3-channel CIFAR stats on a 1-channel input.
    if stat is not None and len(stat) not in (1, x.shape[-1]):
      raise ValueError(
          f'mean/std of length {len(stat)} for input of shape {x.shape}'
      )
  x = x.astype(jnp.float32)
  if mean is not None:
    x = x - jnp.asarray(mean, jnp.float32)
  if std is not None:
    x = x / jnp.asarray(std, jnp.float32)
  return x


_ACTIVATIONS = {
    'relu': nn.relu,
    'leaky_relu': functools.partial(nn.leaky_relu, negative_slope=0.2),
    'swish': nn.swish,
    'silu': nn.silu,
    'gelu': functools.partial(
        nn.gelu, approximate=False
    ),  # exact, as torch.nn.GELU
    'softplus': nn.softplus,
}


def get_activation(name: str) -> Callable:
  """Activation function by name (leaky_relu has slope 0.2)."""
  if name not in _ACTIVATIONS:
    raise ValueError(
        f"unknown activation {name!r}; valid: {', '.join(sorted(_ACTIVATIONS))}"
    )
  return _ACTIVATIONS[name]


class ModelBase(nn.Module):
  """Fields shared by all models (see `jaxadv.models.get_model`).

  Subclasses implement `__call__(x, train=False, adv=False, features=False)`: x is NHWC
  float, pixels in [0, 1] (any float dtype); returns float32 logits of shape
  (N, num_classes), or with features=True the pair (logits, representation): the
  penultimate activations (N, D) in float32, the input of the final dense layer (the
  "representation layer" of feature visualization and representation interpolation).
  """

  num_classes: int = 10
  mean: Optional[Sequence[float]] = None
  std: Optional[Sequence[float]] = None
  dtype: Dtype = jnp.float32
  activation: str = 'relu'
  bn_axis_name: Optional[str] = None
  dual_bn: bool = False

  def prepare(self, x):
    """Normalize in float32, then cast to the compute dtype."""
    return normalize(x, self.mean, self.std).astype(self.dtype)

  def norm(self, train: bool):
    return make_norm(train, self.dual_bn, self.bn_axis_name, self.dtype)

  @staticmethod
  def output(logits, representation, features: bool):
    """float32 logits, or (logits, representation) when `features`."""
    logits = logits.astype(jnp.float32)
    if features:
      return logits, representation.astype(jnp.float32)
    return logits


def conv(
    features: int,
    kernel: int,
    strides: int = 1,
    *,
    dtype: Dtype,
    name=None,
    kernel_init=conv_init,
):
  """Bias-free conv with symmetric padding k // 2 (torch-style, not SAME: differs at stride 2)."""
  return nn.Conv(
      features,
      (kernel, kernel),
      (strides, strides),
      padding=kernel // 2,
      use_bias=False,
      dtype=dtype,
      param_dtype=jnp.float32,
      kernel_init=kernel_init,
      name=name,
  )


def dense(
    features: int,
    *,
    dtype: Dtype,
    name=None,
    fan_in: Optional[int] = None,
    init: str = 'he',
):
  """Dense layer; init='torch' (needs fan_in) draws kernel and bias as PyTorch's Linear."""
  if init == 'torch':
    return nn.Dense(
        features,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
        kernel_init=torch_default_init,
        bias_init=torch_bias_init(fan_in),
    )
  return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, name=name)
