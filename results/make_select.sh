#!/usr/bin/env sh
# Does `tlbench select` pick what the full grid would, for less? (issue 14)
# flowers12, EfficientNet-Lite0/1/2, 128 px, seed 0: first the two-stage selection
# (linear probes of all three, then a fine-tune of the top 1), then the full grid
# (linear and fine-tune of all three) into the same results file (the selection's
# runs are resumed, not trained again), then the selection once more: it now finds
# the full grid in the file, so it prints the measured full-grid cost and each
# ranking's weighted Kendall tau and regret, as `tlbench report` does.
#
# Run from anywhere, on a quiet machine:
#     sh results/make_select.sh
# Writes results/flowers12-select.jsonl, results/flowers12-select.log (what the
# commands printed) and results/flowers12-select-report.md.
set -eu
cd "$(dirname "$0")/.."
DATA="${TLBENCH_FLOWERS12:-../shared/data/flowers12}"
OUT=results/flowers12-select.jsonl
LOG=results/flowers12-select.log
CACHE="$(mktemp -d)"
trap 'rm -rf "$CACHE"' EXIT
rm -f "$OUT" "$LOG"
GRID="--backbones efficientnet_lite0,efficientnet_lite1,efficientnet_lite2 --datasets imagefolder:$DATA --seeds 0 --image-size 128 --device cpu --cache-dir $CACHE --out $OUT --plain"
for step in "select $GRID --top-k 1" "run $GRID --strategies linear,finetune" "select $GRID --top-k 1"; do
    echo "\$ tlbench $step" | sed "s|$CACHE|\$CACHE|" >> "$LOG"
    # shellcheck disable=SC2086
    tlbench $step 2>&1 | tee -a "$LOG"
done
tlbench report "$OUT" --format markdown --output results/flowers12-select-report.md
