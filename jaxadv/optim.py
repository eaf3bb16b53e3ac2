"""optax optimizers and learning-rate schedules built from `config.optim`."""
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
        [optax.linear_schedule(0.0, lr, peak),
         optax.linear_schedule(lr, 0.0, max(total - peak, 1))], [peak])
  if name == 'poly':
    power = float(cfg.poly_power)
    return lambda step: lr * jnp.maximum(1.0 - step / total, 0.0) ** power
  if name == 'constant':
    main = optax.constant_schedule(lr)
  elif name == 'piecewise':
    # Boundaries are fractions of all `total` steps; join_schedules below
    # counts `main`'s steps from the end of the warm-up.
    bounds = {int(round(b * total)) - warm: float(s)
              for b, s in zip(cfg.boundaries, cfg.scales)}
    main = optax.piecewise_constant_schedule(lr, bounds)
  elif name == 'cosine':
    main = optax.cosine_decay_schedule(lr, max(total - warm, 1))
  else:
    raise ValueError(f"unknown config.optim.schedule '{name}'; valid: "
                     f"{', '.join(SCHEDULES)}")
  if warm <= 0:
    return main
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warm), main], [warm])


def make_optimizer(cfg, total_steps, steps_per_epoch=1):
  """Returns (optax transformation, schedule) for `config.optim`."""
  schedule = make_schedule(cfg, total_steps, steps_per_epoch)
  if cfg.name == 'sgd':
    # L2 on the gradient, as torch.optim.SGD(weight_decay=...) does.
    tx = optax.chain(
        optax.add_decayed_weights(cfg.weight_decay),
        optax.sgd(schedule, momentum=cfg.momentum or None,
                  nesterov=cfg.nesterov))
  elif cfg.name == 'adam':
    tx = optax.adam(schedule, b1=cfg.b1, b2=cfg.b2)
  elif cfg.name == 'adamw':
    tx = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2,
                     weight_decay=cfg.weight_decay)
  else:
    raise ValueError(f"unknown config.optim.name '{cfg.name}'; valid: "
                     f"{', '.join(OPTIMIZERS)}")
  if cfg.grad_clip and cfg.grad_clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), tx)
  return tx, schedule
