"""Stage records and the summary table of bench/gpu_quick.sh.

  python3 bench/gpu_quick_summary.py record STAGES.json KEY \
      [--json PATH | --json-from-log PATH] [--set NAME=VALUE ...]
  python3 bench/gpu_quick_summary.py summarize STAGES.json [MORE.json ...] \
      --out-dir DIR

`record` sets STAGES[KEY] = {NAME: VALUE, ..., 'result': the JSON read from
PATH (or the last line of a log that is a JSON object)}, rewriting the file
atomically so that a run killed at its time limit leaves whole records.
VALUEs that are numbers or true/false are stored parsed.

`summarize` reads the stages files (a later file's keys replace an earlier
one's, so the records of a second, partial call can join the first), prints
a markdown table (stage, jaxadv figure, peer figure, ratio, target, status)
and writes it to DIR/summary.md, with the same rows in DIR/summary.json.
Plain json and argparse: runs with any python3, no jax.

Stage keys: meta, throughput (bench/throughput.py's JSON), peer_throughput
and peer_c10_fast (torch_fgsm_bench.py's JSON), c10_fast, c10_standard and
mnist_pgd (main.py's results.json).
"""

import argparse
import json
import os

STEP_RATIO_TARGET = 2.0  # jaxadv images/s at least 2x the peer's
C10_FAST_CLEAN, C10_FAST_ROBUST = 0.76, 0.43
C10_FAST_WALL_RATIO = 1 / 3  # jaxadv training wall time / the peer's
C10_STANDARD_CLEAN = 0.90
MNIST_PGD_CLEAN, MNIST_PGD_ROBUST, MNIST_PGD_EPOCHS = 0.98, 0.89, 128
# PGD-S eval vs the FGSM-RS training step (2 forward+backward per image):
# ideally S/2 times slower per restart (25 for PGD-50); 'met' within 2x.
EVAL_RATIO_TOLERANCE = 2.0
# jaxadv method -> the peer's mode of the same step.
PEER_MODE = {'standard': 'standard', 'fast': 'fgsm_rs', 'pgd': 'pgd'}


# ----------------------------------------------------------------------------
# record


def _value(text):
  """A number or true/false parsed, anything else the text itself."""
  try:
    value = json.loads(text)
  except ValueError:
    return text
  return value if isinstance(value, (int, float, bool)) else text


def _last_json_line(path):
  with open(path) as f:
    lines = [l.strip() for l in f if l.strip().startswith('{')]
  if not lines:
    raise ValueError(f'no JSON line in {path}')
  return json.loads(lines[-1])


def record(args):
  stages = _load(args.stages) if os.path.exists(args.stages) else {}
  entry = {}
  for item in args.set or []:
    name, _, value = item.partition('=')
    entry[name] = _value(value)
  try:
    if args.json:
      with open(args.json) as f:
        entry['result'] = json.load(f)
    elif args.json_from_log:
      entry['result'] = _last_json_line(args.json_from_log)
  except (OSError, ValueError) as e:  # a failed stage: keep the error
    entry['error'] = f'{type(e).__name__}: {e}'
  stages[args.key] = entry
  tmp = args.stages + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(stages, f, indent=1)
  os.replace(tmp, args.stages)


def _load(path):
  with open(path) as f:
    return json.load(f)


# ----------------------------------------------------------------------------
# summarize: one row per figure


def row(
    stage, jaxadv='-', peer='-', ratio='-', target='-', status='n/a', note=''
):
  return dict(
      stage=stage,
      jaxadv=jaxadv,
      peer=peer,
      ratio=ratio,
      target=target,
      status=status,
      note=note,
  )


def met(ok):
  return 'met' if ok else 'missed'


def absent(entry):
  """Why a stage has no result ('' if it has one)."""
  if entry is None:
    return 'not run'
  if 'skipped' in entry:
    return f'skipped: {entry["skipped"]}'
  if 'result' not in entry:  # the command's last line says more than ours
    error = entry.get('log_tail') or entry.get('error', '')
    return f'failed (exit {entry.get("exit_code", "?")}: {error[:120]})'
  status = str(entry['result'].get('status', ''))
  if status.startswith('interrupted'):  # main.py stopped at the time limit
    return f'{status} (exit {entry.get("exit_code", "?")})'
  return ''


def rate(x):
  return f'{x:,.0f}' if x >= 100 else f'{x:.3g}'


def pct(x):
  return f'{100 * x:.2f}%' if x is not None else '-'


def throughput_rows(stages):
  jax_entry = stages.get('throughput')
  peer_entry = stages.get('peer_throughput')
  jax_rows = (jax_entry or {}).get('result', {}).get('methods', {})
  peer_rows = (peer_entry or {}).get('result', {}).get('throughput', {})
  why_jax, why_peer = absent(jax_entry), absent(peer_entry)
  rows = []
  for method in ('standard', 'fast', 'pgd', 'free'):
    r = jax_rows.get(method)
    label = _method_label(method, r)
    if r is None:
      rows.append(row(f'step {label}', status=why_jax or 'not measured'))
      continue
    mfu = f'{100 * r["mfu"]:.1f}%' if r.get('mfu') else '-'
    tflops = r.get('model_tflops_per_s')
    fig = f'{rate(r["images_per_s"])} img/s'
    if tflops is not None:
      fig += f', {tflops:.3g} TFLOP/s, MFU {mfu}'
    if method not in PEER_MODE:
      rows.append(
          row(f'step {label}', fig, status='info', note='no peer counterpart')
      )
      continue
    mode = PEER_MODE[method]
    if mode == 'pgd':  # the peer names it pgd<K>
      mode = next((k for k in peer_rows if k.startswith('pgd')), 'pgd')
    p = peer_rows.get(mode)
    target = f'>= {STEP_RATIO_TARGET:g}x peer'
    if p is None:
      rows.append(
          row(
              f'step {label}',
              fig,
              target=target,
              status=why_peer or f'peer has no {mode}',
          )
      )
      continue
    ratio = r['images_per_s'] / p['images_per_s']
    note = ''
    if method == 'pgd' and mode != f'pgd{r["method"].get("steps")}':
      note = f'K differs: jaxadv {r["method"].get("steps")}, peer {mode}'
    rows.append(
        row(
            f'step {label}',
            fig,
            f'{rate(p["images_per_s"])} img/s ({mode})',
            f'{ratio:.2f}x',
            target,
            met(ratio >= STEP_RATIO_TARGET),
            note,
        )
    )
  return rows


def _method_label(method, r):
  m = (r or {}).get('method', {})
  if method == 'pgd':
    return f'pgd-{m.get("steps", "K")}'
  if method == 'free':
    return f'free-{m.get("replays", "m")}'
  if method == 'fast':
    return 'fast (FGSM-RS)'
  return method


def robust_record(result):
  """The run's PGD record (the first robust record that is not clean)."""
  return next(
      (
          x
          for x in result.get('robust', [])
          if x.get('attack', x.get('name', '')) != 'clean'
      ),
      None,
  )


def attack_label(rec):
  if rec is None:
    return 'PGD'
  label = f'PGD-{rec.get("steps", "?")}x{rec.get("restarts", "?")}'
  return f'{label} ({rec.get("num_examples", "?")} ex)'


def c10_fast_rows(stages):
  jax_entry, peer_entry = stages.get('c10_fast'), stages.get('peer_c10_fast')
  jr = (jax_entry or {}).get('result')
  pr = (peer_entry or {}).get('result', {}).get('train')
  why_jax = absent(jax_entry)
  why_peer = absent(peer_entry) or ('' if pr else 'no train figures')
  rec = robust_record(jr) if jr else None
  clean = jr.get('test_accuracy') if jr else None
  robust = rec['accuracy'] if rec else None
  peer_clean = pr['clean_acc'] if pr else None
  peer_robust = pr['pgd_acc'] if pr else None

  def status(value, floor):
    if value is None:
      return why_jax or 'no figure'
    return met(value >= floor)

  rows = [
      row(
          'cifar10_fast clean (test split)',
          pct(clean),
          pct(peer_clean),
          target=f'>= {pct(C10_FAST_CLEAN)}',
          status=status(clean, C10_FAST_CLEAN),
          note=_early_stop_note(jr),
      ),
      row(
          f'cifar10_fast {attack_label(rec)}',
          pct(robust),
          pct(peer_robust),
          target=f'>= {pct(C10_FAST_ROBUST)}',
          status=status(robust, C10_FAST_ROBUST),
          note=(
              f'peer: PGD-{pr["pgd_steps"]}x{pr["restarts"]} on '
              f'{pr["pgd_eval_n"]} ex'
              if pr
              else why_peer
          ),
      ),
  ]
  wall = jr.get('wall_time_s') if jr else None
  peer_wall = pr['train_s'] if pr else None
  target = f'<= 1/{1 / C10_FAST_WALL_RATIO:g} of peer'
  if wall is None or peer_wall is None or why_jax:
    rows.append(
        row(
            'cifar10_fast training wall time',
            f'{wall:.1f} s' if wall else '-',
            f'{peer_wall:.1f} s' if peer_wall else '-',
            target=target,
            status=why_jax or why_peer,
        )
    )
  else:
    ratio = wall / peer_wall
    steady = ''
    if jr.get('images_per_s') and jr.get('train_images'):
      steady = (
          f'; steady {rate(jr["images_per_s"])} img/s = '
          f'{jr["train_images"] / jr["images_per_s"]:.1f} s of steps'
      )
    rows.append(
        row(
            'cifar10_fast training wall time',
            f'{wall:.1f} s',
            f'{peer_wall:.1f} s',
            f'{ratio:.2f}',
            target,
            met(ratio <= C10_FAST_WALL_RATIO),
            'jaxadv: data load, compile, checkpoints, monitor, clean '
            'evals included; peer: compile included, data load '
            f'excluded{steady}',
        )
    )
  return rows


def _early_stop_note(result):
  if result and str(result.get('status', '')).startswith('early'):
    return result['status'][:80]
  return ''


def eval_speed_row(stages):
  """PGD eval images/s against the FGSM-RS training step's."""
  jr = (stages.get('c10_fast') or {}).get('result')
  rec = robust_record(jr) if jr else None
  fast = (
      (stages.get('throughput') or {})
      .get('result', {})
      .get('methods', {})
      .get('fast')
  )
  name = f'eval {attack_label(rec)} vs FGSM-RS step'
  if rec is None or fast is None or not rec.get('seconds'):
    return row(name, status='no figures (needs throughput and c10_fast)')
  steps, restarts = rec.get('steps') or 0, rec.get('restarts') or 1
  eval_ips = rec['num_examples'] / rec['seconds']
  per_restart = fast['images_per_s'] / eval_ips / restarts
  ideal = steps / 2
  peer = '-'
  pt = (stages.get('peer_c10_fast') or {}).get('result', {}).get('train')
  peer_fast = (
      (stages.get('peer_throughput') or {})
      .get('result', {})
      .get('throughput', {})
      .get('fgsm_rs')
  )
  if pt and peer_fast and pt.get('eval_s'):
    peer_eval_ips = pt['pgd_eval_n'] / pt['eval_s']
    peer = (
        f'{rate(peer_eval_ips)} img/s, '
        f'{peer_fast["images_per_s"] / peer_eval_ips / pt["restarts"]:.1f}'
        ' per restart'
    )
  ok = (
      ideal / EVAL_RATIO_TOLERANCE
      <= per_restart
      <= (ideal * EVAL_RATIO_TOLERANCE)
  )
  return row(
      name,
      f'{rate(eval_ips)} img/s ({rec.get("dtype", "?")})',
      peer,
      f'{per_restart:.1f} per restart',
      f'~{ideal:g} per restart (within {EVAL_RATIO_TOLERANCE:g}x)',
      met(ok),
      'eval seconds include its compile, in eval dtype; the '
      "FGSM-RS step is the throughput stage's (its dtype and batch); "
      'peer eval_s includes a clean pass over the test split',
  )


def run_rows(
    stages, key, label, clean_floor, robust_floor=None, full_epochs=None
):
  """Rows of a jaxadv-only run (cifar10_standard, mnist_pgd)."""
  entry = stages.get(key)
  why = absent(entry)
  if why:
    return [row(label, status=why)]
  r = entry['result']
  epochs = r.get('config', {}).get('num_epochs')
  shortened = full_epochs is not None and epochs != full_epochs
  note = (
      f'{epochs} of {full_epochs} epochs: targets are for the full run'
      if shortened
      else _early_stop_note(r)
  )

  def status(value, floor):
    if value is None:
      return 'no figure'
    return 'info' if shortened else met(value >= floor)

  clean = r.get('test_accuracy')
  rows = [
      row(
          f'{label} clean',
          pct(clean),
          target=f'>= {pct(clean_floor)}',
          status=status(clean, clean_floor),
          note=f'{note}; train wall {r.get("wall_time_s", 0):.1f} s'.lstrip(
              '; '
          ),
      )
  ]
  if robust_floor is not None:
    rec = robust_record(r)
    rows.append(
        row(
            f'{label} {attack_label(rec)}',
            pct(rec['accuracy'] if rec else None),
            target=f'>= {pct(robust_floor)}',
            status=status(rec['accuracy'] if rec else None, robust_floor),
            note=note,
        )
    )
  return rows


def build_rows(stages):
  return (
      throughput_rows(stages)
      + c10_fast_rows(stages)
      + [eval_speed_row(stages)]
      + run_rows(stages, 'c10_standard', 'cifar10_standard', C10_STANDARD_CLEAN)
      + run_rows(
          stages,
          'mnist_pgd',
          'mnist_pgd',
          MNIST_PGD_CLEAN,
          MNIST_PGD_ROBUST,
          MNIST_PGD_EPOCHS,
      )
  )


def meta_of(stages):
  meta = dict(stages.get('meta', {}))
  meta.pop('result', None)
  peer = stages.get('peer_throughput') or stages.get('peer_c10_fast') or {}
  if 'torch' in peer.get('result', {}):
    meta.setdefault('torch', peer['result']['torch'])
  return meta


def markdown(rows, meta, stages):
  title = '# gpu_quick summary'
  if meta.get('dry'):
    title += ' (DRY RUN: tiny settings, figures mean nothing)'
  lines = [title, '']
  for k in ('device', 'jax', 'torch', 'date', 'git', 'budget_s'):
    if k in meta:
      lines.append(f'- {k}: {meta[k]}')
  lines += [
      '',
      '| stage | jaxadv | peer | ratio | target | status |',
      '|---|---|---|---|---|---|',
  ]
  for r in rows:
    lines.append(
        f'| {r["stage"]} | {r["jaxadv"]} | {r["peer"]} | '
        f'{r["ratio"]} | {r["target"]} | {r["status"]} |'
    )
  notes = [f'- {r["stage"]}: {r["note"]}' for r in rows if r['note']]
  if notes:
    lines += ['', 'Notes:'] + notes
  if meta.get('subset_note'):
    lines += [f'- {meta["subset_note"]}']
  lines += ['', 'Stages (wall seconds, exit code, command):']
  for key, e in stages.items():
    if key == 'meta':
      continue
    if 'skipped' in e:
      what = f'skipped: {e["skipped"]}'
    else:
      what = f'{e.get("wall_s", "?")} s, exit {e.get("exit_code", "?")}'
    lines.append(f'- {key}: {what}: `{e.get("command", "")}`')
  return '\n'.join(lines) + '\n'


def summarize(args):
  stages = {}
  for path in args.stages:
    stages.update(_load(path))
  rows, meta = build_rows(stages), meta_of(stages)
  text = markdown(rows, meta, stages)
  os.makedirs(args.out_dir, exist_ok=True)
  with open(os.path.join(args.out_dir, 'summary.md'), 'w') as f:
    f.write(text)
  commands = {
      k: {
          n: e.get(n)
          for n in ('command', 'wall_s', 'exit_code', 'skipped')
          if n in e
      }
      for k, e in stages.items()
      if k != 'meta'
  }
  with open(os.path.join(args.out_dir, 'summary.json'), 'w') as f:
    json.dump({'meta': meta, 'rows': rows, 'stages': commands}, f, indent=1)
  print(text, end='')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  sub = parser.add_subparsers(dest='cmd', required=True)
  rec = sub.add_parser('record', help='add one stage record')
  rec.add_argument('stages')
  rec.add_argument('key')
  src = rec.add_mutually_exclusive_group()
  src.add_argument('--json', help='a JSON file: the stage result')
  src.add_argument('--json-from-log', help='a log whose last JSON line is it')
  rec.add_argument('--set', action='append', metavar='NAME=VALUE')
  summ = sub.add_parser('summarize', help='write summary.md and summary.json')
  summ.add_argument('stages', nargs='+')
  summ.add_argument('--out-dir', required=True)
  args = parser.parse_args(argv)
  record(args) if args.cmd == 'record' else summarize(args)


if __name__ == '__main__':
  main()
