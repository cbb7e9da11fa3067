#!/usr/bin/env bash
# GPU checks for a machine with NVIDIA GPUs (under 8 minutes): single-GPU MLP and CNN vs plain
# Keras, mixed_float16, XLA, the mirrored strategy over every GPU, a 4-job sweep with one GPU per
# job -> benchmarks/results/gpu.md. `--dry-run` runs the same steps on the CPU (checks the script).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
if [ "${1:-}" != "--dry-run" ]; then
  command -v nvidia-smi >/dev/null || { echo "gpu.sh: no nvidia-smi here (--dry-run checks the script on the CPU)"; exit 2; }
  nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
  "$PY" -c "import tensorflow as tf, sys; sys.exit(0 if tf.config.list_physical_devices('GPU') else 1)" \
    || { echo "gpu.sh: TensorFlow ($PY) sees no GPU"; exit 2; }
fi
"$PY" -c "import dlx" 2>/dev/null || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 470 "$PY" benchmarks/gpu.py "$@"
