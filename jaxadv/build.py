"""Construction: the dataset, the models, the method's context and an
initialized train state placed on the mesh.

Both the trainer and evaluation import this module (and `runs`, which loads
finished runs); it imports neither of them.
"""

import dataclasses
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from jaxadv import data
from jaxadv import methods as methods_lib
from jaxadv import models
from jaxadv import optim
from jaxadv import parallel
from jaxadv import train_state as ts
from jaxadv.errors import ConfigError

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def load_data(config):
  """The config's dataset; bad data keys become one-line ConfigErrors."""
  try:
    return data.load_dataset(config.data, seed=config.seed)
  except (ValueError, ImportError) as e:  # ImportError: TFDS needed, absent
    raise ConfigError(str(e)) from None


def build_model(
    config,
    ds,
    axis_name=None,
    dtype=None,
    name=None,
    normalize=None,
    activation=None,
    **kwargs,
):
  """A model for dataset `ds` (facts: num_classes, mean, std).

  Defaults come from config.model: name, activation, dual_bn, kwargs, and
  normalization inside the model with the dataset's mean and std unless
  config.model.normalize is False; `dtype` defaults to config.dtype.
  `axis_name` synchronizes BatchNorm over that mesh axis when
  config.sync_bn. Giving `name` builds another architecture with only the
  given kwargs (an auxiliary network).
  """
  m = config.model
  if name is None:
    name, kwargs = m.name, {**dict(m.kwargs), **kwargs}
    activation = m.activation if activation is None else activation
  normalize = m.get('normalize', True) if normalize is None else normalize
  return models.get_model(
      name,
      num_classes=kwargs.pop('num_classes', ds.num_classes),
      mean=ds.mean if normalize else None,
      std=ds.std if normalize else None,
      dtype=DTYPES[dtype or config.dtype],
      activation=activation,
      bn_axis_name=axis_name if config.sync_bn else None,
      dual_bn=kwargs.pop('dual_bn', m.dual_bn if name == m.name else False),
      **kwargs,
  )


def eval_dtype(config):
  """The compute dtype of evaluation: config.eval.dtype, '' = config.dtype."""
  return config.eval.get('dtype', '') or config.dtype


def for_eval(config, ds, state):
  """`state` with a main model computing in eval_dtype(config); same weights
  (float32 master parameters and statistics), so a bf16-trained model is
  evaluated in float32 by default."""
  dtype = eval_dtype(config)
  if dtype == config.dtype:
    return state
  model = build_model(config, ds, parallel.AXIS, dtype=dtype)
  return state.with_net('main', state.main.replace(apply_fn=model.apply))


@dataclasses.dataclass(frozen=True)
class Context:
  """What a method's init / make_train_step / eval_metrics receive.

  Attributes:
    config: the validated config (read it outside jit only).
    settings: the method's resolved keys (methods.settings).
    num_classes, image_shape (H, W, C), mean, std: dataset facts.
    batch_size: the global batch.
    total_updates, updates_per_epoch: optimizer updates of the main network.
    axis_name: the mesh axis of data parallelism ('data').
    model: the main Linen model (BatchNorm synchronized over axis_name).
  """

  config: Any
  settings: dict
  num_classes: int
  image_shape: tuple
  mean: Any
  std: Any
  batch_size: int
  total_updates: int
  updates_per_epoch: int
  axis_name: str
  model: Any
  dataset: Any = dataclasses.field(repr=False)
  # False when a finished run is loaded for evaluation: load_frozen then
  # returns None (frozen networks serve train steps only).
  with_frozen: bool = True

  def build_model(self, name=None, *, axis_name='default', **kwargs):
    """A Linen model for this dataset; see build.build_model (kwargs:
    dtype, normalize, activation and model-specific ones)."""
    axis = self.axis_name if axis_name == 'default' else axis_name
    return build_model(self.config, self.dataset, axis, name=name, **kwargs)

  def make_optimizer(self, optim_config, total_steps=None, labels=None):
    """(optax transformation, schedule) for an optim section shaped like
    config.optim (its own lr, schedule, groups), over `total_steps`
    updates (default: the main network's)."""
    return optim.make_optimizer(
        optim_config,
        total_steps or self.total_updates,
        self.updates_per_epoch,
        labels=labels,
    )

  def network(
      self,
      rng,
      optim_config,
      name=None,
      *,
      labels=None,
      input_shape=None,
      total_steps=None,
      **model_kwargs,
  ):
    """A new auxiliary train_state.Network: model `name` (build_model
    kwargs), its own optimizer from `optim_config`, initialized with `rng`
    on inputs of `input_shape` (default the image shape)."""
    tx, _ = self.make_optimizer(optim_config, total_steps, labels)
    shape = (1,) + tuple(input_shape or self.image_shape)
    init_model = self.build_model(name, axis_name=None, **model_kwargs)
    model = self.build_model(name, **model_kwargs)
    return ts.init_network(rng, init_model, tx, shape, apply_fn=model.apply)

  def load_frozen(self, workdir):
    """The main network of another run's workdir, read-only (a
    train_state.Frozen; see build.load_frozen), or None when this run is
    only being evaluated (`with_frozen` False): a method's eval_metrics
    cannot use frozen networks."""
    return load_frozen(workdir) if self.with_frozen else None


@dataclasses.dataclass
class Built:
  """A method's context and an initialized state placed on the mesh."""

  method: Any
  ctx: Context
  state: Any
  specs: Any
  steps_per_epoch: int
  updates_per_batch: int
  total_batches: int
  schedule: Callable


def step_counts(config, ds, method):
  """(steps_per_epoch, updates_per_batch, total_batches)."""
  try:
    spe = data.steps_per_epoch(ds.num_train, config.batch_size)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  upb = methods_lib.updates_per_batch(method, config)
  total = max(int(round(config.num_epochs * spe)), 1)
  return spe, upb, total


def make_context(config, ds, method, with_frozen=True):
  """The Context a method is built with (see Context)."""
  spe, upb, total = step_counts(config, ds, method)
  return Context(
      config=config,
      settings=methods_lib.settings(method, config),
      num_classes=ds.num_classes,
      image_shape=ds.image_shape,
      mean=ds.mean,
      std=ds.std,
      batch_size=config.batch_size,
      total_updates=total * upb,
      updates_per_epoch=spe * upb,
      axis_name=parallel.AXIS,
      model=build_model(config, ds, parallel.AXIS),
      dataset=ds,
      with_frozen=with_frozen,
  )


def setup(config, ds, mesh, with_frozen=True):
  """The method, its context and an initialized state on `mesh` (Built).

  Key use: PRNGKey(config.seed) splits into the main network's init key and
  the state's base key; the method's init gets fold_in(base key, 1).
  with_frozen=False (loading a finished run for evaluation) skips loading
  frozen networks (teachers).
  """
  method = methods_lib.get_method(config.method.name)
  ctx = make_context(config, ds, method, with_frozen)
  spe, upb, total = step_counts(config, ds, method)
  tx, schedule = optim.make_optimizer(
      config.optim, ctx.total_updates, ctx.updates_per_epoch
  )
  init_rng, state_rng = jax.random.split(jax.random.PRNGKey(config.seed))
  # Init outside the mesh: BatchNorm must not look for the 'data' axis.
  main = ts.init_network(
      init_rng,
      build_model(config, ds),
      tx,
      (1,) + ctx.image_shape,
      apply_fn=ctx.model.apply,
  )
  parts = methods_lib.init_parts(method, ctx, jax.random.fold_in(state_rng, 1))
  if 'main' in parts.nets:
    raise ValueError(
        f"method '{config.method.name}' may not replace the "
        "network named 'main'"
    )
  state = ts.TrainState(
      step=jnp.zeros((), jnp.int32),
      rng=state_rng,
      nets={'main': main, **parts.nets},
      frozen={k: v for k, v in parts.frozen.items() if v is not None},
      method_state=ts.empty_method_state(parts.method_state),
  )
  specs = parallel.state_specs(state)
  state = parallel.put_global(state, mesh, specs)
  return Built(
      method=method,
      ctx=ctx,
      state=state,
      specs=specs,
      steps_per_epoch=spe,
      updates_per_batch=upb,
      total_batches=total,
      schedule=schedule,
  )


# ----------------------------------------------------------------------------
# Networks of other runs (a distillation teacher): config and variables only.


def _tuples(value):
  """JSON lists back to the tuples configs store (configs hold no lists)."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def load_config(workdir):
  """<workdir>/config.json (written by train_and_evaluate) as a ConfigDict."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f'{path} not found: train into {workdir} with '
        'main.py first (it writes config.json)'
    )
  with open(path) as f:
    return ml_collections.ConfigDict(_tuples(json.load(f)))


def latest_step_dir(workdir):
  """<workdir>/checkpoints/<newest step>, or FileNotFoundError."""
  ckdir = os.path.join(workdir, 'checkpoints')
  steps = sorted(
      int(d)
      for d in (os.listdir(ckdir) if os.path.isdir(ckdir) else ())
      if d.isdigit()
  )
  if not steps:
    raise FileNotFoundError(
        f'no checkpoint in {ckdir}; train {workdir} ' 'first'
    )
  return os.path.join(ckdir, str(steps[-1]))


def main_network_variables(saved):
  """The main network's Flax variables in a raw saved state tree."""
  main = saved['nets']['main']
  return {
      'params': main['params'],
      **{k: v for k, v in main['collections'].items() if v},
  }


def load_frozen(workdir, dtype=None):
  """The main network of the finished run in `workdir`, read-only: its model
  rebuilt from <workdir>/config.json (computing in `dtype`, default the
  run's eval dtype) and its variables from the newest checkpoint. Neither
  its dataset nor an optimizer is built, and a Frozen is never written into
  the checkpoints of the run that uses it.
  """
  config = load_config(workdir)
  facts = data.DATASET_INFO.get(config.data.name) or load_data(config)
  model = build_model(config, facts, dtype=dtype or eval_dtype(config))
  saved = ocp.StandardCheckpointer().restore(
      os.path.join(latest_step_dir(workdir), 'state')
  )
  variables = jax.tree_util.tree_map(jnp.asarray, main_network_variables(saved))
  return ts.Frozen(variables=variables, apply_fn=model.apply)
