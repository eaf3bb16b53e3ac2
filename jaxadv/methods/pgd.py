"""PGD adversarial training (Madry et al. 2018): train on K-step PGD inputs.

Method keys (config.method):
  eps           ball radius, pixel scale (L-inf 8/255 or 0.3; L2 e.g. 1.0).
  steps         K, PGD steps per training step (lax.fori_loop: compile size
                does not grow with K).
  step_size     alpha per step (default 2.5 * eps / K, the rule of Bhat et
                al. and Madry et al.'s robustness library; the configs set it).
  norm          'linf' | 'l2' (default 'linf').
  random_start  start uniform in the eps ball (default True).
  clean_weight  w in (1 - w) CE(x_adv) + w CE(x) (default 0; GREAT's
                baseline uses 0.5).
  attack_bn     BatchNorm while crafting: 'train' (batch statistics, as the
                PyTorch references under model.train(); their running-
                statistics updates are discarded) or 'eval' (default 'train').
Cost: K + 1 forward/backward passes per step.
"""

import functools

from jaxadv import attacks
from jaxadv.methods import common

KEYS = (
    'eps',
    'steps',
    'step_size',
    'norm',
    'random_start',
    'clean_weight',
    'attack_bn',
)


def validate(config):
  """Raises validation.ConfigError naming the first bad method key."""
  common.check_method_keys(config, KEYS)
  common.check_choice(config, 'norm', attacks.NORMS, 'linf')
  common.check_eps(config, common.method_value(config, 'norm', 'linf'))
  common.check_positive(config, 'steps', integer=True, required=True)
  common.check_positive(config, 'step_size')
  common.check_choice(config, 'random_start', (True, False), True)
  common.check_fraction(config, 'clean_weight')
  common.check_choice(config, 'attack_bn', ('train', 'eval'), 'train')


trains_clean_bn = common.clean_weight_trains_clean_bn


def settings(config):
  """Resolved method keys as a dict (defaults filled in)."""
  v = functools.partial(common.method_value, config)
  step_size = v('step_size')  # None: the attack's default, 2.5 eps / K
  return dict(
      eps=float(v('eps')),
      steps=int(v('steps')),
      step_size=None if step_size is None else float(step_size),
      norm=v('norm', 'linf'),
      random_start=bool(v('random_start', True)),
      clean_weight=float(v('clean_weight', 0.0)),
      keep_best=False,
      attack_bn=v('attack_bn', 'train'),
  )


# keep_best=False: train on the final iterate, as Madry et al.
ATTACK_KEYS = ('norm', 'eps', 'steps', 'step_size', 'random_start', 'keep_best')


def make_adversarial_examples(ctx):
  """fn(state, x, y, rng) -> the PGD inputs the step trains on: x float
  (b, H, W, C) in [0, 1], y int (b,); stop_gradient(x_adv) in [0, 1] and
  the eps ball of x. The attack is built once, here, outside jit."""
  _, attack = common.training_attack('pgd', ctx.settings, ATTACK_KEYS)
  return common.adversarial_examples_fn(attack, ctx.settings['attack_bn'])


def make_train_step(ctx):
  """Returns train_step(state, batch, rngs) -> (state, metrics).

  batch: {'image': float (b, H, W, C) in [0, 1], 'label': int (b,)}.
  metrics: 'loss', 'adv_accuracy' (+ clean 'accuracy' if clean_weight > 0),
  each (sum, count) over the local batch.
  """
  return common.attack_then_train_step(
      make_adversarial_examples(ctx), ctx.settings, ctx.axis_name
  )
