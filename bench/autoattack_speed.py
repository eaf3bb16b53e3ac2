"""AutoAttack speed: jaxadv and the reference (fra31/auto-attack) side by side, per component,
on the same points and the same model (issue 23).

  python bench/autoattack_speed.py --workdir runs/demo --num_examples 500 \\
      --reference /work/venvs/auto-attack --torch_python /work/venvs/torch/bin/python \\
      [--eps 0.1] [--version standard] [--components apgd-ce,square] \\
      [--out bench/out/autoattack_speed.json]

1. Restores the run (runs.load_run) and takes the seeded eval subset of --num_examples test
   images (evaluate.subset with --seed, as `--mode eval` picks them).
2. jaxadv: `evaluate.run_autoattack`, the `--mode eval` runner (each component attacks only
   the points still robust, compacted on the host between components), one batch of up to
   --batch_size points; seconds per component include compilation.
3. Reference: in a subprocess of the PyTorch venv (--torch_python; never jaxadv's venv), a
   PyTorch port of the model (cnn5 only) loaded with the same weights, whose logits must
   agree with jaxadv's to 1e-4 on the points, runs AutoAttack(...).run_standard_evaluation
   with the same norm, eps, version and batch size; per-component seconds are the
   differences of its log's cumulative times.
Prints the table (robust accuracy after each component and seconds, both sides) and writes
the JSON. --components runs a subset (e.g. square alone, on the clean-correct points) for
profiling. The reference checkout is used from --reference (outside the repository; its code
is not part of jaxadv).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
NAMES = {
    'apgd-ce': 'APGD-CE',
    'apgd-dlr': 'APGD-DLR',
    'apgd-t': 'APGD-T',
    'fab': 'FAB',
    'fab-t': 'FAB-T',
    'square': 'SQUARE',
}


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--workdir', default='runs/demo', help='a finished cnn5 run')
  p.add_argument('--num_examples', type=int, default=500)
  p.add_argument('--seed', type=int, default=0, help='subset seed (eval.seed)')
  p.add_argument('--eps', type=float, default=None, help='default: method.eps')
  p.add_argument('--norm', default='linf', choices=('linf', 'l2'))
  p.add_argument('--version', default='standard', choices=('standard', 'plus'))
  p.add_argument('--components', default='', help='comma-separated subset')
  p.add_argument('--batch_size', type=int, default=512)
  p.add_argument('--reference', default='/work/venvs/auto-attack')
  p.add_argument('--torch_python', default='/work/venvs/torch/bin/python')
  p.add_argument('--skip', default='', choices=('', 'jaxadv', 'reference'))
  p.add_argument(
      '--out', default=os.path.join(HERE, 'out', 'autoattack_speed.json')
  )
  p.add_argument('--torch_worker', default='', help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.num_examples < 1:
    p.error(f'--num_examples must be >= 1, got {args.num_examples}')
  return args


# ----------------------------------------------------------------------------------------------
# jaxadv side.


def load_points(args):
  """(run, float images (n, H, W, C) in [0, 1], labels, eps) of the seeded subset."""
  sys.path.insert(0, os.path.dirname(HERE))
  from jaxadv import data, evaluate, runs  # pylint: disable=g-import-not-at-top

  run = runs.load_run(args.workdir)
  if run.config.model.name != 'cnn5':
    raise SystemExit(
        f'the PyTorch port covers cnn5 only, not {run.config.model.name}'
    )
  images, labels = evaluate.subset(
      run.dataset.test_images,
      run.dataset.test_labels,
      args.num_examples,
      args.seed,
  )
  eps = float(run.config.method.eps) if args.eps is None else args.eps
  return run, images, labels, np.asarray(data.to_float(images)), eps


def export_weights(run):
  """cnn5's weights as numpy in PyTorch layouts (OIHW convs, (out, in) dense), plus
  normalization."""
  import jax  # pylint: disable=g-import-not-at-top

  p = jax.device_get(run.state.main.params)
  s = jax.device_get(run.state.main.collections['batch_stats'])
  w = {}
  for i in (1, 2, 3):
    w[f'c{i}.weight'] = np.transpose(p[f'conv{i}']['kernel'], (3, 2, 0, 1))
    for name, src in (
        ('weight', p[f'bn{i}']['scale']),
        ('bias', p[f'bn{i}']['bias']),
    ):
      w[f'b{i}.{name}'] = src
    w[f'b{i}.running_mean'] = s[f'bn{i}']['mean']
    w[f'b{i}.running_var'] = s[f'bn{i}']['var']
  for i in (1, 2):
    w[f'f{i}.weight'] = np.transpose(p[f'fc{i}']['kernel'])
    w[f'f{i}.bias'] = p[f'fc{i}']['bias']
  w['mean'] = np.asarray(run.dataset.mean, np.float32)
  w['std'] = np.asarray(run.dataset.std, np.float32)
  return {k: np.asarray(v, np.float32) for k, v in w.items()}


def run_jaxadv(args, run, images, labels, eps):
  """Per-component records of evaluate.run_autoattack on the points."""
  from jaxadv import attacks, evaluate  # pylint: disable=g-import-not-at-top

  spec = attacks.parse_attack(
      f'autoattack(norm={args.norm}, eps={eps!r}, version={args.version})'
  )
  if args.components:
    keep = args.components.split(',')
    full = attacks.specs.autoattack_spec_components
    attacks.specs.autoattack_spec_components = lambda s: [
        c for c in full(s) if c.name in keep
    ]
  t0 = time.time()
  records = evaluate.run_autoattack(
      run.state,
      images,
      labels,
      spec,
      mesh=run.mesh,
      specs=run.specs,
      batch_size=args.batch_size,
      seed=args.seed,
  )
  out = {'components': {}, 'total_seconds': time.time() - t0}
  for r in records:
    if 'component_of' in r:
      name = next(
          c for c in NAMES if r['name'].startswith(c.replace('-', '_') + '(')
      )
      out['components'][name] = {
          'robust_accuracy': r['accuracy'],
          'seconds': r['seconds'],
      }
    else:
      out['robust_accuracy'] = r['accuracy']
  return out


# ----------------------------------------------------------------------------------------------
# Reference side (runs in the PyTorch venv; imports no jax).


def torch_model(weights):
  import torch  # pylint: disable=g-import-not-at-top

  class CNN5(torch.nn.Module):
    """jaxadv's cnn5: three 3x3 convs (32/64/128, strides 1/2/2, padding 1, no bias), BN
    (eps 1e-5), ReLU, flatten in NHWC order, fc128, ReLU, fc."""

    def __init__(self):
      super().__init__()
      conv = lambda i, o, s: torch.nn.Conv2d(i, o, 3, s, 1, bias=False)
      self.c1, self.c2, self.c3 = (
          conv(1, 32, 1),
          conv(32, 64, 2),
          conv(64, 128, 2),
      )
      self.b1, self.b2, self.b3 = (
          torch.nn.BatchNorm2d(c, eps=1e-5) for c in (32, 64, 128)
      )
      self.f1, self.f2 = torch.nn.Linear(7 * 7 * 128, 128), torch.nn.Linear(
          128, 10
      )
      self.register_buffer('mean', torch.zeros(1))
      self.register_buffer('std', torch.ones(1))

    def forward(self, x):  # NCHW in [0, 1]
      x = (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)
      for c, b in ((self.c1, self.b1), (self.c2, self.b2), (self.c3, self.b3)):
        x = torch.relu(b(c(x)))
      x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
      return self.f2(torch.relu(self.f1(x)))

  model = CNN5()
  model.load_state_dict(
      {k: torch.from_numpy(v) for k, v in weights.items()}, strict=False
  )
  model.mean.data = torch.from_numpy(weights['mean'])
  model.std.data = torch.from_numpy(weights['std'])
  return model.eval()


def torch_worker(path):
  """Loads the npz at `path`, checks the port, runs the reference, writes JSON next to it."""
  import torch  # pylint: disable=g-import-not-at-top

  blob = dict(np.load(path))
  cfg = json.loads(str(blob.pop('config')))
  sys.path.insert(0, cfg['reference'])
  from autoattack import AutoAttack  # pylint: disable=g-import-not-at-top

  x = torch.from_numpy(np.transpose(blob.pop('x'), (0, 3, 1, 2)).copy())
  y = torch.from_numpy(blob.pop('y').astype(np.int64))
  jax_logits = blob.pop('logits')
  model = torch_model(blob)
  with torch.no_grad():
    diff = float(np.abs(model(x).numpy() - jax_logits).max())
  if diff > 1e-4:
    raise SystemExit(
        f'PyTorch port disagrees with jaxadv: max |logit diff| = {diff:.2e}'
    )
  norm = {'linf': 'Linf', 'l2': 'L2'}[cfg['norm']]
  adversary = AutoAttack(
      model,
      norm=norm,
      eps=cfg['eps'],
      version=cfg['version'],
      device='cpu',
      seed=0,
  )
  if cfg['components']:
    adversary.attacks_to_run = cfg['components']
  marks, log = [], adversary.logger.log

  def record(msg):
    marks.append((time.time(), msg))
    log(msg)

  adversary.logger.log = record
  t0 = time.time()
  adversary.run_standard_evaluation(x, y, bs=cfg['batch_size'])
  total = time.time() - t0
  out, prev = {
      'components': {},
      'logit_max_abs_diff': diff,
      'total_seconds': total,
  }, 0.0
  for _, msg in marks:
    for name, upper in NAMES.items():
      head = f'robust accuracy after {upper}: '
      if msg.startswith(head):
        acc = float(msg[len(head) :].split('%')[0]) / 100
        cum = float(msg.split('total time ')[1].split(' s')[0])
        out['components'][name] = {
            'robust_accuracy': acc,
            'seconds': cum - prev,
        }
        prev = cum
    if msg.startswith('robust accuracy: '):
      out['robust_accuracy'] = float(msg.split(': ')[1].rstrip('%')) / 100
  with open(path + '.json', 'w') as f:
    json.dump(out, f)


def run_reference(args, weights, x, y, logits, eps):
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'points.npz')
    cfg = dict(
        reference=args.reference,
        norm=args.norm,
        eps=eps,
        version=args.version,
        batch_size=args.batch_size,
        components=args.components.split(',') if args.components else [],
    )
    np.savez(path, x=x, y=y, logits=logits, config=json.dumps(cfg), **weights)
    subprocess.run(
        [args.torch_python, os.path.abspath(__file__), '--torch_worker', path],
        check=True,
    )
    with open(path + '.json') as f:
      return json.load(f)


# ----------------------------------------------------------------------------------------------


def table(result):
  rows = [
      '| component | jaxadv robust acc | jaxadv s | reference robust acc | reference s | speed-up |',
      '|---|---|---|---|---|---|',
  ]
  ours, ref = result.get('jaxadv', {}), result.get('reference', {})
  for name in NAMES:
    a, b = ours.get('components', {}).get(name), ref.get('components', {}).get(
        name
    )
    if a is None and b is None:
      continue
    cell = lambda r, k, f: f.format(r[k]) if r else '-'
    speed = (
        f'{b["seconds"] / a["seconds"]:.2f}x'
        if a and b and a['seconds'] > 0
        else '-'
    )
    rows.append(
        f'| {name} | {cell(a, "robust_accuracy", "{:.1%}")} | {cell(a, "seconds", "{:.1f}")} '
        f'| {cell(b, "robust_accuracy", "{:.1%}")} | {cell(b, "seconds", "{:.1f}")} | {speed} |'
    )
  for label, r in (('jaxadv', ours), ('reference', ref)):
    if r:
      rows.append(
          f'\n{label}: robust accuracy {r.get("robust_accuracy", float("nan")):.1%}, '
          f'total {r["total_seconds"]:.1f} s'
      )
  return '\n'.join(rows)


def main(argv=None):
  args = parse_args(argv)
  if args.torch_worker:
    return torch_worker(args.torch_worker)
  run, images, labels, x, eps = load_points(args)
  logits = np.asarray(run.logits_fn()(x))
  result = dict(
      workdir=args.workdir,
      num_examples=int(len(labels)),
      eps=eps,
      norm=args.norm,
      version=args.version,
      components=args.components or 'all',
      batch_size=args.batch_size,
      clean_accuracy=float(np.mean(logits.argmax(-1) == labels)),
  )
  print(
      f'{len(labels)} points, eps {eps}, clean accuracy {result["clean_accuracy"]:.1%}',
      flush=True,
  )
  if args.skip != 'jaxadv':
    result['jaxadv'] = run_jaxadv(args, run, images, labels, eps)
    print(json.dumps(result['jaxadv']), flush=True)
  if args.skip != 'reference':
    result['reference'] = run_reference(
        args, export_weights(run), x, np.asarray(labels), logits, eps
    )
  print(table(result))
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(result, f, indent=1)
  print(f'wrote {args.out}')


if __name__ == '__main__':
  main()
