"""CPU-scale Table 1 of GREAT (Sinha et al. 2018): configs/great_cifar10.py
shrunk to what a 2-core CPU trains in about 10 minutes per row.

  for row in baseline adversarial greace great both; do
    python main.py --config configs/great_cifar10_cpu.py:$row \\
        --workdir runs/great_cpu_$row
  done
  python -m jaxadv.tools.great_table --workdirs runs/great_cpu_baseline,...

Main network: the supplement's 5-layer CNN (cnn5), auxiliary: the same with
leaky ReLU 0.2; a class-balanced 2,500-image CIFAR-10 training subset (250
per class: the paper's 5% sparse regime), 8 epochs, batch 128, Adam 1e-3 with the poly multiplier; evaluated on a
seeded 200 test images under Table 1's attacks at eps 0.1 and 8/255,
PGD-50 x 10 and AutoAttack at 8/255. Measured figures: bench/RESULTS.md.
"""

from configs import great_cifar10


def get_config(row='both'):
  c = great_cifar10.get_config(row)
  c.model.name = 'cnn5'
  c.model.kwargs = type(c.model.kwargs)()
  c.data.num_train_examples = 2500
  c.num_epochs = 8
  c.eval_every = 0
  c.eval.num_examples = 200
  c.eval.batch_size = 200
  return c
