#!/usr/bin/env sh
# Default against tuned on flowers12 (issue 21): EfficientNet-Lite0/1/2 x linear, logreg
# and finetune, 128 px, seeds 0,1,2. First every cell at its strategy's default settings,
# then every cell tuned on a validation split of 20% of each class of the training split
# (Optuna, TPE, seed 0, 4 trials at a time), the chosen settings trained with each seed
# and reported on the test split: `linear` and `logreg` with 16 trials a cell (their
# trials train on cached features), `finetune` with 8 trials a cell and successive
# halving on epochs (its trials train the whole network), on two CPU workers of one
# thread each. Writes results/flowers12-tuned-default.jsonl, results/flowers12-tuned.jsonl
# and results/flowers12-tuned-finetune.jsonl (trials and chosen runs; the studies beside
# each, *.tune.db) and prints the tables of results/flowers12-tuned.md.
#
#     sh results/make_tuned.sh
set -eu
cd "$(dirname "$0")/.."
DATA="${TLBENCH_FLOWERS12:-../shared/data/flowers12}"
GRID="--backbones efficientnet_lite0,efficientnet_lite1,efficientnet_lite2 --datasets imagefolder:$DATA --seeds 0,1,2 --image-size 128 --plain"
rm -f results/flowers12-tuned-default.jsonl results/flowers12-tuned.jsonl results/flowers12-tuned.tune.db
rm -f results/flowers12-tuned-finetune.jsonl results/flowers12-tuned-finetune.tune.db
# shellcheck disable=SC2086
tlbench run $GRID --strategies linear,logreg,finetune --out results/flowers12-tuned-default.jsonl
# shellcheck disable=SC2086
tlbench run $GRID --strategies linear,logreg --tune 16 --tune-batch 4 --out results/flowers12-tuned.jsonl
# shellcheck disable=SC2086
tlbench run $GRID --strategies finetune --tune 8 --tune-batch 4 --tune-pruner halving --executor devices --devices cpu,cpu --out results/flowers12-tuned-finetune.jsonl
python results/compare_tuned.py results/flowers12-tuned-default.jsonl results/flowers12-tuned.jsonl results/flowers12-tuned-finetune.jsonl
