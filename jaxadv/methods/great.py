"""GREAT / GREACE adversarial defense (Sinha et al. 2018, Algorithm 1).

An auxiliary network classifies the masked gradient g of the main network's
cross-entropy w.r.t. its input (the paper's nabla C_a 1_y); it minimizes
CE(aux(g), y) with its own Adam. The main network is its adversary: the
auxiliary loss flows back into g through a gradient-reversal op (-alpha) and
from g into the main parameters by double backprop (GREAT). GREACE replaces
the main cross-entropy's logit gradient by dC/dz + beta * softmax(aux logits)
* 1[class != y]. The math lives in jaxadv.gradient_adversarial; this file
wires it to the method contract: the auxiliary network is a named network
('aux') with its own optimizer, checkpointed and sharded like the main one.

Method keys (config.method):
  variant     'great' | 'greace' | 'both' (GRE(AT+CE), default).
  alpha_max   reversal weight at the end of training (paper: 1).
  beta_max    GREACE penalty at the end (paper: 2 for CIFAR-10, 10 SVHN).
              alpha and beta ramp as max * (1 - m), m = (1 - e/e_max)^0.9,
              with e/e_max the fraction of updates done (continuous, where
              the paper steps per epoch).
  aux_model   auxiliary architecture ('' = the main architecture); it sees
              g, so it gets no (x - mean) / std normalization.
  aux_activation  'leaky_relu' (slope 0.2, the paper's) by default.
  aux_kwargs  model kwargs of aux_model (ConfigDict; default the main
              model's when aux_model is '').
  aux_optim   the auxiliary network's optimizer, shaped like config.optim
              (default: Adam, lr 1e-3, poly 0.9, the paper's).
Cost: a GREAT step is the main forward/backward, the backward of the input
gradient (double backprop) and one auxiliary forward/backward (bench).
"""

import functools

import jax
import ml_collections

from jaxadv import gradient_adversarial as ga
from jaxadv import methods
from jaxadv import models
from jaxadv import optim
from jaxadv.errors import ConfigError
from jaxadv.methods import common

KEYS = (
    'variant',
    'alpha_max',
    'beta_max',
    'aux_model',
    'aux_activation',
    'aux_kwargs',
    'aux_optim',
)
# The auxiliary network's architecture and optimizer shape the checkpoint.
RESTORE_KEYS = (
    'method.aux_model',
    'method.aux_kwargs',
    'method.aux_activation',
    'method.aux_optim.name',
)
VARIANTS = {
    'great': (True, False),
    'greace': (False, True),
    'both': (True, True),
}  # -> (use_great, use_greace)
AUX_OPTIM = dict(name='adam', lr=1e-3, schedule='poly', poly_power=0.9)


def validate(config):
  """Raises ConfigError naming the first bad method key."""
  common.check_method_keys(config, KEYS)
  common.check_choice(config, 'variant', tuple(VARIANTS), 'both')
  for key in ('alpha_max', 'beta_max'):
    common.check_nonnegative(config, key)
  aux = settings(config)
  if aux['aux_model'] not in models.MODELS:
    raise ConfigError(
        f"config.method.aux_model='{aux['aux_model']}'; valid: "
        f"'' (the main architecture), "
        f"{', '.join(sorted(models.MODELS))}"
    )
  o = aux['aux_optim']
  if o.name not in optim.OPTIMIZERS or o.schedule not in optim.SCHEDULES:
    raise ConfigError(
        f"config.method.aux_optim: name='{o.name}', schedule='{o.schedule}'; "
        f"valid names: {', '.join(optim.OPTIMIZERS)}; schedules: "
        f"{', '.join(optim.SCHEDULES)}"
    )


def settings(config):
  """Resolved method keys (defaults filled in; aux_optim a full optim
  section)."""
  v = functools.partial(common.method_value, config)
  aux_optim = config.optim.copy_and_resolve_references()
  aux_optim.update(AUX_OPTIM)
  aux_optim.groups = ml_collections.ConfigDict()
  aux_optim.update(dict(v('aux_optim', {})))
  aux_model = v('aux_model', '') or config.model.name
  default_kwargs = (
      dict(config.model.kwargs) if aux_model == (config.model.name) else {}
  )
  return dict(
      variant=v('variant', 'both'),
      alpha_max=float(v('alpha_max', 1.0)),
      beta_max=float(v('beta_max', 2.0)),
      aux_model=aux_model,
      aux_activation=v('aux_activation', 'leaky_relu'),
      aux_kwargs=dict(v('aux_kwargs', default_kwargs)),
      aux_optim=aux_optim,
  )


def init(ctx, rng):
  """The auxiliary network: input g (image-shaped), no normalization."""
  s = ctx.settings
  aux = ctx.network(
      rng,
      s['aux_optim'],
      s['aux_model'],
      normalize=False,
      activation=s['aux_activation'],
      **s['aux_kwargs'],
  )
  return methods.Parts(nets={'aux': aux})


def make_train_step(ctx):
  """Returns train_step(state, batch, rngs) -> (state, metrics): one update
  of both networks from one jax.grad of ga.great_losses.

  metrics: 'loss' (main classification loss), 'accuracy' (main, clean,
  train-mode BatchNorm), 'aux_loss', 'aux_accuracy', 'alpha', 'beta'.
  """
  s, axis = ctx.settings, ctx.axis_name
  use_great, use_greace = VARIANTS[s['variant']]
  total = float(ctx.total_updates)

  def train_step(state, batch, rngs):
    del rngs
    x, y = batch['image'], batch['label']
    frac = state.step / total
    alpha = ga.poly_ramp(frac, s['alpha_max'])
    beta = ga.poly_ramp(frac, s['beta_max'])
    aux_net = state.nets['aux']

    def loss_fn(params, aux_params):
      return ga.great_losses(
          lambda v: common.forward(state, params, v, train=True),
          lambda g: common.forward(aux_net, aux_params, g, train=True),
          x,
          y,
          alpha=alpha,
          beta=beta,
          use_great=use_great,
          use_greace=use_greace,
          has_aux=True,
      )

    (g_main, g_aux), out = jax.grad(loss_fn, argnums=(0, 1), has_aux=True)(
        state.params, aux_net.params
    )
    aux_net = common.update_network(aux_net, g_aux, out.aux_aux, axis)
    state = common.apply_update(
        state.with_net('aux', aux_net), g_main, out.main_aux, axis
    )
    ones = jax.numpy.ones_like(out.aux_loss)
    return state, {
        'loss': common.summed(out.cls_loss),
        'accuracy': common.summed(common.correct(out.main_logits, y)),
        'aux_loss': common.summed(out.aux_loss),
        'aux_accuracy': common.summed(common.correct(out.aux_logits, y)),
        'alpha': common.summed(alpha * ones),
        'beta': common.summed(beta * ones),
    }

  return train_step


def eval_metrics(ctx):
  """fn(state, batch) -> 'accuracy' of the main network and 'aux_accuracy':
  how often the auxiliary network reads the class from the masked input
  gradient g of a test image (both networks in inference mode). GREAT
  drives it down; a high value means the gradient still carries the
  class."""
  del ctx

  def metrics(state, batch):
    out = common.accuracy_metrics(state, batch)
    g = ga.masked_input_gradient(
        state.logits_fn(), batch['image'], batch['label']
    )
    aux_logits = state.nets['aux'].logits_fn()(g)
    out['aux_accuracy'] = common.summed(
        common.correct(aux_logits, batch['label']), batch['mask']
    )
    return out

  return metrics
