"""One 4-run grid through every executor; the same results per run key? Writes results/executors-cpu.md.

The grid: synthetic, efficientnet_lite0 and small_cnn, scratch and linear, 32 px,
seed 0 (small_cnn has no pretrained weights, so its linear run is skipped: 3 train).
Each executor writes its own results file under a scratch folder; the decode and
feature caches are shared, as on one machine. Each executor is compared per run
key against `inline` run with the same CPU thread count (`inline` as is, and
`inline` with `OMP_NUM_THREADS=1`, the share of each of `devices`' two CPU
workers): the accuracy and loss curves must be bit-identical. Against `inline`
at the machine's thread count, an executor that splits the threads differs by
float noise (sums taken in another order), which training amplifies: the
largest differences are reported, within the stated tolerance.

    python results/compare_executors.py [--epochs 2] [--work /tmp/tlbench-executors]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXECUTORS = [
    ("inline", []),
    ("inline, 1 thread", []),
    ("process", ["--executor", "process"]),
    ("devices", ["--executor", "devices", "--devices", "cpu,cpu"]),
    ("ray", ["--executor", "ray"]),
]
#: where the executor splits the CPU threads: float noise, amplified by one epoch of AdamW
#: (its update divides by the root of tiny second moments). Largest seen: 0.01 and 1.7e-2.
ACC_TOL = 0.02
LOSS_RTOL = 5e-2


def _curves(record):
    return [
        (e["eval_accuracy"], e["train_loss"], e["eval_loss"]) for e in record["accuracy"]["curve"]
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--work", default="/tmp/tlbench-executors")
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    grid = [
        "--backbones", "efficientnet_lite0,small_cnn", "--datasets", "synthetic",
        "--strategies", "scratch,linear", "--seeds", "0", "--image-size", "32",
        "--epochs", str(args.epochs), "--device", "cpu", "--plain", "--quiet",
        "--cache-dir", str(work / "cache"),
    ]  # fmt: skip
    records: dict[str, dict[str, dict]] = {}
    seconds: dict[str, float] = {}
    for name, flags in EXECUTORS:
        out = work / f"{name.replace(', 1 thread', '-1')}.jsonl"
        command = [sys.executable, "-m", "tlbench.cli", "run", *grid, "--out", str(out), *flags]
        env = dict(os.environ, OMP_NUM_THREADS="1") if "1 thread" in name else None
        t0 = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        seconds[name] = time.perf_counter() - t0
        if done.returncode != 0:
            print(done.stdout, done.stderr, file=sys.stderr)
            return 1
        lines = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
        records[name] = {r["key"]: r for r in lines if r["status"] == "ok"}
        print(f"{name}: {len(records[name])} ok runs in {seconds[name]:.0f} s", flush=True)

    inline = records["inline"]

    def threads_of(recs):
        return sorted({r["environment"]["cpu_threads"] for r in recs.values()})

    by_threads = {tuple(threads_of(records[n])): records[n] for n in ("inline, 1 thread", "inline")}
    rows = []
    verdicts = {}
    for name, _ in EXECUTORS[1:]:
        mine = records[name]
        threads = threads_of(mine)
        same_keys = mine.keys() == inline.keys()
        twin = by_threads.get(tuple(threads))
        exact = (
            twin is not None
            and mine.keys() == twin.keys()
            and all(_curves(mine[k]) == _curves(twin[k]) for k in twin)
        )
        worst_acc = worst_loss = 0.0
        for key in inline.keys() & mine.keys():
            for (a, loss, el), (a0, loss0, el0) in zip(
                _curves(mine[key]), _curves(inline[key]), strict=True
            ):
                worst_acc = max(worst_acc, abs(a - a0))
                worst_loss = max(
                    worst_loss, abs(loss - loss0) / abs(loss0), abs(el - el0) / abs(el0)
                )
        verdicts[name] = same_keys and exact and worst_acc <= ACC_TOL and worst_loss <= LOSS_RTOL
        against = (
            "bit-identical"
            if worst_acc == worst_loss == 0.0
            else (f"max |d acc| {worst_acc:.3g}, max rel d loss {worst_loss:.2e}")
        )
        rows.append(
            f"| {name} | {len(mine)} | {'yes' if same_keys else 'NO'} | {threads} | "
            f"{'bit-identical' if exact else 'NO'} | {against} | {seconds[name]:.0f} s |"
        )
    for record in inline.values():
        c = record["config"]
        print(f"inline {c['backbone']} / {c['strategy']}: {100 * record['accuracy']['final']:.1f}%")
    sha = subprocess.run(
        ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    text = [
        "# One grid, four executors (CPU)",
        "",
        f"Made by `python results/compare_executors.py --epochs {args.epochs}` at {sha} on "
        f"{platform.processor() or platform.machine()} ({len(__import__('os').sched_getaffinity(0))} CPU cores), "
        f"{time.strftime('%Y-%m-%d')}. Grid: synthetic, efficientnet_lite0 and small_cnn, scratch and linear, "
        f"32 px, seed 0, {args.epochs} epochs (small_cnn's linear run is skipped: no pretrained weights).",
        "",
        f"Inline ran {len(inline)} runs in {seconds['inline']:.0f} s with "
        f"{threads_of(inline)} CPU thread(s). Every executor must give curves bit-identical to "
        "inline at the same thread count; against inline at the machine's thread count, an "
        f"executor that splits the threads must stay within accuracy {ACC_TOL:g} and losses "
        f"within {LOSS_RTOL:g} relative (float noise: sums in another order, amplified by training).",
        "",
        "| executor | ok runs | same keys as inline | CPU threads per run | "
        "against inline at the same threads | against inline | wall |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Top-1 per run (inline): "
        + "; ".join(
            f"{r['config']['backbone']} / {r['config']['strategy']} {100 * r['accuracy']['final']:.1f}%"
            for r in inline.values()
        ),
        "",
    ]
    (HERE / "executors-cpu.md").write_text("\n".join(text))
    print("\n".join(text))
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
