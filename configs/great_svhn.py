"""GREAT / GREACE on SVHN (Sinha et al. 2018, Table 2), through TFDS.

  python main.py --config configs/great_svhn.py:both --workdir runs/great_svhn_both
  ROW = baseline | adversarial | greace | great | both

configs/great_cifar10.py's setting on TFDS 'svhn_cropped' (73,257 train /
26,032 test digits; crop augmentation, no flip) with the paper's SVHN
values: beta_max 10, Table 2's attacks at eps 0.2 (and 8/255), PGD-50 x 10
and AutoAttack at 8/255. Expected (paper, Table 2, eps 0.2): GRE(AT+CE) or
GREACE best under iFGSM and untargeted FGSM. Needs TFDS with the dataset
prepared (no offline copy here) and a GPU.
"""

from configs import great_cifar10

ROWS = great_cifar10.ROWS


def get_config(row='both'):
  c = great_cifar10.get_config(row)
  c.data.name = 'svhn_cropped'
  c.data.augment = 'crop'
  if row in ('greace', 'both'):
    c.method.beta_max = 10.0
  c.eval.attacks = great_cifar10.table1_attacks(('0.2', '8/255')) + (
      'pgd(norm=linf, eps=8/255, steps=50, step_size=2/255, restarts=10)',
      'autoattack(eps=8/255, norm=linf)',
  )
  return c
