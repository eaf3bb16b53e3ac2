"""Evaluating a run: the one code path of training's end-of-run evaluation
and of --mode eval (restore a run's newest checkpoint, then the same
evaluation). Clean metrics are the method's eval_metrics (accuracy by
default; GREAT adds aux_accuracy) on the whole test split, then the attacks
of config.eval.attacks on a seeded subset; the caller prints the table, then
write_reports saves it in the workdir under a name of its settings."""

import json
import os

import jax

from jaxadv import build
from jaxadv import evaluation
from jaxadv import methods as methods_lib
from jaxadv import rundir
from jaxadv import runs
from jaxadv import validation
from jaxadv.evaluation import reports
from jaxadv.evaluation import sanity


def clean_metrics(config, built, state, ds, mesh, fn=None):
  """{'test_<name>': value} of the method's eval metrics over the whole test
  split (finalized, e.g. RMSEs). `fn`: a prebuilt make_metrics_fn."""
  metrics_fn, finalizers = methods_lib.eval_metrics(built.method, built.ctx)
  values, _ = evaluation.metrics(
      state,
      ds.test,
      mesh=mesh,
      specs=built.specs,
      batch_size=config.eval_batch_size,
      fn=fn or evaluation.make_metrics_fn(mesh, built.specs, metrics_fn),
      finalizers=finalizers,
      seed=config.eval.seed,
  )
  return {f'test_{k}': v for k, v in values.items()}


def attack_records(config, built, state, ds, mesh):
  """config.eval.attacks on the seeded test subset: (records, warnings)."""
  records = evaluation.run_attacks(
      state,
      ds.test,
      config.eval.attacks,
      mesh=mesh,
      specs=built.specs,
      batch_size=config.eval.batch_size,
      num_examples=config.eval.num_examples,
      seed=config.eval.seed,
      dtype=build.eval_dtype(config),
      method_settings=built.ctx.settings,
  )
  return records, sanity.sanity_flags(records)


def evaluate_checkpoint(config, workdir):
  """--mode eval: restores the latest checkpoint and evaluates it.

  The model and data come from the run's own <workdir>/config.json when it
  exists (so any eval config can evaluate any run); `config.eval` and the
  eval batch size come from `config`. Returns a dict with the clean test
  metrics ('test_accuracy', ...) and, when config.eval.attacks is set, the
  robust records.
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
  out = {
      'step': int(run.state.step),
      **clean_metrics(config, run.built, run.state, run.dataset, run.mesh),
      'num_examples': run.dataset.num_test,
      'eval_dtype': build.eval_dtype(config),
      'robust': [],
  }
  if config.eval.attacks:
    out['robust'], out['warnings'] = attack_records(
        config, run.built, run.state, run.dataset, run.mesh
    )
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
      **{k: v for k, v in out.items() if k.startswith('test_')},
      'num_examples': out['num_examples'],
      'records': out['robust'],
      'warnings': out['warnings'],
  }
  if jax.process_index() == 0:
    rundir.write_atomic(base + '.json', json.dumps(payload, indent=2) + '\n')
    rundir.write_atomic(base + '.md', out['table'] + '\n')
  return [base + '.json', base + '.md']
