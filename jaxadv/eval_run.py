"""--mode eval: restore a run's newest checkpoint and evaluate it (clean
accuracy and config.eval.attacks, with reports in the workdir)."""
import os

import jax

from jaxadv import build
from jaxadv import evaluate
from jaxadv import methods as methods_lib
from jaxadv import reports
from jaxadv import runs
from jaxadv import validation


def evaluate_checkpoint(config, workdir):
  """--mode eval: restores the latest checkpoint and evaluates it.

  The model and data come from the run's own <workdir>/config.json when it
  exists (so any eval config can evaluate any run); `config.eval` and the
  eval batch size come from `config`. Returns a dict with the clean test
  accuracy (and, when config.eval.attacks is set, the robust records).
  """
  if config.distributed:
    jax.distributed.initialize()
  if os.path.isfile(os.path.join(workdir, 'config.json')):
    run_config = build.load_config(workdir)
    run_config.eval = config.eval
    run_config.eval_batch_size = config.eval_batch_size
    run_config.distributed = config.distributed
    config = run_config
  validation.validate_config(config)
  run = runs.load_run(workdir, config=config)
  acc, n = evaluate.accuracy(run.state, run.dataset.test_images,
                             run.dataset.test_labels, mesh=run.mesh,
                             specs=run.specs,
                             batch_size=config.eval_batch_size)
  out = {'step': int(run.state.step), 'test_accuracy': acc, 'num_examples': n,
         'eval_dtype': build.eval_dtype(config), 'robust': []}
  if config.eval.attacks:
    method = methods_lib.get_method(config.method.name)
    out['robust'] = evaluate.run_attacks(
        run.state, run.dataset.test_images, run.dataset.test_labels,
        config.eval.attacks, mesh=run.mesh, specs=run.specs,
        batch_size=config.eval.batch_size,
        num_examples=config.eval.num_examples, seed=config.eval.seed,
        dtype=out['eval_dtype'],
        method_settings=methods_lib.settings(method, config))
    out['table'] = reports.write_report(out['robust'], workdir)
  return out
