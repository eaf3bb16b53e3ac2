"""GREAT / GREACE adversarial defense on CIFAR-10 (Sinha et al. 2018, Table 1).

One config, five rows of the table, chosen by the argument after the path:

  python main.py --config configs/great_cifar10.py:both --workdir runs/great_both
  ROW = baseline | adversarial | greace | great | both   (both = GRE(AT+CE))

Paper setting (supplement): ResNet-18 main network, auxiliary ResNet-18 with
leaky ReLU 0.2 on the masked input gradient, Adam lr 1e-3 for both with the
multiplier (1 - e/e_max)^0.9, alpha_max 1, beta_max 2, 100 epochs, crop
augmentation. 'adversarial' is their baseline: FGSM at eps 0.2 (single step,
no random start: pgd with steps=1, step eps) trained on 0.5 (L_clean + L_adv).
Evaluation: Table 1's FGSM / iFGSM (k = 10) untargeted and targeted
(worst / random target) at eps 0.1, the same at 8/255, then PGD-50 x 10 and
the standard AutoAttack at 8/255, all on the test set.

Expected (paper, Table 1, eps 0.1): GRE(AT+CE) best under FGSM and iFGSM;
the paper warns GREAT alone obfuscates gradients (it falls to iFGSM), and
AutoAttack (gradient-free Square, minimal-perturbation FAB) tests whether
any of the gains survive. Needs a GPU: 100 epochs of a double-backprop step.
"""

import ml_collections

from configs import default

ROWS = ('baseline', 'adversarial', 'greace', 'great', 'both')
TABLE1_EPS = ('0.1', '8/255')


def table1_attacks(eps_list=TABLE1_EPS, k=10):
  """Table 1's attacks at each eps: FGSM, iFGSM (k steps of eps/k), each
  untargeted and targeted at the worst / a random class."""
  out = ['clean']
  for eps in eps_list:
    num, _, den = eps.partition('/')
    step = f'{float(num) / k:g}' + (f'/{den}' if den else '')
    for target in ('', ', target=worst', ', target=random'):
      out.append(f'fgsm(eps={eps}{target})')
      out.append(f'ifgsm(eps={eps}, steps={k}, step_size={step}{target})')
  return tuple(out)


def method_for(row):
  """The method section of a Table 1 row."""
  if row == 'baseline':
    return ml_collections.ConfigDict(dict(name='standard'))
  if row == 'adversarial':
    return ml_collections.ConfigDict(
        dict(
            name='pgd',
            eps=0.2,
            steps=1,
            step_size=0.2,
            random_start=False,
            clean_weight=0.5,
            attack_bn='eval',
        )
    )
  return ml_collections.ConfigDict(
      dict(name='great', variant=row, alpha_max=1.0, beta_max=2.0)
  )


def get_config(row='both'):
  if row not in ROWS:
    raise ValueError(
        f'configs/great_cifar10.py:{row}: unknown row; valid: '
        f"{', '.join(ROWS)}"
    )
  c = default.get_config()
  c.data.name = 'cifar10'
  c.data.augment = 'crop'
  c.model.name = 'resnet18'
  c.model.kwargs = ml_collections.ConfigDict(dict(stem='cifar'))
  c.method = method_for(row)
  c.optim.name = 'adam'
  c.optim.lr = 1e-3
  c.optim.schedule = 'poly'
  c.optim.poly_power = 0.9
  c.num_epochs = 100
  c.batch_size = 128
  c.eval_every = 10
  c.eval.attacks = table1_attacks() + (
      'pgd(norm=linf, eps=8/255, steps=50, step_size=2/255, restarts=10)',
      'autoattack(eps=8/255, norm=linf)',
  )
  c.eval.num_examples = 0
  c.eval.at_end = True
  return c
