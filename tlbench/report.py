"""The comparison: one row per backbone x strategy (per dataset), accuracy against cost.

Rows aggregate the seeds of one configuration (mean ± sample std, and n);
runs that differ in anything but the seed (epochs, image size, device...)
are different rows, labelled with what differs. "Train s" is what adapting
the backbone cost: feature extraction plus head training for cached-feature
strategies, the training loop for the others (evaluation and decoding
excluded: they are the same for every row). When a linear probe found its
features in the cache, the extraction time of the run that computed them is
charged instead, so a cache hit does not make a strategy look free.

A row is Pareto-optimal when no other row of its dataset is at least as
accurate and at least as cheap to train, and strictly better in one of them.
"""

from __future__ import annotations

import csv
import html
import io
import json
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from tlbench.results import latest_by_key

FORMATS = ("table", "markdown", "csv", "json", "html", "latex")
SORT_KEYS = ("accuracy", "time", "backbone", "strategy", "memory", "params", "gain")
GROUP_KEYS = ("dataset", "backbone", "strategy", "none")
NAME_COLUMNS = ("dataset", "backbone", "strategy")

LEGEND = (
    "top-1: final epoch on the held-out split, mean ± std over seeds (n). "
    "train s: feature extraction + training (no decoding, no eval). "
    "pareto *: no other row of the dataset is both more accurate and cheaper to train."
)


@dataclass
class Row:
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
    images_per_s: float | None = None
    peak_memory_mb: float | None = None  # MB: 10^6 bytes (benchmarks/ counts GB as 10^9)
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

    @property
    def label(self) -> str:
        base = f"{self.backbone} / {self.strategy}"
        return f"{base} ({self.variant})" if self.variant else base


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _config_without_seed(record: dict[str, Any]) -> dict[str, Any]:
    config = dict(record.get("config", {}))
    config.pop("seed", None)
    # The hyperparameters actually used (after an OOM retry) are an outcome, not a setting.
    config.pop("hyperparameters_used", None)
    return config


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
    c = record.get("config", {})
    return tuple(
        json.dumps(c.get(k), sort_keys=True)
        for k in ("backbone", "weights", "dataset", "image_size", "device", "precision")
    )


def train_cost_seconds(
    record: dict[str, Any], extraction: dict[tuple, float] | None = None
) -> float:
    """Seconds spent adapting the backbone: feature extraction (charged even on a cache hit
    when `extraction` knows what it cost) plus training."""
    cost = record.get("cost", {})
    features = float(cost.get("feature_seconds") or 0.0)
    if cost.get("feature_cache") not in (None, "none") and extraction:
        features = max(features, extraction.get(_feature_key(record), features))
    return features + float(cost.get("train_seconds") or 0.0)


def _extraction_seconds(records: Iterable[dict[str, Any]]) -> dict[tuple, float]:
    """What computing the features cost, from the runs that computed them (cache misses)."""
    out: dict[tuple, float] = {}
    for r in records:
        cost = r.get("cost") or {}
        if r.get("status") == "ok" and cost.get("feature_cache") == "none":
            out.setdefault(_feature_key(r), float(cost.get("feature_seconds") or 0.0))
    return out


def _variant_labels(configs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """For variants of one backbone x strategy, the settings that tell them apart."""
    if len(configs) < 2:
        return dict.fromkeys(configs, "")
    flat = {k: _flatten(c) for k, c in configs.items()}
    names = sorted({n for f in flat.values() for n in f})
    differing = [
        n for n in names if len({json.dumps(f.get(n), sort_keys=True) for f in flat.values()}) > 1
    ]
    return {k: ", ".join(f"{n}={f.get(n)}" for n in differing) for k, f in flat.items()}


def summarize(records: Iterable[dict[str, Any]]) -> list[Row]:
    """Aggregate the latest record of each run key into comparison rows."""
    latest = list(latest_by_key(records).values())
    extraction = _extraction_seconds(latest)
    groups: dict[str, list[dict[str, Any]]] = {}
    configs: dict[str, dict[str, Any]] = {}
    for record in latest:
        config = _config_without_seed(record)
        gkey = json.dumps(config, sort_keys=True, default=str)
        groups.setdefault(gkey, []).append(record)
        configs[gkey] = config
    # Variants are told apart within one dataset x backbone x strategy.
    families: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
    for gkey, config in configs.items():
        name = tuple(str(config.get(k, "?")) for k in NAME_COLUMNS)
        families.setdefault(name, {})[gkey] = config
    variants: dict[str, str] = {}
    for family in families.values():
        variants.update(_variant_labels(family))

    rows: list[Row] = []
    for gkey, group in groups.items():
        config = configs[gkey]
        dataset, backbone, strategy = (str(config.get(k, "?")) for k in NAME_COLUMNS)
        base = dict(
            dataset=dataset,
            backbone=backbone,
            strategy=strategy,
            variant=variants[gkey],
            image_size=config.get("image_size"),
            device=config.get("device"),
            run_keys=[r["key"] for r in group],
        )
        ok = [r for r in group if r.get("status") == "ok"]
        if not ok:
            last = group[-1]
            rows.append(
                Row(**base, status=last.get("status", "?"), reason=last.get("reason") or "")
            )
            continue
        accs = [r["accuracy"]["final"] for r in ok]
        costs = [r["cost"] for r in ok]
        peak = [c["peak_memory_bytes"] for c in costs if c.get("peak_memory_bytes")]
        ips = [c["train_images_per_s"] for c in costs if c.get("train_images_per_s")]
        failed = [r for r in group if r.get("status") != "ok"]
        reason = ""
        if failed:
            reason = f"{len(failed)} of {len(group)} seeds {failed[0].get('status')}: {failed[0].get('reason')}"
        rows.append(
            Row(
                **base,
                status="ok",
                n=len(ok),
                accuracy=_mean(accs),
                accuracy_std=statistics.stdev(accs) if len(accs) > 1 else None,
                best_accuracy=_mean([r["accuracy"]["best"] for r in ok]),
                best_epoch=_mean([r["accuracy"]["best_epoch"] for r in ok]),
                train_seconds=_mean([train_cost_seconds(r, extraction) for r in ok]),
                images_per_s=_mean(ips),
                peak_memory_mb=_mean(peak) / 1e6 if peak else None,
                trainable_params=costs[0].get("trainable_params"),
                total_params=costs[0].get("total_params"),
                features_cached=any(c.get("feature_cache") not in (None, "none") for c in costs),
                reason=reason,
                seeds=sorted(r["config"].get("seed", 0) for r in ok),
            )
        )
    _mark_gain_and_pareto(rows)
    return rows


def _mark_gain_and_pareto(rows: list[Row]) -> None:
    for row in rows:
        if row.accuracy is None:
            continue
        if row.strategy != "scratch":
            scratch = [
                o
                for o in rows
                if o.strategy == "scratch"
                and o.dataset == row.dataset
                and o.backbone == row.backbone
                and o.accuracy is not None
            ]
            # Like for like: the scratch run at the same image size on the same device.
            scratch = [
                o for o in scratch if (o.image_size, o.device) == (row.image_size, row.device)
            ]
            if len(scratch) == 1:
                row.gain_over_scratch = row.accuracy - scratch[0].accuracy
        cost = row.train_seconds or 0.0
        row.pareto = not any(
            o is not row
            and o.dataset == row.dataset
            and o.accuracy is not None
            and o.accuracy >= row.accuracy
            and (o.train_seconds or 0.0) <= cost
            and (o.accuracy > row.accuracy or (o.train_seconds or 0.0) < cost)
            for o in rows
        )


def sort_rows(rows: list[Row], key: str = "accuracy") -> list[Row]:
    """Rows of each dataset ordered by `key`; rows without a result go last."""
    if key not in SORT_KEYS:
        raise ValueError(f"--sort must be one of {', '.join(SORT_KEYS)}")

    def order(r: Row) -> tuple:
        failed = r.accuracy is None
        if key == "accuracy":
            return (r.dataset, failed, -(r.accuracy or 0.0), r.train_seconds or 0.0)
        if key == "time":
            return (r.dataset, failed, r.train_seconds or 0.0)
        if key == "memory":
            return (r.dataset, failed, r.peak_memory_mb or 0.0)
        if key == "params":
            return (r.dataset, failed, r.trainable_params or 0)
        if key == "gain":
            return (r.dataset, r.gain_over_scratch is None, -(r.gain_over_scratch or 0.0))
        return (r.dataset, getattr(r, key), r.strategy, r.backbone)

    return sorted(rows, key=order)


def group_rows(rows: list[Row], by: str = "dataset") -> dict[str, list[Row]]:
    """Sections of the report: one per dataset (default), backbone or strategy, or one ("none")."""
    if by not in GROUP_KEYS:
        raise ValueError(f"--group-by must be one of {', '.join(GROUP_KEYS)}")
    out: dict[str, list[Row]] = {}
    for row in rows:
        out.setdefault("all runs" if by == "none" else getattr(row, by), []).append(row)
    return out


def by_dataset(rows: list[Row]) -> dict[str, list[Row]]:
    return group_rows(rows, "dataset")


# --------------------------------------------------------------------------- formatting


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def _params(value: int | None) -> str:
    if value is None:
        return ""
    if value >= 1e5:
        return f"{value / 1e6:.2f}M"
    return f"{value / 1e3:.1f}k" if value >= 1e3 else str(value)


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


METRIC_COLUMNS = [
    "top-1 %",
    "n",
    "best ep",
    "train s",
    "img/s",
    "peak MB",
    "trainable / total",
    "vs scratch",
    "pareto",
    "note",
]
#: the columns when grouped by dataset (the usual view).
COLUMNS = ["backbone", "strategy", *METRIC_COLUMNS]


def columns(group_by: str = "dataset") -> list[str]:
    """Header of a section: the names the section does not fix, then the metrics."""
    return [c for c in NAME_COLUMNS if c != group_by] + METRIC_COLUMNS


def row_cells(row: Row, group_by: str = "dataset") -> list[str]:
    names = [getattr(row, c) for c in NAME_COLUMNS if c != group_by]
    if row.variant:
        names[-1] = f"{names[-1]} ({row.variant})"
    if row.accuracy is None:
        return [*names, *[""] * (len(METRIC_COLUMNS) - 1), f"{row.status}: {row.reason}"]
    acc = _pct(row.accuracy)
    if row.accuracy_std is not None:
        acc += f" ± {_pct(row.accuracy_std)}"
    gain = "" if row.gain_over_scratch is None else f"{100 * row.gain_over_scratch:+.1f}"
    notes = ["features cached"] if row.features_cached else []
    if row.reason:
        notes.append(row.reason)
    return [
        *names,
        acc,
        str(row.n),
        "" if row.best_epoch is None else f"{row.best_epoch:.0f}",
        _seconds(row.train_seconds),
        "" if row.images_per_s is None else f"{row.images_per_s:,.0f}",
        "" if row.peak_memory_mb is None else f"{row.peak_memory_mb:,.0f}",
        f"{_params(row.trainable_params)} / {_params(row.total_params)}",
        gain,
        "*" if row.pareto else "",
        "; ".join(notes),
    ]


def render(rows: list[Row], fmt: str, group_by: str = "dataset") -> str:
    """Rows as text: table (plain), markdown, csv, json, html or latex.

    csv and json hold every field of every row, unformatted (fractions, seconds,
    bytes as MB), one list for all groups; the others are one table per group.
    """
    if fmt == "json":
        return json.dumps([asdict(r) for r in rows], indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        fields = list(Row.__dataclass_fields__)
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow(
                {
                    k: (";".join(map(str, v)) if isinstance(v, list) else v)
                    for k, v in asdict(r).items()
                }
            )
        return buf.getvalue()
    from tabulate import tabulate

    tablefmt = {
        "markdown": "pipe",
        "html": "html",
        "latex": "latex_booktabs",
        "table": "simple",
    }.get(fmt)
    if tablefmt is None:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    parts = []
    for title, group in group_rows(rows, group_by).items():
        header = columns(group_by)
        table = tabulate(
            [row_cells(r, group_by) for r in group],
            headers=header,
            tablefmt=tablefmt,
            disable_numparse=True,  # cells are formatted already ("85.0 ± 1.2", "1,234")
            colalign=["left" if c in (*NAME_COLUMNS, "note") else "right" for c in header],
        )
        heading = f"{group_by}: {title}" if group_by != "none" else title
        if fmt == "markdown":
            parts.append(f"### {heading}\n\n{table}")
        elif fmt == "html":
            parts.append(f"<h3>{html.escape(heading)}</h3>\n{table}")
        elif fmt == "latex":
            parts.append(f"% {heading}\n{table}")
        else:
            parts.append(f"{heading}\n{table}")
    legend = {"html": f"<p>{html.escape(LEGEND)}</p>", "latex": f"% {LEGEND}"}.get(fmt, LEGEND)
    return "\n\n".join([*parts, legend]) + "\n"
