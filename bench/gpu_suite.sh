#!/usr/bin/env bash
# The GPU runs of issues 4 and 5, packed for a lent device machine.
#
#   bash bench/gpu_suite.sh STAGE [STAGE ...]
#
# Stages (rough H100 budget in brackets, compile and data decode included):
#   throughput  bench/throughput.py, CIFAR-10 preact_resnet18 bf16 batch 512:
#               standard, fast, pgd-7, free-8, at steps_per_call 1 and 10  [~4 min]
#   c10fast     configs/cifar10_fast.py, 15 epochs, then PGD-50x10 on all
#               10,000 test images                                         [~3 min]
#   c10pgd      configs/cifar10_pgd.py (PGD-7, 15 epochs) + PGD-50x10      [~5 min]
#   mnistpgd    configs/mnist_pgd.py (PGD-8, 128 epochs) + PGD-100x10      [~5 min]
#   mnistfast   configs/mnist_fast.py + PGD-50x10                          [~1 min]
#   c10free     configs/cifar10_free.py + PGD-50x10                        [~4 min]
#   kappa       attacker-strength study (Bhat et al. Table 1), KAPPAS (default
#               1,2,4,8,16; the paper's table is 1,4,8,128, ~8x the cost),
#               KAPPA_EPOCHS (default 16) epochs each, 1,000 test images  [~8 min]
#   c10std      configs/cifar10_standard.py (30 epochs) + clean eval         [~2 min]
#   c10l2       cifar10_fast_l2.py, cifar10_pgd_l2.py, then the L2 sweep of
#               those two and, if c10std ran before, the standard model     [~7 min]
#
# Runs live in $RUNS (default /tmp/jaxadv_runs), which survives on a warm
# machine: rerunning a finished stage resumes it, trains nothing and reports
# NaN images/s; delete $RUNS/NAME to retrain.
#
# On the device machine: data from .data/ (copy ../shared/data/{mnist,cifar10}
# there; it is git-ignored) and ml_collections from .whl/ (see the device
# README); both named in `carry`. Logs and each run's results.json go to $OUT
# (default bench/out/gpu); the last lines printed are a summary table.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out/gpu}
RUNS=${RUNS:-/tmp/jaxadv_runs}
mkdir -p "$OUT" "$RUNS"
export PYTHONUNBUFFERED=1
export JAXADV_DATA_DIR=${JAXADV_DATA_DIR:-$PWD/.data}
PY=${PY:-python3}
STAGES="throughput c10fast c10pgd c10free mnistpgd mnistfast kappa c10std c10l2"
for stage in "$@"; do
  [[ " $STAGES " == *" $stage "* ]] || { echo "unknown stage '$stage'; valid: $STAGES" >&2; exit 2; }
done
if ls .whl/*.whl >/dev/null 2>&1 && ! $PY -c 'import ml_collections' 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
LOG="$OUT/suite.log"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >>"$LOG" 2>&1 || true
$PY -c 'import jax, flax, optax; print("jax", jax.__version__, "flax", flax.__version__, jax.devices())' >>"$LOG" 2>&1

train() {  # train NAME CONFIG [overrides...]: main.py, results.json to $OUT/NAME.json
  local name=$1 config=$2; shift 2
  local t0=$SECONDS
  echo "== $name: main.py --config $config $*" | tee -a "$LOG"
  $PY main.py --config "$config" --workdir "$RUNS/$name" --config.progress=False "$@" 2>&1 | tee -a "$LOG"
  echo "== $name: exit ${PIPESTATUS[0]}, $((SECONDS - t0)) s wall" | tee -a "$LOG"
  cp "$RUNS/$name/results.json" "$OUT/$name.json" 2>/dev/null || true
}

for stage in "$@"; do
  case $stage in
    throughput)
      for spc in 1 10; do
        echo "== throughput steps_per_call=$spc" | tee -a "$LOG"
        $PY bench/throughput.py --config configs/cifar10_standard.py --batch_size 512 \
          --methods standard,fast,pgd,free --steps 60 --config.steps_per_call=$spc \
          --out "$OUT/throughput_spc$spc.json" 2>&1 | tee -a "$LOG"
      done ;;
    c10fast)
      train c10_fast configs/cifar10_fast.py
      # The same PGD-50x10 evaluation with bf16 compute (the run used float32,
      # eval.dtype's default): issue 5's eval-time target, both ways.
      echo "== c10_fast eval bf16" | tee -a "$LOG"
      $PY main.py --mode eval --config configs/cifar10_fast.py --workdir "$RUNS/c10_fast" \
        --config.eval.dtype=bfloat16 --config.progress=False 2>&1 | tee -a "$LOG"
      cp "$RUNS/c10_fast/eval.json" "$OUT/c10_fast_eval_bf16_records.json" 2>/dev/null || true ;;
    c10pgd) train c10_pgd configs/cifar10_pgd.py ;;
    c10free) train c10_free configs/cifar10_free.py ;;
    mnistpgd) train mnist_pgd configs/mnist_pgd.py ;;
    mnistfast) train mnist_fast configs/mnist_fast.py ;;
    kappa)
      $PY -m jaxadv.tools.attacker_strength --config configs/mnist_pgd.py --workdir "$RUNS/kappa" \
        --kappas ${KAPPAS:-1,2,4,8,16} --num_examples 1000 --config.num_epochs=${KAPPA_EPOCHS:-16} \
        --config.progress=False 2>&1 | tee -a "$LOG"
      cp "$RUNS/kappa/table1.md" "$OUT/" 2>/dev/null || true ;;
    c10std) train c10_standard configs/cifar10_standard.py ;;
    c10l2)
      train c10_fast_l2 configs/cifar10_fast_l2.py
      train c10_pgd_l2 configs/cifar10_pgd_l2.py
      dirs="$RUNS/c10_fast_l2,$RUNS/c10_pgd_l2"
      [[ -f "$RUNS/c10_standard/results.json" ]] && dirs="$RUNS/c10_standard,$dirs"
      $PY -m jaxadv.tools.sweep --workdirs "$dirs" \
        --attack 'pgd(norm=l2, steps=20, restarts=2)' --eps 0,0.25,0.5,0.75,1,1.25,1.5,2 \
        --num_examples 5000 --out "$RUNS/l2_sweep" 2>&1 | tee -a "$LOG"
      cp "$RUNS/l2_sweep/sweep.png" "$RUNS/l2_sweep/sweep.md" "$OUT/" 2>/dev/null || true ;;
  esac
done

echo '== summary'
$PY - "$OUT" <<'EOF'
import glob, json, os, sys
for path in sorted(glob.glob(os.path.join(sys.argv[1], '*.json'))):
  r = json.load(open(path))
  name = os.path.basename(path)[:-5]
  if 'methods' in r:
    for m, v in r['methods'].items():
      print(f"{name} {m}: {v['images_per_s']:.0f} images/s, ratio {v.get('cost_ratio') or 0:.2f}, "
            f"model {v.get('model_tflops_per_s', float('nan')):.1f} TFLOP/s, "
            f"MFU {100 * (v.get('mfu') or float('nan')):.1f}%, feed {v.get('data_feed')}")
    continue
  if 'records' in r:  # an eval.json
    for x in r['records']:
      print(f"{name}: {x['name']} [{x.get('dtype', '?')}] {x['accuracy']:.4f} "
            f"({x['num_examples']} ex, {x['seconds']:.1f} s)")
    continue
  rob = ', '.join(f"{x['name']} {x['accuracy']:.4f} ({x['num_examples']} ex, {x['seconds']:.1f} s)"
                  for x in r.get('robust', []))
  print(f"{name}: {r['status']}, train wall {r['wall_time_s']:.1f} s, {r['images_per_s']:.0f} images/s, "
        f"clean {r.get('test_accuracy', float('nan')):.4f}; eval {r.get('eval_dtype', '?')}: {rob}")
EOF
