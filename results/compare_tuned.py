"""Default against tuned: one markdown table from two results files of the same grid.

    python results/compare_tuned.py DEFAULT.jsonl TUNED.jsonl > results/flowers12-tuned.md

For each backbone x strategy: top-1 on the test split at the strategy's
default settings and at the settings `--tune` chose on the validation split
(mean over seeds with the 95% t-interval), their paired difference over the
seeds both ran, the chosen settings with their validation accuracy, and what
the search cost (the seconds of all its trials). Then, per strategy, how much
the ranking of backbones moved between default and tuned (Kendall tau).
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict

from scipy.stats import kendalltau

from tlbench import stats
from tlbench.report import summarize
from tlbench.results import read


def _rows(path: str) -> dict[tuple[str, str], object]:
    return {(r.backbone, r.strategy): r for r in summarize(read(path)) if r.n}


def _tuning(path: str) -> dict[tuple[str, str], dict]:
    out = {}
    for r in read(path):
        if r.get("tuning") and r.get("status") == "ok":
            out[r["config"]["backbone"], r["config"]["strategy"]] = r["tuning"]
    return out


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}"


def _ci(row) -> str:
    if row.ci_low is None:
        return f"{_pct(row.accuracy)}"
    return f"{_pct(row.accuracy)} [{_pct(row.ci_low)}, {_pct(row.ci_high)}]"


def _settings(chosen: dict) -> str:
    return ", ".join(f"{k}={v:.2g}" for k, v in sorted(chosen.items()))


def _order(cells: list[tuple[str, float, float]], column: int) -> str:
    """The backbones, best first by the accuracy in `column` (1: default, 2: tuned)."""
    return " > ".join(b for b, *_ in sorted(cells, key=lambda c: -c[column]))


def main(default_path: str, tuned_path: str) -> None:
    default, tuned, tuning = _rows(default_path), _rows(tuned_path), _tuning(tuned_path)
    print("| backbone | strategy | default top-1 % | tuned top-1 % | tuned - default (paired) |")
    print("|---|---|---|---|---|")
    for cell in sorted(default):
        d, t = default[cell], tuned.get(cell)
        if t is None:
            continue
        diff = stats.paired_t(t.seed_accuracy, d.seed_accuracy)
        shown = (
            f"{100 * diff.estimate:+.1f} [{100 * diff.lower:+.1f}, {100 * diff.upper:+.1f}]"
            if diff
            else ""
        )
        print(f"| {cell[0]} | {cell[1]} | {_ci(d)} | {_ci(t)} | {shown} |")
    print()
    print(
        "| backbone | strategy | chosen (on validation) | validation top-1 % | trials | search s |"
    )
    print("|---|---|---|---|---|---|")
    for cell in sorted(tuning):
        s = tuning[cell]
        print(
            f"| {cell[0]} | {cell[1]} | {_settings(s['chosen'])} | "
            f"{_pct(s['validation_accuracy'])} | {s['trials']} | {s['search_seconds']:.1f} |"
        )
    print()
    by_strategy: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
    for (backbone, strategy), d in default.items():
        if (backbone, strategy) in tuned:
            by_strategy[strategy].append((backbone, d.accuracy, tuned[backbone, strategy].accuracy))
    for strategy, cells in sorted(by_strategy.items()):
        if len(cells) < 2:
            continue
        tau = kendalltau([c[1] for c in cells], [c[2] for c in cells]).statistic
        print(
            f"- `{strategy}`: default ranks {_order(cells, 1)}; tuned ranks {_order(cells, 2)} "
            f"(Kendall tau {tau:.2f}; mean gain "
            f"{100 * statistics.fmean(c[2] - c[1] for c in cells):+.1f} points)"
        )


if __name__ == "__main__":
    main(*sys.argv[1:3])
