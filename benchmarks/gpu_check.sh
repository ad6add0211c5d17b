#!/usr/bin/env bash
# The GPU check in one command (see benchmarks/gpu_check.py for its steps):
#   benchmarks/gpu_check.sh               on a machine with an NVIDIA GPU, under 8 minutes;
#                                         writes results/gpu-check-<device>.md and .json
#   benchmarks/gpu_check.sh --cpu-smoke   every step on tiny settings on a CPU
# Fails at once (exit 2) where there is no CUDA; exit 1 when a step failed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
if [ -x .venv/bin/python ] && [ -z "${VIRTUAL_ENV:-}" ]; then PYTHON=.venv/bin/python; fi
exec "$PYTHON" benchmarks/gpu_check.py "$@"
