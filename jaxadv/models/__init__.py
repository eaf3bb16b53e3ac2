"""Model registry: name -> constructor of a Flax Linen module.

Every model is called as `model.apply(variables, x, train=False, adv=False, mutable=...)` with x
NHWC float, pixels in [0, 1] (normalized inside the model), and returns float32 logits
(N, num_classes). BatchNorm statistics live in 'batch_stats' (and 'batch_stats_adv' with
dual_bn=True; `adv=True` selects that set).
"""

import inspect
from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxadv.models import resnet, small

MODELS: dict[str, Callable[..., nn.Module]] = {
    'mnist_cnn': small.mnist_cnn,
    'cnn5': small.cnn5,
    'wong_mnist': small.wong_mnist,
    'preact_resnet18': resnet.preact_resnet18,
    'resnet11': resnet.resnet11,
    'resnet18': resnet.resnet18,
    'resnet34': resnet.resnet34,
    'resnet50': resnet.resnet50,
    'wide_resnet': resnet.wide_resnet,
}

_COMMON = (
    'num_classes',
    'mean',
    'std',
    'dtype',
    'activation',
    'bn_axis_name',
    'dual_bn',
)


def list_models() -> list[str]:
  return sorted(MODELS)


def model_kwargs(name: str) -> list[str]:
  """Model-specific keyword arguments accepted by `get_model(name, ...)`."""
  params = inspect.signature(MODELS[name]).parameters.values()
  return [
      p.name
      for p in params
      if p.kind == p.KEYWORD_ONLY and p.name not in _COMMON
  ]


def get_model(
    name: str,
    *,
    num_classes: int,
    mean: Optional[Sequence[float]],
    std: Optional[Sequence[float]],
    dtype=jnp.float32,
    activation: Optional[str] = None,
    bn_axis_name: Optional[str] = None,
    dual_bn: bool = False,
    **kwargs,
) -> nn.Module:
  """Builds model `name`.

  mean, std: per-channel input statistics in pixel scale ([0, 1]), or None to skip that step.
  dtype: compute dtype, a dtype or its name ('bfloat16', so configs can hold a string);
      params and BN statistics stay float32 and logits are float32.
  activation: None keeps the model's default ('relu'; 'leaky_relu' for resnet11).
  bn_axis_name: mesh axis over which BatchNorm batch statistics are averaged (sync BN).
  dual_bn: separate clean / adversarial BatchNorm sets (AdvProp).
  kwargs: model-specific options, e.g. stem='imagenet' or depth=34, width=10.
  """
  if name not in MODELS:
    raise ValueError(
        f"unknown model {name!r}; valid: {', '.join(list_models())}"
    )
  accepted = model_kwargs(name)
  unknown = sorted(set(kwargs) - set(accepted))
  if unknown:
    raise ValueError(
        f'model {name!r} got unknown kwargs {unknown}; '
        f'accepted: {accepted or "none"}'
    )
  common = dict(
      num_classes=num_classes,
      dtype=jnp.dtype(dtype),
      bn_axis_name=bn_axis_name,
      dual_bn=dual_bn,
      mean=None if mean is None else tuple(mean),
      std=None if std is None else tuple(std),
  )
  if activation is not None:
    common['activation'] = activation
  return MODELS[name](**common, **kwargs)


__all__ = ['MODELS', 'get_model', 'list_models', 'model_kwargs']
