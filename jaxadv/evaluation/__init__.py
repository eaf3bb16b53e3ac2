"""Evaluation: evaluators over batch iterators of any split (a method's
metrics, clean and robust accuracy, robust flags, adversarial examples), the
attack suite and AutoAttack runner, sanity flags against gradient masking,
and reports.

  evaluators  jitted per-batch programs and the loops over eval batches
  suite       run_attacks / run_autoattack: one record per attack
  sanity      warnings that point to gradient masking
  reports     markdown tables and report files
"""

from jaxadv.evaluation.evaluators import accuracy
from jaxadv.evaluation.evaluators import adversarial_examples
from jaxadv.evaluation.evaluators import as_split
from jaxadv.evaluation.evaluators import example_keys
from jaxadv.evaluation.evaluators import finalize
from jaxadv.evaluation.evaluators import global_batches
from jaxadv.evaluation.evaluators import LogitsModel
from jaxadv.evaluation.evaluators import make_accuracy_fn
from jaxadv.evaluation.evaluators import make_metrics_fn
from jaxadv.evaluation.evaluators import metrics
from jaxadv.evaluation.evaluators import robust_flags
from jaxadv.evaluation.suite import record
from jaxadv.evaluation.suite import run_attacks
from jaxadv.evaluation.suite import run_autoattack
from jaxadv.evaluation.suite import subset
from jaxadv.evaluation.suite import subset_indices
