"""Checks a config before anything is compiled; one-line errors naming keys."""

import jax

from jaxadv import attacks
from jaxadv import data as data_lib
from jaxadv import methods as methods_lib
from jaxadv import models as models_lib
from jaxadv.models import layers as model_layers
from jaxadv import optim
from jaxadv import runners


from jaxadv.errors import ConfigError  # re-exported: validation.ConfigError


def require(cond, msg):
  if not cond:
    raise ConfigError(msg)


def _get(config, key):
  """config['a.b'] for a dotted key."""
  for part in key.split('.'):
    config = config[part]
  return config


def _positive(config, key, integer=False):
  value = _get(config, key)
  ok = isinstance(value, int) if integer else isinstance(value, (int, float))
  require(
      ok and not isinstance(value, bool) and value > 0,
      f'config.{key}={value!r} must be a positive '
      f'{"integer" if integer else "number"}',
  )


def _divisible(config, key, num_devices, num_processes):
  """A global batch (config[key], dotted) must split over devices and
  processes."""
  value = _get(config, key)
  for count, what in ((num_devices, 'devices'), (num_processes, 'processes')):
    require(
        value % count == 0,
        f'config.{key}={value} is not divisible by the {count} {what}; '
        f'use a multiple of {count}',
    )


def validate_config(config, num_devices=None, num_processes=None):
  """Raises ConfigError for the first impossible value found."""
  num_devices = jax.device_count() if num_devices is None else num_devices
  num_processes = (
      jax.process_count() if num_processes is None else num_processes
  )
  for key in ('num_epochs', 'optim.lr'):
    _positive(config, key)
  for key in ('batch_size', 'eval_batch_size', 'log_every', 'keep_checkpoints'):
    _positive(config, key, integer=True)
  for key in ('batch_size', 'eval_batch_size'):
    _divisible(config, key, num_devices, num_processes)
  spc = config.steps_per_call
  require(
      isinstance(spc, int) and not isinstance(spc, bool) and spc >= 0,
      f'config.steps_per_call={spc!r} must be an integer >= 0 '
      '(0 = auto: 1 on CPU, 10 on GPU/TPU)',
  )
  require(
      config.eval_every >= 0 and config.checkpoint_every >= 0,
      'config.eval_every and config.checkpoint_every must be >= 0 epochs',
  )
  require(
      config.dtype in ('float32', 'bfloat16'),
      f"config.dtype='{config.dtype}'; valid: float32, bfloat16",
  )
  runners.validate(config)
  _validate_data(config.data)
  _validate_model(config.model)
  _validate_optim(config.optim)
  try:
    method = methods_lib.get_method(config.method.name)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  method.validate(config)
  settings = methods_lib.settings(method, config)
  require(
      not config.model.dual_bn or methods_lib.trains_clean_bn(method, config),
      f"config.model.dual_bn=True with method '{config.method.name}', "
      'which trains on adversarial inputs only: the clean BatchNorm set '
      'that evaluation uses would never be trained; set model.dual_bn='
      'False (or, for pgd/fast, method.clean_weight > 0)',
  )
  _validate_eval(config, num_devices, num_processes, settings)
  _validate_monitor(config, settings)
  return method


def _validate_data(d):
  require(
      0.0 < d.train_fraction <= 1.0,
      f'config.data.train_fraction={d.train_fraction} must be in (0, 1]',
  )
  require(
      d.get('feed', 'auto') in data_lib.FEEDS,
      f"config.data.feed='{d.get('feed')}'; valid: "
      f"{', '.join(data_lib.FEEDS)}",
  )
  for key in ('num_train_examples', 'num_test_examples'):
    require(d[key] >= 0, f'config.data.{key}={d[key]} must be >= 0 (0 = all)')


def _validate_model(m):
  require(
      m.name in models_lib.MODELS,
      f"unknown model '{m.name}' (config.model.name); valid: "
      f"{', '.join(sorted(models_lib.MODELS))}",
  )
  if m.activation is not None:
    try:
      model_layers.get_activation(m.activation)
    except ValueError as e:
      raise ConfigError(f'config.model.activation: {e}') from None
  try:  # model-specific kwargs (names and values); building is cheap
    models_lib.get_model(
        m.name,
        num_classes=10,
        mean=None,
        std=None,
        **dict(m.kwargs),
    )
  except (ValueError, TypeError) as e:
    raise ConfigError(f'config.model.kwargs: {e}') from None


def _validate_optim(o):
  require(
      o.name in optim.OPTIMIZERS,
      f"unknown optimizer '{o.name}' (config.optim.name); valid: "
      f"{', '.join(optim.OPTIMIZERS)}",
  )
  require(
      o.schedule in optim.SCHEDULES,
      f"unknown schedule '{o.schedule}' (config.optim.schedule); valid: "
      f"{', '.join(optim.SCHEDULES)}",
  )
  require(
      len(o.boundaries) == len(o.scales),
      'config.optim.boundaries and config.optim.scales need equal lengths',
  )
  require(
      o.weight_decay >= 0 and o.momentum >= 0 and o.warmup_epochs >= 0,
      'config.optim.weight_decay, momentum and warmup_epochs must be >= 0',
  )


def _parse_attack(key, spec, settings):
  try:
    return attacks.parse_attack(spec, settings)
  except ValueError as e:
    raise ConfigError(f'{key}: {e}') from None


def _validate_monitor(config, settings):
  m = config.monitor
  if not m.attack:
    return
  _parse_attack('config.monitor.attack', m.attack, settings)
  _positive(config, 'monitor.num_examples', integer=True)
  require(
      m.max_drop >= 0,
      f'config.monitor.max_drop={m.max_drop} must be >= 0 (a fraction: '
      '0.2 = 20 points)',
  )


def _validate_eval(config, num_devices, num_processes, settings):
  dtype = config.eval.get('dtype', '')
  require(
      dtype in ('', 'float32', 'bfloat16'),
      f"config.eval.dtype='{dtype}'; valid: float32, bfloat16, '' (= "
      'config.dtype)',
  )
  if not config.eval.attacks:
    return
  for spec in config.eval.attacks:
    _parse_attack('config.eval.attacks', spec, settings)
  _positive(config, 'eval.batch_size', integer=True)
  _divisible(config, 'eval.batch_size', num_devices, num_processes)
  require(
      config.eval.num_examples >= 0,
      'config.eval.num_examples must be >= 0 (0 = the whole test set)',
  )
