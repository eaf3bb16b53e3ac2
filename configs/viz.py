"""--mode viz: pictures of what runs learned, side by side.

  python main.py --mode viz --config configs/viz.py --workdir runs/c10_std \
      --config.viz.compare=runs/c10_fast_l2,runs/c10_pgd_l2 \
      --config.viz.labels=standard,fast-1,pgd-7

Writes saliency.png, features.png (direct feature visualization: 5 random
nodes of the representation layer maximized from each seed), interpolation.png
(representation-space interpolation, Goodwin et al. eq. 14),
large_perturbations.png (targeted L2 PGD, eps 30, 500 steps on 32x32 inputs)
and robustness.png (robust accuracy vs L2 eps) into <workdir>/viz. Expected
(Goodwin et al. 2020, Figs. 3-5): the robust models' pictures show
recognizable object-like structure, the standard model's look like noise.
The model and data of each run come from its own config.json; only the viz
keys of this file are used.
"""

from configs import default


def get_config():
  return default.get_config()
