"""Is a deliberate bug still caught? Applies each mutation below to a fresh
copy of the tree, runs the README's test suite (pytest, xdist, -x) on it and
reports the first failing test and the seconds it took.

  python bench/mutation_check.py [--only NAME,...] [--json bench/out/mutations.json]

The mutations are those earlier issues used to show the suite's strength
(issue 21, "Nothing lost"): a wrong projection, BatchNorm statistics
leaking between the clean and adversarial collections, an off-by-one in
resume, a skipped NaN guard and a wrong sign in GREAT's gradient reversal.
Each names a file, a line that must be there exactly once, and its
replacement; a mutation whose line is gone fails loudly (the code moved:
update the mutation, never drop it).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MUTATIONS = {
    'wrong_projection': (
        'jaxadv/attacks/projections.py',
        'return jnp.clip(x_adv, jnp.maximum(x - eps, 0.0), jnp.minimum(x + eps, 1.0))',
        'return jnp.clip(x_adv, jnp.maximum(x - 2 * eps, 0.0), jnp.minimum(x + 2 * eps, 1.0))',
    ),
    'bn_stats_leak': (
        'jaxadv/models/layers.py',
        "ra_mean_adv, ra_var_adv = stats('batch_stats_adv')",
        'ra_mean_adv, ra_var_adv = ra_mean, ra_var',
    ),
    'resume_off_by_one': (
        'jaxadv/loop.py',
        'epoch, offset = divmod(out.batches_done, plan.steps_per_epoch)',
        'epoch, offset = divmod(out.batches_done + 1, plan.steps_per_epoch)',
    ),
    'nan_guard_skipped': (
        'jaxadv/loop.py',
        '  if not all_finite(state):\n    raise NonFiniteError(nonfinite_message(state, ckpt))\n  step = int(state.step)',
        '  step = int(state.step)',
    ),
    'reversal_sign': (
        'jaxadv/gradient_adversarial.py',
        'flipped = jax.tree.map(lambda c: (-alpha * c).astype(c.dtype), ct)',
        'flipped = jax.tree.map(lambda c: (alpha * c).astype(c.dtype), ct)',
    ),
}


def mutate(root, name):
  path, old, new = MUTATIONS[name]
  full = os.path.join(root, path)
  with open(full) as f:
    text = f.read()
  if text.count(old) != 1:
    raise SystemExit(
        f'mutation {name}: {path} holds {text.count(old)} copies of its '
        'line; update the mutation to the current code'
    )
  with open(full, 'w') as f:
    f.write(text.replace(old, new))


def run_suite(root):
  """(first failing test id or None, seconds)."""
  t0 = time.time()
  proc = subprocess.run(
      [
          os.path.join(REPO, '.venv', 'bin', 'python'),
          '-m',
          'pytest',
          '-q',
          '-x',
          '-n',
          'auto',
          '-p',
          'no:cacheprovider',
          'tests',
      ],
      cwd=root,
      capture_output=True,
      text=True,
  )
  failed = [
      l.split(' ', 2)[1]
      for l in proc.stdout.splitlines()
      if l.startswith(('FAILED ', 'ERROR '))
  ]
  return (failed[0] if failed else None), time.time() - t0


def main(argv):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--only', default='')
  p.add_argument('--json', default='')
  args = p.parse_args(argv)
  names = args.only.split(',') if args.only else list(MUTATIONS)
  unknown = sorted(set(names) - set(MUTATIONS))
  if unknown:
    print(f'error: unknown mutations {unknown}; valid: {list(MUTATIONS)}')
    return 2
  results = {}
  for name in names:
    with tempfile.TemporaryDirectory(prefix=f'mutant-{name}-') as tmp:
      root = os.path.join(tmp, 'repo')
      shutil.copytree(
          REPO,
          root,
          ignore=shutil.ignore_patterns('.venv', '.git', 'runs', '.cache'),
      )
      # ../shared resolves as in the real tree (tests skip without it).
      os.symlink(
          os.path.join(REPO, '..', 'shared'), os.path.join(tmp, 'shared')
      )
      mutate(root, name)
      failed, seconds = run_suite(root)
    results[name] = {'caught_by': failed, 'seconds': round(seconds, 1)}
    verdict = f'caught by {failed}' if failed else 'NOT CAUGHT'
    print(f'{name}: {verdict} ({seconds:.0f} s)', flush=True)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(results, f, indent=1)
  return 0 if all(r['caught_by'] for r in results.values()) else 1


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
