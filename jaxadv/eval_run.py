"""--mode eval: restore a run's newest checkpoint and evaluate it (clean
accuracy and config.eval.attacks); the caller prints the table, then
write_reports saves it in the workdir under a name of its settings."""

import json
import os

import jax

from jaxadv import build
from jaxadv import evaluate
from jaxadv import methods as methods_lib
from jaxadv import reports
from jaxadv import rundir
from jaxadv import runs
from jaxadv import sanity
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
  workdir = rundir.check_workdir(workdir, 'eval')  # before any compute
  if os.path.isfile(os.path.join(workdir, 'config.json')):
    run_config = build.load_config(workdir)
    run_config.eval = config.eval
    run_config.eval_batch_size = config.eval_batch_size
    run_config.distributed = config.distributed
    config = run_config
  validation.validate_config(config)
  run = runs.load_run(workdir, config=config)
  acc, n = evaluate.accuracy(
      run.state,
      run.dataset.test_images,
      run.dataset.test_labels,
      mesh=run.mesh,
      specs=run.specs,
      batch_size=config.eval_batch_size,
  )
  out = {
      'step': int(run.state.step),
      'test_accuracy': acc,
      'num_examples': n,
      'eval_dtype': build.eval_dtype(config),
      'robust': [],
  }
  if config.eval.attacks:
    method = methods_lib.get_method(config.method.name)
    out['robust'] = evaluate.run_attacks(
        run.state,
        run.dataset.test_images,
        run.dataset.test_labels,
        config.eval.attacks,
        mesh=run.mesh,
        specs=run.specs,
        batch_size=config.eval.batch_size,
        num_examples=config.eval.num_examples,
        seed=config.eval.seed,
        dtype=out['eval_dtype'],
        method_settings=methods_lib.settings(method, config),
    )
    out['warnings'] = sanity.sanity_flags(out['robust'])
    out['table'] = (
        reports.markdown_table(out['robust'])
        + '\n\n'
        + reports.warnings_markdown(out['warnings'])
    )
    out['report_name'] = rundir.report_name(
        [r['name'] for r in out['robust']],
        config.eval.num_examples,
        config.eval.seed,
        dtype=out['eval_dtype'],
    )
  return out


def write_reports(out, workdir):
  """Writes <workdir>/<report_name>.json and .md for evaluate_checkpoint's
  result (named by its settings, so evaluations with other settings keep
  their own files); returns the paths written."""
  if not out.get('robust'):
    return []
  base = os.path.join(workdir, out['report_name'])
  payload = {
      'step': out['step'],
      'test_accuracy': out['test_accuracy'],
      'num_examples': out['num_examples'],
      'records': out['robust'],
      'warnings': out['warnings'],
  }
  if jax.process_index() == 0:
    rundir.write_atomic(base + '.json', json.dumps(payload, indent=2) + '\n')
    rundir.write_atomic(base + '.md', out['table'] + '\n')
  return [base + '.json', base + '.md']
