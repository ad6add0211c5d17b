"""Two results files, cell by cell: did NEW get worse than BASE? (`tlbench compare`).

A cell is what one row of the report is (`tlbench.report.summarize`): a
dataset x backbone x strategy x configuration, seeds aggregated. Cells of the
two files are matched on their whole configuration without the seed; cells
left over are matched on what the question is (dataset, backbone, weights,
strategy, image size, budget) when exactly one of each side is left, and the
settings that differ are named (`changed`), so a rerun with another learning
rate or epoch count is still compared with what it replaces.

For each matched cell: the accuracy difference NEW - BASE with a 95% paired
interval, the cost ratio (the report's "train s", NEW / BASE) and a verdict.
The pairing, best first:

- per-image results (`accuracy.final_correct`) of the same evaluation images
  in both files, for the seeds both ran: a paired bootstrap over the images
  (one seed: `tlbench.stats.paired_bootstrap`, as the report's tie; several:
  the images resampled with all their seeds, the per-image mean over seeds
  compared);
- else two or more common seeds: the paired t interval of the per-seed
  differences (`tlbench.stats.paired_t`);
- else no paired comparison: the verdict is "cannot tell", saying why.

The verdict is "better" or "worse" when the interval excludes 0, else
"cannot tell". `Comparison.failing` holds the cells a CI gate fails on: worse
by more than `fail_if_worse` points, or ok in BASE and not ok in NEW. A
single seed's image-level interval says nothing of training noise between
seeds: run several seeds where that matters.

Pure numpy and scipy, no torch: it reads records only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlbench import report, tables
from tlbench.results import answer_by_key

if TYPE_CHECKING:  # numpy, which the intervals need, loads when a comparison is made
    from tlbench import stats

#: what `tlbench compare --fail-if-worse` defaults to: a drop of one point of top-1 that
#: the paired interval says is real. Smaller drops are reported, never failed on.
FAIL_IF_WORSE_POINTS = 1.0
FORMATS = ("table", "markdown", "json")
#: every verdict, in the order the table lists cells (what gates first).
VERDICTS = (
    "failed",
    "worse",
    "cannot tell",
    "better",
    "fixed",
    "not run",
    "only in base",
    "only in new",
)


@dataclass
class Cell:
    """One cell of the comparison: BASE's row against NEW's."""

    dataset: str
    backbone: str
    strategy: str
    #: what sets the cell apart from others of its backbone x strategy (the report's variant).
    variant: str = ""
    image_size: int | None = None
    budget: str | None = None
    base_accuracy: float | None = None
    new_accuracy: float | None = None
    #: NEW - BASE top-1 (fraction), paired; None when it cannot be paired.
    difference: stats.Interval | None = None
    #: "images" (paired bootstrap over per-image results), "seeds" (paired t), or "".
    paired_over: str = ""
    base_seconds: float | None = None
    new_seconds: float | None = None
    verdict: str = "cannot tell"
    #: the settings that differ, "lr 0.001 -> 0.5" (cells matched on their question).
    changed: str = ""
    #: why a cell could not be compared, or what went wrong in NEW.
    note: str = ""
    #: the seeds each side ran.
    base_seeds: list[int] = field(default_factory=list)
    new_seeds: list[int] = field(default_factory=list)

    @property
    def label(self) -> str:
        base = f"{self.backbone} / {self.strategy}"
        return f"{base} ({self.variant})" if self.variant else base

    @property
    def cost_ratio(self) -> float | None:
        """NEW's training seconds over BASE's (2.0: twice as slow)."""
        if self.base_seconds and self.new_seconds is not None:
            return self.new_seconds / self.base_seconds
        return None

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["difference"] = self.difference.to_dict() if self.difference else None
        out["cost_ratio"] = self.cost_ratio
        return out


@dataclass
class Comparison:
    """Every cell of BASE and NEW, and the threshold a gate fails on."""

    cells: list[Cell]
    #: points of top-1: a cell worse by more than this fails the gate.
    fail_if_worse: float = FAIL_IF_WORSE_POINTS
    base: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)

    @property
    def failing(self) -> list[Cell]:
        """The cells a CI gate fails on: surely worse by more than `fail_if_worse` points,
        or finished in BASE and failed (or did not finish) in NEW."""
        return [c for c in self.cells if _fails(c, self.fail_if_worse)]

    @property
    def ok(self) -> bool:
        return not self.failing

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "new": self.new,
            "fail_if_worse_points": self.fail_if_worse,
            "failing": [c.label for c in self.failing],
            "cells": [c.to_dict() for c in self.cells],
        }


def _fails(cell: Cell, points: float) -> bool:
    if cell.verdict == "failed":
        return True
    return (
        cell.verdict == "worse"
        and cell.difference is not None
        and -100 * cell.difference.estimate > points
    )


# --------------------------------------------------------------------------- reading

#: the key of a pytest-benchmark `extra_info` under which `tlbench.testing.benchmark_grid`
#: keeps the grid's records, so a saved benchmark session can be compared like a results file.
BENCHMARK_RECORDS = "tlbench_records"


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a results file (.jsonl), or of a pytest-benchmark JSON file (saved with
    `--benchmark-autosave` or `--benchmark-json`) whose benchmarks ran
    `tlbench.testing.benchmark_grid`. A missing file raises FileNotFoundError; a benchmark
    file without tlbench records, ValueError."""
    from tlbench.results import read

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"results file {os.fspath(path)} does not exist")
    if path.suffix.lower() != ".json":
        return read([path])
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a pytest-benchmark JSON file ({exc})") from None
    benchmarks = saved.get("benchmarks") if isinstance(saved, dict) else None
    if not isinstance(benchmarks, list):
        raise ValueError(f'{path}: not a pytest-benchmark JSON file (no "benchmarks" list)')
    records = [
        r
        for b in benchmarks
        if isinstance(b, dict)
        for r in (b.get("extra_info") or {}).get(BENCHMARK_RECORDS) or []
    ]
    if not records:
        raise ValueError(
            f"{path}: none of its {len(benchmarks)} benchmark(s) holds tlbench records "
            "(they are kept by tlbench.testing.benchmark_grid)"
        )
    return records


# --------------------------------------------------------------------------- matching


@dataclass
class _Side:
    """One file's rows, each with the records it aggregates."""

    row: report.Row
    records: list[dict[str, Any]]

    @property
    def config(self) -> dict[str, Any]:
        return report._config_without_seed(self.records[0])

    @property
    def question(self) -> str:
        """What the cell asks, whatever its settings: data, backbone, weights, strategy,
        image size and budget."""
        c = self.records[0]["config"]
        names = (self.row.dataset, c.get("backbone"), c.get("weights"), c.get("strategy"))
        return json.dumps([*names, c.get("image_size"), c.get("budget")], default=str)

    @property
    def exact(self) -> str:
        return json.dumps([self.config, self.row.data], sort_keys=True, default=str)


def _sides(records: Iterable[dict[str, Any]]) -> list[_Side]:
    """The report's rows of the newest data, each with its answering records."""
    records = list(records)
    by_key = answer_by_key(records)
    rows = report.summarize(records)
    return [
        _Side(r, [by_key[k] for k in r.run_keys if k in by_key])
        for r in rows
        if not r.older_data and r.run_keys
    ]


def _pairs(base: list[_Side], new: list[_Side]) -> list[tuple[_Side | None, _Side | None]]:
    """BASE and NEW sides matched: whole configuration first, then the question alone
    when exactly one of each side is left; the rest unmatched."""
    pairs: list[tuple[_Side | None, _Side | None]] = []
    new_exact = {s.exact: s for s in new}
    left_base = []
    for b in base:
        n = new_exact.pop(b.exact, None)
        if n is None:
            left_base.append(b)
        else:
            pairs.append((b, n))
    left_new = [s for s in new if s.exact in new_exact]
    by_question: dict[str, tuple[list[_Side], list[_Side]]] = {}
    for side, where in ((left_base, 0), (left_new, 1)):
        for s in side:
            by_question.setdefault(s.question, ([], []))[where].append(s)
    for bs, ns in by_question.values():
        if len(bs) == 1 and len(ns) == 1:
            pairs.append((bs[0], ns[0]))
        else:
            pairs += [(b, None) for b in bs] + [(None, n) for n in ns]
    return pairs


def _changed(base: dict[str, Any], new: dict[str, Any]) -> str:
    """The settings that differ, "lr 0.001 -> 0.5, epochs 2 -> 4"."""
    a, b = report._flatten(base), report._flatten(new)
    names = [
        n
        for n in dict.fromkeys([*a, *b])
        if report._same_value(a.get(n)) != report._same_value(b.get(n))
    ]
    return ", ".join(f"{n} {a.get(n)} -> {b.get(n)}" for n in names)


# --------------------------------------------------------------------------- pairing


def _per_image(side: _Side) -> tuple[Any, dict[int, Any]] | None:
    return report._per_image([r for r in side.records if r.get("status") == "ok"])


def paired_difference(base: _Side, new: _Side) -> tuple[stats.Interval | None, str, str]:
    """(NEW - BASE interval, "images" / "seeds" / "", why not paired)."""
    from tlbench import stats

    b_img, n_img = _per_image(base), _per_image(new)
    same_data = not (base.row.data and new.row.data and base.row.data != new.row.data)
    if b_img and n_img and same_data and b_img[0] == n_img[0]:
        common = sorted(set(b_img[1]) & set(n_img[1]))
        if not common and len(b_img[1]) == 1 and len(n_img[1]) == 1:
            a, b = next(iter(n_img[1].values())), next(iter(b_img[1].values()))
            return stats.paired_bootstrap(a, b), "images", ""
        if common:
            return (
                over_images([n_img[1][s] for s in common], [b_img[1][s] for s in common]),
                "images",
                "",
            )
    if not same_data:
        return None, "", f"different data ({base.row.data} vs {new.row.data})"
    diff = stats.paired_t(new.row.seed_accuracy, base.row.seed_accuracy)
    if diff is not None:
        return diff, "seeds", ""
    return None, "", "one run each and no per-image results of the same images to pair"


def over_images(new: list[Any], base: list[Any], confidence: float | None = None) -> stats.Interval:
    """Paired bootstrap of NEW - BASE accuracy over the images, each image with all its seeds.

    `new[i]`, `base[i]`: seed i's 0/1 results on the same images. One seed is
    `tlbench.stats.paired_bootstrap`; with several, an image's difference is
    the mean over the seeds, and images are resampled (a resample of n images
    is a multinomial draw over the distinct per-image differences, as there).
    """
    import numpy as np

    from tlbench import stats

    confidence = stats.CONFIDENCE if confidence is None else confidence
    if len(new) == 1:
        return stats.paired_bootstrap(new[0], base[0], confidence)
    d = (np.asarray(new, dtype=np.float64) - np.asarray(base, dtype=np.float64)).mean(axis=0)
    values, counts = np.unique(d, return_counts=True)
    n = d.size
    rng = np.random.default_rng(0)
    draws = rng.multinomial(n, counts / n, size=stats.BOOTSTRAP_RESAMPLES)
    resampled = draws @ values / n
    lower, upper = np.quantile(resampled, [(1 - confidence) / 2, (1 + confidence) / 2])
    return stats.Interval(
        float(d.mean()), float(lower), float(upper), n, "paired-bootstrap", confidence
    )


# --------------------------------------------------------------------------- cells


def _cell(base: _Side | None, new: _Side | None) -> Cell:
    either = (base or new).row  # type: ignore[union-attr]
    cell = Cell(
        dataset=either.dataset_name or either.dataset,
        backbone=either.backbone,
        strategy=either.strategy,
        variant=(new or base).row.variant,  # type: ignore[union-attr]
        image_size=either.image_size,
        budget=either.budget,
    )
    if base is not None:
        cell.base_accuracy, cell.base_seconds = base.row.accuracy, base.row.train_seconds
        cell.base_seeds = list(base.row.seeds)
    if new is not None:
        cell.new_accuracy, cell.new_seconds = new.row.accuracy, new.row.train_seconds
        cell.new_seeds = list(new.row.seeds)
    if base is None or new is None:
        cell.verdict = "only in new" if base is None else "only in base"
        only = either
        if only.accuracy is None:
            cell.note = f"{only.status}: {only.reason}" if only.reason else only.status
        return cell
    cell.changed = _changed(base.config, new.config)
    base_ok, new_ok = base.row.accuracy is not None, new.row.accuracy is not None
    if not (base_ok and new_ok):
        cell.verdict = "failed" if base_ok else "fixed" if new_ok else "not run"
        row = new.row if not new_ok else base.row
        cell.note = f"{row.status}: {row.reason}" if row.reason else row.status
        return cell
    cell.difference, cell.paired_over, cell.note = paired_difference(base, new)
    if cell.difference is not None and not cell.difference.contains(0.0):
        cell.verdict = "better" if cell.difference.estimate > 0 else "worse"
    return cell


def compare(
    base: Iterable[dict[str, Any]],
    new: Iterable[dict[str, Any]],
    *,
    fail_if_worse: float = FAIL_IF_WORSE_POINTS,
) -> Comparison:
    """Every cell of the records `base` against those of `new` (see the module docstring).

    `fail_if_worse`: points of top-1 beyond which a worse cell fails the gate.
    """
    if not fail_if_worse >= 0:
        raise ValueError(f"fail_if_worse must be 0 or more points, not {fail_if_worse!r}")
    cells = [_cell(b, n) for b, n in _pairs(_sides(base), _sides(new))]
    order = {v: i for i, v in enumerate(VERDICTS)}
    cells.sort(key=lambda c: (c.dataset, order[c.verdict], c.label))
    return Comparison(cells, fail_if_worse)


# --------------------------------------------------------------------------- text


HEADER = (
    "backbone / strategy",
    "base %",
    "new %",
    "new - base [95% CI]",
    "paired",
    "cost x",
    "verdict",
)


def _points(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def cells_text(cell: Cell) -> list[str]:
    """A cell's columns as `HEADER` names them."""
    d = cell.difference
    diff = (
        "" if d is None else f"{100 * d.estimate:+.1f} [{100 * d.lower:+.1f}, {100 * d.upper:+.1f}]"
    )
    ratio = cell.cost_ratio
    verdict = cell.verdict.upper() if cell.verdict in ("worse", "failed") else cell.verdict
    return [
        cell.label,
        _points(cell.base_accuracy),
        _points(cell.new_accuracy),
        diff,
        cell.paired_over,
        "" if ratio is None else f"{ratio:.2f}",
        verdict,
    ]


def render(comparison: Comparison, fmt: str = "table") -> str:
    """The comparison as text: a plain table, markdown or json."""
    if fmt == "json":
        return json.dumps(comparison.to_dict(), indent=2) + "\n"
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    from tabulate import tabulate

    from tlbench.textblocks import section

    parts = []
    sections: dict[str, list[Cell]] = {}
    for cell in comparison.cells:
        sections.setdefault(cell.dataset, []).append(cell)
    for dataset, cells in sections.items():
        table = tabulate(
            [[tables._safe(t, fmt) for t in cells_text(c)] for c in cells],
            headers=HEADER,
            tablefmt="pipe" if fmt == "markdown" else "simple",
            disable_numparse=True,
            colalign=["left", "right", "right", "right", "left", "right", "left"],
        )
        notes = [
            f"- {c.label}: "
            + "; ".join(x for x in (c.changed and f"changed {c.changed}", c.note) if x)
            for c in cells
            if c.changed or c.note
        ]
        parts.append(
            section(
                tables._safe(f"dataset: {dataset}", fmt),
                "\n".join([table, "", *notes]).rstrip(),
                fmt,
            )
        )
    parts.append(summary(comparison))
    return "\n\n".join(parts) + "\n"


def summary(comparison: Comparison) -> str:
    """The closing lines: what the columns mean and what the gate says."""
    legend = (
        "new - base: top-1 points, 95% paired interval (images: paired bootstrap over the same "
        "test images; seeds: paired t over common seeds). cost x: new train s / base train s. "
        "verdict: better or worse when the interval excludes 0."
    )
    failing = comparison.failing
    if failing:
        gate = (
            f"FAIL: {len(failing)} cell(s) worse by more than {comparison.fail_if_worse:g} "
            f"point(s) or failed: {', '.join(c.label for c in failing)}"
        )
    else:
        gate = f"ok: no cell worse by more than {comparison.fail_if_worse:g} point(s)"
    import textwrap

    return f"{textwrap.fill(legend, 100)}\n{gate}"
