"""Ranking backbones by a cheap stage-1 value, and checking a ranking against the truth.

`rank` orders backbones by the probe's accuracy (on validation when given),
a transferability score (LogME, k-NN accuracy, H-score) or parameter count:
what `tlbench select` ranks by. `check` compares every such ranking with the
fine-tuned accuracies where a results file holds them all (weighted Kendall
tau and the regret of picking by it); `tlbench report` prints these checks
(`report_checks`, `render_checks`). Below the report and the selection: it
imports neither.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: what stage 1 can rank by: the probe's top-1, a transferability score, or size alone.
RANK_BY = ("probe", "logme", "knn_accuracy", "h_score", "params")


#: (dataset, fingerprint, budget, image size, backbone, strategy) -> validation top-1:
#: what choices are made on (`validation_accuracies`), never the test split.
Validation = dict[tuple[Any, ...], float]


def _cell(record: dict[str, Any]) -> tuple[Any, ...]:
    """A record's cell: its group, backbone and strategy (not its seed, not its settings)."""
    c = record.get("config") or {}
    return (*_group(record), c.get("backbone"), c.get("strategy"))


def _score(
    record: dict[str, Any], rank_by: str, validation: Validation | None = None
) -> float | None:
    if rank_by == "probe":
        if validation is not None:
            return validation.get(_cell(record))
        return (record.get("accuracy") or {}).get("final")
    if rank_by == "params":
        return (record.get("cost") or {}).get("total_params")
    value = (record.get("scores") or {}).get(rank_by)
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def _group(record: dict[str, Any]) -> tuple[Any, ...]:
    """What must match for two records to be compared: the data, its budget, the image size."""
    c = record.get("config") or {}
    return (c.get("dataset"), c.get("dataset_fingerprint"), c.get("budget"), c.get("image_size"))


def _mean_by_backbone(records: Iterable[dict[str, Any]], value) -> dict[str, float]:
    values: dict[str, list[float]] = {}
    for r in records:
        v = value(r)
        if v is not None:
            values.setdefault(r["config"]["backbone"], []).append(float(v))
    return {b: statistics.fmean(vs) for b, vs in values.items()}


def rank(
    probes: list[dict[str, Any]], rank_by: str, validation: Validation | None = None
) -> list[tuple[str, float]]:
    """Backbones by their stage-1 value, best first (mean over seeds); ties by name.

    With `validation`, "probe" ranks by the probes' validation accuracy (what
    `tlbench select` does); without, by their final test accuracy (what the
    report's ranking checks compare against).
    """
    if rank_by not in RANK_BY:
        raise ValueError(f"--rank-by must be one of {', '.join(RANK_BY)}, not {rank_by!r}")
    means = _mean_by_backbone(probes, lambda r: _score(r, rank_by, validation))
    return sorted(means.items(), key=lambda item: (-item[1], item[0]))


@dataclass
class RankingCheck:
    """How well one ranking predicted the fine-tuned accuracies of one dataset."""

    dataset: str
    rank_by: str
    tau: float
    regret: float
    backbones: int
    #: the strategy whose accuracies are the truth ("finetune" or "lp-ft").
    against: str = "finetune"
    budget: str | None = None
    image_size: int | None = None


def check(records: list[dict[str, Any]], finalist_strategy: str = "finetune") -> list[RankingCheck]:
    """Weighted tau and regret of every ranking, where every probed backbone was also fine-tuned."""
    return _checks(_ok_by_group(records), finalist_strategy)


#: (dataset, fingerprint, budget, image size) -> strategy -> the ok records of one check.
Groups = dict[tuple[Any, ...], dict[Any, list[dict[str, Any]]]]


def _ok_by_group(records: Iterable[dict[str, Any]]) -> Groups:
    """The ok records by `_group` and strategy: what the checks against each fine-tuned
    strategy read, sorted once."""
    groups: Groups = {}
    for r in records:
        if r.get("status") == "ok":
            by_strategy = groups.setdefault(_group(r), {})
            by_strategy.setdefault(r["config"]["strategy"], []).append(r)
    return groups


def _checks(groups: Groups, finalist_strategy: str) -> list[RankingCheck]:
    from tlbench import stats

    out = []
    for key, group in groups.items():
        finals = group.get(finalist_strategy)
        if not finals:
            continue
        tuned = _mean_by_backbone(finals, lambda r: r["accuracy"]["final"])
        probes = group.get("linear", [])
        names = sorted(b for b in {r["config"]["backbone"] for r in probes} if b in tuned)
        if len(names) < 2:
            continue
        probes = [r for r in probes if r["config"]["backbone"] in tuned]
        accuracy = [tuned[b] for b in names]
        for rank_by in RANK_BY:
            values = _mean_by_backbone(probes, lambda r, k=rank_by: _score(r, k))
            if set(values) != set(names):
                continue
            score = [values[b] for b in names]
            out.append(
                RankingCheck(
                    dataset=key[0],
                    rank_by=rank_by,
                    tau=stats.weighted_tau(score, accuracy),
                    regret=stats.regret(score, accuracy),
                    backbones=len(names),
                    against=finalist_strategy,
                    budget=key[2],
                    image_size=key[3],
                )
            )
    return out


#: the fine-tuned strategies a ranking is checked against, when the results hold them.
TUNED_STRATEGIES = ("finetune", "lp-ft")
#: the fewest backbones a check is shown for: with two, a tau is +1 or -1 and says little.
MIN_BACKBONES = 3
#: how the rankings are named in a table.
RANK_NAMES = {
    "probe": "linear probe accuracy",
    "logme": "LogME",
    "knn_accuracy": "k-NN accuracy",
    "h_score": "H-score",
    "params": "parameter count (baseline)",
}


def report_checks(records: Iterable[dict[str, Any]]) -> list[RankingCheck]:
    """The checks `tlbench report` shows: each ranking against each fine-tuned strategy
    present, for every dataset (and budget, and image size) with a probe and a fine-tune
    of at least `MIN_BACKBONES` backbones. Each run key counts once (its answer:
    `results.answer_by_key`); records the report cannot read are left out."""
    from tlbench.record import problems
    from tlbench.results import answer_by_key

    readable = [r for r in records if not problems(r)]
    groups = _ok_by_group(answer_by_key(readable).values())  # once for every strategy
    return [
        c
        for strategy in TUNED_STRATEGIES
        for c in _checks(groups, strategy)
        if c.backbones >= MIN_BACKBONES
    ]


def _tau_text(tau: float) -> str:
    return "n/a" if math.isnan(tau) else f"{tau:+.2f}"


def render_checks(checks: list[RankingCheck], fmt: str) -> str:
    """The checks as text in a report format ("table", "markdown", "html", "latex"); one
    table per dataset and fine-tuned strategy, then a line saying how to read them.
    (csv and json carry `as_records(checks)` instead; see `tlbench.tables.render`.)"""
    if not checks:
        return ""
    from tabulate import tabulate

    from tlbench.budget import describe
    from tlbench.identity import short_names
    from tlbench.textblocks import paragraph, section

    names = short_names(c.dataset for c in checks)
    tablefmt = {"markdown": "pipe", "html": "html", "latex": "latex_booktabs"}.get(fmt, "simple")
    sizes: dict[str, set[Any]] = {}
    for c in checks:
        sizes.setdefault(c.dataset, set()).add(c.image_size)
    sections: dict[str, list[RankingCheck]] = {}
    for c in checks:
        budget = f", budget {describe(c.budget)}" if c.budget else ""
        # The image size only tells apart checks of one dataset run at several sizes.
        size = f", {c.image_size}px" if len(sizes[c.dataset]) > 1 else ""
        title = (
            f"ranking check: {names[c.dataset]}{budget}{size}: "
            f"{c.backbones} backbones, against {c.against}"
        )
        sections.setdefault(title, []).append(c)
    parts = []
    for title, group in sections.items():
        table = tabulate(
            [
                [RANK_NAMES.get(c.rank_by, c.rank_by), _tau_text(c.tau), f"{100 * c.regret:.1f}"]
                for c in group
            ],
            headers=["ranked by", "weighted tau", "regret (points)"],
            tablefmt=tablefmt,
            disable_numparse=True,
            colalign=["left", "right", "right"],
        )
        parts.append(section(title, table, fmt))
    legend = (
        "weighted tau: weighted Kendall tau (hyperbolic weights, scipy.stats.weightedtau) between "
        "the ranking and the fine-tuned accuracies (mean over seeds); +1 ranks them exactly. "
        "regret: best fine-tuned top-1 minus that of the backbone the ranking puts first."
    )
    parts.append(paragraph(legend, fmt))
    return "\n\n".join(parts) + "\n"


def as_records(checks: list[RankingCheck]) -> list[dict[str, Any]]:
    """The checks as plain JSON-ready dicts (a NaN tau is None: JSON has no NaN)."""
    out = []
    for c in checks:
        d = dataclasses.asdict(c)
        d["tau"] = None if math.isnan(c.tau) else c.tau
        out.append(d)
    return out
