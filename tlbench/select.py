"""`tlbench select` and `tlbench.select()`: pick a backbone in two stages, and say what
the shortcut cost and saved.

Stage 1 scores every backbone cheaply: its features once, a `linear` probe,
and the transferability scores every feature run records (LogME, k-NN
accuracy, H-score). Stage 2 fine-tunes (or LP-FTs) only the `--top-k`
backbones ranked by `--rank-by` (default: the probe's accuracy). Both stages
append ordinary records to the results file, so resume and `tlbench report`
work on them as on any grid.

Under a latency budget (`--max-latency-ms`), a backbone whose probe measured
a batch-1 inference latency above it (or none) is neither ranked nor
trained in stage 2: the probe and the fine-tune are the same network, so the
probe's measurement (`tlbench.inference`) is the finalist's too.

The summary names the pick with its confidence interval, the compute the
two stages spent (training cost: feature extraction plus training, the same
figure the report's "train s" shows), and what the full grid would have
cost: measured where the results file holds the fine-tune of every backbone,
else estimated from each backbone's FLOPs per image relative to a measured
finalist (FLOPs and images are the same for every other factor of the run).

When the results file holds the full grid (every backbone fine-tuned),
`check` compares each ranking (each score, and parameter count alone as the
naive baseline) against the fine-tuned accuracies: the weighted Kendall tau
and the regret of picking by it (best accuracy minus the picked one's).
`tlbench report` shows these checks (`report_checks`, `render_checks`)
wherever a dataset has a probe and a fine-tune (or LP-FT) of at least
`MIN_BACKBONES` backbones.

This module is callable: `tlbench.select(...)` runs a selection from Python
(`tlbench.python_api.select`), and its other names (`rank`, `summarize`,
`check`) stay where they were.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import statistics
import sys
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tlbench.ranking import (  # noqa: F401 (RankingCheck, check, render_checks: re-exported)
    RANK_BY,
    RankingCheck,
    Validation,
    _group,
    _mean_by_backbone,
    as_records,
    check,
    rank,
    render_checks,
    report_checks,
)

if TYPE_CHECKING:  # numpy (stats), the report and the grid load when a selection is made
    from tlbench import stats
    from tlbench.grid import Outcome
    from tlbench.python_api import Results


def latency_ms(record: dict[str, Any]) -> float | None:
    """A run's batch-1 inference latency (p50, ms), or None when it measured none."""
    value = (record.get("inference") or {}).get("latency_ms_p50")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def within_latency(
    records: Iterable[dict[str, Any]], max_latency_ms: float | None
) -> tuple[list[dict[str, Any]], dict[str, float | None]]:
    """(the records within the budget, backbone -> latency of those over it or unmeasured).

    None: no budget, every record is within it. A backbone's latency is the
    mean over its records' measurements.
    """
    records = list(records)
    if max_latency_ms is None:
        return records, {}
    measured = _mean_by_backbone(records, latency_ms)
    over: dict[str, float | None] = {}
    for r in records:
        backbone = r["config"]["backbone"]
        value = measured.get(backbone)
        if value is None or value > max_latency_ms:
            over[backbone] = value
    return [r for r in records if r["config"]["backbone"] not in over], over


def finalists(
    probes: Iterable[dict[str, Any]],
    rank_by: str,
    top_k: int,
    validation: Validation | None = None,
    max_latency_ms: float | None = None,
) -> list[str]:
    """Stage 1's choice: the `top_k` backbones of each dataset (and budget, and image
    size) by `rank_by`, each named once, in the order they are found; under
    `max_latency_ms`, only backbones measured within it."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    ok = [r for r in probes if r["status"] == "ok"]
    for r in within_latency(ok, max_latency_ms)[0]:
        groups.setdefault(_group(r), []).append(r)
    chosen: list[str] = []
    for group in groups.values():
        for name, _ in rank(group, rank_by, validation)[:top_k]:
            if name not in chosen:
                chosen.append(name)
    return chosen


@dataclass
class Selection:
    """What `tlbench select` found for one dataset (and budget, and image size)."""

    dataset: str
    ranking: list[tuple[str, float]]
    finalists: list[str]
    pick: str | None
    interval: stats.Interval | None
    spent_seconds: float
    full_grid_seconds: float | None
    #: "measured" (every backbone's fine-tune is in the results file) or "estimated".
    full_grid_basis: str = "estimated"
    rank_by: str = "probe"
    #: the finalists' test top-1 by backbone (mean over seeds), as the table shows it.
    accuracy: dict[str, float] = field(default_factory=dict)
    #: the strategy of the pick: the finalist's, or "linear" when the probe beat it.
    pick_strategy: str | None = None
    #: the pick's test top-1 (mean over seeds): the number it is reported with.
    pick_accuracy: float | None = None
    #: validation top-1 of every candidate, "backbone / strategy" -> accuracy.
    validation: dict[str, float] = field(default_factory=dict)
    #: why the pick is the pick, in a sentence.
    why: str = ""
    #: `--max-latency-ms`: the budget, and the backbones left out, with their latency
    #: (None: not measured).
    max_latency_ms: float | None = None
    over_latency: dict[str, float | None] = field(default_factory=dict)


def _interval(records: list[dict[str, Any]]) -> stats.Interval | None:
    from tlbench import stats

    accuracies = [r["accuracy"]["final"] for r in records]
    correct = None
    if len(records) == 1:
        # One seed: bootstrap over the evaluation images. Only the count of correct
        # images matters to the bootstrap of one accuracy, so this vector is exact.
        n = int((records[0].get("data") or {}).get("eval_images") or 0)
        if n:
            hits = round(accuracies[0] * n)
            correct = [1] * hits + [0] * (n - hits)
    return stats.accuracy_interval(accuracies, correct)


def summarize(
    records: list[dict[str, Any]],
    *,
    backbones: list[str],
    finalist_strategy: str,
    rank_by: str,
    top_k: int,
    validation: Validation | None = None,
    max_latency_ms: float | None = None,
) -> list[Selection]:
    """The selection per dataset from the answers in the results file (see the module docstring).

    `validation` (`validation_accuracies`) is what stage 1 ranks the probes
    by and what the pick is made on; without it (records alone) both read the
    test accuracies, as the report's ranking checks do.
    """
    from tlbench.report import train_cost_seconds

    ok = [r for r in records if r.get("status") == "ok" and r["config"]["backbone"] in backbones]
    extraction: dict[tuple, float] = {}
    out = []
    groups: dict[tuple, list[dict[str, Any]]] = {}
    # Runs on the validation split (tuning trials, select's own) chose; they are not
    # what a pick is reported with, but their training is part of what it cost.
    held: dict[tuple, float] = {}
    for r in ok:
        if r["config"].get("holdout"):
            held[_group(r)] = held.get(_group(r), 0.0) + train_cost_seconds(r, extraction)
        else:
            groups.setdefault(_group(r), []).append(r)
    for key, group in groups.items():
        probes = [r for r in group if r["config"]["strategy"] == "linear"]
        finals = [r for r in group if r["config"]["strategy"] == finalist_strategy]
        if not probes:
            continue
        within, over = within_latency(probes, max_latency_ms)
        ranking = rank(within, rank_by, validation) if within else []
        finalists = [b for b, _ in ranking[:top_k]]
        tuned = _mean_by_backbone(finals, lambda r: r["accuracy"]["final"])
        choice, seen, why = _pick(key, finalists, finalist_strategy, validation, tuned)
        chosen = [
            r
            for r in group
            if choice and (r["config"]["backbone"], r["config"]["strategy"]) == choice
        ]
        picked = choice[0] if choice else None
        interval = _interval(chosen) if chosen else None
        trained = probes + [r for r in finals if r["config"]["backbone"] in finalists]
        spent = sum(train_cost_seconds(r, extraction) for r in trained) + held.get(key, 0.0)
        full, basis = _full_grid_cost(probes, finals, backbones)
        out.append(
            Selection(
                dataset=key[0],
                ranking=ranking,
                finalists=finalists,
                pick=picked,
                interval=interval,
                spent_seconds=spent,
                full_grid_seconds=full,
                full_grid_basis=basis,
                rank_by=rank_by,
                accuracy=tuned,
                pick_strategy=choice[1] if choice else None,
                pick_accuracy=(
                    statistics.fmean(r["accuracy"]["final"] for r in chosen) if chosen else None
                ),
                validation=seen,
                why=why,
                max_latency_ms=max_latency_ms,
                over_latency=over,
            )
        )
    return out


def _pick(
    group: tuple[Any, ...],
    finalists: list[str],
    finalist_strategy: str,
    validation: Validation | None,
    tested: dict[str, float],
) -> tuple[tuple[str, str] | None, dict[str, float], str]:
    """The best of everything stage 2 could pick from, probe or finalist, by validation.

    A finalist that has no test run (it failed) cannot be picked; on equal
    validation accuracy the probe, which is cheaper, is kept. Without
    `validation` (records alone), the best finalist by test accuracy.
    """
    if validation is None:
        picked = max((b for b in finalists if b in tested), key=lambda b: tested[b], default=None)
        choice = (picked, finalist_strategy) if picked else None
        return choice, {}, "picked by test accuracy: no validation runs were given"
    seen: dict[str, float] = {}
    eligible: list[tuple[float, bool, str, str]] = []
    for backbone in finalists:
        for strategy in dict.fromkeys(("linear", finalist_strategy)):
            accuracy = validation.get((*group, backbone, strategy))
            if accuracy is None:
                continue
            seen[f"{backbone} / {strategy}"] = accuracy
            if strategy == "linear" or backbone in tested:  # a failed finalist has no test run
                eligible.append((accuracy, strategy == "linear", backbone, strategy))
    if not eligible:
        return None, seen, "the finalists have no validation accuracy: nothing could be picked"
    # The best on validation; on equal accuracy the probe, which is cheaper.
    accuracy, probe, backbone, strategy = max(eligible)
    rivals = [e[0] for e in eligible if e[1] != probe]
    winner, loser = ("probe", finalist_strategy) if probe else (finalist_strategy, "probe")
    if rivals:
        why = f"the {winner} beat the {loser} on validation "
        why += f"({100 * accuracy:.1f}% against {100 * max(rivals):.1f}%)"
    else:
        why = f"the {winner} alone has a validation run ({100 * accuracy:.1f}%)"
    keep = "keep `linear`, the cheaper" if probe else f"keep `{finalist_strategy}`"
    return (backbone, strategy), seen, f"{why}: {keep}"


def _full_grid_cost(
    probes: list[dict[str, Any]], finals: list[dict[str, Any]], backbones: list[str]
) -> tuple[float | None, str]:
    """Training seconds of probing and fine-tuning every backbone: measured, or FLOP-scaled."""
    from tlbench.report import train_cost_seconds

    probe_cost = sum(train_cost_seconds(r) for r in probes)
    tuned = _mean_by_backbone(finals, train_cost_seconds)
    seeds = max(1, len({r["config"]["seed"] for r in probes}))
    if all(b in tuned for b in backbones):
        return probe_cost + seeds * sum(tuned[b] for b in backbones), "measured"
    flops = _mean_by_backbone(
        probes, lambda r: (r.get("cost") or {}).get("forward_flops_per_image")
    )
    per_flop = [tuned[b] / flops[b] for b in tuned if flops.get(b)]
    if not per_flop or not all(flops.get(b) for b in backbones):
        return None, "unknown"
    rate = statistics.fmean(per_flop)
    estimate = sum(tuned[b] if b in tuned else rate * flops[b] for b in backbones)
    return probe_cost + seeds * estimate, "estimated"


def as_dict(selection: Selection) -> dict[str, Any]:
    out = dataclasses.asdict(selection)
    out["interval"] = selection.interval.to_dict() if selection.interval else None
    return out


# --------------------------------------------------------------------------- running the two stages


@dataclass
class Stages:
    """The two stages of a selection as run, and what they found."""

    probes: Outcome
    finals: Outcome
    selections: list[Selection]
    checks: list[RankingCheck] = field(default_factory=list)


def two_stages(
    grid: Any,
    *,
    rank_by: str = "probe",
    top_k: int = 1,
    finalist: str = "finetune",
    during: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    max_latency_ms: float | None = None,
) -> Stages:
    """Run a selection on `grid` (a `tlbench.grid.Grid`): probe every backbone (`linear`),
    then train the `top_k` by `rank_by` with `finalist` (among those within
    `max_latency_ms`). The summary reads every answer the results file holds (a full
    grid run before is measured, not estimated)."""
    from tlbench.errors import TlbenchError
    from tlbench.results import answer_by_key

    probes = grid.run(dataclasses.replace(grid.config, strategies=["linear"]), during=during)
    with during():
        validation = validation_accuracies(probes, grid.config.validation_fraction)
    answers = answer_by_key(probes.records()).values()
    names = finalists(answers, rank_by, top_k, validation, max_latency_ms)
    if not names and max_latency_ms is not None and any(r["status"] == "ok" for r in answers):
        _, over = within_latency([r for r in answers if r["status"] == "ok"], max_latency_ms)
        shown = ", ".join(
            f"{b} ({'not measured' if ms is None else f'{ms:.1f} ms'})" for b, ms in over.items()
        )
        raise TlbenchError(
            f"no backbone answers within --max-latency-ms {max_latency_ms:g}: {shown}. Raise "
            "the budget, or add smaller backbones"
        )
    if not names:
        raise TlbenchError("no backbone finished stage 1 (the probes); see the table above")
    stage2 = dataclasses.replace(grid.config, strategies=[finalist], backbones=names)
    finals = grid.run(stage2, during=during)
    with during():
        validation.update(validation_accuracies(finals, grid.config.validation_fraction))
    answers = list(answer_by_key(grid.log.records).values())
    found = summarize(
        answers,
        backbones=list(dict.fromkeys(grid.config.backbones)),
        finalist_strategy=finalist,
        rank_by=rank_by,
        top_k=top_k,
        validation=validation,
        max_latency_ms=max_latency_ms,
    )
    return Stages(probes, finals, found, check(answers, finalist))


def validation_accuracies(outcome: Outcome, fraction: float) -> Validation:
    """Validation top-1 of each cell of a stage: every choice `select` makes reads these.

    A tuned run (`--tune`) brings its chosen trial's; any other cell trains
    once more at the same settings on the training split less a stratified
    `fraction` of each class, and is scored on that fraction (a run like a
    tuning trial, kept in the results file, never a row of the report). For a
    probe that is nearly free: its features are cached.
    """
    from tlbench.budget import holdout_name

    found: Validation = {}
    trials: dict[tuple[Any, ...], Any] = {}
    for p in outcome.plans:
        if p.status == "skipped":
            continue
        cell = (
            p.spec.dataset,
            p.spec.dataset_fingerprint,
            p.spec.budget,
            p.spec.image_size,
            p.spec.backbone,
            p.spec.strategy,
        )
        tuning = p.spec.tuning or {}
        if tuning.get("validation_accuracy") is not None:
            found[cell] = float(tuning["validation_accuracy"])
        elif cell not in trials:
            trials[cell] = dataclasses.replace(
                p.spec,
                seed=0,  # as a tuning trial
                holdout=holdout_name(fraction),
                tuning=None,
            )
    if trials:
        records = outcome.runner.run_specs(list(trials.values()))
        for cell, spec in trials.items():
            record = records.get(spec.key) or {}
            if record.get("status") == "ok":
                found[cell] = float(record["accuracy"]["final"])
    return found


@dataclass
class Selections:
    """What `tlbench.select()` returns: one `Selection` per dataset (and budget, and
    image size), the records of both stages, and the ranking checks where the results
    file holds a fine-tune of every backbone."""

    selections: list[Selection]
    #: the answers of both stages, probes first, in plan order (`tlbench.Results`).
    results: Results
    checks: list[RankingCheck] = field(default_factory=list)

    @property
    def picks(self) -> dict[str, str | None]:
        """Dataset -> the backbone picked (None: no finalist finished stage 2)."""
        return {s.dataset: s.pick for s in self.selections}

    def __repr__(self) -> str:
        picks = ", ".join(f"{d}: {p}" for d, p in self.picks.items()) or "none"
        return f"<tlbench.Selections: {picks}; {len(self.results)} runs>"


#: what `tlbench.select(...)` calls: the Python front door (`tlbench.python_api.select`),
#: which sets it when it loads (`import tlbench` loads it on first use, not before).
front_door: Callable[..., Selections] | None = None


class _CallableModule(types.ModuleType):
    """This module, callable: `tlbench.select(...)` is `tlbench.python_api.select(...)`, and
    `tlbench.select.rank` and the other names stay this module's (the command and the
    function share a name). The front door is set from above, so this module, which the
    report uses, imports neither the grid nor the Python API."""

    def __call__(self, *args: Any, **kwargs: Any) -> Selections:
        if front_door is None:  # the front door sets itself when it loads; load it by name,
            # since this module, which the report uses, must not import it (no cycle)
            importlib.import_module("tlbench.python_api")
        assert front_door is not None
        return front_door(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
