"""optax optimizers and learning-rate schedules built from `config.optim`."""

import re

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ('sgd', 'adam', 'adamw')
SCHEDULES = ('constant', 'piecewise', 'cosine', 'onecycle', 'poly')


def make_schedule(cfg, total_steps, steps_per_epoch=1):
  """Learning rate as a function of the step (peak `cfg.lr`).

  constant/piecewise/cosine take a linear warm-up of `cfg.warmup_epochs`
  (steps_per_epoch optimizer updates each);
  onecycle is Wong et al.'s triangle 0 -> lr at `onecycle_peak` -> 0;
  poly is GREAT's lr * (1 - t/T) ** poly_power.
  """
  lr, total = float(cfg.lr), max(int(total_steps), 1)
  name = cfg.schedule
  warm = int(round(cfg.warmup_epochs * steps_per_epoch))
  if name == 'onecycle':
    peak = max(int(round(cfg.onecycle_peak * total)), 1)
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, lr, peak),
            optax.linear_schedule(lr, 0.0, max(total - peak, 1)),
        ],
        [peak],
    )
  if name == 'poly':
    power = float(cfg.poly_power)
    return lambda step: lr * jnp.maximum(1.0 - step / total, 0.0) ** power
  if name == 'constant':
    main = optax.constant_schedule(lr)
  elif name == 'piecewise':
    # Boundaries are fractions of all `total` steps; join_schedules below
    # counts `main`'s steps from the end of the warm-up.
    bounds = {
        int(round(b * total)) - warm: float(s)
        for b, s in zip(cfg.boundaries, cfg.scales)
    }
    main = optax.piecewise_constant_schedule(lr, bounds)
  elif name == 'cosine':
    main = optax.cosine_decay_schedule(lr, max(total - warm, 1))
  else:
    raise ValueError(
        f"unknown config.optim.schedule '{name}'; valid: "
        f"{', '.join(SCHEDULES)}"
    )
  if warm <= 0:
    return main
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warm), main], [warm]
  )


def _base_transform(cfg, schedule, weight_decay):
  """The optimizer of config.optim's name, with learning rate `schedule`."""
  if cfg.name == 'sgd':
    # L2 on the gradient, as torch.optim.SGD(weight_decay=...) does.
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.sgd(
            schedule, momentum=cfg.momentum or None, nesterov=cfg.nesterov
        ),
    )
  if cfg.name == 'adam':
    return optax.adam(schedule, b1=cfg.b1, b2=cfg.b2)
  if cfg.name == 'adamw':
    return optax.adamw(
        schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=weight_decay
    )
  raise ValueError(
      f"unknown config.optim.name '{cfg.name}'; valid: "
      f"{', '.join(OPTIMIZERS)}"
  )


def param_path(path):
  """'a/b/c' for a pytree key path (how group patterns see a parameter)."""
  return '/'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path)


def pattern_labels(groups):
  """labels(params) -> the same tree of group names: a parameter belongs to
  the first group (in config order) whose `pattern` (a regular expression)
  is found in its path 'module/.../name', else to 'default'."""
  compiled = [(name, re.compile(g['pattern'])) for name, g in groups.items()]

  def labels(params):
    def label(path, _):
      p = param_path(path)
      return next((n for n, rx in compiled if rx.search(p)), 'default')

    return jax.tree_util.tree_map_with_path(label, params)

  return labels


def _group_transform(cfg, schedule, group):
  """A parameter group's transform: zero updates if frozen, else the
  optimizer with lr scaled by lr_scale and its own weight_decay."""
  if group.get('frozen', False):
    return optax.set_to_zero()
  scale = float(group.get('lr_scale', 1.0))
  wd = group.get('weight_decay', None)
  return _base_transform(
      cfg,
      lambda step: scale * schedule(step),
      cfg.weight_decay if wd is None else wd,
  )


def make_optimizer(cfg, total_steps, steps_per_epoch=1, labels=None):
  """Returns (optax transformation, schedule) for `config.optim`.

  Parameter groups: cfg.groups maps a group name to {pattern, lr_scale,
  weight_decay, frozen}; each parameter takes the first group whose pattern
  matches its path (else 'default', the plain optimizer), and each group
  gets its own transform (optax.multi_transform): a scaled learning rate,
  its own weight decay (e.g. 0 for BatchNorm and biases), or zero updates
  (frozen). `labels(params) -> tree of group names` overrides the patterns
  (a method labelling its own parameters; every label needs a group entry,
  except 'default').
  """
  schedule = make_schedule(cfg, total_steps, steps_per_epoch)
  groups = {k: dict(v) for k, v in dict(cfg.get('groups', None) or {}).items()}
  if not groups and labels is None:
    tx = _base_transform(cfg, schedule, cfg.weight_decay)
  else:
    transforms = {
        name: _group_transform(cfg, schedule, g) for name, g in groups.items()
    }
    transforms['default'] = _base_transform(cfg, schedule, cfg.weight_decay)
    tx = optax.multi_transform(transforms, labels or pattern_labels(groups))
  if cfg.grad_clip and cfg.grad_clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), tx)
  return tx, schedule
