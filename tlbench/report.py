"""The comparison: one row per backbone x strategy (per dataset), accuracy against cost.

Rows aggregate the seeds of one configuration (mean ± sample std, and n);
runs that differ in anything but the seed (epochs, image size, device...)
are different rows, labelled with what differs. "Train s" is what adapting
the backbone cost: feature extraction plus head training for cached-feature
strategies, the training loop for the others (evaluation and decoding
excluded: they are the same for every row). When a linear probe found its
features in the cache, the extraction time of the run that computed them is
charged instead, so a cache hit does not make a strategy look free; records
that carry `cost.feature_extract_seconds` (what making their features cost,
kept with the features in the cache) are charged that, whichever results
file or earlier grid made them.

A row is Pareto-optimal when no other row of its dataset is at least as
accurate and at least as cheap to train, and strictly better in one of them.

Rows never mix data: runs are grouped by their dataset's fingerprint
(`config.dataset_fingerprint`; for older records, the facts in `data`), so
adding images to a class and running again gives a new row, not a second
"seed". For each dataset name the newest data (that of the newest record)
is the main view; rows on older data are flagged `older_data` and shown in
sections of their own. Each run key is answered by its newest "ok" record
(`results.answer_by_key`): a later interrupted or failed rerun is mentioned
in the note, it does not hide the result. Records the report does not fully
understand are shown as far as they can be, or skipped, with one warning
per kind of problem.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import math
import statistics
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tlbench.record import problems as record_problems
from tlbench.results import answer_by_key, gc_paused, in_time_order, latest_by_key, record_time

SORT_KEYS = ("accuracy", "time", "backbone", "strategy", "memory", "params", "gain")
GROUP_KEYS = ("dataset", "backbone", "strategy", "none")
NAME_COLUMNS = ("dataset", "backbone", "strategy")


@dataclass
class Row:
    #: the dataset's canonical name (`imagefolder:/abs/path`): what keys and exports carry.
    dataset: str
    backbone: str
    strategy: str
    status: str  # "ok" when at least one seed succeeded, else the runs' status
    #: what sets this row apart from others of the same backbone x strategy ("epochs=5").
    variant: str = ""
    n: int = 0
    accuracy: float | None = None
    accuracy_std: float | None = None
    best_accuracy: float | None = None
    best_epoch: float | None = None
    train_seconds: float | None = None
    #: a tuned row's search (all its trials), seconds; None when its settings were given.
    search_seconds: float | None = None
    images_per_s: float | None = None
    peak_memory_mb: float | None = None  # MB: 10^6 bytes (benchmarks/ counts GB as 10^9)
    #: inference (`tlbench.inference`), means over seeds: batch-1 latency p50 and p90 in
    #: milliseconds, images per second at `inference_batch`, joules per 1,000 images.
    latency_ms: float | None = None
    latency_p90_ms: float | None = None
    inference_images_per_s: float | None = None
    inference_batch: int | None = None
    inference_j_per_1000: float | None = None
    #: joules of the training (the device's counter), mean over seeds; None: not measured.
    train_energy_j: float | None = None
    #: `--export onnx`: "ok", "parity failed" or "not exported" (worst over seeds).
    export: str | None = None
    trainable_params: int | None = None
    total_params: int | None = None
    gain_over_scratch: float | None = None
    pareto: bool = False
    features_cached: bool = False
    image_size: int | None = None
    device: str | None = None
    reason: str = ""
    seeds: list[int] = field(default_factory=list)
    #: the result keys of the runs aggregated here (to find their curves).
    run_keys: list[str] = field(default_factory=list)
    #: which data the runs used: the dataset fingerprint (short), "" when unknown.
    data: str = ""
    #: True when the dataset has newer data than these runs used (shown apart).
    older_data: bool = False
    #: when the newest run on this data was recorded (ISO-8601 UTC), "" when unknown.
    last_run: str = ""
    #: 95% confidence interval of `accuracy`: Student t over seeds (two or more),
    #: else a bootstrap over the single run's evaluation images (`ci_method`).
    ci_low: float | None = None
    ci_high: float | None = None
    ci_method: str = ""
    #: cannot be told apart from the best row of its section (paired differences over
    #: the seeds both ran, or over the evaluation images of single runs whose records
    #: hold per-image results; None when no paired comparison can be made).
    tie: bool | None = None
    #: final top-1 of each seed, for the paired comparisons.
    seed_accuracy: dict[int, float] = field(default_factory=dict)
    #: the data budget the runs trained on (`shots=K`, `fraction=F`; None: the whole split).
    budget: str | None = None
    #: training images per class the runs saw (mean over seeds), when the records say.
    images_per_class: float | None = None
    #: the variant without the budget: rows of one backbone x strategy x series are one
    #: line of accuracy against budget (`tlbench.plot.budget_lines`).
    series: str = ""
    #: the dataset as tables show it: its short name (`imagefolder:flowers12`), with as
    #: much of the path as tells it from the other datasets of the report
    #: (`tlbench.identity.short_names`); "" means `dataset`.
    dataset_name: str = ""

    @property
    def section(self) -> str:
        """The dataset's short name, or for rows on older data, that, which data and when last run."""
        name = self.dataset_name or self.dataset
        if not self.older_data:
            return name
        when = f", last run {self.last_run[:16].replace('T', ' ')} UTC" if self.last_run else ""
        return f"{name} (older data {self.data or '?'}{when})"

    @property
    def label(self) -> str:
        base = f"{self.backbone} / {self.strategy}"
        return f"{base} ({self.variant})" if self.variant else base


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _config_without_seed(record: dict[str, Any]) -> dict[str, Any]:
    config = dict(record["config"])
    config.pop("seed", None)
    # The hyperparameters actually used (after an OOM retry) are an outcome, not a setting.
    config.pop("hyperparameters_used", None)
    # The data a run used is grouped on separately (see `_data_identities`).
    config.pop("dataset_fingerprint", None)
    return config


# --------------------------------------------------------------------------- data identity

#: facts of `record["data"]` that identify the data when a record has no fingerprint
#: (records written before `config.dataset_fingerprint` existed).
_DATA_FACTS = (
    "root",
    "layout",
    "split",
    "eval_dir",
    "eval_split",
    "num_classes",
    "classes",
    "train_images",
    "eval_images",
)


def _data_facts(record: dict[str, Any]) -> str | None:
    data = record.get("data")
    if not isinstance(data, dict):
        return None
    facts = {k: data[k] for k in _DATA_FACTS if k in data}
    if not facts:
        return None
    text = json.dumps(facts, sort_keys=True, default=str)
    return "d" + hashlib.sha256(text.encode()).hexdigest()[:11]


def _data_identities(records: list[dict[str, Any]]) -> dict[int, str | None]:
    """id(record) -> the identity of the data it ran on, or None when unknown.

    The fingerprint when the record has one; else its data facts, mapped to
    the fingerprint of a newer record with the same facts where there is one,
    so old and new records of unchanged data stay together.
    """

    def fingerprint(r: dict[str, Any]) -> str | None:
        fp = r["config"].get("dataset_fingerprint")
        return fp if isinstance(fp, str) and fp else None

    fingerprint_of_facts: dict[str, str] = {}
    if any(fingerprint(r) is None for r in records):  # old records: worth the hashing
        for r in records:
            fp, facts = fingerprint(r), _data_facts(r)
            if fp and facts:
                fingerprint_of_facts.setdefault(facts, fp)
    out: dict[int, str | None] = {}
    for r in records:
        fp = r["config"].get("dataset_fingerprint")
        if isinstance(fp, str) and fp:
            out[id(r)] = fp
        else:
            facts = _data_facts(r)
            out[id(r)] = fingerprint_of_facts.get(facts, facts) if facts else None
    return out


# --------------------------------------------------------------------------- records the report reads


def _number(value: Any) -> float | None:
    """A finite number, or None (JSON can carry strings, booleans, 1e999 and NaN)."""
    kind = type(value)
    if kind is float:  # the usual case first: called for every figure of every record
        return value if math.isfinite(value) else None
    if kind is int:
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


_COST_NUMBERS = (
    "train_seconds",
    "feature_seconds",
    "train_images_per_s",
    "peak_memory_bytes",
    "trainable_params",
    "total_params",
)


def _number_or_none(value: Any) -> bool:
    """Whether `value` is a finite number or None (`_number`, the common cases first)."""
    kind = type(value)
    if kind is float:
        return math.isfinite(value)
    return value is None or kind is int or _number(value) is not None


def _kind(message: str) -> str:
    """The kind of a `record.problems` message: "no cost", "schema", "accuracy.final"..."""
    words = message.split() or [""]
    return " ".join(words[:2]) if words[0] == "no" else words[0]


def _readable(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of `records` the report can index safely; one warning per kind of problem.

    `tlbench.record.problems` says what a record lacks. What is missing is
    filled with None (a blank cell) where the row can still be shown; an "ok"
    record without a usable final accuracy is skipped, since it cannot be
    averaged with the others.
    """
    seen: dict[str, list[Any]] = {}  # kind -> [count, first message, example key, actions]

    def problem(kind: str, message: str, record: dict[str, Any], action: str) -> None:
        entry = seen.setdefault(kind, [0, message, record.get("key"), set()])
        entry[0] += 1
        entry[3].add(action)

    out = []
    for raw in records:
        found = list(record_problems(raw))
        r = dict(raw)
        if found:  # else its names are strings and its seed an integer already
            r["config"] = _readable_config(dict(r["config"]))
        if r.get("reason") is not None and not isinstance(r.get("reason"), str):
            r["reason"] = str(r["reason"])
        keep = True
        if r.get("status") == "ok":
            keep = _readable_result(r, found)
        elif not isinstance(r.get("cost"), dict):
            r["cost"] = {}
        action = "shown as far as understood" if keep else "skipped: no final accuracy to average"
        for message in found:
            problem(_kind(message), message, r, action)
        if keep:
            out.append(r)
    for count, message, key, actions in seen.values():
        warnings.warn(
            f"report: {count} record(s) not fully understood ({message}; e.g. key {key}): "
            f"{' or '.join(sorted(actions))}",
            RuntimeWarning,
            # One place in this module: the CLI summarizes twice for a table, and the
            # "default" filter then shows each warning once.
            stacklevel=2,
        )
    return out


def _readable_config(config: dict[str, Any]) -> dict[str, Any]:
    """A record's config with its names as strings ("?" where missing) and an integer seed
    (or None)."""
    for k in ("backbone", "dataset", "strategy"):
        if not isinstance(config.get(k), str):
            config[k] = "?" if config.get(k) is None else str(config[k])
    seed = config.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        text = str(seed).strip()
        config["seed"] = int(text) if text.lstrip("-").isdigit() else None
    return config


def _readable_result(r: dict[str, Any], found: list[str]) -> bool:
    """An "ok" record's accuracy and cost made safe to index, in place; False when it has no
    usable final accuracy (it cannot be averaged). Cost figures that are not numbers are
    blanked and named in `found`. (The summary reads no curve: curves are left as they are.)"""
    accuracy = r.get("accuracy")
    final = _number(accuracy.get("final")) if isinstance(accuracy, dict) else None
    if final is not None:
        r["accuracy"] = {
            **accuracy,
            "final": final,
            "best": _number(accuracy.get("best")),
            "best_epoch": _number(accuracy.get("best_epoch")),
        }
    cost = r["cost"] if isinstance(r.get("cost"), dict) else {}
    blank = [k for k in _COST_NUMBERS if not _number_or_none(cost.get(k))]
    if blank:  # a copy: the caller's record keeps what it holds
        cost = dict(cost)
        for k in blank:
            found.append(f"cost.{k} is {cost[k]!r}, not a number")
            cost[k] = None
    r["cost"] = cost
    return final is not None


def _flatten(config: dict[str, Any]) -> dict[str, Any]:
    """`{"hyperparameters": {"lr": 0.1}, ...}` -> `{"lr": 0.1, ...}` (names do not clash)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flatten(value))
        else:
            out[key] = value
    return out


def _feature_key(record: dict[str, Any]) -> tuple:
    """What decides a run's cached features: equal keys read the same features."""
    c = record["config"]
    # A hand-edited record's list or dict value still makes a hashable key (as JSON).
    return tuple(
        _same_value(c.get(k))
        for k in ("backbone", "weights", "dataset", "image_size", "device", "precision")
    )


def train_cost_seconds(
    record: dict[str, Any], extraction: dict[tuple, float] | None = None
) -> float:
    """Seconds spent adapting the backbone: feature extraction (charged even on a cache hit
    when `extraction` knows what it cost) plus training."""
    cost = record.get("cost", {})
    features = float(cost.get("feature_seconds") or 0.0)
    made = cost.get("feature_extract_seconds")
    if isinstance(made, (int, float)) and not isinstance(made, bool):
        # The record says what its features cost to make (since schema 2, later).
        features = max(features, float(made))
    elif extraction and _charged_extraction(record):
        features = max(features, extraction.get(_feature_key(record), features))
    return features + float(cost.get("train_seconds") or 0.0)


def _charged_extraction(record: dict[str, Any]) -> bool:
    """Whether a run is charged what making its features cost another run: it found them
    in the cache and does not say what they cost (`cost.feature_extract_seconds`)."""
    cost = record.get("cost")
    if not isinstance(cost, dict):
        return False
    made = cost.get("feature_extract_seconds")
    has_made = isinstance(made, (int, float)) and not isinstance(made, bool)
    return not has_made and cost.get("feature_cache") not in (None, "none")


def _extraction_seconds(records: Iterable[dict[str, Any]]) -> dict[tuple, float]:
    """What computing the features cost, from the runs that computed them (cache misses);
    empty when no run needs it (`train_cost_seconds`: a cache hit that does not say what
    its features cost to make)."""
    records = list(records)
    if not any(_charged_extraction(r) for r in records):
        return {}
    out: dict[tuple, float] = {}
    for r in records:
        cost = r.get("cost") or {}
        if r.get("status") == "ok" and cost.get("feature_cache") == "none":
            out.setdefault(_feature_key(r), float(cost.get("feature_seconds") or 0.0))
    return out


def _same_value(value: Any) -> Any:
    """What `json.dumps(value, sort_keys=True)` tells apart, cheaply for the usual scalars
    (1, 1.0 and True stay three values; every NaN is one)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return (kind, value)
    if kind is float:
        return (kind, repr(value))
    return json.dumps(value, sort_keys=True, default=str)


def _variant_labels(
    configs: dict[str, dict[str, Any]], leave_out: tuple[str, ...] = ()
) -> tuple[dict[str, str], dict[str, str]]:
    """For variants of one backbone x strategy, the settings that tell them apart: each
    config's label, and its label without the settings named in `leave_out`."""
    if len(configs) < 2:
        return dict.fromkeys(configs, ""), dict.fromkeys(configs, "")
    flat = {k: _flatten(c) for k, c in configs.items()}
    names = sorted({n for f in flat.values() for n in f})
    differing = [n for n in names if len({_same_value(f.get(n)) for f in flat.values()}) > 1]

    def shown(name: str, value: Any) -> str:
        # A budget reads as "budget=5-shot" and "budget=all", not "budget=None".
        if name == "budget" and (value is None or isinstance(value, str)):
            from tlbench.budget import describe

            return describe(value)
        return str(value)

    kept = [n for n in differing if n not in leave_out]
    return (
        {k: ", ".join(f"{n}={shown(n, f.get(n))}" for n in differing) for k, f in flat.items()},
        {k: ", ".join(f"{n}={shown(n, f.get(n))}" for n in kept) for k, f in flat.items()},
    )


def _is_trial(record: dict[str, Any]) -> bool:
    """A tuning trial's record (`tlbench.tune`): evaluated on validation, never on test."""
    return record["config"].get("holdout") is not None


#: what the Pareto mark weighs accuracy against: training alone, or training and, for a
#: tuned row, the search that chose its settings (the honest total, the default).
COSTS = ("train+search", "train")
#: which cost the Pareto mark weighs accuracy against: training (`cost` says whether a
#: search counts), batch-1 inference latency, or energy (training's joules).
PARETO_BY = ("train", "latency", "energy")


def summarize(
    records: Iterable[dict[str, Any]], *, cost: str = "train+search", pareto_by: str = "train"
) -> list[Row]:
    """Aggregate the answer of each run key into comparison rows (see the module docstring).

    `cost`: what the training cost counts (`COSTS`); `pareto_by`: the cost the
    Pareto mark weighs accuracy against (`PARETO_BY`).
    """
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {', '.join(COSTS)}, not {cost!r}")
    if pareto_by not in PARETO_BY:
        raise ValueError(f"pareto_by must be one of {', '.join(PARETO_BY)}, not {pareto_by!r}")
    with gc_paused():  # copies of every record, no cycles: see `tlbench.results.gc_paused`
        return _summarize(records, cost, pareto_by)


def _summarize(
    records: Iterable[dict[str, Any]], cost: str = "train+search", pareto_by: str = "train"
) -> list[Row]:
    # Tuning trials chose the reported settings on a validation split: not rows.
    usable = in_time_order(r for r in _readable(records) if not _is_trial(r))
    identity = _data_identities(usable)
    newest, last_run = _newest_data(usable, identity)
    answers = list(answer_by_key(usable, ordered=True).values())
    latest = latest_by_key(usable, ordered=True)
    extraction = _extraction_seconds(answers)
    groups, configs, data_of = _groups(answers, identity, newest)
    variants, series = _variants(configs, data_of)
    rows: list[Row] = []
    per_image = _PerImage()  # id(row) -> (eval split, correct), decoded when a tie needs it
    over_seeds: list[tuple[Row, list[float]]] = []
    for gkey, group in groups.items():
        config = configs[gkey]
        # `_readable` made these three strings ("?" where a record lacked one).
        dataset, backbone, strategy = (config[k] for k in NAME_COLUMNS)
        data = data_of[gkey]
        base = dict(
            dataset=dataset,
            backbone=backbone,
            strategy=strategy,
            variant=variants[gkey],
            series=series[gkey],
            budget=config.get("budget") if isinstance(config.get("budget"), str) else None,
            image_size=config.get("image_size"),
            device=config.get("device"),
            run_keys=[r["key"] for r in group],
            data=(data or "")[:12],
            older_data=data != newest.get(dataset),
            last_run=last_run.get((dataset, data), ""),
        )
        ok = [r for r in group if r.get("status") == "ok"]
        if not ok:
            last = group[-1]
            rows.append(
                Row(**base, status=str(last.get("status", "?")), reason=last.get("reason") or "")
            )
            continue
        rows.append(_ok_row(base, group, ok, latest, extraction))
        per_image.add(rows[-1], ok)
        if len(ok) >= 2:
            over_seeds.append((rows[-1], [r["accuracy"]["final"] for r in ok]))
    _fill_t_intervals(over_seeds)
    for row, name in zip(rows, _short_names([r.dataset for r in rows]), strict=True):
        row.dataset_name = name
    _mark_gain_and_pareto(rows, cost, pareto_by)
    _mark_ties(rows, per_image)
    return rows


def _newest_data(
    usable: list[dict[str, Any]], identity: dict[int, str | None]
) -> tuple[dict[str, str | None], dict[tuple[str, str | None], str]]:
    """The newest data of each dataset name (that of its newest record with a known
    identity), and when the newest record of each (dataset, data) was made."""
    newest: dict[str, str | None] = {}
    last: dict[tuple[str, str | None], _dt.datetime] = {}  # (dataset, data) -> newest time
    for r in usable:
        dataset = r["config"]["dataset"]
        if identity[id(r)] is not None or dataset not in newest:
            newest[dataset] = identity[id(r)]
        when = record_time(r)
        if when is not None:
            last[dataset, identity[id(r)]] = when  # records are oldest first
    return newest, {
        k: when.astimezone(_dt.timezone.utc).isoformat(timespec="seconds")
        for k, when in last.items()
    }


def _groups(
    answers: list[dict[str, Any]],
    identity: dict[int, str | None],
    newest: dict[str, str | None],
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, Any]], dict[str, str | None]]:
    """The answers grouped by everything but the seed, on the same data: a row each."""
    groups: dict[str, list[dict[str, Any]]] = {}
    configs: dict[str, dict[str, Any]] = {}
    data_of: dict[str, str | None] = {}
    for record in answers:
        config = _config_without_seed(record)
        # A record whose data is unknown (an old failed run) counts as the newest data's.
        data = identity[id(record)] or newest.get(config["dataset"])
        gkey = json.dumps([config, data], sort_keys=True, default=str)
        groups.setdefault(gkey, []).append(record)
        configs[gkey] = config
        data_of[gkey] = data
    return groups, configs, data_of


def _variants(
    configs: dict[str, dict[str, Any]], data_of: dict[str, str | None]
) -> tuple[dict[str, str], dict[str, str]]:
    """Each group's variant label, and its series (the label without the budget: what
    tells the lines of a budget plot apart), within one dataset x backbone x strategy."""
    families: dict[tuple, dict[str, dict[str, Any]]] = {}
    for gkey, config in configs.items():
        name = (*(config[k] for k in NAME_COLUMNS), data_of[gkey])
        families.setdefault(name, {})[gkey] = config
    variants: dict[str, str] = {}
    series: dict[str, str] = {}
    for family in families.values():
        labels, unbudgeted = _variant_labels(family, leave_out=("budget",))
        variants.update(labels)
        series.update(unbudgeted)
    return variants, series


def _notes(
    group: list[dict[str, Any]], ok: list[dict[str, Any]], latest: dict[str, dict[str, Any]]
) -> list[str]:
    """What a row's note says: seeds that failed, later reruns that ended badly, a search."""
    notes = []
    failed = [r for r in group if r.get("status") != "ok"]
    if failed:
        notes.append(
            f"{len(failed)} of {len(group)} seeds {failed[0].get('status')}: {failed[0].get('reason')}"
        )
    # A rerun that ended badly after a finished run: the result stands, the note says so.
    later = [latest[r["key"]] for r in group if latest[r["key"]] is not r]
    if later:
        first = later[0]
        notes.append(
            f"{len(later)} later rerun(s) {first.get('status')}"
            + (f": {first.get('reason')}" if first.get("reason") else "")
            + "; the finished result is shown"
        )
    searches = [t["search_seconds"] for t in (r.get("tuning") for r in ok) if t]
    if searches:
        notes.append(
            f"tuned: {ok[0]['tuning'].get('trials')} trials on validation, "
            f"search {_mean(searches):.3g} s"
        )
    return notes


def _ok_row(
    base: dict[str, Any],
    group: list[dict[str, Any]],
    ok: list[dict[str, Any]],
    latest: dict[str, dict[str, Any]],
    extraction: dict[tuple, float],
) -> Row:
    """The row of a group with at least one ok run: means over its seeds."""
    accs = [r["accuracy"]["final"] for r in ok]
    costs = [r["cost"] for r in ok]
    # The model's own peak where the record has it (CUDA: without the dataset kept on
    # the device, which fits on one GPU and not on another), else the raw peak.
    peak = [
        c.get("model_peak_memory_bytes") or c["peak_memory_bytes"]
        for c in costs
        if c.get("model_peak_memory_bytes") or c.get("peak_memory_bytes")
    ]
    ips = [c["train_images_per_s"] for c in costs if c.get("train_images_per_s")]
    searches = [t["search_seconds"] for t in (r.get("tuning") for r in ok) if t]
    best = [r["accuracy"]["best"] for r in ok if r["accuracy"]["best"] is not None]
    best_epoch = [
        r["accuracy"]["best_epoch"] for r in ok if r["accuracy"]["best_epoch"] is not None
    ]
    # Two or more seeds: the t interval (and the std) of all such rows at once, later.
    interval = _interval(ok, accs) if len(accs) < 2 else None
    seeded = [r for r in ok if isinstance(r["config"].get("seed"), int)]
    return Row(
        **base,
        status="ok",
        n=len(ok),
        # An accuracy lies in [0, 1]: a wide t interval (two seeds) is clipped to it.
        ci_low=max(0.0, interval.lower) if interval else None,
        ci_high=min(1.0, interval.upper) if interval else None,
        ci_method=interval.method if interval else "",
        seed_accuracy={r["config"]["seed"]: r["accuracy"]["final"] for r in seeded},
        accuracy=_mean(accs),
        best_accuracy=_mean(best),
        best_epoch=_mean(best_epoch),
        train_seconds=_mean([train_cost_seconds(r, extraction) for r in ok]),
        search_seconds=_mean(searches) if searches else None,
        images_per_s=_mean(ips),
        peak_memory_mb=_mean(peak) / 1e6 if peak else None,
        trainable_params=costs[0].get("trainable_params"),
        total_params=costs[0].get("total_params"),
        features_cached=any(c.get("feature_cache") not in (None, "none") for c in costs),
        reason="; ".join(_notes(group, ok, latest)),
        seeds=sorted(r["config"]["seed"] for r in seeded),
        images_per_class=_mean([v for v in map(_images_per_class, ok) if v is not None]),
        **_inference_figures(ok),
    )


def _figure(values: Iterable[Any]) -> float | None:
    """The mean of the numbers among `values` (bools are not numbers), None without any."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return _mean(numbers) if numbers else None


def _inference_figures(ok: list[dict[str, Any]]) -> dict[str, Any]:
    """A row's inference cost, training energy and export status, over its seeds."""
    inference = [r["inference"] for r in ok if isinstance(r.get("inference"), dict)]
    exports = [i["onnx"].get("status") for i in inference if isinstance(i.get("onnx"), dict)]
    batches = {i.get("throughput_batch") for i in inference}
    return {
        "latency_ms": _figure(i.get("latency_ms_p50") for i in inference),
        "latency_p90_ms": _figure(i.get("latency_ms_p90") for i in inference),
        "inference_images_per_s": _figure(i.get("throughput_images_per_s") for i in inference),
        "inference_batch": batches.pop() if len(batches) == 1 else None,
        "inference_j_per_1000": _figure(i.get("energy_joules_per_1000") for i in inference),
        "train_energy_j": _figure((r.get("cost") or {}).get("energy_joules") for r in ok),
        "export": next((s for s in ("not exported", "parity failed", "ok") if s in exports), None),
    }


def _short_names(datasets: list[str]) -> list[str]:
    """The short name of each dataset (`tlbench.identity.short_names`); a dataset whose short
    name another dataset also gets (a name that is no path can clash with a shortened
    path) keeps its full name, so that sections never merge."""
    from tlbench.identity import short_names

    short = short_names(datasets)
    taken: dict[str, set[str]] = {}
    for canonical, name in short.items():
        taken.setdefault(name, set()).add(canonical)
    return [short[d] if len(taken[short[d]]) == 1 else d for d in datasets]


class _PerImage:
    """id(row) -> `_per_image` of its runs, decoded on first use: a tie paired over seeds
    never needs the images, and decoding 50,000 records' bitsets costs seconds."""

    def __init__(self) -> None:
        self._runs: dict[int, list[dict[str, Any]]] = {}
        self._decoded: dict[int, tuple[Any, dict[int, Any]] | None] = {}

    def add(self, row: Row, ok: list[dict[str, Any]]) -> None:
        self._runs[id(row)] = ok

    def get(self, key: int, default: Any = None) -> Any:
        if key not in self._decoded:
            runs = self._runs.get(key)
            self._decoded[key] = _per_image(runs) if runs else None
        found = self._decoded[key]
        return default if found is None else found

    def __contains__(self, key: object) -> bool:
        return isinstance(key, int) and self.get(key) is not None

    def __getitem__(self, key: int) -> tuple[Any, dict[int, Any]]:
        found = self.get(key)
        if found is None:
            raise KeyError(key)
        return found


def _fill_t_intervals(pending: list[tuple[Row, list[float]]]) -> None:
    """Each row's t interval over its seeds and their std, rows of one seed count at once.

    The same floats as `tlbench.stats.t_interval` row by row (numpy reduces
    each row of the matrix as it reduces a lone vector; a test holds them
    equal), at a fraction of the cost for thousands of rows.
    """
    import numpy as np

    from tlbench import stats

    by_count: dict[int, list[tuple[Row, list[float]]]] = {}
    for row, accs in pending:
        by_count.setdefault(len(accs), []).append((row, accs))
    for n, group in by_count.items():
        x = np.asarray([accs for _, accs in group], dtype=np.float64)
        if not np.all(np.isfinite(x)):  # stats says what is wrong
            for row, accs in group:
                _set_interval(row, stats.t_interval(accs), statistics.stdev(accs))
            continue
        means = x.mean(axis=1)
        stds = x.std(axis=1, ddof=1)
        q = _t_quantile(n - 1, (1 + stats.CONFIDENCE) / 2)
        for (row, _), mean, std in zip(group, means.tolist(), stds.tolist(), strict=True):
            half = q * (std / math.sqrt(n))
            interval = stats.Interval(mean, mean - half, mean + half, n, "t", stats.CONFIDENCE)
            _set_interval(row, interval, std)


def _set_interval(row: Row, interval: Any, std: float) -> None:
    # An accuracy lies in [0, 1]: a wide t interval (two seeds) is clipped to it.
    row.ci_low, row.ci_high = max(0.0, interval.lower), min(1.0, interval.upper)
    row.ci_method = interval.method
    row.accuracy_std = std


def _per_image(ok: list[dict[str, Any]]) -> tuple[Any, dict[int, Any]] | None:
    """(which evaluation split, {seed: 0/1 per image}) of the runs that recorded their
    final evaluation image by image (`accuracy.final_correct`); None when none did."""
    from tlbench.record import decode_correct

    split = None
    found: dict[int, Any] = {}
    for r in ok:
        data = r.get("data") if isinstance(r.get("data"), dict) else {}
        images = data.get("eval_images")
        seed = r["config"].get("seed")
        correct = decode_correct(
            r["accuracy"].get("final_correct"), images if isinstance(images, int) else None
        )
        if correct is None or not isinstance(seed, int):
            continue
        this = json.dumps([data.get("eval_split"), len(correct)])
        if split not in (None, this):
            return None  # the seeds disagree on what they were evaluated on: pair none
        split = this
        found[seed] = correct
    return (split, found) if found else None


def _images_per_class(record: dict[str, Any]) -> float | None:
    """Training images per class a run saw: its budget's images, else its training split's."""
    data = record.get("data")
    if not isinstance(data, dict):
        return None
    images = _number(data.get("budget_images", data.get("train_images")))
    classes = _number(data.get("num_classes"))
    return images / classes if images is not None and classes else None


def _interval(ok: list[dict[str, Any]], accs: list[float]) -> Any:
    """The row's 95% interval (see `tlbench.stats.accuracy_interval`), or None."""
    if len(accs) >= 2:
        return _t_interval(accs)
    if len(ok) == 1:
        n = (ok[0].get("data") or {}).get("eval_images")
        if isinstance(n, int) and n > 0:
            return _bootstrap_interval(n, round(accs[0] * n))
    return None


@functools.lru_cache(maxsize=65536)
def _bootstrap_interval(n: int, hits: int) -> Any:
    """The bootstrap interval of one run that got `hits` of `n` images right.

    Only how many images were right matters to the bootstrap of one accuracy, so
    a 0/1 vector with that many ones gives exactly its interval; a report of
    thousands of runs on one evaluation split asks for few distinct (n, hits).
    """
    import numpy as np

    from tlbench import stats

    # [1] * hits + [0] * (n - hits), as an array: a list of 10,000 ints costs more.
    correct = np.zeros(max(hits, 0) + max(n - hits, 0), dtype=np.int8)
    correct[: max(hits, 0)] = 1
    return stats.accuracy_interval([hits / n], correct)


@functools.lru_cache(maxsize=1024)
def _t_quantile(df: int, q: float) -> float:
    # scipy.stats.t.ppf(q, df) is this function behind ~1 ms of argument handling per call
    # (seconds for a report of thousands of rows); the value is the same float.
    from scipy.special import stdtrit

    return float(stdtrit(df, q))


def _t_interval(values: list[float], method: str = "t") -> Any:
    """`tlbench.stats.t_interval(values, method=method)`, the same floats, with the t quantile
    cached by degrees of freedom (`test_the_reports_t_interval_is_the_stats_one` holds them equal)."""
    import numpy as np

    from tlbench import stats

    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or not np.all(np.isfinite(x)) or x.size < 2:
        return stats.t_interval(values, method=method)  # its error, or None under two
    n = x.size
    mean = float(x.mean())
    sem = float(x.std(ddof=1)) / math.sqrt(n)
    half = _t_quantile(n - 1, (1 + stats.CONFIDENCE) / 2) * sem
    return stats.Interval(mean, mean - half, mean + half, n, method, stats.CONFIDENCE)


def _mark_ties(
    rows: list[Row], per_image: dict[int, tuple[Any, dict[int, Any]]] | None = None
) -> None:
    """Mark the rows of each section that cannot be told apart from its best row.

    Paired over the seeds two rows share (Student t of the per-seed
    differences). With fewer than two common seeds, rows whose records hold
    their final evaluation image by image (`per_image`: id(row) -> (evaluation
    split, {seed: 0/1 per image})) are paired over the images (a paired
    bootstrap; see `tlbench.stats.compare`), provided both were evaluated on
    the same split; otherwise `tie` stays None, as for records without
    per-image results.
    """
    from tlbench import stats

    per_image = per_image or {}
    sections: dict[str, list[Row]] = {}
    for row in rows:
        if row.accuracy is not None and row.seed_accuracy:
            sections.setdefault(row.section, []).append(row)
    for group in sections.values():
        # The best row as stats.compare_to_best finds it (the highest mean, the first of equals):
        # only results on its evaluation split can be paired with its own.
        means = _row_means([list(r.seed_accuracy.values()) for r in group])
        best = group[max(range(len(group)), key=means.__getitem__)]  # max keeps the first
        split = per_image.get(id(best), (None, {}))[0]

        def correct(r: Row, split: Any = split) -> dict[int, Any]:
            found = per_image.get(id(r))
            return found[1] if found is not None and found[0] == split else {}

        best_correct: dict[int, Any] | None = None  # read on first need
        memo: dict[tuple, bool | None] = {}
        by_seeds: dict[tuple[int, ...], list[Row]] = {}
        for i, row in enumerate(group):
            if row is best:
                row.tie = True
                continue
            common = tuple(sorted(set(best.seed_accuracy) & set(row.seed_accuracy)))
            # Two common seeds pair over the seeds (all such rows at once, below): the
            # images are not read.
            if len(common) >= 2:
                by_seeds.setdefault(common, []).append(row)
            else:
                if best_correct is None:
                    best_correct = correct(best)
                best_row = stats.Row(key=-1, accuracy=best.seed_accuracy, correct=best_correct)
                other = stats.Row(key=i, accuracy=row.seed_accuracy, correct=correct(row))
                row.tie = _tied(best_row, other, memo)
        for common, paired in by_seeds.items():
            _tie_over_seeds(best, common, paired)


def _row_means(values: list[list[float]]) -> list[float]:
    """`float(numpy.mean(v))` of each list (as `tlbench.stats.Row.mean`), lists of one length
    at once."""
    import numpy as np

    out: list[float] = [0.0] * len(values)
    by_count: dict[int, list[int]] = {}
    for i, v in enumerate(values):
        by_count.setdefault(len(v), []).append(i)
    for indices in by_count.values():
        means = np.asarray([values[i] for i in indices], dtype=np.float64).mean(axis=1)
        for i, mean in zip(indices, means.tolist(), strict=True):
            out[i] = mean
    return out


def _tie_over_seeds(best: Row, common: tuple[int, ...], rows: list[Row]) -> None:
    """Each row's tie with `best`: the paired t interval of best - row over the `common` seeds
    contains 0 (`tlbench.stats.paired_t`, the same floats, every row at once)."""
    import numpy as np

    from tlbench import stats

    diffs = np.asarray(
        [[best.seed_accuracy[s] - r.seed_accuracy[s] for s in common] for r in rows],
        dtype=np.float64,
    )
    if not np.all(np.isfinite(diffs)):
        for r in rows:
            r.tie = _t_interval(list(diffs[rows.index(r)]), "paired-t").contains(0.0)
        return
    n = len(common)
    q = _t_quantile(n - 1, (1 + stats.CONFIDENCE) / 2)
    means, stds = diffs.mean(axis=1).tolist(), diffs.std(axis=1, ddof=1).tolist()
    for r, mean, std in zip(rows, means, stds, strict=True):
        half = q * (std / math.sqrt(n))
        r.tie = mean - half <= 0.0 <= mean + half


#: the most probability a resampled difference may have past 0 for a row to be called not
#: tied without resampling: the tie needs 2.5% of the resamples there (250 of 10,000,
#: against at most 100 expected at 1%: 15 standard deviations of that count).
_CERTAIN_TAIL = 0.01


def _surely_apart(n: int, only_a: int, only_b: int) -> bool:
    """Whether the paired bootstrap of these counts surely puts 0 outside its 95% interval.

    A resampled difference is the mean of n independent pairs, each +1 (only
    the best right), -1 (only the other) or 0, with mean d and variance
    v = p(+1) + p(-1) - d**2. The chance it lands past 0 is at most
    Chebyshev's v / (n d**2) and Bernstein's exp(-n d**2 / (2 v + 4 |d| / 3));
    both are bounds, whatever n.
    """
    d = (only_a - only_b) / n
    v = (only_a + only_b) / n - d * d
    if d == 0:
        return False
    chebyshev = v / (n * d * d)
    bernstein = math.exp(-n * d * d / (2 * v + 4 * abs(d) / 3))
    return min(chebyshev, bernstein) <= _CERTAIN_TAIL


def _tied(best: Any, other: Any, memo: dict[tuple, bool | None]) -> bool | None:
    """`tlbench.stats.compare(best, other).tied`, without its cost per row.

    Paired t over two or more common seeds uses the cached t quantile; a paired
    bootstrap over the images depends only on the four counts of (best right,
    other right), so equal counts are compared once, and a row whose difference
    surely lies outside the interval (`_surely_apart`) is not tied without resampling.
    """
    import numpy as np

    from tlbench import stats

    common = sorted(set(best.accuracy) & set(other.accuracy))
    if len(common) >= 2:
        diff = _t_interval([best.accuracy[s] - other.accuracy[s] for s in common], "paired-t")
        return diff.contains(0.0)
    if common:
        seed_a = seed_b = common[0]
    elif len(best.accuracy) == 1 and len(other.accuracy) == 1:
        (seed_a,), (seed_b,) = best.accuracy, other.accuracy
    else:
        return None
    a, b = best.correct.get(seed_a), other.correct.get(seed_b)
    if a is None or b is None or len(a) != len(b):
        return stats.compare(best, other).tied  # no pairing: its own answer (None)
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    n = a.size
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    key = (n, int(np.sum(a & b)), only_a, only_b)
    if key not in memo:
        if _surely_apart(n, only_a, only_b):
            memo[key] = False
        else:
            memo[key] = stats.compare(best, other).tied
    return memo[key]


def _mark_gain_and_pareto(rows: list[Row], cost: str, pareto_by: str) -> None:
    """Gain over the like-for-like scratch row, and the Pareto mark, per section.

    Both by index, not by comparing every pair of rows: a report of 20,000
    rows is O(n log n) here (it was 400 million comparisons).
    """
    shown = [r for r in rows if r.accuracy is not None]
    sections: dict[str, list[Row]] = {}
    # Like for like: the scratch run at the same image size on the same device.
    scratch: dict[tuple, list[Row]] = {}
    for row in shown:
        section = row.section
        sections.setdefault(section, []).append(row)
        if row.strategy == "scratch":
            like = (section, row.backbone, row.image_size, row.device)
            scratch.setdefault(like, []).append(row)
    for row in shown:
        if row.strategy != "scratch":
            found = scratch.get((row.section, row.backbone, row.image_size, row.device), [])
            if len(found) == 1:
                row.gain_over_scratch = row.accuracy - found[0].accuracy
    for group in sections.values():
        _mark_pareto(group, cost, pareto_by)


def pareto_costs(
    group: list[Row], cost: str = "train+search", pareto_by: str = "train"
) -> list[float]:
    """Each row's cost for the Pareto mark: training seconds (plus a tuned row's search with
    "train+search"), batch-1 latency, or training energy. A row that lacks the figure
    costs infinity: it cannot be shown to be cheaper than any other."""
    if pareto_by == "latency":
        return [math.inf if r.latency_ms is None else r.latency_ms for r in group]
    if pareto_by == "energy":
        return [math.inf if r.train_energy_j is None else r.train_energy_j for r in group]
    search = cost == "train+search"
    return [
        (r.train_seconds or 0.0) + ((r.search_seconds or 0.0) if search else 0.0) for r in group
    ]


def _mark_pareto(group: list[Row], cost: str = "train+search", pareto_by: str = "train") -> None:
    """A row is Pareto-optimal unless another is at least as accurate and as cheap, and
    better in one: rows by accuracy (best first), each against the cheapest above it.
    The cost is `pareto_costs`'s; a row whose cost is unknown is never on the front."""
    costs = pareto_costs(group, cost, pareto_by)
    if any(c != c for c in costs):  # a NaN cost compares false with anything: pair by pair
        for row, cost in zip(group, costs, strict=True):
            row.pareto = not any(
                o is not row
                and o.accuracy >= row.accuracy
                and oc <= cost
                and (o.accuracy > row.accuracy or oc < cost)
                for o, oc in zip(group, costs, strict=True)
            )
        return
    order = sorted(range(len(group)), key=lambda i: -group[i].accuracy)
    cheapest_above = math.inf  # the lowest cost among rows strictly more accurate
    start = 0
    while start < len(order):
        end = start
        accuracy = group[order[start]].accuracy
        while end < len(order) and group[order[end]].accuracy == accuracy:
            end += 1
        tier = order[start:end]  # rows of equal accuracy
        cheapest_here = min(costs[i] for i in tier)
        for i in tier:
            group[i].pareto = costs[i] != math.inf and not (
                cheapest_above <= costs[i] or cheapest_here < costs[i]
            )
        cheapest_above = min(cheapest_above, cheapest_here)
        start = end


def sort_rows(rows: list[Row], key: str = "accuracy") -> list[Row]:
    """Rows of each dataset ordered by `key`; rows without a result go last."""
    if key not in SORT_KEYS:
        raise ValueError(f"--sort must be one of {', '.join(SORT_KEYS)}")

    def order(r: Row) -> tuple:
        failed = r.accuracy is None
        # Rows on older data after the newest, newest older data first.
        section = (r.dataset, r.older_data, "" if not r.older_data else _desc(r.last_run), r.data)
        if key == "accuracy":
            return (*section, failed, -(r.accuracy or 0.0), r.train_seconds or 0.0)
        if key == "time":
            return (*section, failed, r.train_seconds or 0.0)
        if key == "memory":
            return (*section, failed, r.peak_memory_mb or 0.0)
        if key == "params":
            return (*section, failed, r.trainable_params or 0)
        if key == "gain":
            return (*section, r.gain_over_scratch is None, -(r.gain_over_scratch or 0.0))
        return (*section, getattr(r, key), r.strategy, r.backbone)

    return sorted(rows, key=order)


def _desc(text: str) -> tuple[int, ...]:
    """Sorts ISO times newest first (as a tuple of negated code points)."""
    return tuple(-ord(c) for c in text)


def group_rows(rows: list[Row], by: str = "dataset") -> dict[str, list[Row]]:
    """Sections of the report: one per dataset (default), backbone or strategy, or one ("none")."""
    if by not in GROUP_KEYS:
        raise ValueError(f"--group-by must be one of {', '.join(GROUP_KEYS)}")
    out: dict[str, list[Row]] = {}
    for row in rows:
        title = "all runs" if by == "none" else row.section if by == "dataset" else getattr(row, by)
        out.setdefault(title, []).append(row)
    return out


def by_dataset(rows: list[Row]) -> dict[str, list[Row]]:
    return group_rows(rows, "dataset")


# --------------------------------------------------------------------------- formatting


# --------------------------------------------------------------------------- column choice


# --------------------------------------------------------------------------- tuning


@dataclass
class TuningChange:
    """How the ranking of backbones moved between default and tuned settings."""

    dataset: str
    strategy: str
    #: backbones best first at the default settings, and tuned.
    default: list[str]
    tuned: list[str]
    #: Kendall's tau between the two rankings' accuracies (1: the same order).
    tau: float
    #: mean tuned-minus-default top-1 over the backbones.
    mean_gain: float


def tuning_changes(rows: list[Row]) -> list[TuningChange]:
    """Per dataset and strategy, where rows of two or more backbones exist both at the
    default settings and tuned (`--tune`): how far the ranking moved (Kendall tau)."""
    found: dict[tuple[str, str], dict[str, dict[bool, float]]] = {}
    for row in rows:
        if row.accuracy is None or row.older_data:
            continue
        tuned = row.search_seconds is not None
        cell = found.setdefault((row.section, row.strategy), {}).setdefault(row.backbone, {})
        cell.setdefault(tuned, row.accuracy)  # the first row of each kind, as sorted
    out = []
    for (dataset, strategy), backbones in found.items():
        both = {b: a for b, a in backbones.items() if True in a and False in a}
        if len(both) < 2:
            continue
        names = sorted(both)
        default = [both[b][False] for b in names]
        tuned = [both[b][True] for b in names]
        # Imported here: scipy.stats costs half a second, and most reports have no tuning.
        from scipy.stats import kendalltau

        tau = float(kendalltau(default, tuned).statistic)
        out.append(
            TuningChange(
                dataset=dataset,
                strategy=strategy,
                default=sorted(names, key=lambda b: (-both[b][False], b)),
                tuned=sorted(names, key=lambda b: (-both[b][True], b)),
                tau=tau,
                mean_gain=statistics.fmean(t - d for t, d in zip(tuned, default, strict=True)),
            )
        )
    return out


def tuning_lines(changes: list[TuningChange]) -> list[str]:
    """One sentence per `TuningChange`, for the terminal and text reports."""
    return [
        f"{c.dataset}, {c.strategy}: default ranks {' > '.join(c.default)}; tuned ranks "
        f"{' > '.join(c.tuned)} (Kendall tau {c.tau:+.2f}, mean gain {100 * c.mean_gain:+.1f} "
        "points)"
        for c in changes
    ]
