"""The comparison: per dataset, one row per backbone x strategy, accuracy against cost.

Rows aggregate seeds (mean ± sample std, and n). "Train s" is what adapting
the backbone cost: feature extraction plus head training for cached-feature
strategies, the training loop for the others (evaluation and decoding
excluded: they are the same for every row). A row is Pareto-optimal when no
other row of its dataset is both more accurate and cheaper to train.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from tlbench.results import latest_by_key

FORMATS = ("table", "markdown", "csv", "json", "html", "latex")
SORT_KEYS = ("accuracy", "time", "backbone", "strategy")


@dataclass
class Row:
    dataset: str
    backbone: str
    strategy: str
    status: str  # "ok", or the status of the runs when none succeeded
    n: int = 0
    accuracy: float | None = None
    accuracy_std: float | None = None
    best_epoch: float | None = None
    train_seconds: float | None = None
    images_per_s: float | None = None
    peak_memory_mb: float | None = None
    trainable_params: int | None = None
    total_params: int | None = None
    gain_over_scratch: float | None = None
    pareto: bool = False
    features_cached: bool = False
    reason: str = ""
    seeds: list[int] = field(default_factory=list)


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def train_cost_seconds(record: dict[str, Any]) -> float:
    cost = record.get("cost", {})
    return float(cost.get("feature_seconds") or 0.0) + float(cost.get("train_seconds") or 0.0)


def summarize(records: Iterable[dict[str, Any]]) -> list[Row]:
    """Aggregate the latest record of each run key into comparison rows."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for record in latest_by_key(records).values():
        c = record.get("config", {})
        groups.setdefault((c.get("dataset", "?"), c.get("backbone", "?"), c.get("strategy", "?")), []).append(record)
    rows: list[Row] = []
    for (dataset, backbone, strategy), group in groups.items():
        ok = [r for r in group if r.get("status") == "ok"]
        if not ok:
            first = group[-1]
            rows.append(Row(dataset, backbone, strategy, first.get("status", "?"), reason=first.get("reason") or ""))
            continue
        accs = [r["accuracy"]["final"] for r in ok]
        costs = [r["cost"] for r in ok]
        peak = [c.get("peak_memory_bytes") for c in costs if c.get("peak_memory_bytes")]
        failed = [r for r in group if r.get("status") != "ok"]
        rows.append(
            Row(
                dataset, backbone, strategy, "ok",
                n=len(ok),
                accuracy=_mean(accs),
                accuracy_std=statistics.stdev(accs) if len(accs) > 1 else None,
                best_epoch=_mean([r["accuracy"]["best_epoch"] for r in ok]),
                train_seconds=_mean([train_cost_seconds(r) for r in ok]),
                images_per_s=_mean([c["train_images_per_s"] for c in costs if c.get("train_images_per_s")]),
                peak_memory_mb=_mean(peak) / 2**20 if peak else None,
                trainable_params=costs[0].get("trainable_params"),
                total_params=costs[0].get("total_params"),
                features_cached=any(c.get("feature_cache") in ("disk", "memory") for c in costs),
                reason=f"{len(failed)} of {len(group)} seeds {failed[0].get('status')}: {failed[0].get('reason')}" if failed else "",
                seeds=sorted(r["config"].get("seed", 0) for r in ok),
            )
        )
    by_key = {(r.dataset, r.backbone, r.strategy): r for r in rows}
    for row in rows:
        scratch = by_key.get((row.dataset, row.backbone, "scratch"))
        if row.accuracy is not None and scratch and scratch.accuracy is not None and row.strategy != "scratch":
            row.gain_over_scratch = row.accuracy - scratch.accuracy
        if row.accuracy is not None:
            row.pareto = not any(
                o is not row and o.dataset == row.dataset and o.accuracy is not None
                and o.accuracy >= row.accuracy and o.train_seconds <= row.train_seconds
                and (o.accuracy > row.accuracy or o.train_seconds < row.train_seconds)
                for o in rows
            )
    return rows


def sort_rows(rows: list[Row], key: str = "accuracy") -> list[Row]:
    if key not in SORT_KEYS:
        raise ValueError(f"--sort must be one of {', '.join(SORT_KEYS)}")

    def order(r: Row) -> tuple:
        failed = r.accuracy is None
        if key == "accuracy":
            return (r.dataset, failed, -(r.accuracy or 0.0))
        if key == "time":
            return (r.dataset, failed, r.train_seconds or 0.0)
        return (r.dataset, getattr(r, key), r.strategy)

    return sorted(rows, key=order)


# --------------------------------------------------------------------------- formatting


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def _params(value: int | None) -> str:
    if value is None:
        return ""
    return f"{value / 1e6:.2f}M" if value >= 1e5 else f"{value / 1e3:.1f}k"


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


COLUMNS = ["backbone", "strategy", "top-1 %", "n", "best ep", "train s", "img/s", "peak MB",
           "trainable / total", "vs scratch", "pareto", "note"]


def row_cells(row: Row) -> list[str]:
    if row.accuracy is None:
        return [row.backbone, row.strategy, "", "", "", "", "", "", "", "", "", f"{row.status}: {row.reason}"]
    acc = _pct(row.accuracy)
    if row.accuracy_std is not None:
        acc += f" ± {_pct(row.accuracy_std)}"
    gain = "" if row.gain_over_scratch is None else f"{100 * row.gain_over_scratch:+.1f}"
    note = "features cached" if row.features_cached else ""
    if row.reason:
        note = (note + "; " if note else "") + row.reason
    return [
        row.backbone, row.strategy, acc, str(row.n),
        "" if row.best_epoch is None else f"{row.best_epoch:.0f}",
        _seconds(row.train_seconds),
        "" if row.images_per_s is None else f"{row.images_per_s:.0f}",
        "" if row.peak_memory_mb is None else f"{row.peak_memory_mb:.0f}",
        f"{_params(row.trainable_params)} / {_params(row.total_params)}",
        gain, "*" if row.pareto else "", note,
    ]


def by_dataset(rows: list[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for row in rows:
        out.setdefault(row.dataset, []).append(row)
    return out


def render(rows: list[Row], fmt: str) -> str:
    """Rows as markdown, csv, json, html or latex text (the `table` format is the CLI's)."""
    if fmt == "json":
        return json.dumps([asdict(r) for r in rows], indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        fields = [f for f in asdict(rows[0])] if rows else ["dataset"]
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (";".join(map(str, v)) if isinstance(v, list) else v) for k, v in asdict(r).items()})
        return buf.getvalue()
    from tabulate import tabulate

    tablefmt = {"markdown": "github", "html": "html", "latex": "latex_booktabs", "table": "simple"}.get(fmt)
    if tablefmt is None:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    parts = []
    for dataset, group in by_dataset(rows).items():
        table = tabulate([row_cells(r) for r in group], headers=COLUMNS, tablefmt=tablefmt)
        title = {"markdown": f"### {dataset}\n", "html": f"<h3>{dataset}</h3>\n", "latex": f"% {dataset}\n"}.get(fmt, f"{dataset}\n")
        parts.append(title + table)
    return "\n\n".join(parts) + "\n"
