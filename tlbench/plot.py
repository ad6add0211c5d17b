"""`tlbench report --plot`: accuracy against training cost, the learning curves, and budgets.

One figure, one row of panels per dataset:

- left: top-1 against training seconds (log scale), one labelled point per
  comparison row (error bars: std over seeds), and the Pareto frontier as a
  staircase: the best accuracy reachable for at most that much training;
- middle: held-out accuracy after every epoch, one line per row (mean over
  seeds, over the epochs every seed reached);
- next, when the runs measured inference (`tlbench.inference`): top-1 against
  batch-1 latency in milliseconds, with its own Pareto staircase: the best
  accuracy a model that answers within that latency reaches;
- right, when the runs have data budgets (`--shots`, `--train-fraction`):
  mean top-1 against the budget, one line per backbone x strategy, with each
  row's 95% interval as error bars (`budget_lines`). Where the fine-tune's
  line crosses the linear probe's is the budget from which fine-tuning pays;
- further right, when cells were tuned (`--tune`): one panel per searched
  hyperparameter, the validation accuracy of every trial that trained all
  its epochs against that hyperparameter's value (`sensitivity`): how much
  the answer depends on the setting, and whether the search found a plateau
  or a peak.

matplotlib is an optional extra (`pip install 'tlbench[plot]'`). It is used
through its object API with the Agg canvas: no pyplot state, no display needed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlbench.errors import TlbenchError
from tlbench.outputs import check_image_path, image_path  # noqa: F401 (re-exported)
from tlbench.report import Row, by_dataset
from tlbench.results import answer_by_key

MISSING = (
    "--plot needs matplotlib, an optional extra: pip install 'tlbench[plot]' "
    "(or pip install matplotlib)"
)

#: a colour per strategy, stable across plots; other strategies take the next colours.
STRATEGY_COLOURS = {"scratch": "#d62728", "linear": "#1f77b4", "finetune": "#2ca02c"}
_OTHER_COLOURS = ["#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
#: the most points labelled (and curves in the legend) per panel; Pareto rows come first.
MAX_LABELS = 20
#: where a zero-second row lands on the log axis (a cached head can train in microseconds).
MIN_SECONDS = 1e-3


def _figure_class() -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise TlbenchError(MISSING) from None
    return Figure, FigureCanvasAgg


def literal(text: str) -> str:
    """`text` as matplotlib should draw it: a `$` in a name is a dollar, not mathtext
    (`imagefolder:/data/$x$` would be typeset, and `$\\frac$` would raise)."""
    return text.replace("$", r"\$")


def save_figure(fig: Any, path: Path, flag: str) -> None:
    """Write `fig` to exactly `path` (its suffix gives the format), or raise a `TlbenchError`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=fig.dpi, format=path.suffix.lower().lstrip("."))
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise TlbenchError(
            f"cannot write {flag} image {path}: {why}. Choose another path."
        ) from None


def mean_curve(records: list[dict[str, Any]]) -> list[float]:
    """Per-epoch held-out accuracy averaged over runs, up to the shortest curve."""
    curves = []
    for r in records:
        accuracy = r.get("accuracy")
        curve = accuracy.get("curve") if isinstance(accuracy, dict) else None
        if r.get("status") != "ok" or not isinstance(curve, list):
            continue  # a record the report warned about: no curve to draw
        values = [c.get("eval_accuracy") if isinstance(c, dict) else None for c in curve]
        if values and all(_finite(v) for v in values):
            curves.append(values)
    if not curves:
        return []
    length = min(len(c) for c in curves)
    return [statistics.fmean(c[i] for c in curves) for i in range(length)]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class CostAxis:
    """One cost a trade-off panel puts accuracy against: its x of a row, and its words."""

    x: Callable[[Row], float | None]
    label: str
    title: str


def _train_x(row: Row) -> float | None:
    return max(MIN_SECONDS, row.train_seconds or 0.0)


TRAIN_AXIS = CostAxis(
    _train_x,
    "training seconds (feature extraction + training), log scale",
    "accuracy against training cost",
)
LATENCY_AXIS = CostAxis(
    lambda r: r.latency_ms,
    "inference latency at batch 1, ms (p50), log scale",
    "accuracy against inference latency",
)


def frontier(rows: list[Row], axis: CostAxis = TRAIN_AXIS) -> list[tuple[float, float]]:
    """(cost, accuracy) of the rows no other row beats on both, cheapest first.

    Computed from the axis's own cost, so a panel's staircase is that cost's
    Pareto front whatever cost the report's `pareto` column weighed.
    """
    points = sorted(
        (axis.x(r), r.accuracy) for r in rows if r.accuracy is not None and axis.x(r) is not None
    )
    front: list[tuple[float, float]] = []
    for cost, accuracy in points:  # cheapest first: a point is on the front if it beats all before
        if not front or accuracy > front[-1][1]:
            if front and front[-1][0] == cost:
                front.pop()  # as cheap and more accurate
            front.append((cost, accuracy))
    return front


@dataclass(frozen=True)
class BudgetPoint:
    """One row on a budget line: where it sits on the budget axis and its mean top-1."""

    x: float
    accuracy: float
    #: the row's 95% interval (t over seeds, or a bootstrap over images); None when unknown.
    low: float | None
    high: float | None
    budget: str | None
    n: int


#: the budget axis: images per class (`--shots`), or the fraction of each class (`--train-fraction`).
SHOTS_AXIS = "training images per class"
FRACTION_AXIS = "fraction of the training images"


def budget_lines(rows: list[Row]) -> tuple[str, dict[str, list[BudgetPoint]]] | None:
    """Accuracy against budget for the rows of one dataset, or None when none has a budget.

    Returns the axis (`SHOTS_AXIS` or `FRACTION_AXIS`) and one line per backbone
    x strategy (x series: other settings that differ), its points in budget order.
    On the shots axis a `shots=K` row is at K and a row on a fraction or on the
    whole split at the images per class its runs saw (its records' `data`); a
    row whose records do not say is left out. On the fraction axis the whole
    split is at 1.
    """
    done = [r for r in rows if r.accuracy is not None]
    budgets = [r.budget for r in done if r.budget is not None]
    if not budgets:
        return None
    shots = any(b.startswith("shots=") for b in budgets)
    lines: dict[str, list[BudgetPoint]] = {}
    for r in done:
        kind, _, value = (r.budget or "").partition("=")
        if shots:
            x = float(value) if kind == "shots" else r.images_per_class
        else:
            x = float(value) if kind == "fraction" else 1.0
        if x is None:
            continue
        name = f"{r.backbone} / {r.strategy}" + (f" ({r.series})" if r.series else "")
        point = BudgetPoint(x, r.accuracy, r.ci_low, r.ci_high, r.budget, r.n)
        lines.setdefault(name, []).append(point)
    for points in lines.values():
        points.sort(key=lambda p: p.x)
    return (SHOTS_AXIS if shots else FRACTION_AXIS), lines


def _styles(rows: list[Row]) -> tuple[dict[str, str], dict[str, str]]:
    colours = dict(STRATEGY_COLOURS)
    extra = iter(_OTHER_COLOURS * 10)
    for r in rows:
        if r.strategy not in colours:
            colours[r.strategy] = next(extra)
    backbones = sorted({r.backbone for r in rows})
    markers = {b: _MARKERS[i % len(_MARKERS)] for i, b in enumerate(backbones)}
    return colours, markers


def plot_comparison(
    rows: list[Row], records: list[dict[str, Any]], path: str | Path, *, title: str | None = None
) -> Path:
    """Draw the trade-off and the learning curves of `rows` into the image file `path`."""
    figure_class, canvas_class = _figure_class()
    path = check_image_path(path, "tradeoff.png", "--plot")
    groups = by_dataset(rows)
    if not groups:
        raise TlbenchError("nothing to plot: no rows")
    by_key = answer_by_key(records)  # the record each row shows, not merely the last one
    colours, markers = _styles(rows)

    budgets = {dataset: budget_lines(group) for dataset, group in groups.items()}
    searched = {dataset: sensitivity(records, group) for dataset, group in groups.items()}
    latency = any(r.latency_ms is not None for r in rows)
    budget_column = 3 if latency else 2
    # the first sensitivity panel's column
    first = budget_column + 1 if any(budgets.values()) else budget_column
    columns = first + max((len(s) for s in searched.values()), default=0)
    fig = figure_class(figsize=(7 * columns, 5.2 * len(groups)), dpi=110, layout="constrained")
    canvas = canvas_class(fig)
    if title:
        fig.suptitle(literal(title))
    axes = fig.subplots(len(groups), columns, squeeze=False)
    panels = []
    for (dataset, group), row_axes in zip(groups.items(), axes, strict=True):
        trade, curves = row_axes[:2]
        done = [r for r in group if r.accuracy is not None]
        panels.append((trade, done, TRAIN_AXIS))
        _draw_tradeoff(trade, dataset, group, done, colours, markers)
        _draw_curves(curves, dataset, done, by_key, colours, markers)
        if latency:
            timed = [r for r in done if r.latency_ms is not None]
            panels.append((row_axes[2], timed, LATENCY_AXIS))
            _draw_tradeoff(row_axes[2], dataset, group, timed, colours, markers, LATENCY_AXIS)
        if first > budget_column:
            found = budgets[dataset]
            if found is None:
                row_axes[budget_column].set_axis_off()  # this dataset has no budgets: no panel
            else:
                _draw_budgets(row_axes[budget_column], dataset, *found, group, colours, markers)
        names = sorted(searched[dataset])
        for i, ax in enumerate(row_axes[first:]):
            if i < len(names):
                _draw_sensitivity(
                    ax, dataset, names[i], searched[dataset][names[i]], colours, markers
                )
            else:
                ax.set_axis_off()
    # Labels go last, placed on the laid-out figure so that they do not collide.
    fig.draw_without_rendering()
    for ax, done, axis in panels:
        _label_points(ax, done, canvas.get_renderer(), axis)
    # That layout is final (the labels are left out of it): saving does not compute it
    # again, which took a fifth of a plot's time.
    fig.set_layout_engine("none")
    save_figure(fig, path, "--plot")
    return path


@dataclass(frozen=True)
class Trial:
    """One tuning trial that trained all its epochs: its cell, one setting, its score."""

    backbone: str
    strategy: str
    value: float
    validation_accuracy: float


def sensitivity(records: list[dict[str, Any]], rows: list[Row]) -> dict[str, list[Trial]]:
    """Searched hyperparameter -> the trials of the tuned cells among `rows` (one dataset).

    A cell's searched names are those its chosen settings name (`tuning.chosen`);
    a trial counts when it trained the chosen run's epochs (successive halving's
    shorter rungs are left out: their accuracies are of fewer epochs).
    """
    cells = {(r.dataset, r.backbone, r.strategy) for r in rows if r.search_seconds is not None}
    searched: dict[tuple[str, str, str], tuple[set[str], int]] = {}
    for r in records:
        tuning, config = r.get("tuning") or {}, r.get("config") or {}
        cell = (config.get("dataset"), config.get("backbone"), config.get("strategy"))
        if cell in cells and isinstance(tuning.get("chosen"), dict):
            epochs = (config.get("hyperparameters") or {}).get("epochs")
            searched[cell] = (set(tuning["chosen"]), epochs)
    out: dict[str, list[Trial]] = {}
    for r in records:
        config = r.get("config") or {}
        cell = (config.get("dataset"), config.get("backbone"), config.get("strategy"))
        if not config.get("holdout") or r.get("status") != "ok" or cell not in searched:
            continue
        names, epochs = searched[cell]
        hp = config.get("hyperparameters") or {}
        accuracy = (r.get("accuracy") or {}).get("final")
        stop = config.get("stop_epoch", hp.get("epochs"))
        if hp.get("epochs") != epochs or stop != epochs or not _finite(accuracy):
            continue
        for name in names:
            if _finite(hp.get(name)):
                out.setdefault(name, []).append(
                    Trial(cell[1], cell[2], float(hp[name]), float(accuracy))
                )
    return out


def _draw_sensitivity(
    ax: Any, dataset: str, name: str, trials: list[Trial], colours: dict, markers: dict
) -> None:
    """Validation top-1 of each trial against one searched hyperparameter."""
    if all(t.value > 0 for t in trials):
        ax.set_xscale("log")
    ax.set_xlabel(literal(name))
    ax.set_ylabel("top-1 % on the validation split (tuning trials)")
    ax.set_title(literal(f"{dataset}: sensitivity to {name}"))
    ax.grid(True, which="both", alpha=0.3)
    for t in trials:
        ax.plot(
            t.value,
            100 * t.validation_accuracy,
            markers.get(t.backbone, "o"),
            color=colours.get(t.strategy, "grey"),
            alpha=0.8,
            label=literal(f"{t.backbone} / {t.strategy}"),
        )
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize=7, loc="lower left")


def _draw_tradeoff(
    ax: Any,
    dataset: str,
    group: list[Row],
    done: list[Row],
    colours: dict,
    markers: dict,
    axis: CostAxis = TRAIN_AXIS,
) -> None:
    """Top-1 against `axis`'s cost, one point per row, and that cost's Pareto staircase."""

    def _x(row: Row) -> float:
        return axis.x(row)  # type: ignore[return-value] (`done` rows have it)

    ax.set_xscale("log")
    ax.set_xlabel(axis.label)
    ax.set_ylabel("top-1 % on the held-out split (final epoch)")
    ax.set_title(literal(f"{dataset}: {axis.title}"))
    ax.grid(True, which="both", alpha=0.3)
    missing = [r for r in group if r.accuracy is None]
    if missing:
        text = literal("\n".join(f"{r.label}: {r.status}" for r in missing[:6]))
        ax.text(0.01, 0.01, text, transform=ax.transAxes, fontsize=7, color="grey", va="bottom")
    if not done:
        return
    points = frontier(done, axis)
    on_front = set(points)
    for r in done:
        pareto = (_x(r), r.accuracy) in on_front
        ax.errorbar(
            _x(r),
            100 * r.accuracy,
            yerr=100 * r.accuracy_std if r.accuracy_std else None,
            fmt=markers[r.backbone],
            color=colours[r.strategy],
            markersize=9 if pareto else 7,
            markeredgecolor="black" if pareto else "none",
            capsize=3,
            zorder=3,
        )
    right = max(_x(r) for r in done) * 3
    if points:
        xs, ys = [p[0] for p in points], [100 * p[1] for p in points]
        # A staircase: the best accuracy reachable for at most that much training.
        ax.step(
            [*xs, right],
            [*ys, ys[-1]],
            where="post",
            color="black",
            alpha=0.6,
            linestyle="--",
            linewidth=1.2,
            zorder=2,
            label="Pareto frontier",
        )
        ax.legend(loc="lower right", fontsize=8)
    top = max(100 * (r.accuracy + (r.accuracy_std or 0)) for r in done)
    ax.set_ylim(bottom=max(0.0, min(100 * r.accuracy for r in done) - 10), top=min(105.0, top + 8))
    ax.set_xlim(min(_x(r) for r in done) / 2, right * 1.5)
    _plain_log_ticks(ax)


def _plain_log_ticks(ax: Any) -> None:
    """Log-axis ticks as plain numbers (2, 5, 10, 20), not 2x10^0: a narrow range such as
    3 to 15 ms would otherwise label every minor tick in mathtext, overlapping."""
    from matplotlib.ticker import FuncFormatter

    def plain(value: float, _: Any) -> str:
        text = f"{value:g}"
        return text if text.lstrip("0.")[:1] in ("1", "2", "5") else ""

    ax.xaxis.set_major_formatter(FuncFormatter(plain))
    ax.xaxis.set_minor_formatter(FuncFormatter(plain))


def _draw_curves(
    ax: Any, dataset: str, done: list[Row], by_key: dict, colours: dict, markers: dict
) -> None:
    styles = ["-", "--", "-.", ":"]
    seen: dict[tuple[str, str], int] = {}
    # A legend of hundreds of lines squeezes the axes to nothing: name the Pareto rows and
    # the most accurate others, up to MAX_LABELS; the rest draw without a legend entry.
    named = {id(r) for r in sorted(done, key=lambda r: (not r.pareto, -r.accuracy))[:MAX_LABELS]}
    for r in done:
        curve = mean_curve([by_key[k] for k in r.run_keys if k in by_key])
        if not curve:
            continue
        # Variants of one backbone x strategy share a colour and marker: the line style tells them apart.
        variant = seen[r.backbone, r.strategy] = seen.get((r.backbone, r.strategy), -1) + 1
        ax.plot(
            range(1, len(curve) + 1),
            [100 * v for v in curve],
            marker=markers[r.backbone],
            markersize=4,
            color=colours[r.strategy],
            label=literal(r.label) if id(r) in named else "_unnamed",
            linestyle=styles[variant % len(styles)],
            linewidth=2 if r.pareto else 1.2,
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("top-1 % on the held-out split")
    ax.set_title(literal(f"{dataset}: learning curves (mean over seeds)"))
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8, loc="lower right")


def _draw_budgets(
    ax: Any,
    dataset: str,
    axis: str,
    lines: dict[str, list[BudgetPoint]],
    rows: list[Row],
    colours: dict,
    markers: dict,
) -> None:
    """Mean top-1 against the budget, one line per backbone x strategy, 95% intervals as bars."""
    style_of = {
        f"{r.backbone} / {r.strategy}" + (f" ({r.series})" if r.series else ""): r for r in rows
    }
    styles = ["-", "--", "-.", ":"]
    seen: dict[tuple[str, str], int] = {}
    for i, (name, points) in enumerate(lines.items()):
        row = style_of[name]
        variant = seen[row.backbone, row.strategy] = seen.get((row.backbone, row.strategy), -1) + 1
        xs = [p.x for p in points]
        ys = [100 * p.accuracy for p in points]
        # An interval missing (one seed, no image count) draws no bar rather than a false one.
        below = [100 * (p.accuracy - p.low) if p.low is not None else 0.0 for p in points]
        above = [100 * (p.high - p.accuracy) if p.high is not None else 0.0 for p in points]
        ax.errorbar(
            xs,
            ys,
            yerr=[below, above],
            marker=markers[row.backbone],
            markersize=5,
            color=colours[row.strategy],
            linestyle=styles[variant % len(styles)],
            capsize=3,
            label=literal(name) if i < MAX_LABELS else "_unnamed",
        )
    xs = sorted({p.x for points in lines.values() for p in points})
    if axis == SHOTS_AXIS and len(xs) > 1 and xs[0] > 0:
        ax.set_xscale("log")  # 1, 5, 10 and a few hundred shots: a log axis spreads them
        from matplotlib.ticker import NullFormatter

        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.xaxis.set_minor_formatter(NullFormatter())  # the budgets run label their own ticks
    ax.set_xlabel(axis + (", log scale" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel("top-1 % on the held-out split (mean, 95% interval)")
    ax.set_title(literal(f"{dataset}: accuracy against the data budget"))
    ax.grid(True, which="both", alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8, loc="lower right")


#: where a label may go relative to its point (points), in order of preference.
_LABEL_OFFSETS = [
    (6, 4, "left"),
    (6, -13, "left"),
    (-6, 4, "right"),
    (-6, -13, "right"),
    (6, 16, "left"),
    (6, -25, "left"),
    (-6, 16, "right"),
    (-6, -25, "right"),
]


def _label_points(ax: Any, done: list[Row], renderer: Any, axis: CostAxis = TRAIN_AXIS) -> None:
    """A label per point, at the first nearby place that overlaps no label, point or legend."""

    def _x(row: Row) -> float:
        return axis.x(row)  # type: ignore[return-value]

    area = ax.get_window_extent(renderer)
    taken = [ax.transData.transform((_x(r), 100 * r.accuracy)) for r in done]
    from matplotlib.transforms import Bbox

    placed = [Bbox.from_extents(x - 6, y - 6, x + 6, y + 6) for x, y in taken]
    legend = ax.get_legend()
    if legend is not None:
        placed.append(legend.get_window_extent(renderer))
    # Pareto rows first: their labels matter most and get the best places. Beyond
    # MAX_LABELS the rest stay unlabelled: placing hundreds takes minutes and reads as ink.
    for r in sorted(done, key=lambda r: (not r.pareto, -r.accuracy))[:MAX_LABELS]:
        fallback = None
        for dx, dy, ha in _LABEL_OFFSETS:
            label = ax.annotate(
                literal(r.label),
                (_x(r), 100 * r.accuracy),
                xytext=(dx, dy),
                textcoords="offset points",
                ha=ha,
                fontsize=8,
                fontweight="bold" if r.pareto else "normal",
            )
            label.set_in_layout(False)
            box = label.get_window_extent(renderer)
            inside = (
                area.x0 <= box.x0 and box.x1 <= area.x1 and area.y0 <= box.y0 and box.y1 <= area.y1
            )
            if inside and not any(box.overlaps(other) for other in placed):
                placed.append(box)
                if fallback is not None:
                    fallback.remove()
                break
            if fallback is None:
                fallback = label  # kept if no place is free
            else:
                label.remove()
        else:
            placed.append(fallback.get_window_extent(renderer))
