"""Pieces every training method shares: forward passes, losses, updates,
method-key checks.

A method's `train_step(state, batch, rngs)` sees a local shard of the batch
when the trainer runs it under shard_map; `ctx.axis_name` (None outside a
mesh) is where gradients and BatchNorm statistics are averaged.
"""

import jax
import jax.numpy as jnp
import optax

from jaxadv import attacks
from jaxadv.errors import ConfigError


def cross_entropy(logits, labels):
  """Per-example softmax cross-entropy, float32, shape (b,)."""
  return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels
  )


def forward(net, params, x, *, train, adv=False, **kwargs):
  """Pass of `net` (a train_state.Network, or a TrainState for its main
  network) on pixels x in [0, 1].

  Returns (output, stat_updates): the model's output (logits; with
  features=True the pair (logits, representation)); kwargs go to the
  model's call (features=True, or method=... for a Linen method). In train
  mode BatchNorm normalizes with batch statistics and `stat_updates` holds
  the new running statistics of the collection this pass used
  ('batch_stats', or 'batch_stats_adv' for adv=True on a dual-BN model); in
  eval mode it is {}.
  """
  variables = net.variables(params)
  if not train:
    return net.apply_fn(variables, x, train=False, adv=adv, **kwargs), {}
  collection = (
      'batch_stats_adv' if adv and net.batch_stats_adv else 'batch_stats'
  )
  if collection not in variables:  # a model without BatchNorm
    return net.apply_fn(variables, x, train=True, adv=adv, **kwargs), {}
  out, updates = net.apply_fn(
      variables, x, train=True, adv=adv, mutable=[collection], **kwargs
  )
  return out, dict(updates)


def logits_fn(net, params=None, adv=False):
  """Inference-mode `x -> logits` closure for attacks (no stat updates)."""
  return net.logits_fn(params, adv)


def pmean(tree, axis_name):
  return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def apply_update(state, grads, stat_updates, axis_name, **method_updates):
  """Averages gradients and running statistics over devices, then steps.

  Averaging the running statistics keeps the state identical on every
  device also when BatchNorm normalizes with per-device batch statistics.
  """
  grads = pmean(grads, axis_name)
  stats = {k: pmean(v, axis_name) for k, v in stat_updates.items()}
  return state.apply_gradients(grads, **stats, **method_updates)


def update_network(net, grads, stat_updates, axis_name):
  """apply_update for an auxiliary train_state.Network (no step count)."""
  grads = pmean(grads, axis_name)
  stats = {k: pmean(v, axis_name) for k, v in stat_updates.items()}
  return net.apply_gradients(grads, **stats)


def summed(values, mask=None):
  """(sum, count) pair of per-example values, exact under averaging."""
  values = values.astype(jnp.float32)
  if mask is None:
    return values.sum(), jnp.asarray(values.shape[0], jnp.float32)
  mask = mask.astype(jnp.float32)
  return (values * mask).sum(), mask.sum()


def correct(logits, labels):
  return (jnp.argmax(logits, -1) == labels).astype(jnp.float32)


def accuracy_metrics(state, batch):
  """The default eval metrics: top-1 accuracy of the main network in
  inference mode, {'accuracy': (sum, count)} over the unmasked examples."""
  logits = state.logits_fn()(batch['image'])
  return {'accuracy': summed(correct(logits, batch['label']), batch['mask'])}


# ----------------------------------------------------------------------------
# Adversarial training on crafted inputs (pgd, fast) and method-key checks.


def attack_logits_fn(state, params=None, *, bn='eval', adv=False):
  """`x -> logits` closure for crafting a training attack.

  bn='eval': BatchNorm with running statistics (as `logits_fn`).
  bn='train': BatchNorm with the batch statistics of the attacked batch, as
  PyTorch reference implementations craft under model.train(); the
  running-statistics updates of these passes are discarded (only the
  method's training pass updates them). Examples then interact through the
  batch statistics, as they do in those implementations.
  """
  if bn == 'eval':
    return logits_fn(state, params, adv=adv)
  return lambda x: forward(state, params, x, train=True, adv=adv)[0]


def adversarial_train_step(
    state, batch, rng, *, adversarial_examples, clean_weight, axis_name
):
  """One update on (1 - w) CE(x_adv) + w CE(x), w = clean_weight (static).

  adversarial_examples(state, x, y, rng) -> x_adv (b, H, W, C) in [0, 1]
  (a stop_gradient'ed constant). Adversarial passes use the adversarial
  BatchNorm set where the model has one (dual_bn); with w > 0 the clean pass
  runs first and the adversarial pass continues from its statistics, as
  two consecutive train-mode passes do in PyTorch.
  Returns (state, metrics): 'loss' (the trained loss), 'adv_accuracy' on
  x_adv, and 'accuracy' on x when w > 0 (the clean logits exist then).
  """
  x, y = batch['image'], batch['label']
  x_adv = adversarial_examples(state, x, y, rng)

  def loss_fn(params):
    st, stats, out = state, {}, {}
    if clean_weight > 0:
      logits, stats = forward(st, params, x, train=True)
      out['clean_logits'] = logits
      out['clean_loss'] = cross_entropy(logits, y)
      st = st.with_collections(**stats)
    logits, adv_stats = forward(st, params, x_adv, train=True, adv=True)
    loss = (1.0 - clean_weight) * cross_entropy(logits, y)
    if clean_weight > 0:
      loss = loss + clean_weight * out['clean_loss']
    return loss.mean(), (loss, logits, {**stats, **adv_stats}, out)

  grads, (loss, logits, stats, out) = jax.grad(loss_fn, has_aux=True)(
      state.params
  )
  state = apply_update(state, grads, stats, axis_name)
  metrics = {'loss': summed(loss), 'adv_accuracy': summed(correct(logits, y))}
  if clean_weight > 0:
    metrics['accuracy'] = summed(correct(out['clean_logits'], y))
  return state, metrics


def method_value(config, key, default=None):
  """config.method[key], or `default` when the key is absent or None."""
  value = config.method.get(key, None)
  return default if value is None else value


def _error(msg):
  raise ConfigError(msg)


def _is_number(v):
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_method_keys(config, allowed):
  """Unknown keys beside config.method.name (typos such as 'step') fail."""
  unknown = sorted(set(config.method.keys()) - set(allowed) - {'name'})
  if unknown:
    _error(
        f'config.method.{unknown[0]} is not a key of method '
        f"'{config.method.name}'; valid: {', '.join(sorted(allowed))}"
    )


def check_eps(config, norm='linf'):
  """eps: required, > 0, pixel scale (<= 1 for linf)."""
  eps = method_value(config, 'eps')
  if not _is_number(eps) or eps <= 0:
    _error(f'config.method.eps={eps!r} must be > 0 (pixel scale, e.g. 8/255)')
  if norm == 'linf' and eps > 1:
    _error(
        f'config.method.eps={eps!r} must be <= 1 for norm=linf (pixel '
        'scale: 8/255, not 8)'
    )


def check_positive(config, key, integer=False, required=False):
  """config.method[key] > 0 (an int if `integer`); absent/None is allowed
  unless `required`."""
  v = method_value(config, key)
  if v is None and not required:
    return
  ok = isinstance(v, int) if integer else _is_number(v)
  if not ok or isinstance(v, bool) or v <= 0:
    _error(
        f'config.method.{key}={v!r} must be a positive '
        f'{"integer" if integer else "number"}'
    )


def check_nonnegative(config, key):
  """config.method[key] a number >= 0 (absent/None is allowed)."""
  v = method_value(config, key)
  if v is not None and (not _is_number(v) or v < 0):
    _error(f'config.method.{key}={v!r} must be a number >= 0')


def check_choice(config, key, choices, default):
  v = method_value(config, key, default)
  if v not in choices:
    _error(
        f'config.method.{key}={v!r}; valid: '
        f'{", ".join(str(c) for c in choices)}'
    )


def check_fraction(config, key):
  v = method_value(config, key, 0.0)
  if not _is_number(v) or not 0.0 <= v <= 1.0:
    _error(f'config.method.{key}={v!r} must be in [0, 1]')


def training_attack(name, settings, keys):
  """The attack a method trains on, built once outside jit from its resolved
  settings: (AttackSpec, fn(logits_fn, rng, x, y) -> x_adv). The spec is the
  one evaluation parses, so defaults come from the attack functions."""
  spec = attacks.AttackSpec(
      name, tuple((k, settings[k]) for k in keys if settings.get(k) is not None)
  )
  return spec, attacks.make_attack(spec)


def adversarial_examples_fn(attack, bn):
  """fn(state, x, y, rng) -> x_adv: `attack` (training_attack's fn) against
  the main network, BatchNorm per `bn` ('train' | 'eval', see
  attack_logits_fn), on the adversarial BatchNorm set where there is one."""

  def adversarial_examples(state, x, y, rng):
    return attack(attack_logits_fn(state, bn=bn, adv=True), rng, x, y)

  return adversarial_examples


def attack_then_train_step(adversarial_examples, settings, axis_name):
  """train_step(state, batch, rngs) of a method that crafts inputs with
  adversarial_examples(state, x, y, rng) from the device key, then trains on
  them (adversarial_train_step with settings['clean_weight'])."""

  def train_step(state, batch, rngs):
    return adversarial_train_step(
        state,
        batch,
        rngs.device,
        adversarial_examples=adversarial_examples,
        clean_weight=settings['clean_weight'],
        axis_name=axis_name,
    )

  return train_step


def clean_weight_trains_clean_bn(config):
  """trains_clean_bn of methods with a clean_weight key (pgd, fast): clean
  passes, which train the clean BatchNorm set, only with clean_weight > 0."""
  return method_value(config, 'clean_weight', 0.0) > 0
