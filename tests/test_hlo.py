"""The bf16 train steps compute every convolution and matmul in bf16
(forward, backward and attack passes), checked on the lowered program."""

import re

import numpy as np
import pytest

from conftest import tiny_config
from jaxadv import build
from jaxadv import parallel
from jaxadv import steps
from jaxadv import train

_OPERANDS = r':\s*\((tensor<[^>]*>), (tensor<[^>]*>)\)'


def _operand_dtypes(text, op):
  pairs = re.findall(r'stablehlo\.' + op + r'\b.*?' + _OPERANDS, text)
  return [
      (a.rsplit('x', 1)[-1][:-1], b.rsplit('x', 1)[-1][:-1]) for a, b in pairs
  ]


@pytest.mark.parametrize(
    'model,method',
    [
        ('cnn5', 'standard'),
        ('cnn5', 'free'),
        ('preact_resnet18', 'fast'),
        ('preact_resnet18', 'pgd'),
    ],
)
def test_bf16_step_has_no_f32_convolutions_or_matmuls(
    tiny_data_dir, model, method
):
  config = tiny_config(
      tiny_data_dir,
      **{
          'model.name': model,
          'dtype': 'bfloat16',
          'method.name': method,
          'batch_size': 16,
      },
  )
  if method != 'standard':
    config.method.eps = 0.1
  if method == 'pgd':
    config.method.steps = 2
  if method == 'free':
    config.method.replays = 2
  ds = build.load_data(config)
  mesh = parallel.make_mesh()
  s = build.setup(config, ds, mesh)
  fn = steps.make_train_fn(s, mesh, 'none', on_device=True)
  text = fn.lower(
      s.state, ds.train.arrays, np.zeros((2, 16), np.int32)
  ).as_text()
  convs = _operand_dtypes(text, 'convolution')
  dots = _operand_dtypes(text, 'dot_general')
  # Forward, weight and input gradients of every layer, in every pass.
  assert len(convs) >= 6 and dots
  assert set(convs) == {('bf16', 'bf16')}, convs
  assert set(dots) == {('bf16', 'bf16')}, dots
