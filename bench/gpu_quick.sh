#!/usr/bin/env bash
# Every headline figure on one GPU, side by side with the PyTorch peer, in one
# call of at most 8 minutes (issue 13).
#
# On the device machine (H200), after `bash bench/stage_gpu_inputs.sh` here:
#   run(command="bash bench/gpu_quick.sh",
#       carry=[".data", ".whl", ".peer"], timeout_s=480)
# A second, partial call (say the stages the first one skipped):
#   run(command="bash bench/gpu_quick.sh --only c10_standard,mnist_pgd", ...)
#   then, here: python3 bench/gpu_quick_summary.py summarize \
#     FIRST/stages.json SECOND/stages.json --out-dir bench/out/gpu_quick
# Dry run here on the CPU (tiny settings, every stage and the summary; 5-7
# minutes on 2 shared cores; the peer's python needs torch, numpy, pillow):
#   PY=.venv/bin/python PEER_PY=/tmp/torchvenv/bin/python \
#     JAXADV_DATA_DIR=../shared/data bash bench/gpu_quick.sh --dry
#
# Stages, most valuable first; each one's result is recorded in
# $OUT/stages.json as soon as it exists, so a timeout keeps what finished:
#   throughput      bench/throughput.py: CIFAR-10 preact_resnet18, bf16, batch
#                   512, data on the device: standard, fast, pgd-7, free-8
#   peer_throughput the peer's standard, fgsm_rs, pgd-7 steps (batch 512,
#                   --compile, random data like throughput.py)
#   c10_fast        configs/cifar10_fast.py (15 epochs), PGD-50x10 on 1,000
#                   test images chosen with seed 1234: the peer's subset
#   peer_c10_fast   the peer's recipe (batch 128, 15 epochs, PGD-50x10 on its
#                   seeded 1,000)
#   c10_standard    configs/cifar10_standard.py (30 epochs), clean accuracy
#   mnist_pgd       configs/mnist_pgd.py, epochs cut to the time left,
#                   PGD-100x10 on 1,000 test images
# A stage starts only if its estimate (EST_<stage> seconds, H200 guesses
# below; calibrate them from the wall times in the summary) fits in what is
# left of BUDGET, and runs under `timeout` for the rest of the budget, so the
# summary is always written. $OUT gets 4 files: gpu_quick.log, stages.json,
# summary.md, summary.json.
#
# Env: OUT (default bench/out/gpu_quick), BUDGET (seconds, default 455, 1800
# with --dry), PY (python3), PEER_PY (the peer's python, default $PY),
# JAXADV_DATA_DIR (default $PWD/.data), WORK (run dirs, emptied first).
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0 ONLY=''
while (($#)); do
  case $1 in
    --dry) DRY=1 ;;
    --only) ONLY=,$2,; shift ;;
    *) echo "usage: $0 [--dry] [--only stage,stage]" >&2; exit 2 ;;
  esac
  shift
done
for key in ${ONLY//,/ }; do
  [[ " throughput peer_throughput c10_fast peer_c10_fast c10_standard mnist_pgd " == *" $key "* ]] ||
    { echo "unknown stage '$key'" >&2; exit 2; }
done
OUT=${OUT:-bench/out/gpu_quick}
PY=${PY:-python3}
PEER_PY=${PEER_PY:-$PY}
PEER=.peer/torch_fgsm_bench.py
[[ -f $PEER ]] || PEER=../shared/peer/torch_fgsm_bench.py
export PYTHONUNBUFFERED=1
export JAXADV_DATA_DIR=${JAXADV_DATA_DIR:-$PWD/.data}
CIFAR_NPZ=$JAXADV_DATA_DIR/cifar10/cifar10_jpeg.npz
if ((DRY)); then
  BUDGET=${BUDGET:-1800}
  WORK=${WORK:-/tmp/gpu_quick_dry}
else
  BUDGET=${BUDGET:-455}
  WORK=${WORK:-/tmp/gpu_quick}
fi
# Estimated seconds per stage on the H200 (0 in the dry run): a stage whose
# estimate exceeds the time left is skipped.
est() {
  ((DRY)) && { echo 0; return; }
  case $1 in
    throughput) echo "${EST_throughput:-150}" ;;
    peer_throughput) echo "${EST_peer_throughput:-90}" ;;
    c10_fast) echo "${EST_c10_fast:-110}" ;;
    peer_c10_fast) echo "${EST_peer_c10_fast:-170}" ;;
    c10_standard) echo "${EST_c10_standard:-110}" ;;
    mnist_pgd) echo "${EST_mnist_pgd:-60}" ;;
  esac
}
MNIST_FIXED_S=${MNIST_FIXED_S:-45}  # load, compile, eval of mnist_pgd
MNIST_EPOCH_S=${MNIST_EPOCH_S:-1.5}  # one PGD-8 epoch

rm -rf "$WORK"
mkdir -p "$OUT" "$WORK"
STAGES=$OUT/stages.json
LOG=$OUT/gpu_quick.log
rm -f "$STAGES" "$LOG"
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/gpu_quick_jax_cache}
log() { echo "$*" | tee -a "$LOG"; }

# ml_collections from the carried wheels, as bench/gpu_suite.sh does.
if ls .whl/*.whl >/dev/null 2>&1 && ! $PY -c 'import ml_collections' 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl &&
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

summary() { $PY bench/gpu_quick_summary.py "$@"; }
# record KEY ARGS...: adds the stage's record to stages.json and rewrites
# summary.md/json at once, so even a call killed later returns a summary.
record() {
  summary record "$STAGES" "$@"
  summary summarize "$STAGES" --out-dir "$OUT" >/dev/null
}
want() { [[ -z $ONLY || $ONLY == *",$1,"* ]]; }

# quoted CMD...: the command as one line a shell can rerun.
quoted() {
  local a out=''
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./=:,+-]+$ ]]; then out+="$a "; else out+="'${a//\'/\'\\\'\'}' "; fi
  done
  echo "${out% }"
}

# run_stage KEY CMD...: runs CMD (skipped if its estimate does not fit), its
# output to the log and $WORK/KEY.log; sets RC and STAGE_ARGS (the record's
# command, exit code and wall time). Returns 1 if skipped.
run_stage() {
  local key=$1; shift
  local left=$((BUDGET - SECONDS)) need
  need=$(est "$key")
  if ((left < need || left < 10)); then
    log "== $key: skipped: ${left} s left of ${BUDGET}, needs ~${need} s"
    record "$key" --set "skipped=${left} s left, needs ~${need} s" \
      --set "command=$(quoted "$@")"
    return 1
  fi
  log "== $key (at ${SECONDS} s, ${left} s left): $*"
  local t0=$SECONDS
  timeout -k 15 "$left" "$@" 2>&1 | tee -a "$LOG" "$WORK/$key.log"
  RC=${PIPESTATUS[0]}
  log "== $key: exit $RC, $((SECONDS - t0)) s"
  STAGE_ARGS=(--set "command=$(quoted "$@")" --set "exit_code=$RC"
              --set "wall_s=$((SECONDS - t0))")
  if ((RC == 124 || RC == 137)); then
    STAGE_ARGS+=(--set "log_tail=stopped at the ${BUDGET} s budget")
  elif ((RC)); then  # the last line the command printed: usually the error
    STAGE_ARGS+=(--set "log_tail=$(grep -v '^== ' "$WORK/$key.log" | tail -1 | cut -c1-200)")
  fi
}

# main.py run KEY CONFIG [overrides...]: trains into $WORK/KEY and records
# its results.json.
train_stage() {
  local key=$1 config=$2; shift 2
  run_stage "$key" $PY main.py --config "$config" --workdir "$WORK/$key" \
    --config.progress=False "$@" || return 0
  record "$key" --json "$WORK/$key/results.json" "${STAGE_ARGS[@]}"
}

# peer run KEY ARGS...: the peer's one-line JSON output is the record.
peer_stage() {
  local key=$1; shift
  run_stage "$key" $PEER_PY "$PEER" "$@" || return 0
  record "$key" --json-from-log "$WORK/$key.log" "${STAGE_ARGS[@]}"
}

# ---------------------------------------------------------------------------
# Settings: the real ones, or tiny ones for the CPU dry run.
PGD50='pgd(norm=linf, eps=8/255, steps=50, step_size=2/255, restarts=10)'
if ((DRY)); then
  TP=(--batch_size 32 --steps 2 --pgd_steps 2 --free_replays 2
      --config.dtype=float32 --config.data.feed=device)
  # No --compile on the CPU (inductor needs minutes there), no bf16.
  PEER_COMMON=(--device cpu --amp none --synthetic --pgd-iters 2)
  PEER_TP=("${PEER_COMMON[@]}" --synthetic-n 256 --batch-size 32 --warmup 1
           --steps 2)
  PEER_FAST=("${PEER_COMMON[@]}" --synthetic-n 64 --batch-size 32 --epochs 1
             --eval-n 16 --restarts 2 --eval-pgd-steps 2 --eval-bs 16)
  ATTACK='pgd(norm=linf, eps=8/255, steps=2, step_size=2/255, restarts=2)'
  TINY=(--config.data.num_train_examples=64 --config.data.num_test_examples=64
        --config.num_epochs=1 --config.batch_size=32 --config.eval_batch_size=32
        --config.eval.batch_size=16 --config.dtype=float32)
  C10_FAST=("${TINY[@]}" --config.eval.num_examples=16
            "--config.eval.attacks=(\"$ATTACK\",)" --config.monitor.num_examples=32)
  C10_STD=("${TINY[@]}")
  MNIST=(--config.num_epochs=1 --config.data.num_train_examples=256
         --config.data.num_test_examples=64 --config.batch_size=32
         --config.eval.num_examples=16 --config.eval.batch_size=16
         "--config.eval.attacks=(\"$ATTACK\",)")
else
  TP=(--batch_size 512 --steps 60 --pgd_steps 7 --free_replays 8
      --config.data.feed=device)
  PEER_TP=(--synthetic --batch-size 512 --steps 50 --compile)
  PEER_FAST=(--data "$CIFAR_NPZ" --batch-size 128 --epochs 15 --eval-n 1000
             --restarts 10 --compile)
  # The peer's subset is default_rng(1234).permutation(10000)[:1000];
  # jaxadv's eval.seed=1234 draws the same indices (checked below).
  C10_FAST=(--config.eval.num_examples=1000 --config.eval.seed=1234
            "--config.eval.attacks=(\"$PGD50\",)")
  C10_STD=()
  MNIST=(--config.eval.num_examples=1000)
fi

# ---------------------------------------------------------------------------
log "== gpu_quick $( ((DRY)) && echo DRY RUN) $(date -u +%FT%TZ), budget ${BUDGET} s, out $OUT"
DEVICE=$(nvidia-smi --query-gpu=name,memory.total,driver_version \
  --format=csv,noheader 2>/dev/null | head -1)
JAX=$($PY -c 'import jax; print(jax.__version__, jax.devices()[0].device_kind, len(jax.devices()))' 2>&1 | tail -1)
# Does jaxadv's seeded eval subset equal the peer's? (Both index the test
# split in the npz's order.)
SAME_SUBSET=$($PY - <<'EOF' 2>&1 | tail -1
import numpy as np
from jaxadv import evaluate
n = np.arange(10000)
ours = evaluate.subset(n, n, 1000, 1234)[1]
peer = np.random.default_rng(1234).permutation(10000)[:1000]
print(str(set(ours.tolist()) == set(peer.tolist())).lower())
EOF
)
if [[ $SAME_SUBSET == true ]]; then
  SUBSET_NOTE="jaxadv's eval.seed=1234 subset of 1,000 is the peer's (same indices, checked at run time)"
else
  SUBSET_NOTE="jaxadv's and the peer's 1,000 test images are NOT the same (same size and seed number, different selection code; check: $SAME_SUBSET)"
fi
((DRY)) && SUBSET_NOTE="dry run: tiny/synthetic data; $SUBSET_NOTE"
log "device: ${DEVICE:-none (no nvidia-smi)}; jax: $JAX; subset: $SUBSET_NOTE"
record meta --set "device=${DEVICE:-none (no nvidia-smi)}" \
  --set "jax=$JAX" --set "date=$(date -u +%FT%TZ)" --set "dry=$DRY" \
  --set "budget_s=$BUDGET" --set "subset_note=$SUBSET_NOTE" \
  --set "git=$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD 2>/dev/null || echo +dirty)"

# 1. jaxadv step throughput.
if want throughput; then
  run_stage throughput $PY bench/throughput.py --config configs/cifar10_standard.py \
    --methods standard,fast,pgd,free "${TP[@]}" --out "$WORK/throughput.json" &&
    record throughput --json "$WORK/throughput.json" "${STAGE_ARGS[@]}"
fi
# 2. The peer's steps on the same GPU.
want peer_throughput && peer_stage peer_throughput --modes standard,fgsm_rs,pgd "${PEER_TP[@]}"
# 3. cifar10_fast end to end, then the peer's recipe.
want c10_fast && train_stage c10_fast configs/cifar10_fast.py "${C10_FAST[@]}"
want peer_c10_fast && peer_stage peer_c10_fast --modes '' "${PEER_FAST[@]}"
# 4. If time remains.
want c10_standard && train_stage c10_standard configs/cifar10_standard.py "${C10_STD[@]}"
if want mnist_pgd; then
  if ((DRY)); then
    train_stage mnist_pgd configs/mnist_pgd.py "${MNIST[@]}"
  else
    left=$((BUDGET - SECONDS))
    epochs=$($PY -c "print(max(0, min(128, int(($left - $MNIST_FIXED_S) / $MNIST_EPOCH_S))))")
    if ((epochs >= 1)); then
      log "== mnist_pgd: $epochs of 128 epochs fit in $left s"
      train_stage mnist_pgd configs/mnist_pgd.py --config.num_epochs=$epochs "${MNIST[@]}"
    else
      log "== mnist_pgd: skipped: ${left} s left, not one epoch after ${MNIST_FIXED_S} s fixed cost"
      record mnist_pgd --set "skipped=${left} s left"
    fi
  fi
fi

log "== summary (at ${SECONDS} s)"
summary summarize "$STAGES" --out-dir "$OUT" 2>&1 | tee -a "$LOG"
