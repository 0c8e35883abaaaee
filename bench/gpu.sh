#!/usr/bin/env bash
# The GPU paths in one table, in under 5 minutes on a CUDA machine: onnxruntime's CUDA and
# TensorRT providers load, /matte and /classify at 1/8/16 clients with batching off and on,
# and a short matte fine-tune on CUDA with mixed precision (bench/gpu.py says what and how).
#
#   bench/gpu.sh [--seconds 5] [--clients 1,8,16] [--epochs 3]
#
# PYTHON picks the interpreter (default: .venv/bin/python, else python3); it needs a CUDA
# torch and onnxruntime-gpu. Without a CUDA device it says what is missing and exits 2.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD:$PWD/sdk${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" bench/gpu.py "$@"
