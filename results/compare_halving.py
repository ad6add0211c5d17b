"""The table of results/flowers12-halving.md from results/make_halving.sh's files.

For each search seed and backbone: the best validation accuracy the full sweep
found and the one successive halving found, and the training epochs each
charged to its search (every rung a trial reached, as the record's
`tuning.search_epochs` counts them). Compute is counted in epochs: every trial
trains on the same images, so epochs are proportional to the work.

    python results/compare_halving.py results/flowers12-halving
"""

from __future__ import annotations

import sys
from pathlib import Path

from tlbench.results import read

#: the issue's goal: within this many points of the full sweep's best ...
WITHIN_POINTS = 0.5
#: ... at no more than this share of its compute.
AT_MOST = 0.35


def searches(path: Path) -> dict[str, dict]:
    """Each backbone's search (the `tuning` part of its reported runs)."""
    return {
        r["config"]["backbone"]: r["tuning"]
        for r in read(path)
        if r.get("tuning") and r.get("status") == "ok"
    }


def main(folder: Path) -> None:
    print(
        "| search seed | backbone | best validation top-1, full sweep | best validation "
        "top-1, halving | halving - full (points) | epochs, full / halving | halving / full "
        "| trials pruned |"
    )
    print("|---|---|---|---|---|---|---|---|")
    met = cells = 0
    total_full = total_halving = 0
    gaps: list[float] = []
    for full_path in sorted(folder.glob("full-s*.jsonl")):
        seed = full_path.stem.removeprefix("full-s")
        full, halving = searches(full_path), searches(folder / f"halving-s{seed}.jsonl")
        for backbone in sorted(full):
            f, h = full[backbone], halving[backbone]
            gap = 100 * (h["validation_accuracy"] - f["validation_accuracy"])
            share = h["search_epochs"] / f["search_epochs"]
            cells += 1
            gaps.append(gap)
            met += gap >= -WITHIN_POINTS and share <= AT_MOST
            total_full += f["search_epochs"]
            total_halving += h["search_epochs"]
            print(
                f"| {seed} | {backbone} | {100 * f['validation_accuracy']:.1f}% | "
                f"{100 * h['validation_accuracy']:.1f}% | {gap:+.1f} | "
                f"{f['search_epochs']} / {h['search_epochs']} | {100 * share:.0f}% | "
                f"{h['pruned']} of {h['trials']} |"
            )
    print()
    print(
        f"{met} of {cells} searches within {WITHIN_POINTS} point of the full sweep's best at "
        f"<= {100 * AT_MOST:.0f}% of its epochs; halving charged "
        f"{100 * total_halving / total_full:.0f}% of the full sweeps' epochs in all, "
        f"{sum(gaps) / len(gaps):+.2f} points from the full sweep's best on average."
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
