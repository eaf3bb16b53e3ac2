"""Fast adversarial training: FGSM from a random start (Wong et al. 2020,
"Fast is better than free"; L2 form: Goodwin et al. 2020).

L-inf: delta ~ U[-eps, eps]^d, one step alpha * sign(g), clamp delta to
[-eps, eps] and x + delta to [0, 1]. L2: delta uniform in the L2 ball, one
step alpha * g / |g|_2, renormalize onto the ball, clamp to [0, 1].
Then one training step on x + delta: two forward/backward passes per step.

Method keys (config.method):
  eps           radius, pixel scale (8/255, 0.3; L2 e.g. 1.0).
  step_size     alpha (default: FGSM-RS's 1.25 * eps for linf; 1.5 * eps
                for l2, Goodwin et al.).
  norm          'linf' | 'l2' (default 'linf').
  clean_weight  w in (1 - w) CE(x_adv) + w CE(x) (default 0).
  attack_bn     'train' | 'eval' BatchNorm while crafting (default 'train',
                as Wong et al.'s code; statistics updates discarded).
  clip_start    clip the random start to [0, 1] before taking the gradient
                (default True, as Wong et al.'s CIFAR code; their MNIST code
                does not, see configs/mnist_fast.py).
"""

import functools

from jaxadv import attacks
from jaxadv.methods import common

KEYS = ('eps', 'step_size', 'norm', 'clean_weight', 'attack_bn', 'clip_start')
# L2 default step: 1.5 eps (Goodwin et al.); L-inf: the attack's, 1.25 eps.
L2_ALPHA = 1.5


def validate(config):
  """Raises validation.ConfigError naming the first bad method key."""
  common.check_method_keys(config, KEYS)
  common.check_choice(config, 'norm', attacks.NORMS, 'linf')
  common.check_eps(config, common.method_value(config, 'norm', 'linf'))
  common.check_positive(config, 'step_size')
  common.check_fraction(config, 'clean_weight')
  common.check_choice(config, 'attack_bn', ('train', 'eval'), 'train')
  common.check_choice(config, 'clip_start', (True, False), True)


trains_clean_bn = common.clean_weight_trains_clean_bn


def settings(config):
  """Resolved method keys as a dict (defaults filled in)."""
  v = functools.partial(common.method_value, config)
  eps, norm = float(v('eps')), v('norm', 'linf')
  step_size = v('step_size', L2_ALPHA * eps if norm == 'l2' else None)
  return dict(
      eps=eps,
      norm=norm,
      step_size=None if step_size is None else float(step_size),
      clean_weight=float(v('clean_weight', 0.0)),
      attack_bn=v('attack_bn', 'train'),
      clip_start=bool(v('clip_start', True)),
  )


# The method's step_size is FGSM-RS's alpha.
ATTACK_KEYS = {
    'norm': 'norm',
    'eps': 'eps',
    'alpha': 'step_size',
    'clip_start': 'clip_start',
}


def make_adversarial_examples(ctx):
  """fn(state, x, y, rng) -> the FGSM-RS inputs the step trains on: x float
  (b, H, W, C) in [0, 1], y int (b,); stop_gradient(x_adv) in [0, 1] and
  the eps ball of x. The attack is built once, here, outside jit."""
  s = ctx.settings
  _, attack = common.training_attack(
      'fgsm_rs', {k: s[v] for k, v in ATTACK_KEYS.items()}, ATTACK_KEYS
  )
  return common.adversarial_examples_fn(attack, s['attack_bn'])


def make_train_step(ctx):
  """Returns train_step(state, batch, rngs) -> (state, metrics).

  batch: {'image': float (b, H, W, C) in [0, 1], 'label': int (b,)}.
  metrics: 'loss', 'adv_accuracy' (+ clean 'accuracy' if clean_weight > 0).
  """
  return common.attack_then_train_step(
      make_adversarial_examples(ctx), ctx.settings, ctx.axis_name
  )
