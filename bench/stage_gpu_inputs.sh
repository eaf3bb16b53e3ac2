#!/usr/bin/env bash
# Stages what bench/gpu_quick.sh needs on the device machine into git-ignored
# folders of the repo root, since ../shared does not travel there:
#
#   bash bench/stage_gpu_inputs.sh        # then pass the printed carry list
#
#   .data/  copies (not symlinks: links travel as links) of the offline MNIST
#           IDX .gz files and CIFAR-10 cifar10_jpeg.npz from ../shared/data
#   .whl/   ml_collections and absl-py wheels for the device's Python 3.12.
#           The device image has jax, flax, optax, orbax-checkpoint, chex and
#           PyTorch; ml_collections' other requirement, PyYAML, comes with
#           flax (a requirement of it), so only ml_collections is missing;
#           absl-py travels too in case the image lacks it.
#   .peer/  the PyTorch peer, ../shared/peer/torch_fgsm_bench.py
#
# Idempotent: rerunning refreshes the copies and keeps downloaded wheels.
# Prints the sizes (the travelling tree must stay under 64 MiB) and the
# `carry` list.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
PY=${PY:-python3}

mkdir -p .data/cifar10 .data/mnist .peer .whl
install -m 644 "$SHARED"/data/cifar10/cifar10_jpeg.npz .data/cifar10/
install -m 644 "$SHARED"/data/mnist/*-ubyte.gz .data/mnist/
install -m 644 "$SHARED"/peer/torch_fgsm_bench.py .peer/

if ! ls .whl/ml_collections-*.whl .whl/absl_py-*.whl >/dev/null 2>&1; then
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl ml_collections absl-py
fi

for d in .data .whl .peer; do
  git check-ignore -q "$d" || { echo "error: $d is not git-ignored" >&2; exit 1; }
done
echo "staged:"
du -sh .data .whl .peer
ls .whl
# What travels: tracked and untracked-not-ignored files plus the carried ones.
total=$( { git ls-files -co --exclude-standard -z; printf '%s\0' .data .whl .peer; } |
  du -sch --files0-from=- 2>/dev/null | tail -1 | cut -f1)
echo "travelling tree: $total (limit 64 MiB)"
echo 'carry: [".data", ".whl", ".peer"]'
