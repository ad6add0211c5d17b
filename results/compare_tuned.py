"""Default against tuned: markdown tables from the results files of the same grid.

    python results/compare_tuned.py DEFAULT.jsonl TUNED.jsonl [MORE_TUNED.jsonl ...]

For each backbone x strategy: top-1 on the test split at the strategy's
default settings and at the settings `--tune` chose on the validation split
(mean over seeds with the 95% t-interval), their paired difference over the
seeds both ran (where every seed gave the same number, a deterministic fit,
over the test images of one seed: a paired bootstrap), the chosen settings
with their validation accuracy, and what the search cost (the seconds of all
its trials). Then, per strategy, how much
the ranking of backbones moved between default and tuned (Kendall tau).
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict

from scipy.stats import kendalltau

from tlbench import stats
from tlbench.record import decode_correct
from tlbench.report import summarize
from tlbench.results import read


def _records(paths: list[str]) -> list[dict]:
    return [r for path in paths for r in read(path)]


def _rows(records: list[dict]) -> dict[tuple[str, str], object]:
    return {(r.backbone, r.strategy): r for r in summarize(records) if r.n}


def _tuning(records: list[dict]) -> dict[tuple[str, str], dict]:
    out = {}
    for r in records:
        if r.get("tuning") and r.get("status") == "ok":
            out[r["config"]["backbone"], r["config"]["strategy"]] = r["tuning"]
    return out


def _per_image(records: list[dict], cell: tuple[str, str]):
    """Which test images seed 0 of a reported run of `cell` got right (None: not recorded)."""
    for r in records:
        c = r["config"]
        reported = r.get("status") == "ok" and not c.get("holdout")
        if reported and (c["backbone"], c["strategy"]) == cell and c["seed"] == 0:
            return decode_correct(r["accuracy"].get("final_correct"))
    return None


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


def main(default_path: str, *tuned_paths: str) -> None:
    tuned_records = _records(list(tuned_paths))
    default, tuned, tuning = (
        _rows(_records([default_path])),
        _rows(tuned_records),
        _tuning(tuned_records),
    )
    print("| backbone | strategy | default top-1 % | tuned top-1 % | tuned - default (paired) |")
    print("|---|---|---|---|---|")
    default_records = _records([default_path])
    for cell in sorted(default):
        d, t = default[cell], tuned.get(cell)
        if t is None:
            continue
        diff = stats.paired_t(t.seed_accuracy, d.seed_accuracy)
        over = ""
        if diff and diff.lower == diff.upper:
            # The seeds agree exactly (a deterministic fit on fixed features): an interval
            # over seeds says nothing, so pair the test images of one seed instead.
            a, b = _per_image(tuned_records, cell), _per_image(default_records, cell)
            if a is not None and b is not None:
                diff, over = stats.paired_bootstrap(a, b), " (images)"
        shown = (
            f"{100 * diff.estimate:+.1f} [{100 * diff.lower:+.1f}, {100 * diff.upper:+.1f}]{over}"
            if diff
            else ""
        )
        print(f"| {cell[0]} | {cell[1]} | {_ci(d)} | {_ci(t)} | {shown} |")
    print()
    print(
        "| backbone | strategy | chosen (on validation) | its own settings kept | "
        "validation top-1 % | trials (pruned) | search epochs | search s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for cell in sorted(tuning):
        s = tuning[cell]
        own = s.get("own_settings_trial")
        kept = "not a trial" if own is None else "yes" if own == s["chosen_trial"] else "no"
        print(
            f"| {cell[0]} | {cell[1]} | {_settings(s['chosen'])} | {kept} | "
            f"{_pct(s['validation_accuracy'])} | {s['trials']} ({s.get('pruned', 0)}) | "
            f"{s.get('search_epochs', '')} | {s['search_seconds']:.1f} |"
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
    main(*sys.argv[1:])
