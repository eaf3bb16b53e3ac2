"""Training methods, one module each, registered by name: the method contract.

A method module provides

  validate(config)          raise errors.ConfigError naming the first bad key
  make_train_step(ctx)      -> train_step(state, batch, rngs) -> (state, metrics)

and optionally

  settings(config) -> dict  its resolved keys (defaults filled in), computed
                            once outside jit; attack specs written
                            `key=method` (e.g. `pgd(eps=method)`) read them
  init(ctx, rng) -> Parts   what it needs beside the main network: auxiliary
                            networks (each a train_state.Network with its own
                            optimizer: `ctx.network(...)`), frozen networks
                            (`ctx.load_frozen(workdir)`), method_state
  eval_metrics(ctx) -> fn(state, batch) -> {name: (sum, count)}
                            what training's test evaluation and --mode eval
                            report (one code path; batch has every feature,
                            'mask', 'index' and 'rng', a key per example);
                            default top-1 accuracy of the main network
  metric_finalizers(ctx) -> {name: fn(mean) -> value}
                            e.g. math.sqrt: a mean squared error reported
                            as an RMSE (train and eval metrics alike)
  updates_per_batch(config) -> int   updates one train_step makes (Free: m)
  trains_clean_bn(config) -> bool    whether training makes clean passes
                            (False: the method cannot use model.dual_bn)
  RESTORE_KEYS              dotted config keys whose change makes its
                            checkpoints unrestorable (e.g. aux networks)

`ctx` is a build.Context: dataset facts (num_classes, image_shape, mean,
std), step counts (total_updates, updates_per_epoch), the global batch size,
the mesh axis name, the main model, the method's settings, and the builders
`build_model`, `make_optimizer`, `network` and `load_frozen`.
`batch` = {'image': float (b, H, W, C) in [0, 1], 'label': int (b,)}, the
local shard under shard_map; `rngs` = StepRngs(device, shared): `device`
differs per device and step, `shared` is the same on every device (e.g. a
permutation for shuffled BatchNorm). metrics are (sum, count) pairs over the
local batch. Adding a method is one module here plus an entry in METHODS;
the trainer never changes.
"""

import dataclasses
import importlib
from typing import Any, NamedTuple

import jax

METHODS = {
    'standard': 'jaxadv.methods.standard',
    'pgd': 'jaxadv.methods.pgd',
    'free': 'jaxadv.methods.free',
    'fast': 'jaxadv.methods.fast',
    'great': 'jaxadv.methods.great',
    'stale': 'jaxadv.methods.stale',
}


class StepRngs(NamedTuple):
  """Keys of one train step: `device` per device, `shared` on all devices."""

  device: jax.Array
  shared: jax.Array


@dataclasses.dataclass
class Parts:
  """What a method's init adds to the train state."""

  nets: dict[str, Any] = dataclasses.field(default_factory=dict)
  frozen: dict[str, Any] = dataclasses.field(default_factory=dict)
  method_state: dict[str, Any] = dataclasses.field(default_factory=dict)


def list_methods():
  return sorted(METHODS)


def get_method(name):
  """The method module registered under `name`."""
  if name not in METHODS:
    raise ValueError(
        f"unknown method '{name}' (config.method.name); valid: "
        f"{', '.join(list_methods())}"
    )
  return importlib.import_module(METHODS[name])


def settings(method, config):
  fn = getattr(method, 'settings', None)
  return dict(fn(config)) if fn else {}


def updates_per_batch(method, config):
  fn = getattr(method, 'updates_per_batch', None)
  return int(fn(config)) if fn else 1


def trains_clean_bn(method, config):
  fn = getattr(method, 'trains_clean_bn', None)
  return bool(fn(config)) if fn else True


def restore_keys(method, config):
  """Config keys (dotted) beyond the model's whose change makes a method's
  checkpoint unrestorable (e.g. Free's batch_size: its perturbation is
  batch-shaped); a method lists them in RESTORE_KEYS."""
  del config
  return tuple(getattr(method, 'RESTORE_KEYS', ()))


def eval_metrics(method, ctx):
  """(metrics_fn(state, batch) -> {name: (sum, count)}, finalizers) of a
  method: its eval_metrics and metric_finalizers, or top-1 accuracy."""
  from jaxadv.methods import common  # pylint: disable=g-import-not-at-top

  fn = getattr(method, 'eval_metrics', None)
  fin = getattr(method, 'metric_finalizers', None)
  return (fn(ctx) if fn else common.accuracy_metrics), (
      dict(fin(ctx)) if fin else {}
  )


def init_parts(method, ctx, rng):
  fn = getattr(method, 'init', None)
  return fn(ctx, rng) if fn else Parts()
