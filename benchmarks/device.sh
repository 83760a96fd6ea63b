#!/usr/bin/env bash
# One-command accelerator check (≤ 8 minutes on one GPU): the polar kernels in float32 and bfloat16 and the full
# optimizer step (optax.adamw, optax.contrib.muon, normopt.muon), each script as on the CPU, timed on the device.
#
#     bash benchmarks/device.sh [OUT_DIR]     # default: $OUT if set (the device tool), else benchmarks/results/device
#
# Needs jax with a GPU/TPU backend, optax and flax importable by $PYTHON (default python3); installs nothing.
# Writes kernels.{json,md}, kernels_bfloat16.{json,md}, step.{json,md} and device.txt (jax devices, nvidia-smi).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-benchmarks/results/device}}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{
  date -u +%FT%TZ
  $py -c "import jax, optax; print('jax', jax.__version__, 'optax', optax.__version__, jax.devices())"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
} | tee "$out/device.txt"
if [ "$($py -c 'import jax; print(jax.default_backend())')" = cpu ]; then
  echo "device.sh: jax sees no accelerator (backend cpu); run benchmarks/kernels.py on the CPU instead" >&2
  exit 2
fi
timeout 200 $py benchmarks/kernels.py --dtype float32 --out "$out"
timeout 160 $py benchmarks/kernels.py --dtype bfloat16 --out "$out"
timeout 100 $py benchmarks/step.py --out "$out"
echo "device.sh: results in $out"
