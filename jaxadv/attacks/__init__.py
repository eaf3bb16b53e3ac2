"""Adversarial attacks as pure, jit-able, batched functions (a package split along its seams:
losses, projections, restarts, the composable iterative attack and its PGD presets, the APGD
family (L-inf, L2, L1, EOT), Square, FAB, AutoAttack, low-precision inputs, spec parsing).

Every attack has the signature

  attack(logits_fn, rng, x, y, *, eps, ...) -> x_adv

- `logits_fn(x) -> logits` of shape (b, classes) is the only view of the model (a closure;
  normalization and BatchNorm-in-inference-mode live inside it). Examples must not interact
  inside it, because attacks differentiate the batch sum of per-example losses.
- `x` is float in [0, 1] of any shape (b, ...) (images are NHWC); `y` int labels (b,).
- `eps` is in pixel scale (8/255, not 8); it may be a traced scalar. `steps`, `restarts`, `norm`
  and `loss` are static (Python values).
- The result is `lax.stop_gradient(x_adv)` with x_adv in [0, 1] and inside the eps ball of x,
  in x's dtype: bfloat16/float16 inputs are attacked in float32 and the result is cast back
  into the ball and the box (`precision.cast_into_ball`).
- Attacks run inside `jax.shard_map` with its default checks (check_vma=True): loop carries
  are built from the inputs (`restarts.batch_full`), never from constants.
- Multi-step loops run in `lax.fori_loop` / `lax.scan`, so the compiled size does not grow with
  the number of steps.

Losses are per-example objectives of shape (b,) that the attacker maximises (higher = more
adversarial): a name in LOSSES or any callable (logits, labels) -> (b,). Targeted attacks take
`target` (b,) int and maximise -CE(logits, target), the targeted margin z_t - max_{j!=t} z_j
(`loss='cw'`), the targeted DLR (`loss='dlr'`), or a callable given the targets as labels.

Composable: `iterative(logits_fn, rng, x, y, eps=..., steps=..., init=..., step=...,
project=..., loss=...)` builds an attack from an init ('zero', 'uniform_linf', 'uniform_l2' or
a callable), a step rule ('sign', 'l2' or an optax transformation), a projection ('linf',
'l2' or a callable) and a loss; `fgsm`, `fgsm_rs`, `pgd`, `ifgsm`/`bim` and `cw` are presets.

Restarts: restart r of an attack called with key `rng` uses `restart_keys(rng, restarts)[r]`, and
calling the same attack with that key and restarts=1 reproduces restart r (see `restart_keys`).
Per example, the first restart that succeeds is kept (untargeted: misclassified; targeted:
predicted as the target), else the one with the highest loss at its returned point.

Beyond gradients: `square` (score-based, forward passes only), `fab` / `fab_t` (minimal
perturbations; `fab_minimal` returns them unbounded) and the AutoAttack ensemble
(`specs.autoattack_components`, `autoattack_batch`), which see through gradient masking.

`parse_attack` / `make_attack` turn evaluation specs such as
`pgd(norm=linf, eps=8/255, steps=50, restarts=10)` into attack functions; see `parse_attack`.
"""

from __future__ import annotations

import dataclasses
import fractions
import inspect
import math
import re
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

LogitsFn = Callable[[jax.Array], jax.Array]
Attack = Callable[..., jax.Array]

from jaxadv.attacks.apgd import (
    APGD_NORMS,
    apgd,
    apgd_ce,
    apgd_checkpoints,
    apgd_dlr,
    apgd_t,
)
from jaxadv.attacks.autoattack import autoattack_batch
from jaxadv.attacks.eot import Randomized, eot_loss_and_grad
from jaxadv.attacks.fab import fab, fab_minimal, fab_t, fab_t_minimal
from jaxadv.attacks.iterative import (
    StepRule,
    iterative,
    l2_step,
    optax_step,
    sign_step,
)
from jaxadv.attacks.losses import (
    LOSSES,
    check_loss,
    cross_entropy,
    cw_margin,
    cw_margin_targeted,
    dlr,
    dlr_targeted,
    random_target,
    worst_target,
)
from jaxadv.attacks.pgd import (
    RESTART_BATCHING,
    bim,
    clean,
    cw,
    fgsm,
    fgsm_rs,
    ifgsm,
    pgd,
    restart_keys,
)
from jaxadv.attacks.precision import cast_into_ball, float32_inside
from jaxadv.attacks.projections import (
    NORMS,
    LogitsFn,
    l1_ball_box_delta,
    project_l1,
    project_l2,
    project_linf,
    random_init_l2,
    random_init_linf,
)
from jaxadv.attacks.specs import (
    ATTACKS,
    TARGETS,
    Attack,
    AttackSpec,
    make_attack,
    parse_attack,
)
from jaxadv.attacks.square import square, square_fraction, square_sizes
