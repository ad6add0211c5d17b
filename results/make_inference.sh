#!/usr/bin/env sh
# What the trained models cost to run, beside their accuracy (issue 27): flowers12 at 128 px,
# EfficientNet-Lite0/1/2 x linear and finetune, and the small CNN from scratch (it has no
# pretrained weights), one seed, each model exported to ONNX and checked with onnxruntime.
# Writes results/flowers12-inference.jsonl, .md (the report, Pareto by latency) and .png
# (accuracy against latency).
#
#     sh results/make_inference.sh
set -eu
cd "$(dirname "$0")/.."
DATA="${TLBENCH_FLOWERS12:-../shared/data/flowers12}"
OUT=results/flowers12-inference.jsonl
COMMON="--datasets imagefolder:$DATA --image-size 128 --export onnx --plain --out $OUT"
rm -f "$OUT"
# shellcheck disable=SC2086
tlbench run --backbones efficientnet_lite0,efficientnet_lite1,efficientnet_lite2 --strategies linear,finetune $COMMON
# shellcheck disable=SC2086
tlbench run --backbones small_cnn --strategies scratch $COMMON
tlbench report "$OUT" --format markdown --pareto-by latency > results/flowers12-inference.md
tlbench report "$OUT" --plot results/flowers12-inference.png > /dev/null
