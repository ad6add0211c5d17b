#!/usr/bin/env sh
# `tlbench compare` on two real flowers12 results files, one with a planted worse cell.
#
# BASE: small_cnn and EfficientNet-Lite0, every strategy, 64 px, 2 epochs, seed 0.
# NEW:  the same cells again, except that EfficientNet-Lite0's finetune is planted
#       slower and worse: 4 epochs at a learning rate of 0.5 (the default is 0.001).
# The comparison flags that cell WORSE and exits 1; results/compare-flowers12.md
# holds the output. About a minute and a half on 2 CPU cores.
#     sh results/make_compare.sh
set -u
cd "$(dirname "$0")/.."
DATA="imagefolder:${TLBENCH_FLOWERS12:-$(cd ../shared/data/flowers12 && pwd)}"
BASE=results/compare-flowers12-base.jsonl
NEW=results/compare-flowers12-new.jsonl
CACHE="$(mktemp -d)"
trap 'rm -rf "$CACHE"' EXIT
rm -f "$BASE" "$NEW"
set -e
tlbench run --plain --datasets "$DATA" --backbones small_cnn,efficientnet_lite0 \
    --strategies scratch,linear,finetune --image-size 64 --epochs 2 \
    --out "$BASE" --save-models --models-dir "$CACHE/models" --cache-dir "$CACHE"
tlbench run --plain --datasets "$DATA" --backbones small_cnn,efficientnet_lite0 \
    --strategies scratch,linear --image-size 64 --epochs 2 --out "$NEW" --cache-dir "$CACHE"
tlbench run --plain --datasets "$DATA" --backbones efficientnet_lite0 \
    --strategies finetune --image-size 64 --epochs 4 --lr 0.5 --out "$NEW" --cache-dir "$CACHE"
set +e
tlbench compare "$BASE" "$NEW"
echo "exit status: $?"
