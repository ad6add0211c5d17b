#!/usr/bin/env sh
# Successive halving against the full sweep on flowers12 (issue 21): EfficientNet-Lite0/1/2
# x linear at 128 px, 16 trials a cell, 4 at a time, on a validation split of 20% of each
# class, searched with --tune-seed 0, 1 and 2, each once with every trial training all 30
# epochs and once with --tune-pruner halving. Writes results/flowers12-halving/*.jsonl
# (with their studies, *.tune.db) and prints the table of results/flowers12-halving.md.
#
#     sh results/make_halving.sh
set -eu
cd "$(dirname "$0")/.."
DATA="${TLBENCH_FLOWERS12:-../shared/data/flowers12}"
OUT=results/flowers12-halving
GRID="--backbones efficientnet_lite0,efficientnet_lite1,efficientnet_lite2 --datasets imagefolder:$DATA --strategies linear --seeds 0 --image-size 128 --tune 16 --tune-batch 4 --no-inference --plain"
mkdir -p $OUT
for seed in 0 1 2; do
    rm -f $OUT/full-s$seed.* $OUT/halving-s$seed.*
    # shellcheck disable=SC2086
    tlbench run $GRID --tune-seed $seed --out $OUT/full-s$seed.jsonl
    # shellcheck disable=SC2086
    tlbench run $GRID --tune-seed $seed --tune-pruner halving --out $OUT/halving-s$seed.jsonl
done
rm -f $OUT/*.html  # each run's page: the records are what this compares
python results/compare_halving.py $OUT
