"""What the commands print with rich: the comparison, a selection, the ranking checks.

Every table is printed at the terminal's width, or as wide as it needs in a
log or a pipe (`print_wide`); names and reasons are `Text`, never markup.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions
from rich.markup import escape
from rich.measure import Measurement
from rich.segment import Segment
from rich.style import Style
from rich.table import Table
from rich.text import Text

from tlbench import report, tables


def add_column_options(parser: Any) -> None:
    """`--columns` and `--wide`: which columns the terminal table shows."""
    parser.add_argument(
        "--columns",
        metavar="A,B",
        type=lambda text: [c.strip() for c in text.split(",") if c.strip()],
        help=(
            "the table's columns after the names, e.g. 'top-1 %,train s,peak MB,note' "
            f"(default: {','.join(tables.DEFAULT_COLUMNS)}, and px where sizes differ; "
            f"choose from {', '.join(tables.column_names())})"
        ).replace("%", "%%"),  # argparse formats help with %
    )
    parser.add_argument(
        "--wide", action="store_true", help="every column, notes in the table (default: off)"
    )


def print_selection(console: Console, s: Any, dataset: str) -> None:
    """One dataset's selection (`dataset`: its short name): the ranking, the pick, the compute."""
    from tlbench.console import format_duration

    table = Table(title=Text(f"{dataset}: stage 1 ranked by {s.rank_by}"), title_justify="left")
    for column in ("backbone", s.rank_by, "stage 2", f"{(s.finalists and 'top-1') or ''}"):
        table.add_column(column)
    for name, value in s.ranking:
        shown = (
            f"{value:,.0f}"
            if s.rank_by == "params"
            else (
                f"{100 * value:.1f}%" if s.rank_by in ("probe", "knn_accuracy") else f"{value:.4g}"
            )
        )
        tuned = s.accuracy.get(name)
        table.add_row(
            escape(name),
            shown,
            "yes" if name in s.finalists else "",
            f"{100 * tuned:.1f}%" if tuned is not None else "",
        )
    print_wide(console, table)
    if s.over_latency:
        left_out = ", ".join(
            f"{name} ({'not measured' if ms is None else f'{ms:.1f} ms'})"
            for name, ms in s.over_latency.items()
        )
        console.print(
            f"over the latency budget ({s.max_latency_ms:g} ms at batch 1), not ranked: "
            f"{escape(left_out)}",
            soft_wrap=True,
        )
    if s.pick is None:
        console.print("no finalist finished stage 2", soft_wrap=True)
        return
    interval = s.interval
    shown = (
        f" (95% CI {100 * interval.lower:.1f} to {100 * interval.upper:.1f}, "
        f"{interval.method} over {interval.n} {'seeds' if interval.method == 't' else 'images'})"
        if interval
        else ""
    )
    strategy = f" / {escape(s.pick_strategy)}" if s.pick_strategy else ""
    accuracy = s.pick_accuracy if s.pick_accuracy is not None else s.accuracy[s.pick]
    console.print(
        f"[bold]pick: {escape(s.pick)}[/]{strategy}, test top-1 {100 * accuracy:.1f}%{shown}",
        soft_wrap=True,
    )
    if s.why:
        console.print(f"why: {escape(s.why)}", soft_wrap=True)
    if s.full_grid_seconds:
        console.print(
            f"compute: {format_duration(s.spent_seconds)} of training for the two stages; the "
            f"full grid ({s.full_grid_basis}) {format_duration(s.full_grid_seconds)}: "
            f"{100 * s.spent_seconds / s.full_grid_seconds:.0f}% of it",
            soft_wrap=True,
        )
    else:
        console.print(
            f"compute: {format_duration(s.spent_seconds)} of training for the two stages",
            soft_wrap=True,
        )


def print_ranking_checks(console: Console, checks: list[Any]) -> None:
    """The ranking check as `tlbench report` and `tlbench select` print it (none: nothing)."""
    if checks:
        from tlbench.select import render_checks

        console.print(Text(render_checks(checks, "table").rstrip("\n")))


def print_comparison(
    console: Console,
    records: list[dict[str, Any]],
    sort: str = "accuracy",
    group_by: str = "dataset",
    *,
    columns: list[str] | None = None,
    wide: bool = False,
    cost: str = "train+search",
    pareto_by: str = "train",
) -> None:
    """The comparison of `records` as rich tables, one per section (`print_rows`).

    `cost` and `pareto_by`: what the Pareto mark weighs (`report.summarize`).
    """
    rows = report.sort_rows(report.summarize(records, cost=cost, pareto_by=pareto_by), sort)
    print_rows(console, rows, group_by, columns=columns, wide=wide, pareto_by=pareto_by)


def print_rows(
    console: Console,
    rows: list[report.Row],
    group_by: str = "dataset",
    *,
    columns: list[str] | None = None,
    wide: bool = False,
    pareto_by: str = "train",
) -> None:
    """Rows already summarised (once: its warnings print once) as tables, one per section.

    The default columns fit 100 characters (`tables.choose_columns`), with each
    row's note as a footnote below its table; `columns` (`--columns`) or `wide`
    (`--wide`) choose others, and a wide table keeps its notes in their column.
    """
    hidden: set[str] = set()
    for title, group in report.group_rows(rows, group_by).items():
        heading = (
            f"{title}: top-1 against training cost"
            if group_by == "dataset"
            else (f"{group_by} {title}" if group_by != "none" else "all runs")
        )
        names, cells = tables.terminal_cells(group, group_by, columns, wide=wide)
        cells = [[_one_line(c) for c in row] for row in cells]
        notes = _footnotes(names, cells) if not wide else []
        widths = [max(map(cell_len, column)) for column in zip(names, *cells, strict=True)]
        keep = list(range(len(names)))
        if columns is None and not wide:
            # Too narrow a terminal (a log: 100): drop the least telling columns first.
            limit = console.width if console.is_terminal else PIPED_WIDTH
            for name in _DROPPABLE:
                if _width([widths[i] for i in keep]) <= limit:
                    break
                if name in names and names.index(name) in keep:
                    keep.remove(names.index(name))
                    hidden.add(name)
        table = Columns(
            Text(heading),
            [names[i] for i in keep],
            [[row[i] for i in keep] for row in cells],
            [widths[i] for i in keep],
            # Pareto-optimal rows stand out; rows without a result are dimmed.
            [("bold" if r.pareto else None) if r.accuracy is not None else "dim" for r in group],
        )
        print_wide(console, table)
        for line in notes:
            console.print(Text(line), soft_wrap=True)
    if rows:
        # In a log or a pipe, lines of prose at most as wide as the table's limit.
        legend = tables.legend(pareto_by)
        legend = legend if console.is_terminal else textwrap.fill(legend, PIPED_WIDTH)
        print_wide(console, Text(legend), style="dim")
    if hidden:
        console.print(
            f"(hidden to fit the width: {', '.join(sorted(hidden))}; `--wide` or "
            "`--columns` shows them)",
            style="dim",
        )


class Columns:
    """A table of one-line cells, printed as rich prints a `Table` with `box.SIMPLE_HEAD`,
    no edge, no padding at the edges, every column as wide as its widest cell and
    nothing wrapped: the title above it, left-aligned; the header in the table header's
    style; each row in its own style.

    Built line by line: rich's `Table` measures and renders every cell as a padded
    renderable of its own, twice when printed at the width it needs, which took 10 of
    the 17 s `tlbench report` spent on 20,000 rows. A terminal narrower than the table
    cuts its lines at its edge (a `Table` squeezed its narrowest columns, `n` and `px`,
    out of sight first). A cell that is not one printable line is made one
    (`_one_line`).
    """

    def __init__(
        self,
        title: Text,
        names: list[str],
        rows: list[list[str]],
        widths: list[int],
        styles: list[str | None],
    ):
        """`widths`: each column's widest cell (`rich.cells.cell_len`), its name included;
        `styles`: each row's (None: plain). Names, notes and the dataset left-aligned."""
        self.title, self.names, self.rows, self.styles = title, names, rows, styles
        self.widths = widths
        self.left = [name in _LEFT for name in names]
        self.width = _width(widths)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(self.width, self.width)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Segment]:
        lines = box.SIMPLE_HEAD.substitute(options, safe=console.safe_box)
        at_width = options.update(width=self.width, height=None, highlight=False)
        yield from console.render(self.title, at_width.update(justify="left"))
        yield from self._line(self.names, console.get_style("table.header"), lines.head_vertical)
        padded = [w + 2 for w in self.widths]
        padded[0] -= 1
        padded[-1] -= 1
        yield Segment(lines.get_row(padded, "head", edge=False))
        yield Segment.line()
        last = len(self.rows) - 1
        for i, (cells, style) in enumerate(zip(self.rows, self.styles, strict=True)):
            divider = lines.foot_vertical if i == last else lines.mid_vertical
            yield from self._line(cells, console.get_style(style) if style else None, divider)

    def _line(self, cells: list[str], style: Style | None, divider: str) -> Iterator[Segment]:
        """One line: each cell padded to its column's width (left or right aligned), one
        space either side of each divider."""
        parts = []
        for cell, width, left in zip(cells, self.widths, self.left, strict=True):
            gap = " " * (width - cell_len(cell))
            parts.append(cell + gap if left else gap + cell)
        yield Segment(f" {divider} ".join(parts), style)
        yield Segment.line()


def _one_line(cell: str) -> str:
    """A cell as one printable line: a name or a reason holding a newline, a tab or a control
    character is not a row of several lines, nor a row that moves the cursor."""
    if cell.isprintable():
        return cell
    return "".join(c if c.isprintable() else " " for c in " ".join(cell.splitlines()))


def _footnotes(names: list[str], cells: list[list[str]]) -> list[str]:
    """Each row's note replaced by a number, and the notes as lines `[1] ...` (one number
    per distinct note): long reasons go below the table, never across it."""
    if "note" not in names:
        return []
    i = names.index("note")
    numbers: dict[str, int] = {}
    for row in cells:
        if row[i]:
            row[i] = f"[{numbers.setdefault(row[i], len(numbers) + 1)}]"
    return [f"[{n}] {note}" for note, n in numbers.items()]


def _width(widths: list[int]) -> int:
    """The printed width of a table (`box.SIMPLE_HEAD`, no edges) with columns this wide."""
    return sum(widths) + 3 * (len(widths) - 1)


#: how wide the default table may be in a log or a pipe (where nothing wraps).
PIPED_WIDTH = 100
#: the columns left out first when the terminal is too narrow for the whole table.
_DROPPABLE = (
    "trainable / total",
    "best ep",
    "peak MB",
    "img/s",
    "infer img/s",
    "latency ms",
    "px",
    "n",
    "vs scratch",
)
_LEFT = {"dataset", "backbone", "strategy", "note"}


def print_wide(console: Console, renderable: Any, **kwargs: Any) -> None:
    """Print at the terminal's width; in a log or a pipe (no width), as wide as needed."""
    if console.is_terminal:
        console.print(renderable, **kwargs)
        return
    width = console.width
    try:
        console.width = 240  # measure against a wide page, then print at the width needed
        console.width = max(width, console.measure(renderable).maximum)
        console.print(renderable, **kwargs)
    finally:
        console.width = width
