"""The suite's time per test file, from tests/timing_plugin.py's records.

  JAXADV_TEST_TIMING=bench/out/timing python -m pytest -q tests
  python bench/test_timing.py bench/out/timing [--json out.json]

Prints a markdown table (tests, wall s, CPU s of the pytest process, CPU s
of its subprocesses, compile s) per file, largest wall time first, and the
totals; with --json also writes the table as JSON.
"""

import argparse
import collections
import glob
import json
import os
import sys

FIELDS = ('wall_s', 'cpu_s', 'child_cpu_s', 'compile_s')


def load(folder):
  records = {}
  for path in sorted(glob.glob(os.path.join(folder, 'timing-*.json'))):
    with open(path) as f:
      records.update(json.load(f))
  return records


def per_file(records):
  table = collections.defaultdict(lambda: dict.fromkeys(FIELDS, 0.0))
  for nodeid, rec in records.items():
    row = table[nodeid.split('::')[0]]
    row['tests'] = row.get('tests', 0) + 1
    for k in FIELDS:
      row[k] += rec[k]
  return dict(sorted(table.items(), key=lambda kv: -kv[1]['wall_s']))


def markdown(table):
  lines = [
      '| file | tests | wall s | CPU s | subprocess CPU s | compile s |',
      '|---|---|---|---|---|---|',
  ]
  total = dict.fromkeys(FIELDS, 0.0)
  n = 0
  for name, row in table.items():
    n += row['tests']
    for k in FIELDS:
      total[k] += row[k]
    lines.append(
        f'| {name} | {row["tests"]} | '
        + ' | '.join(f'{row[k]:.1f}' for k in FIELDS)
        + ' |'
    )
  lines.append(
      f'| total | {n} | ' + ' | '.join(f'{total[k]:.1f}' for k in FIELDS) + ' |'
  )
  return '\n'.join(lines)


def main(argv):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('folder')
  p.add_argument('--json', default='')
  args = p.parse_args(argv)
  records = load(args.folder)
  if not records:
    print(f'error: no timing-*.json in {args.folder}', file=sys.stderr)
    return 2
  table = per_file(records)
  print(markdown(table))
  slow = sorted(records.items(), key=lambda kv: -kv[1]['wall_s'])[:15]
  print('\nslowest tests (wall s, compile s):')
  for nodeid, rec in slow:
    print(f'  {rec["wall_s"]:7.1f} {rec["compile_s"]:7.1f}  {nodeid}')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'per_file': table, 'tests': records}, f, indent=1)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
