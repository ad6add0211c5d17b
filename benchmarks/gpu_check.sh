#!/usr/bin/env bash
# The GPU check in one command (the steps, budgets and bands: benchmarks/gpu_check.py):
#   bash benchmarks/gpu_check.sh             one NVIDIA GPU: eleven steps, each under its own time
#                                            budget and asserting its figures against a pass band;
#                                            under 8 minutes on one H100 (fp16 in place of bf16
#                                            below compute capability 8); writes
#                                            results/gpu-check-<device>.md and .json
#   bash benchmarks/gpu_check.sh --dry-run   any machine: lists every step with its budget (their
#                                            sum <= 8 min) and runs each step's CPU-capable part
#   ... --only STEP (repeatable), --out DIR
# The bands are ESTIMATES (scaled from published A100/RTX 3090 figures), not measurements:
# record the first real run's figures and tighten the bands to them (BANDS in gpu_check.py).
# Exit 2 at once without CUDA (unless --dry-run); 1 when a step failed or left its band.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
if [ -x .venv/bin/python ] && [ -z "${VIRTUAL_ENV:-}" ]; then PYTHON=.venv/bin/python; fi
exec "$PYTHON" benchmarks/gpu_check.py "$@"
