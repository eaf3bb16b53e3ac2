"""bench/throughput.py runs and its model-FLOPs accounting adds up."""

import json
import os
import subprocess
import sys

from conftest import REPO


def _bench(out, methods, *extra, devices=1):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  proc = subprocess.run(
      [
          sys.executable,
          os.path.join(REPO, 'bench', 'throughput.py'),
          '--config',
          os.path.join(REPO, 'configs', 'mnist_standard.py'),
          '--config.model.name=wong_mnist',
          '--methods',
          methods,
          '--pgd_steps',
          '3',
          '--steps',
          '2',
          '--batch_size',
          '32',
          '--peak_tflops',
          '1.0',
          '--out',
          str(out),
          *extra,
      ],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc, json.loads(out.read_text())


def test_throughput_bench_writes_ratios_and_model_flops(tmp_path):
  proc, r = _bench(tmp_path / 'tp.json', 'standard,fast,pgd')
  m = r['methods']
  assert m['standard']['cost_ratio'] == 1.0
  assert m['pgd']['attack_grads_per_image'] == 3
  assert m['fast']['attack_grads_per_image'] == 1
  g, s = (
      m['pgd']['attack_grad_flops_per_image'],
      m['standard']['xla_flops_per_image'],
  )
  assert 0 < g < s  # an input gradient costs less than a full train step
  assert abs(m['pgd']['model_flops_per_image'] - (s + 3 * g)) < 1e-6 * s
  assert abs(m['fast']['model_flops_per_image'] - (s + g)) < 1e-6 * s
  for v in m.values():
    assert v['images_per_s'] > 0
    assert v['data_feed'] == 'device'  # as training feeds this dataset
    assert abs(v['mfu'] - v['model_tflops_per_s'] / 1.0) < 1e-12
  assert '| MFU |' in proc.stdout

  # Two steps per call on two devices: the same FLOPs per image (a scan body
  # is counted once by XLA and a partitioned module per device), and MFU
  # against both devices' peak.
  _, r2 = _bench(
      tmp_path / 'tp2.json', 'standard', '--config.steps_per_call=2', devices=2
  )
  v = r2['methods']['standard']
  assert r2['num_devices'] == 2 and r2['steps_per_call'] == 2
  # (Not exactly: the optimizer update's per-step FLOPs spread over half the
  # images per device, +2.5% here; the old accounting was 4x low.)
  assert abs(v['xla_flops_per_image'] - s) < 0.05 * s
  assert abs(v['mfu'] - v['model_tflops_per_s'] / 2.0) < 1e-12
