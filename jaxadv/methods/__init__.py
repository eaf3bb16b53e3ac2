"""Training methods, one module each, registered by name.

A method module provides
  validate(config)                      raise ConfigError on bad method keys
  make_train_step(config, model, axis_name=None)
      -> train_step(state, batch, rng) -> (state, metrics)
and optionally
  init_method_state(config, global_batch_shape) -> {'per_example': {...},
      'shared': {...}}: persistent state; 'per_example' leaves lead with
      the global batch axis and are sharded over devices like the batch.
  updates_per_batch(config) -> int: optimizer updates one call of
      train_step makes (Free's replays); 1 if absent.
  trains_clean_bn(config) -> bool: whether training makes clean passes,
      which train the BatchNorm set that evaluation uses; False for methods
      that train on adversarial inputs only (they cannot use model.dual_bn).
      True if absent.
Adding a method is one new module here plus an entry in METHODS; the trainer
never changes.
"""
import importlib

METHODS = {
    'standard': 'jaxadv.methods.standard',
    'pgd': 'jaxadv.methods.pgd',
    'free': 'jaxadv.methods.free',
    'fast': 'jaxadv.methods.fast',
}


def list_methods():
  return sorted(METHODS)


def get_method(name):
  """The method module registered under `name`."""
  if name not in METHODS:
    raise ValueError(f"unknown method '{name}' (config.method.name); valid: "
                     f"{', '.join(list_methods())}")
  return importlib.import_module(METHODS[name])


def updates_per_batch(method, config):
  fn = getattr(method, 'updates_per_batch', None)
  return int(fn(config)) if fn else 1


def init_method_state(method, config, global_batch_shape):
  fn = getattr(method, 'init_method_state', None)
  state = fn(config, global_batch_shape) if fn else {}
  return {'per_example': state.get('per_example', {}),
          'shared': state.get('shared', {})}


def trains_clean_bn(method, config):
  fn = getattr(method, 'trains_clean_bn', None)
  return bool(fn(config)) if fn else True
