"""`tlbench report` on big results files: 20,000 distinct rows, and 50,000 records.

Claim (issue 26): `tlbench report` on a results file of 20,000 distinct rows
answers in under 10 s, and on 50,000 records (10,000 rows x 5 seeds) in
under 5 s, on the 2-core development machine; both the default terminal
table (what `tlbench report` prints) and `--format markdown`.

The goals are asserted as ratios, so that they hold on a loaded or a faster
machine: each report's median over the median of the baseline, reading the
same file with the standard library's json in a fresh process (what reading
the file at all costs, without tlbench's optional orjson), timed in the same
rounds. `GOALS` holds the issue's seconds and the ratios they are on the
development machine (`READ_SECONDS`).

The files are generated, deterministic and shaped like real records: each is
a record the harness wrote (tiny backbone, linear, 3 epochs: curve, cost,
data, scores, environment; about 3 kB as JSON) with its backbone, strategy,
learning rate, seed, key, time, accuracies, cost and per-image results
(`accuracy.final_correct`, consistent with the final accuracy) varied over 7
datasets whose evaluation splits hold 240 to 10,000 images, so the
intervals and ties have real work to do (thousands of distinct
one-seed bootstraps, not a few), and every dataset holds a probe and a
fine-tune of 50 backbones, so the ranking checks run too.

Each command runs as a user runs it: a fresh process (the installed
`tlbench` console script), its output to a pipe; one untimed warm-up round,
then `rounds` rounds, each running the baseline and every format once
(interleaved: load on the machine spreads over all of them); the figures
are medians. The machine's load average is stored beside them.

What it costs, measured with `python -m cProfile -s cumtime -m tlbench.cli report ...`
before each change (issue 26): one 10,000-draw bootstrap per distinct one-seed
(images, right images), now computed exactly from Binomial quantiles; Python's
cyclic collector walking the records again while rows were sorted and written,
now frozen out (`gc.freeze`); the default table summarising twice, now once;
JSON decoding, now orjson where it is installed (`pip install 'tlbench[fast]'`,
0.7 instead of 2.0 CPU s for the 153 MB of 50,000 records); rich's `Table`
measuring and rendering each of the terminal table's cells as a renderable of
its own (10 of the 17 s for 20,000 rows), now one string per line
(`tlbench.commands.output.Columns`), and tabulate inferring a type for each
markdown cell (0.7 s for 10,000 rows), now the same pipe tables line by line;
importing scipy.stats (half a second) for the weighted tau, now computed pair
by pair, and for tuning's Kendall tau when no rows were tuned; the cyclic
collector walking the records again each time reading or summarising turned
it back on, now off for the whole report; the records sorted by time three
times and the feature extraction charged before any run needed it, now once
and when needed. What is left: reading (orjson), the summary's per-record
Python (grouping by the settings as JSON, the readable copies),
`record.problems` run twice (summary and ranking checks), and importing numpy
and scipy.special.

Run: `python -m pytest benchmarks/test_report_speed.py -q -s` (a few minutes
on 2 CPU cores, most of it writing 220 MB of records), or
`python benchmarks/test_report_speed.py [--rounds N] [--keep FOLDER] [--formats markdown,table]`
(exit 1 when a goal is missed).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: seconds to read each file with json (`READ_FILE`) on the development machine (2 shared
#: cores, load average 1.2-1.3, the quietest it was; median of 2 rounds): the goals' seconds
#: over these are the ratios asserted (17.5x and 3.7x).
READ_SECONDS = {"rows": 0.57, "records": 1.35}
#: rows, seeds, the issue's goal in seconds on the development machine, and that goal as a
#: ratio to reading the same file there (`READ_SECONDS`): what is asserted.
GOALS = {
    which: (rows, seeds, seconds, round(seconds / READ_SECONDS[which], 1))
    for which, rows, seeds, seconds in (("rows", 20_000, 1, 10.0), ("records", 10_000, 5, 5.0))
}
#: (name, evaluation images): flowers12 to CIFAR-sized test splits.
DATASETS = [
    ("flowers12", 240),
    ("pets", 1_000),
    ("dtd", 1_880),
    ("flowers102", 2_040),
    ("pets-test", 3_669),
    ("food-mini", 5_000),
    ("cifar10", 10_000),
]
#: one record the harness wrote (tlbench run --backbones tiny --strategies linear --epochs 3).
TEMPLATE: dict[str, Any] = {
    "schema": 2,
    "status": "ok",
    "reason": None,
    "config": {
        "weights": "tiny-fixed-init",
        "image_size": 16,
        "hyperparameters": {
            "epochs": 3, "batch_size": 16, "lr": 0.001, "backbone_lr_mult": 1.0,
            "weight_decay": 0.001, "optimizer": "adamw", "momentum": 0.9, "nesterov": False,
            "schedule": "cosine", "warmup_epochs": 0, "step_size": 7, "gamma": 0.1,
            "label_smoothing": 0.0, "augment": False,
        },
        "device": "cpu", "precision": "fp32", "memory_format": "channels_last", "compile": False,
    },
    "providers": {"backbone": "tiny", "strategy": "strategies", "dataset": "tiny"},
    "accuracy": {
        "best_epoch": 1, "final_balanced": 1.0,
        "curve": [
            {"epoch": e, "train_loss": 1.08 - 0.02 * e, "eval_accuracy": 1.0,
             "eval_balanced_accuracy": 1.0, "eval_loss": 1.06 - 0.01 * e,
             "epoch_seconds": 0.0015, "train_images_per_s": 32344.4}
            for e in (1, 2, 3)
        ],
    },
    "cost": {
        "data_prep_seconds": 0.13, "feature_seconds": 0.31, "eval_seconds": 0.0008,
        "warmup_seconds": 0.0067, "upload_seconds": 1.2e-05, "resident_data_bytes": 0,
        "batch_size": 16, "warmup_steps": 1, "warmup_batches": {"train": [16], "eval": [18]},
        "measured_steps": 9, "train_images_per_s": 18099.2, "compute_images_per_s": 18099.2,
        "data_images_per_s": None, "data_stall_fraction": 0.0, "eval_images_per_s": 68406.8,
        "peak_memory_bytes": 736718848, "peak_memory_kind": "process_peak_rss",
        "trainable_params": 51, "total_params": 1459, "forward_flops_per_image": 258144,
        "decode_cache": "none", "feature_cache": "none", "batch_sizes_tried": [16],
        "device": "cpu", "precision": "fp32", "memory_format": "channels_last",
        "compile": False, "features_device": "cpu: AMD EPYC", "feature_extract_seconds": 0.305,
        "wall_seconds": 0.45,
    },
    "data": {
        "num_classes": 3, "classes": ["red", "green", "blue"], "train_images": 48,
        "eval_split": "test", "skipped_images": 0, "skipped_files": [], "store_size": 18,
    },
    "scores": {"logme": 0.126, "knn_accuracy": 1.0, "h_score": 1.75, "seconds": 0.026},
    "environment": {
        "tlbench": "0.1.0", "torch": "2.14.1+cu130", "torchvision": "0.29.1+cu130",
        "python": "3.11.7", "platform": "Linux-x86_64-with-glibc2.36", "device": "cpu",
        "device_name": "AMD EPYC",
    },
}  # fmt: skip


def write_results(path: Path, rows: int, seeds: int, seed: int = 0) -> int:
    """`rows` distinct configurations x `seeds` seeds of records into `path`; returns the count."""
    from tlbench.record import encode_correct

    rng = random.Random(seed)
    count = 0
    with path.open("w", encoding="utf-8") as f:
        for row in range(rows):
            name, images = DATASETS[row % len(DATASETS)]
            level = rng.uniform(0.35, 0.97)  # this configuration's accuracy
            for s in range(seeds):
                record = copy.deepcopy(TEMPLATE)
                config = record["config"]
                # 50 backbones x 3 strategies x 7 datasets, then a learning rate and epochs.
                config.update(
                    backbone=f"backbone{row % 50}",
                    dataset=name,
                    dataset_fingerprint=f"fp-{name}",
                    strategy=("linear", "finetune", "scratch")[row % 3],
                    seed=s,
                )
                config["hyperparameters"]["lr"] = round(10 ** -(1 + (row // 1050) % 20 / 4), 8)
                config["hyperparameters"]["epochs"] = 3 + row // 21_000
                accuracy = min(1.0, max(0.0, rng.gauss(level, 0.01)))
                right = [1 if rng.random() < accuracy else 0 for _ in range(images)]
                final = sum(right) / images
                record["key"] = f"{row:08x}{s:04x}{seed:012x}"
                record["time"] = (
                    f"2026-01-{1 + count // 86400 % 28:02d}T{count % 86400 // 3600:02d}:{count % 3600 // 60:02d}:{count % 60:02d}+00:00"
                )
                record["accuracy"].update(
                    final=final, best=max(final, accuracy), final_correct=encode_correct(right)
                )
                record["cost"]["train_seconds"] = round(rng.uniform(0.5, 500), 3)
                record["data"]["eval_images"] = images
                f.write(json.dumps(record, separators=(",", ":")) + "\n")
                count += 1
    return count


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


#: the baseline: reading the same file with the standard library, in a fresh process.
READ_FILE = """
import json, sys
with open(sys.argv[1], "rb") as f:
    for line in f:
        json.loads(line)
"""


def commands(path: Path, formats: tuple[str | None, ...]) -> dict[str, list[str]]:
    """label -> command line: the baseline, then `tlbench report` in each format."""
    exe = shutil.which("tlbench") or str(Path(sys.executable).with_name("tlbench"))
    found = {"read": [sys.executable, "-c", READ_FILE, str(path)]}
    for fmt in formats:
        found[fmt or "table"] = [exe, "report", str(path), *(["--format", fmt] if fmt else [])]
    return found


def time_command(command: list[str]) -> float:
    """Seconds of one command in a fresh process, its output to a pipe."""
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    assert done.returncode == 0, done.stderr[-2000:]
    return seconds


def measure(
    rows: int, seeds: int, rounds: int, folder: Path, formats: tuple[str | None, ...]
) -> dict[str, Any]:
    """Medians over `rounds` of the baseline and each format, rounds interleaved (every
    command once per round, after one untimed warm-up round), and their ratios."""
    path = folder / f"runs-{rows}x{seeds}.jsonl"
    if not path.exists():
        write_results(path, rows, seeds)
    figures: dict[str, Any] = {
        "rows": rows,
        "records": rows * seeds,
        "file_mb": round(path.stat().st_size / 1e6, 1),
        "load_average": [],
    }
    runs = commands(path, formats)
    times: dict[str, list[float]] = {label: [] for label in runs}
    for round_ in range(rounds + 1):  # round 0: the warm-up (page cache, imports)
        for label, command in runs.items():
            seconds = time_command(command)
            if round_:
                times[label].append(seconds)
        if round_:
            figures["load_average"].append(round(load_average(), 2))
    read = statistics.median(times["read"])
    for label, seconds in times.items():
        figures[f"{label}_median_s"] = round(statistics.median(seconds), 2)
        figures[f"{label}_rounds_s"] = [round(t, 2) for t in seconds]
        if label != "read":
            figures[f"{label}_ratio"] = round(statistics.median(seconds) / read, 2)
    return figures


def missed(figures: dict[str, Any], which: str) -> list[str]:
    """The formats whose ratio to the baseline misses the goal, each said with its figures."""
    goal = GOALS[which][3]
    return [
        f"tlbench report{'' if label == 'table' else ' --format ' + label} on "
        f"{figures['records']} records: {figures[f'{label}_ratio']}x reading the file "
        f"(goal {goal}x; {figures[f'{label}_median_s']} s against "
        f"{figures['read_median_s']} s; load {figures['load_average']})"
        for label in ("markdown", "table")
        if f"{label}_ratio" in figures and figures[f"{label}_ratio"] > goal
    ]


# --------------------------------------------------------------------------- pytest


def _check(benchmark: Any, tmp_path_factory: Any, which: str) -> None:
    import pytest
    from benchlib import report

    rows, seeds, seconds, ratio = GOALS[which]
    rounds = int(os.environ.get("TLBENCH_BENCH_REPORT_ROUNDS", "3"))
    folder = tmp_path_factory.mktemp("report-speed")
    figures = benchmark.pedantic(
        measure, args=(rows, seeds, rounds, folder, ("markdown", None)), rounds=1
    )
    report(
        benchmark,
        f"tlbench report, {which}",
        {**figures, "goal_ratio": ratio, "goal_s_on_the_development_machine": seconds},
    )
    failures = missed(figures, which)
    if failures:
        pytest.fail("; ".join(failures))


def test_report_on_20000_distinct_rows(benchmark: Any, tmp_path_factory: Any) -> None:
    _check(benchmark, tmp_path_factory, "rows")


def test_report_on_50000_records(benchmark: Any, tmp_path_factory: Any) -> None:
    _check(benchmark, tmp_path_factory, "records")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", help="a folder to keep the generated files in")
    parser.add_argument("--formats", default="markdown,table")
    args = parser.parse_args()
    formats = tuple(None if f == "table" else f for f in args.formats.split(","))
    folder = Path(args.keep or tempfile.mkdtemp(prefix="tlbench-report-speed-"))
    folder.mkdir(parents=True, exist_ok=True)
    failures = []
    for which, (rows, seeds, seconds, ratio) in GOALS.items():
        figures = measure(rows, seeds, args.rounds, folder, formats)
        print(json.dumps({"case": which, "goal_ratio": ratio, "goal_s": seconds, **figures}))
        failures += missed(figures, which)
    for line in failures:
        print(f"goal missed: {line}")
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
