"""bench/throughput.py runs and its model-FLOPs accounting adds up."""
import json
import os
import subprocess
import sys

from conftest import REPO


def test_throughput_bench_writes_ratios_and_model_flops(tmp_path):
  out = tmp_path / 'tp.json'
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, 'bench', 'throughput.py'),
       '--config', os.path.join(REPO, 'configs', 'mnist_standard.py'),
       '--config.model.name=wong_mnist', '--methods', 'standard,fast,pgd',
       '--pgd_steps', '3', '--steps', '1', '--batch_size', '32',
       '--peak_tflops', '1.0', '--out', str(out)],
      cwd=REPO, env=dict(os.environ, JAX_PLATFORMS='cpu'),
      capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  r = json.loads(out.read_text())
  m = r['methods']
  assert m['standard']['cost_ratio'] == 1.0
  assert m['pgd']['attack_grads_per_image'] == 3
  assert m['fast']['attack_grads_per_image'] == 1
  g, s = m['pgd']['attack_grad_flops_per_image'], m['standard']['flops_per_image']
  assert 0 < g < s  # an input gradient costs less than a full train step
  assert abs(m['pgd']['model_flops_per_image'] - (s + 3 * g)) < 1e-6 * s
  assert abs(m['fast']['model_flops_per_image'] - (s + g)) < 1e-6 * s
  for v in m.values():
    assert v['images_per_s'] > 0
    assert abs(v['mfu'] - v['model_tflops_per_s'] / 1.0) < 1e-12
  assert '| MFU |' in proc.stdout
