#!/usr/bin/env sh
# The CPU reference table, produced by tlbench itself: flowers12, the pretrained
# EfficientNet-Lite0 against the tutorials' small CNN, every strategy, 128 px.
#
# Run from anywhere, on a quiet machine (nothing else using the CPU):
#     sh results/make_reference.sh
# Writes results/flowers12-cpu.jsonl (one record per run: config, accuracy, cost,
# environment) and results/flowers12-cpu.md (the report). A fresh cache folder is
# used, so decoding and feature extraction are paid and counted as on a first run.
set -eu
cd "$(dirname "$0")/.."
DATA="${TLBENCH_FLOWERS12:-../shared/data/flowers12}"
OUT=results/flowers12-cpu.jsonl
CACHE="$(mktemp -d)"
trap 'rm -rf "$CACHE"' EXIT
rm -f "$OUT"
tlbench run \
    --datasets "imagefolder:$DATA" \
    --backbones efficientnet_lite0,small_cnn \
    --strategies scratch,linear,finetune \
    --seeds 0 \
    --image-size 128 \
    --device cpu \
    --cache-dir "$CACHE" \
    --out "$OUT" \
    --plain
tlbench report "$OUT" --format markdown --output results/flowers12-cpu.md
