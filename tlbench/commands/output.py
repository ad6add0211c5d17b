"""What the commands print with rich: the comparison, a selection, the ranking checks.

Every table is printed at the terminal's width, or as wide as it needs in a
log or a pipe (`print_wide`); names and reasons are `Text`, never markup.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from tlbench import report


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
) -> None:
    """The comparison as rich tables, one per section."""
    rows = report.sort_rows(report.summarize(records), sort)
    hidden: set[str] = set()
    for title, group in report.group_rows(rows, group_by).items():
        heading = (
            f"{title}: top-1 against training cost"
            if group_by == "dataset"
            else (f"{group_by} {title}" if group_by != "none" else "all runs")
        )
        columns = report.columns(group_by)
        cells = [report.row_cells(row, group_by) for row in group]
        widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
        keep = list(range(len(columns)))
        if console.is_terminal:
            # Too narrow a terminal: drop the least telling columns rather than crush them all.
            for name in _DROPPABLE:
                needed = sum(
                    min(widths[i], 24) if columns[i] == "note" else widths[i] for i in keep
                )
                if needed + 3 * len(keep) + 1 <= console.width:
                    break
                if name in columns:
                    keep.remove(columns.index(name))
                    hidden.add(name)
        table = Table(title=Text(heading), title_justify="left", title_style="bold")
        for i in keep:
            column = columns[i]
            if column == "note":
                # Reasons can be long: they wrap, the numbers never do.
                table.add_column(column, overflow="fold", min_width=min(widths[i], 16))
            else:
                table.add_column(
                    column,
                    justify="left" if column in _LEFT else "right",
                    no_wrap=True,
                    min_width=widths[i],
                )
        for row, row_cells in zip(group, cells, strict=True):
            style = "bold" if row.pareto else None if row.accuracy is not None else "dim"
            # Text, not str: a reason or a name with [brackets] is not markup.
            table.add_row(*(Text(row_cells[i]) for i in keep), style=style)
        print_wide(console, table)
    if rows:
        print_wide(console, Text(report.LEGEND), style="dim")
    if hidden:
        console.print(
            f"(hidden to fit the terminal: {', '.join(sorted(hidden))}; "
            "`tlbench report RESULTS.jsonl --format markdown` shows every column)",
            style="dim",
        )


#: the columns left out first when the terminal is too narrow for the whole table.
_DROPPABLE = ("trainable / total", "best ep", "peak MB", "img/s", "n", "vs scratch")
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
