"""The comparison table as text: its columns, each row's cells, and every format.

`tlbench.report` makes the rows (`summarize`); this module lays them out:
which columns a table shows (`choose_columns`: the default set, `--columns`,
`--wide`, and the columns a row brings when it has a value), each row's
cells (`row_cells`), and `render` in each format `tlbench report --format`
writes (terminal table, markdown, csv, json, html, latex), with the legend
that says what each column means.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from tlbench.report import NAME_COLUMNS, Row, group_rows
from tlbench.textblocks import paragraph, section

FORMATS = ("table", "markdown", "csv", "json", "html", "latex")


LEGEND = (
    "top-1: final epoch on the held-out split, mean ± std over seeds (n) [95% confidence "
    "interval: Student t over seeds, or a bootstrap over the evaluation images for one seed]. "
    "train s: feature extraction + training (no decoding, no eval). "
    "latency ms: one image at a time, median; infer img/s: at the serving batch "
    "(the run's device and precision, warm-up excluded). "
    "train J, J/1k img: energy of the training and of 1,000 inferences, where the device "
    "has a counter (NVML on NVIDIA GPUs, RAPL on CPUs). "
    "pareto *: no other row of the dataset is both more accurate and cheaper to train "
    "(a tuned row's cost includes its search). "
    "tie =: the best row, and rows that cannot be told apart from it (95%: paired t over the "
    "seeds both ran; for single runs, a paired bootstrap over the evaluation images where the "
    "records hold per-image results; otherwise not compared)."
)


#: what the Pareto sentence of the legend says for each `PARETO_BY`.
_PARETO_WORDS = {
    "train": "cheaper to train (a tuned row's cost includes its search)",
    "latency": "faster to answer one image (latency ms; rows not measured are never marked)",
    "energy": "cheaper in training energy (rows not measured are never marked)",
}


def legend(pareto_by: str = "train") -> str:
    """The legend under a report whose Pareto mark weighs accuracy against `pareto_by`."""
    return LEGEND.replace(_PARETO_WORDS["train"], _PARETO_WORDS[pareto_by])


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


def _milliseconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:,.0f}"


METRIC_COLUMNS = [
    "top-1 %",
    "n",
    "best ep",
    "train s",
    "img/s",
    "peak MB",
    "latency ms",
    "infer img/s",
    "train J",
    "J/1k img",
    "trainable / total",
    "vs scratch",
    "pareto",
    "tie",
    "note",
]


#: the columns when grouped by dataset (the usual view).
COLUMNS = ["backbone", "strategy", *METRIC_COLUMNS]


def columns(group_by: str = "dataset") -> list[str]:
    """Header of a section: the names the section does not fix, then the metrics."""
    return [c for c in NAME_COLUMNS if c != group_by] + METRIC_COLUMNS


#: columns a section shows only where some row has a value: records made before inference
#: was measured (or with --no-inference) have none.
WHEN_PRESENT = ("latency ms", "infer img/s", "train J", "J/1k img")


def section_cells(group: list[Row], group_by: str = "dataset") -> tuple[list[str], list[list[str]]]:
    """The header and the cells of one section, without `WHEN_PRESENT` columns it leaves empty."""
    header = columns(group_by)
    cells = [row_cells(r, group_by) for r in group]
    keep = [
        i
        for i, name in enumerate(header)
        if name not in WHEN_PRESENT or any(row[i] for row in cells)
    ]
    return [header[i] for i in keep], [[row[i] for i in keep] for row in cells]


def row_cells(row: Row, group_by: str = "dataset") -> list[str]:
    names = [
        row.section if c == "dataset" else getattr(row, c) for c in NAME_COLUMNS if c != group_by
    ]
    if row.variant:
        names[-1] = f"{names[-1]} ({row.variant})"
    if row.accuracy is None:
        return [*names, *[""] * (len(METRIC_COLUMNS) - 1), f"{row.status}: {row.reason}"]
    acc = _pct(row.accuracy)
    if row.accuracy_std is not None:
        acc += f" ± {_pct(row.accuracy_std)}"
    if row.ci_low is not None and row.ci_high is not None:
        acc += f" [{_pct(row.ci_low)}, {_pct(row.ci_high)}]"
    gain = "" if row.gain_over_scratch is None else f"{100 * row.gain_over_scratch:+.1f}"
    notes = ["features cached"] if row.features_cached else []
    if row.export not in (None, "ok"):
        notes.append(f"onnx: {row.export}")
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
        _milliseconds(row.latency_ms),
        "" if row.inference_images_per_s is None else f"{row.inference_images_per_s:,.0f}",
        "" if row.train_energy_j is None else f"{row.train_energy_j:,.0f}",
        "" if row.inference_j_per_1000 is None else f"{row.inference_j_per_1000:,.1f}",
        f"{_params(row.trainable_params)} / {_params(row.total_params)}",
        gain,
        "*" if row.pareto else "",
        "=" if row.tie else "",
        "; ".join(notes),
    ]


#: the image-size column: shown by default in a section whose rows differ in size.
SIZE_COLUMN = "px"


#: what the terminal table shows without `--columns` or `--wide`, after the names:
#: chosen so the default table fits 100 characters (notes go below it as footnotes).
DEFAULT_COLUMNS = ("top-1 %", "n", "train s", "vs scratch", "pareto", "tie", "note")


#: columns the default table shows too when some row of the section has a value (before
#: the marks), and the table still fits: what a comparison of inference cost needs.
DEFAULT_WHEN_PRESENT = ("latency ms",)


@dataclass(frozen=True)
class ExtraColumn:
    """A column beyond `METRIC_COLUMNS`, added with `add_column` (e.g. inference latency)."""

    name: str
    #: the cell of a row: "" when the row has no value.
    cell: Callable[[Row], str]
    #: shown in the default table when some row of the section has a value.
    default: bool = False
    align: str = "right"


#: columns added by `add_column`, in the order they were added.
EXTRA_COLUMNS: dict[str, ExtraColumn] = {}


def add_column(
    name: str, cell: Callable[[Row], str], *, default: bool = False, align: str = "right"
) -> None:
    """Offer a column to the terminal table: with `--columns NAME` or `--wide`, and in the
    default table too when `default` and some row has a value. Adding a name again
    replaces it (a module reloaded)."""
    if name in (*NAME_COLUMNS, *METRIC_COLUMNS, SIZE_COLUMN):
        raise ValueError(f"column {name!r} exists already")
    EXTRA_COLUMNS[name] = ExtraColumn(name, cell, default, align)


def column_names() -> list[str]:
    """Every column `--columns` accepts, in table order (the names are always shown)."""
    return [SIZE_COLUMN, *METRIC_COLUMNS[:-1], *EXTRA_COLUMNS, "note"]


def check_columns(wanted: Iterable[str]) -> list[str]:
    """`--columns` as given, checked: an unknown name is a ValueError with the close match."""
    import difflib

    known = column_names()
    out = []
    for name in wanted:
        name = name.strip()
        if name in NAME_COLUMNS:
            continue  # always shown
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown column {name!r}{hint}; choose from {', '.join(known)}")
        out.append(name)
    return out


def sizes_differ(rows: Iterable[Row]) -> bool:
    """Whether rows with a result were trained at more than one image size."""
    return len({r.image_size for r in rows if r.accuracy is not None}) > 1


def choose_columns(
    group: list[Row],
    group_by: str = "dataset",
    wanted: Iterable[str] | None = None,
    *,
    wide: bool = False,
    full: list[list[str]] | None = None,
) -> list[str]:
    """The columns of one section: its names, then `wanted` (`--columns`), or every column
    (`wide`), or the default (`DEFAULT_COLUMNS`, the image size where rows differ in it,
    and added columns that ask to be shown and have values). `full`: the rows'
    `row_cells`, where the caller has them already."""
    names = [c for c in NAME_COLUMNS if c != group_by]
    if wanted is not None:
        return names + check_columns(wanted)
    has = {n for n, c in EXTRA_COLUMNS.items() if any(c.cell(r) for r in group)}
    if wide:
        extra = [n for n in EXTRA_COLUMNS if n in has]
        return [*names, SIZE_COLUMN, *METRIC_COLUMNS[:-1], *extra, "note"]
    size = [SIZE_COLUMN] if sizes_differ(group) else []
    extra = [n for n, c in EXTRA_COLUMNS.items() if c.default and n in has]
    metrics = columns(group_by)
    present = [name for name in DEFAULT_WHEN_PRESENT if name in metrics]
    if present:
        full = full if full is not None else [row_cells(r, group_by) for r in group]
        for name in present:
            i = metrics.index(name)
            if any(cells[i] for cells in full):
                extra.insert(0, name)
    return names + size + [*DEFAULT_COLUMNS[:4], *extra, *DEFAULT_COLUMNS[4:]]


def cells_of(
    row: Row, names: list[str], group_by: str = "dataset", full: list[str] | None = None
) -> list[str]:
    """A row's cells for the columns `names` (as `choose_columns` gives them); `full`: its
    `row_cells`, where the caller has them already."""
    full = full if full is not None else row_cells(row, group_by)
    known = dict(zip(columns(group_by), full, strict=True))
    known[SIZE_COLUMN] = "" if row.image_size is None else str(row.image_size)
    return [
        known[n] if n in known else EXTRA_COLUMNS[n].cell(row) if n in EXTRA_COLUMNS else ""
        for n in names
    ]


def terminal_cells(
    group: list[Row],
    group_by: str = "dataset",
    wanted: Iterable[str] | None = None,
    *,
    wide: bool = False,
) -> tuple[list[str], list[list[str]]]:
    """The terminal table of one section: `choose_columns` and each row's `cells_of`, from
    one `row_cells` per row."""
    full = [row_cells(r, group_by) for r in group]
    names = choose_columns(group, group_by, wanted, wide=wide, full=full)
    return names, [cells_of(r, names, group_by, f) for r, f in zip(group, full, strict=True)]


def _safe(text: str, fmt: str) -> str:
    """A name or reason as one line that cannot break the table or heading it is in.

    Names come from users' paths and plugins: a newline would end a markdown row
    or a LaTeX comment (and start a command), a `|` would split a markdown
    cell, and `<tag>` would be HTML in rendered markdown. (tabulate escapes
    html and latex cells itself.)
    """
    text = " ".join(text.splitlines())
    if fmt == "markdown":
        text = text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    return text


def _meaningful(value: Any) -> Any:
    """A float as far as it means something: 6 significant digits (`0.8500000238418579`, a
    float32 accuracy, is 0.85; 126.27711672999976 seconds is 126.277); the rest as it is."""
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.6g}")
    return value


def render(
    rows: list[Row],
    fmt: str,
    group_by: str = "dataset",
    checks: list[Any] | None = None,
    *,
    pareto_by: str = "train",
) -> str:
    """Rows as text: table (plain), markdown, csv, json, html or latex.

    csv and json hold every field of every row, unformatted (fractions, seconds,
    bytes as MB), one list for all groups; the others are one table per group.

    `checks` (`tlbench.select.report_checks`: how well each transferability
    score, the probe and parameter count rank the fine-tuned backbones) follow
    the tables in the text formats. In json, with checks, the output is
    `{"rows": [...], "ranking_checks": [...]}` instead of the list of rows
    (a results file without a full grid keeps the plain list). csv is one
    table of rows and leaves them out.
    """
    if fmt == "json":
        data = [asdict(r) for r in rows]
        if checks:
            from tlbench.ranking import as_records

            return json.dumps({"rows": data, "ranking_checks": as_records(checks)}, indent=2) + "\n"
        return json.dumps(data, indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        fields = list(Row.__dataclass_fields__)
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow(
                {
                    k: (
                        ";".join(map(str, v))
                        if isinstance(v, list)
                        else json.dumps({k: _meaningful(x) for k, x in v.items()}, sort_keys=True)
                        if isinstance(v, dict)
                        else _meaningful(v)
                    )
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
        header, cells = section_cells(group, group_by)
        cells = [[_safe(c, fmt) for c in row] for row in cells]
        colalign = ["left" if c in (*NAME_COLUMNS, "note") else "right" for c in header]
        table = (fmt == "markdown" and _pipe_table(header, cells, colalign)) or tabulate(
            cells,
            headers=header,
            tablefmt=tablefmt,
            disable_numparse=True,  # cells are formatted already ("85.0 ± 1.2", "1,234")
            colalign=colalign,
        )
        heading = _safe(f"{group_by}: {title}" if group_by != "none" else title, fmt)
        parts.append(section(heading, table, fmt))
    footer = paragraph(legend(pareto_by), fmt)
    if checks:
        from tlbench.ranking import render_checks

        footer += "\n\n" + render_checks(checks, fmt).rstrip("\n")
    return "\n\n".join([*parts, footer]) + "\n"


def _pipe_table(header: list[str], cells: list[list[str]], colalign: list[str]) -> str | None:
    """The markdown table tabulate's "pipe" format makes of these cells (a column as wide as
    its widest cell, and its name plus two; one space either side of every `|`), built line
    by line: tabulate infers a type and measures every cell, 0.7 s for 10,000 rows. None
    where a cell is not plain (not printable, padded with spaces, or of another width on
    screen than its length): tabulate's own rules decide those."""

    def plain(text: str) -> bool:
        return text.isprintable() and text.strip() == text and _one_column_each(text)

    if not all(map(plain, header)) or not all(plain(c) for row in cells for c in row):
        return None
    widths = [max(len(name) + 2, *(len(row[i]) for row in cells)) for i, name in enumerate(header)]
    right = [align == "right" for align in colalign]

    def line(row: list[str]) -> str:
        padded = (
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right, strict=True)
        )
        return "| " + " | ".join(padded) + " |"

    rule = "|".join(
        "-" * (w + 1) + ":" if r else ":" + "-" * (w + 1)
        for w, r in zip(widths, right, strict=True)
    )
    return "\n".join([line(header), f"|{rule}|", *map(line, cells)])


def _one_column_each(text: str) -> bool:
    """Whether every character of `text` takes one column on screen (no wide or combining
    characters), as tabulate measures it."""
    if text.isascii():
        return True
    import unicodedata

    return all(
        unicodedata.east_asian_width(c) not in "WF" and not unicodedata.combining(c) for c in text
    )
