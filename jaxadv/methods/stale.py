"""Simulated staleness (Bhat, Tsipras and Madry 2018, Section 5): PGD
adversarial training on adversarial batches crafted s steps earlier.

Exact staleness s: the adversarial batch trained on at step t is the PGD
version of the clean batch of step t - s, crafted with the parameters the
state held at step t - s (`state.step` = t counts train_step calls). Its
labels (and clean images) travel with it through a queue of s batches in
`state.method_state['per_example']['queue']`, stored batch-first so that it
is sharded with the batch under shard_map and checkpointed with the state:

  x_adv       float32 (b, s, H, W, C) adversarial images in [0, 1]
  x           float32 (b, s, H, W, C) their clean images (fresh metric)
  label       int32 (b, s)
  crafted_at  int32 (b, s) the step whose parameters crafted them (-1: empty)

Slot t mod s is a ring buffer position: step t takes the batch out of it
(crafted at step t - s) and puts the one it crafts now in its place.

Filling, as their Section 5 ("at the start of training, we fill the queue
to its maximum capacity and iterate through the normal, synchronous training
procedure"): the first s steps (t < s) only craft, with the initial
parameters, from their clean batches, and make no update; step t >= s trains
on the batch of step t - s. So every update sees staleness exactly s in steps
(for s <= t < 2s the crafting parameters equal the current ones: nothing was
updated during the fill, as in the paper, whose fill also used the initial
parameters). A run of N steps makes N - s updates; state.step still counts
all N steps (data order, keys, checkpoints and resume work as for any
method), and a decaying lr schedule ends s updates short of its end.

Metrics (each (sum, count), over trained steps only, so fill steps count 0):
  loss, adv_accuracy   cross-entropy and accuracy of the current parameters
                       on the stale batch trained on (the training pass:
                       train-mode BatchNorm): stale adversarial accuracy.
  fresh_adv_accuracy   a fresh attack (the same PGD) with the current
                       parameters on the same clean batch and labels as the
                       stale batch, through the same kind of forward pass, on
                       the steps t >= s with t % fresh_every == 0. Cost: one
                       more PGD-K (K forward/backward input-gradient passes
                       and one forward pass) on those steps only, inside a
                       lax.cond; with fresh_every = log_every (the default)
                       one batch per log interval, about 1/log_every of the
                       training cost. s = 0: the trained batch is fresh, so
                       it equals adv_accuracy on every step, at no cost.
  staleness            t minus the crafting step, per trained example (= s).
  fresh_steps          (1 or 0, 1) per step: logged, the fraction of the log
                       interval's steps that computed fresh_adv_accuracy (a
                       logged 0.0 accuracy with fresh_steps 0 means none).

Method keys (config.method): staleness (s, an integer >= 0, required),
fresh_every (steps between fresh-accuracy batches, default config.log_every;
0 = never), and PGD's eps, steps, step_size, norm, random_start, attack_bn
(see methods/pgd.py; no clean_weight). s = 0 is the pgd method step for step
(tests/test_stale.py). Cost per step: PGD-K plus one training pass, as pgd,
plus the fresh attack above; memory: 2 s images per example.
"""

import functools

import jax
from jax import lax
import jax.numpy as jnp

from jaxadv import attacks
from jaxadv import methods
from jaxadv.errors import ConfigError
from jaxadv.methods import common
from jaxadv.methods import pgd

KEYS = (
    'staleness',
    'fresh_every',
    'eps',
    'steps',
    'step_size',
    'norm',
    'random_start',
    'attack_bn',
)
# The queue has the global batch's and the staleness' shape.
RESTORE_KEYS = ('batch_size', 'method.staleness')
QUEUE_KEYS = ('x_adv', 'x', 'label', 'crafted_at')


def _check_count(config, key, required=False):
  """config.method[key] an integer >= 0 (absent allowed unless required)."""
  v = common.method_value(config, key)
  if v is None and not required:
    return
  if not isinstance(v, int) or isinstance(v, bool) or v < 0:
    raise ConfigError(f'config.method.{key}={v!r} must be an integer >= 0')


def validate(config):
  """Raises errors.ConfigError naming the first bad method key."""
  common.check_method_keys(config, KEYS)
  _check_count(config, 'staleness', required=True)
  _check_count(config, 'fresh_every')
  common.check_choice(config, 'norm', attacks.NORMS, 'linf')
  common.check_eps(config, common.method_value(config, 'norm', 'linf'))
  common.check_positive(config, 'steps', integer=True, required=True)
  common.check_positive(config, 'step_size')
  common.check_choice(config, 'random_start', (True, False), True)
  common.check_choice(config, 'attack_bn', ('train', 'eval'), 'train')


def trains_clean_bn(config):
  """Every training pass is on adversarial inputs."""
  del config
  return False


def settings(config):
  """Resolved method keys: pgd's attack settings plus staleness and
  fresh_every (default config.log_every)."""
  v = functools.partial(common.method_value, config)
  step_size = v('step_size')  # None: the attack's default, 2.5 eps / K
  return dict(
      staleness=int(v('staleness')),
      fresh_every=int(v('fresh_every', config.log_every)),
      eps=float(v('eps')),
      steps=int(v('steps')),
      step_size=None if step_size is None else float(step_size),
      norm=v('norm', 'linf'),
      random_start=bool(v('random_start', True)),
      keep_best=False,  # the final iterate, as Madry et al. and pgd
      attack_bn=v('attack_bn', 'train'),
  )


def init(ctx, rng):
  """The empty queue (s > 0): zeros, crafted_at = -1, batch-first."""
  del rng
  s = ctx.settings['staleness']
  if s >= ctx.total_updates:
    raise ConfigError(
        f'config.method.staleness={s} leaves nothing to train: the run has '
        f'{ctx.total_updates} steps and the first {s} only fill the queue; '
        'lower it or train longer (config.num_epochs)'
    )
  if s == 0:
    return methods.Parts()
  b, shape = ctx.batch_size, tuple(ctx.image_shape)
  queue = {
      'x_adv': jnp.zeros((b, s) + shape, jnp.float32),
      'x': jnp.zeros((b, s) + shape, jnp.float32),
      'label': jnp.zeros((b, s), jnp.int32),
      'crafted_at': jnp.full((b, s), -1, jnp.int32),
  }
  return methods.Parts(method_state={'per_example': {'queue': queue}})


def make_adversarial_examples(ctx):
  """fn(state, x, y, rng) -> PGD inputs crafted with state's parameters
  (pgd's training attack): x float (b, H, W, C) in [0, 1], y int (b,);
  stop_gradient(x_adv) in [0, 1] and the eps ball of x. The contract
  function an asynchronous runner's workers call."""
  return pgd.make_adversarial_examples(ctx)


def adversarial_loss(params, state, x_adv, y):
  """Mean cross-entropy of the main network with `params` on x_adv
  (b, H, W, C) in [0, 1], labels y (b,), BatchNorm in train mode on the
  adversarial set. Pure. Returns (mean, (per-example loss (b,), logits
  (b, classes), BatchNorm statistic updates))."""
  logits, stats = common.forward(state, params, x_adv, train=True, adv=True)
  loss = common.cross_entropy(logits, y)
  return loss.mean(), (loss, logits, stats)


def train_on(state, x_adv, y, axis_name, method_state=None):
  """One update on adversarial_loss; returns (state, loss (b,), logits)."""
  grads, (loss, logits, stats) = jax.grad(adversarial_loss, has_aux=True)(
      state.params, state, x_adv, y
  )
  extra = {} if method_state is None else {'method_state': method_state}
  state = common.apply_update(state, grads, stats, axis_name, **extra)
  return state, loss, logits


def queue_swap(queue, slot, entry):
  """(the entry at `slot` of the queue axis (axis 1), the queue with `entry`
  written there). entry: {key: (b, ...)}; queue: {key: (b, s, ...)}."""
  out = {
      k: lax.dynamic_index_in_dim(queue[k], slot, 1, keepdims=False)
      for k in QUEUE_KEYS
  }
  queue = {
      k: lax.dynamic_update_index_in_dim(queue[k], entry[k], slot, 1)
      for k in QUEUE_KEYS
  }
  return out, queue


def fresh_correct(state, clean, rng, adversarial_examples, run):
  """(b,) float: whether the current parameters classify a fresh attack on
  clean['x'] (labels clean['label']) correctly, through the training pass's
  kind of forward (statistics discarded); zeros without computing anything
  unless `run` (a traced bool, the same on every device)."""
  y = clean['label']

  def attack_and_check(_):
    x_fresh = adversarial_examples(state, clean['x'], y, rng)
    logits, _ = common.forward(
        state, state.params, x_fresh, train=True, adv=True
    )
    return common.correct(logits, y)

  return lax.cond(run, attack_and_check, lambda _: jnp.zeros(y.shape), None)


def _train_unless_filling(state, old, method_state, axis_name, filling):
  """(state, loss (b,), correct (b,)): an update on the popped batch `old`,
  or, while the queue fills, only the new queue and step + 1 (the update is
  computed and discarded: inside a lax.cond XLA:CPU runs the weight-gradient
  convolutions ~2x slower, and the fill lasts only s steps)."""
  trained, loss, logits = train_on(
      state, old['x_adv'], old['label'], axis_name, method_state
  )
  kept = state.replace(step=state.step + 1, method_state=method_state)
  state = jax.tree_util.tree_map(
      lambda a, b: jnp.where(filling, a, b), kept, trained
  )
  return state, loss, common.correct(logits, old['label'])


def stale_step(state, batch, rngs, *, adversarial_examples, settings_, axis):
  """train_step for staleness s > 0; see the module docstring."""
  s, every = settings_['staleness'], settings_['fresh_every']
  t, x, y = state.step, batch['image'], batch['label']
  entry = {
      'x_adv': adversarial_examples(state, x, y, rngs.device),
      'x': x,
      'label': y,
      'crafted_at': jnp.full(y.shape, t, jnp.int32),
  }
  queue = state.method_state['per_example']['queue']
  old, queue = queue_swap(queue, t % s, entry)
  method_state = {
      **state.method_state,
      'per_example': {**state.method_state['per_example'], 'queue': queue},
  }
  filling = t < s
  fresh_rng = jax.random.fold_in(rngs.device, 1)
  if every > 0:
    do_fresh = jnp.logical_and(~filling, t % every == 0)
    fresh = fresh_correct(state, old, fresh_rng, adversarial_examples, do_fresh)
  else:
    do_fresh, fresh = jnp.zeros((), bool), jnp.zeros(y.shape)
  new_state, loss, correct = _train_unless_filling(
      state, old, method_state, axis, filling
  )
  trained = jnp.broadcast_to(~filling, y.shape)
  return new_state, {
      'loss': common.summed(loss, trained),
      'adv_accuracy': common.summed(correct, trained),
      'fresh_adv_accuracy': common.summed(
          fresh, jnp.broadcast_to(do_fresh, y.shape)
      ),
      'staleness': common.summed(t - old['crafted_at'], trained),
      'fresh_steps': common.summed(do_fresh[None]),
  }


def fresh_step(state, batch, rngs, *, adversarial_examples, axis):
  """train_step for s = 0: pgd's step (craft with the current parameters,
  train on it); the trained batch is the fresh one."""
  x, y = batch['image'], batch['label']
  x_adv = adversarial_examples(state, x, y, rngs.device)
  state, loss, logits = train_on(state, x_adv, y, axis)
  accuracy = common.summed(common.correct(logits, y))
  return state, {
      'loss': common.summed(loss),
      'adv_accuracy': accuracy,
      'fresh_adv_accuracy': accuracy,
      'staleness': common.summed(jnp.zeros(y.shape)),
      'fresh_steps': common.summed(jnp.ones((1,))),
  }


def make_train_step(ctx):
  """Returns train_step(state, batch, rngs) -> (state, metrics).

  batch: {'image': float (b, H, W, C) in [0, 1], 'label': int (b,)}; the
  attack uses rngs.device (as pgd), the fresh attack a key folded from it.
  metrics: loss, adv_accuracy (stale), fresh_adv_accuracy, staleness; each
  (sum, count) over the local batch.
  """
  step = stale_step if ctx.settings['staleness'] > 0 else fresh_step
  kwargs = dict(
      adversarial_examples=make_adversarial_examples(ctx), axis=ctx.axis_name
  )
  if ctx.settings['staleness'] > 0:
    kwargs['settings_'] = ctx.settings
  return functools.partial(step, **kwargs)
