"""tlbench from Python: run a grid, read results, list and build backbones.

The front door for notebooks and scripts (docs/api.md), re-exported from
`tlbench`:

    import tlbench
    results = tlbench.run(backbones=["efficientnet_lite0", "small_cnn"],
                          datasets=["synthetic"], strategies=["linear"], epochs=2)
    print(results.table())
    df = results.to_pandas()

`run` accepts every option of `tlbench run` as a keyword (the names of
`tlbench.config.RunConfig` and of the hyperparameters, as the CLI flags
without `--` and with `_`), so the two cannot drift apart. Importing this
module imports neither torch nor pandas; they load when a grid runs or a
frame is asked for.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from tlbench import select as selection
from tlbench.record import RunRecord, flat_record

if TYPE_CHECKING:
    import pandas
    from torch import nn

    from tlbench.comparison import Comparison
    from tlbench.plugins import Plugins
    from tlbench.report import Row
    from tlbench.select import Selections

#: keywords of `run` that are not settings of the grid itself.
_API_ONLY = ("config", "progress", "plugins")


def run_options() -> list[str]:
    """Every option `run` accepts besides the grid: RunConfig's fields and the hyperparameters."""
    from tlbench.config import options

    return sorted({*(s.name for s in options()), *_API_ONLY})


def _typed(key: str, value: Any, caller: str = "tlbench.run") -> Any:
    """A keyword's value checked against its field type: "a,b" and 0 become lists as in TOML."""
    from tlbench.config import _check_type, options

    field_type = next(s.type for s in options() if s.name == key)
    if isinstance(value, tuple):
        value = list(value)
    if key == "shots":  # shots=5 or [1, 5] as the flag's "1,5"
        value = [value] if isinstance(value, int) and not isinstance(value, bool) else value
        if isinstance(value, list):
            value = [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
    return _check_type(value, field_type, f"{caller}({key}=...)")


def config_from_keywords(
    config: str | os.PathLike | None,
    out: str | None,
    keywords: dict[str, Any],
    caller: str = "tlbench.run",
) -> Any:
    """The run config of `caller`'s keywords (`tlbench.run`, `tlbench.select`): unknown
    ones raise TypeError with the close match, values are typed and checked."""
    from tlbench.config import make_config, options, renamed_settings

    keywords = renamed_settings(keywords, lambda name: f"{name}=", f"{caller}()")
    known = {s.name for s in options()}
    for key in keywords:
        if key not in known:
            close = difflib.get_close_matches(key, [*known, *_API_ONLY], n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise TypeError(
                f"{caller}() got an unknown option {key!r}.{hint} "
                "tlbench.run_options() lists them all"
            )
    flags = {k: _typed(k, v, caller) for k, v in keywords.items() if v is not None}
    if out is not None:
        flags["out"] = os.fspath(out)
    return make_config(os.fspath(config) if config is not None else None, **flags)


def results_path(out: str | os.PathLike | None, stack: contextlib.ExitStack) -> str:
    """`out`, or (None) a file in a temporary folder removed when `stack` closes."""
    if out is not None:
        return os.fspath(out)
    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="tlbench-run-"))
    return str(Path(folder) / "runs.jsonl")


def _progress(progress: bool) -> Any:
    """The console observer: live bars in a terminal or notebook, plain lines elsewhere."""
    if not progress:
        return None
    from rich.console import Console

    from tlbench import console

    return console.make_progress(Console(), notebook=True)


def run(
    backbones: str | Sequence[str] | None = None,
    datasets: str | Sequence[str] | None = None,
    strategies: str | Sequence[str] | None = None,
    seeds: int | Sequence[int] | None = None,
    *,
    out: str | os.PathLike | None = None,
    config: str | os.PathLike | None = None,
    progress: bool = True,
    log_to: str | Sequence[str] | None = None,
    plugins: Plugins | None = None,
    **options: Any,
) -> Results:
    """Train every backbone x dataset x strategy x seed; returns the grid's records.

    Every option of `tlbench run` is a keyword (`epochs=`, `image_size=`,
    `device=`, `executor=`, `force=`, ...; `tlbench.run_options()` lists
    them); a list may also be given as "a,b" or one value. `config` reads a
    TOML file first, keywords override it. Unknown keywords raise TypeError
    naming the close match; bad values raise `tlbench.ConfigError`, unknown
    names `tlbench.UnknownNameError`, all before any training.

    `out=None` (the default) keeps no results file: the records live in the
    returned `Results` only (they pass through a temporary file that is
    removed), so nothing resumes. With `out="results/runs.jsonl"` the records
    are appended there and rerunning skips what is done, as on the command line.

    `progress=True` shows live bars in a terminal or notebook (plain lines
    when neither); `progress=False` is silent. `log_to=["mlflow"]` also
    records every run in these trackers (docs/trackers.md); without `out`
    they write in the current folder.

    Advanced: `plugins=` runs with a `tlbench.Plugins` of your own (a plugin
    under development, a test plugin) instead of the installed ones.
    """
    from tlbench.grid import Grid

    grid = {"backbones": backbones, "datasets": datasets, "strategies": strategies, "seeds": seeds}
    with contextlib.ExitStack() as stack:
        path = results_path(out, stack)
        # `out` beats a config file's: with out=None, nothing outlives the call.
        cfg = config_from_keywords(config, path, {**grid, "log_to": log_to, **options})
        driver = stack.enter_context(
            Grid(
                cfg,
                plugins,
                progress=lambda: _progress(progress),
                trackers_beside_results=out is not None,
            )
        )
        # As `tlbench run` reports: every run of this grid, those already done included.
        records = driver.run().answers()
        return Results(records, source=None if out is None else Path(cfg.out))
    raise AssertionError("unreachable")  # pragma: no cover - ExitStack does not swallow


def select(
    backbones: str | Sequence[str] | None = None,
    datasets: str | Sequence[str] | None = None,
    seeds: int | Sequence[int] | None = None,
    *,
    rank_by: str = "probe",
    top_k: int = 1,
    finalist: str = "finetune",
    max_latency_ms: float | None = None,
    out: str | os.PathLike | None = None,
    config: str | os.PathLike | None = None,
    progress: bool = True,
    log_to: str | Sequence[str] | None = None,
    plugins: Plugins | None = None,
    **options: Any,
) -> Selections:
    """Pick a backbone in two stages, as `tlbench select` does (`tlbench.select(...)`).

    Stage 1 probes every backbone (`linear` on cached features, with LogME,
    k-NN and H-score recorded); stage 2 trains the `top_k` by `rank_by`
    (probe, logme, knn_accuracy, h_score or params) with `finalist`
    (finetune, lp-ft, ...), among the backbones whose batch-1 inference latency is
    at most `max_latency_ms` where one is given. Every other keyword is one of `run`'s (`epochs=`,
    `image_size=`, `device=`, ...; not `strategies`), and `out`, `config`,
    `progress`, `log_to` and `plugins` mean what they mean there: `out=None`
    keeps no results file. Returns `tlbench.select.Selections`.
    """
    from tlbench.grid import Grid

    if "strategies" in options:
        raise TypeError("tlbench.select() picks its own strategies (linear, then finalist)")
    if rank_by not in selection.RANK_BY:
        raise ValueError(f"rank_by must be one of {', '.join(selection.RANK_BY)}, not {rank_by!r}")
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, not {top_k}")
    if max_latency_ms is not None and not max_latency_ms > 0:
        raise ValueError(f"max_latency_ms must be above 0, not {max_latency_ms}")
    grid_keywords = {"backbones": backbones, "datasets": datasets, "seeds": seeds}
    with contextlib.ExitStack() as stack:
        path = results_path(out, stack)
        keywords = {**grid_keywords, "log_to": log_to, **options}
        cfg = config_from_keywords(config, path, keywords, "tlbench.select")
        driver = stack.enter_context(
            Grid(
                cfg,
                plugins,
                progress=lambda: _progress(progress),
                finalists=[finalist],
                trackers_beside_results=out is not None,
            )
        )
        stages = selection.two_stages(
            driver,
            rank_by=rank_by,
            top_k=top_k,
            finalist=finalist,
            max_latency_ms=max_latency_ms,
        )
        records = stages.probes.answers() + stages.finals.answers()
        found = Results(records, source=None if out is None else Path(cfg.out))
        return selection.Selections(stages.selections, found, stages.checks)
    raise AssertionError("unreachable")  # pragma: no cover - ExitStack does not swallow


# `tlbench.select(...)`: the select module is callable, and calls this.
selection.front_door = select


def _plugins() -> Plugins:
    from tlbench.plugins import Plugins

    return Plugins()


def load_results(*paths: str | os.PathLike, history: bool = False) -> Results:
    """The records of one or more results files, as `tlbench report` reads them.

    By default one record per run (its answer: the newest "ok" record, else
    the newest), like the report; `history=True` keeps every record in file
    order (reruns, interruptions). A missing file raises FileNotFoundError.
    """
    from tlbench import results as results_file

    if not paths:
        raise TypeError("load_results() needs at least one results file")
    for path in paths:
        if not Path(path).expanduser().is_file():
            raise FileNotFoundError(f"results file {os.fspath(path)} does not exist")
    records = results_file.read([Path(p).expanduser() for p in paths])
    if not history:
        records = list(results_file.answer_by_key(records).values())
    return Results(records, source=Path(paths[0]) if len(paths) == 1 else None)


def list_backbones(pattern: str | None = None, *, plugins: Plugins | None = None) -> list[str]:
    """Backbone names, with wildcards: `list_backbones("efficientnet*")`."""
    return (plugins or _plugins()).backbones.names(pattern)


def list_datasets(pattern: str | None = None, *, plugins: Plugins | None = None) -> list[str]:
    """Dataset names (`imagefolder` takes its path after a colon)."""
    return (plugins or _plugins()).datasets.names(pattern)


def list_strategies(pattern: str | None = None, *, plugins: Plugins | None = None) -> list[str]:
    """Strategy names: scratch, linear, finetune and the plugins'."""
    return (plugins or _plugins()).strategies.names(pattern)


def create_backbone(
    name: str,
    pretrained: bool = True,
    *,
    num_classes: int | None = None,
    plugins: Plugins | None = None,
) -> nn.Module:
    """The backbone `name` as an `nn.Module` mapping images to features (timm's create_model style).

    Input: a float batch (B, 3, H, W) normalised with the backbone's
    preprocessing; output: features (B, feature_dim). The module carries the
    registered `tlbench.Backbone` as `.tlbench_backbone` (feature width,
    preprocessing, weights). An unknown name raises `tlbench.UnknownNameError`
    with the close matches; `pretrained=True` for a backbone without weights
    raises `tlbench.WeightsUnavailableError`.

    `num_classes=N` (N > 0), as in timm: a classifier instead, the backbone then a new
    linear head with N outputs (`module.backbone`, `module.head`), mapping the same
    input to logits `(B, N)`. `num_classes=0` or None: the features alone.
    """
    from tlbench.errors import WeightsUnavailableError

    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0
    ):
        raise ValueError(f"num_classes must be a whole number, 0 or more, not {num_classes!r}")

    backbone = (plugins or _plugins()).backbones.get(name)
    if pretrained and not backbone.has_pretrained:
        raise WeightsUnavailableError(
            f"backbone {backbone.name!r} has no pretrained weights; "
            "use create_backbone(name, pretrained=False) for a random initialisation"
        )
    module = backbone.build(pretrained)
    if num_classes:
        from collections import OrderedDict

        from torch import nn

        head = nn.Linear(backbone.feature_dim, num_classes)
        module = nn.Sequential(OrderedDict(backbone=module, head=head))
        module.num_classes = num_classes
    module.tlbench_backbone = backbone
    return module


def load_model(path: str | os.PathLike, *, plugins: Plugins | None = None) -> nn.Module:
    """A checkpoint of `tlbench run --save-models` as a ready classifier, in eval mode.

    `path`: the `.safetensors` weights, their `.json` sidecar or an older `.pt`
    (`tlbench models` lists them). The module maps images in [0, 1],
    `(B, 3, S, S)`, to logits over `module.classes` (it normalises them with the
    backbone's mean and std itself); `module.transform(image)` makes that input
    from a PIL image or an image file, as the evaluation split did
    (`torch.stack` them for a batch); `module.image_size` is S and
    `module.checkpoint` the sidecar's fields (backbone, strategy, dataset, key,
    best accuracy...). A file that is not a whole tlbench checkpoint raises
    `tlbench.TlbenchError` saying why.
    """
    from tlbench.checkpoint import build_model, checkpoint_preprocessing, load_checkpoint
    from tlbench.predict import EvalTransform

    checkpoint = load_checkpoint(path)
    model = build_model(checkpoint, plugins or _plugins())
    model.transform = EvalTransform(checkpoint["image_size"], checkpoint_preprocessing(checkpoint))
    model.classes = list(checkpoint["classes"])
    model.image_size = checkpoint["image_size"]
    model.checkpoint = {k: v for k, v in checkpoint.items() if k != "state_dict"}
    return model.eval()


# --------------------------------------------------------------------------- results


class PlotImage:
    """A comparison plot held in memory as PNG bytes; notebooks show it inline."""

    def __init__(self, png: bytes):
        self.png = png

    def _repr_png_(self) -> bytes:
        return self.png

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.write_bytes(self.png)
        return path


class Results(Sequence[RunRecord]):
    """Run records (`tlbench.record.RunRecord` dicts) with the report's views.

    A sequence: `len(results)`, `results[0]`, `for record in results`;
    slicing and the filters return `Results`. `table()` is the comparison
    `tlbench run` and `tlbench report` print, `to_pandas()` one row per run,
    `plot()` the accuracy-against-cost figure; in a notebook the object shows
    itself as the HTML comparison.
    """

    def __init__(
        self, records: Iterable[RunRecord | dict[str, Any]], *, source: Path | None = None
    ):
        self._records: list[RunRecord] = [dict(r) for r in records]  # type: ignore[misc]
        #: the results file they came from or were appended to; None when kept in memory.
        self.source = source

    # -- sequence
    def __len__(self) -> int:
        return len(self._records)

    @overload
    def __getitem__(self, index: int) -> RunRecord: ...
    @overload
    def __getitem__(self, index: slice) -> Results: ...
    def __getitem__(self, index: int | slice) -> RunRecord | Results:
        if isinstance(index, slice):
            return Results(self._records[index], source=self.source)
        return self._records[index]

    def __iter__(self) -> Iterator[RunRecord]:
        return iter(self._records)

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for r in self._records:
            counts[str(r.get("status"))] = counts.get(str(r.get("status")), 0) + 1
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        where = f" from {self.source}" if self.source else ""
        return f"<tlbench.Results: {len(self)} runs ({summary or 'none'}){where}>"

    # -- filters
    def where(self, predicate: Callable[[RunRecord], bool] | None = None, **fields: Any) -> Results:
        """Records matching every `field=value` (config fields and `status`) and the predicate.

        `results.where(strategy="linear", backbone="small_cnn")`; a value may
        be a list of accepted values: `where(strategy=["linear", "finetune"])`.
        """

        def value(record: RunRecord, name: str) -> Any:
            if name in ("status", "key", "reason"):
                return record.get(name)
            return (record.get("config") or {}).get(name)

        def accepts(expected: Any, actual: Any) -> bool:
            if isinstance(expected, (list, tuple, set, frozenset)):
                return actual in expected
            return actual == expected

        kept = [
            r
            for r in self._records
            if all(accepts(v, value(r, k)) for k, v in fields.items())
            and (predicate is None or predicate(r))
        ]
        return Results(kept, source=self.source)

    @property
    def ok(self) -> Results:
        """The runs that finished."""
        return self.where(status="ok")

    @property
    def failed(self) -> Results:
        """The runs that failed (the reason is in each record's `reason`)."""
        return self.where(status="failed")

    # -- views
    def rows(self, sort: str = "accuracy") -> list[Row]:
        """The comparison rows (`tlbench.report.Row`: seeds aggregated, Pareto marked)."""
        from tlbench import report

        if sort not in report.SORT_KEYS:
            raise ValueError(f"sort must be one of {', '.join(report.SORT_KEYS)}, not {sort!r}")
        return report.sort_rows(report.summarize(self._records), sort)

    def table(
        self, fmt: str = "table", *, sort: str = "accuracy", group_by: str = "dataset"
    ) -> str:
        """The comparison as text, as `tlbench report --format FMT` writes it.

        `fmt`: table (plain text), markdown, csv, json, html or latex; one
        row per backbone x strategy (seeds aggregated: mean ± std, n), the
        Pareto-optimal rows marked. `print(results.table())`.
        """
        from tlbench import report, tables

        if group_by not in report.GROUP_KEYS:
            raise ValueError(
                f"group_by must be one of {', '.join(report.GROUP_KEYS)}, not {group_by!r}"
            )
        return tables.render(self.rows(sort), fmt, group_by)

    def to_pandas(self) -> pandas.DataFrame:
        """One row per run, flat columns with units in their names (see `flat_record`).

        Needs pandas (`pip install pandas`).
        """
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "Results.to_pandas() needs pandas, which is not installed: pip install pandas"
            ) from None
        from tlbench import report

        # The table's "train s": a probe whose features came from the cache is charged
        # what making them cost (`report.train_cost_seconds`), as in the table.
        extraction = report._extraction_seconds(self._records)
        rows = []
        for r in self._records:
            row = flat_record(r)
            ok = r.get("status") == "ok" and isinstance(r.get("cost"), dict)
            row["train_cost_seconds"] = report.train_cost_seconds(r, extraction) if ok else None
            rows.append(row)
        columns = list(flat_record({}))
        columns.insert(columns.index("train_seconds") + 1, "train_cost_seconds")
        for row in rows:  # hyperparameters a plugin's strategy adds, in order of appearance
            columns += [c for c in row if c not in columns]
        return pd.DataFrame(rows, columns=columns)

    def curves(self) -> list[dict[str, Any]]:
        """Every epoch of every run: one dict per (run, epoch) with the run's names."""
        out = []
        for r in self._records:
            c = r.get("config") or {}
            curve = (r.get("accuracy") or {}).get("curve") or r.get("partial_curve") or []
            names = {k: c.get(k) for k in ("backbone", "dataset", "strategy", "seed")}
            out += [{"key": r.get("key"), **names, **point} for point in curve]
        return out

    def plot(self, path: str | os.PathLike | None = None, *, title: str | None = None) -> Any:
        """The accuracy-against-cost plot and the learning curves (`tlbench report --plot`).

        With `path` the figure is written there (png, svg, pdf, ... by its
        suffix) and the path returned; without, a `PlotImage` (PNG bytes) that
        a notebook shows inline and `.save(path)` writes. Needs matplotlib
        (`pip install 'tlbench[plot]'`).
        """
        from tlbench.plot import plot_comparison

        if path is not None:
            return plot_comparison(self.rows(), self._records, path, title=title)
        with tempfile.TemporaryDirectory(prefix="tlbench-plot-") as folder:
            written = plot_comparison(
                self.rows(), self._records, Path(folder) / "tradeoff.png", title=title
            )
            return PlotImage(written.read_bytes())

    def _repr_html_(self) -> str:
        import html

        from tlbench.htmlreport import render_fragment

        head = f"<p><b>{html.escape(repr(self))}</b></p>"
        if not self._records:
            return head
        return head + render_fragment(self.rows())  # the styled tables of the --html page


# --------------------------------------------------------------------------- compare and models


def _records_of(source: Any) -> list[dict[str, Any]]:
    """Records from a results file, a list of files, a `Results` or an iterable of records."""
    from tlbench.comparison import read_records

    if isinstance(source, (str, os.PathLike)):
        source = [source]
    items = list(source)
    if items and all(isinstance(i, (str, os.PathLike)) for i in items):
        return [r for path in items for r in read_records(path)]
    return [dict(r) for r in items]


def compare(base: Any, new: Any, *, fail_if_worse: float | None = None) -> Comparison:
    """Every cell of `base` against `new`, as `tlbench compare BASE NEW` (docs/api.md).

    Each of `base` and `new` is a results file (or a pytest-benchmark JSON file of
    `tlbench.testing.benchmark_grid`), a list of them, a `Results` or records. The answer's `cells` hold per cell the top-1 difference NEW - BASE
    with a 95% paired interval, the cost ratio and a verdict; `failing` the
    cells worse by more than `fail_if_worse` points (default 1) or that failed
    in NEW; `ok` is True when there are none.
    """
    from tlbench import comparison

    points = comparison.FAIL_IF_WORSE_POINTS if fail_if_worse is None else fail_if_worse
    found = comparison.compare(_records_of(base), _records_of(new), fail_if_worse=points)
    for side, given in (("base", base), ("new", new)):
        if isinstance(given, (str, os.PathLike)):
            setattr(found, side, [os.fspath(given)])
    return found
