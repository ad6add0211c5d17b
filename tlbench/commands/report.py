"""`tlbench report`: compare the runs of one or more results files."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from tlbench import report, results, tables
from tlbench.commands.output import add_column_options, print_ranking_checks, print_rows
from tlbench.errors import TlbenchError

EPILOG_REPORT = """examples:
  tlbench report results/runs.jsonl
  tlbench report a.jsonl b.jsonl --format markdown --sort time > comparison.md
  tlbench report results/runs.jsonl --group-by backbone --format csv -o runs.csv
  tlbench report results/runs.jsonl --plot tradeoff.png
  tlbench report results/runs.jsonl --pareto-by latency --format markdown
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    rep = subparsers.add_parser(
        "report",
        help="compare the runs of one or more results files",
        description="One row per backbone x strategy (seeds aggregated), accuracy against training "
        "cost, Pareto-optimal rows marked; failed and skipped runs with their reason.",
        epilog=EPILOG_REPORT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rep.add_argument("results", nargs="+", metavar="RESULTS.jsonl")
    rep.add_argument(
        "--format",
        choices=tables.FORMATS,
        default="table",
        help="table (terminal), markdown, csv, json, html or latex (default: table)",
    )
    rep.add_argument(
        "--sort",
        choices=report.SORT_KEYS,
        default="accuracy",
        help="row order within each section (default: accuracy, best first)",
    )
    rep.add_argument(
        "--cost",
        choices=report.COSTS,
        default="train+search",
        help="what the Pareto mark weighs accuracy against: train+search (training and, "
        "for tuned rows, their search; default: train+search) or train (training alone)",
    )
    rep.add_argument(
        "--pareto-by",
        choices=report.PARETO_BY,
        default="train",
        help="the cost the Pareto mark weighs accuracy against: train (training seconds, see "
        "--cost; default), latency (batch-1 inference latency) or energy (the training's "
        "joules, where the hardware measured them)",
    )
    rep.add_argument(
        "--group-by",
        choices=report.GROUP_KEYS,
        default="dataset",
        help="one section per dataset (default), backbone or strategy, or none",
    )
    rep.add_argument(
        "--output", "-o", metavar="FILE", help="write the report to FILE instead of stdout"
    )
    rep.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also draw accuracy against training time (Pareto frontier) and the learning "
        "curves; needs matplotlib (pip install 'tlbench[plot]')",
    )
    rep.add_argument(
        "--html",
        metavar="FILE.html",
        help="also write one standalone page (no server, no network): the tables with "
        "intervals and marks, the --plot figure (when matplotlib is installed) and the "
        "environment of the runs",
    )
    add_column_options(rep)
    return rep


@dataclass
class Outputs:
    """Where the report goes besides the terminal: each checked before any work."""

    output: Path | None = None
    plot: Path | None = None
    page: Path | None = None


def _outputs(args: argparse.Namespace, inputs: list[Path]) -> Outputs:
    """Every output location, checked before any work; the paths are the files written."""
    found = Outputs()
    if args.plot:
        from tlbench.plot import _figure_class, check_image_path

        _figure_class()  # a missing matplotlib fails before any output is written
        found.plot = check_image_path(args.plot, "tradeoff.png", "--plot")
    found.output = results.check_report_output(args.output, inputs) if args.output else None
    if found.output is not None and found.plot is not None and _same(found.output, found.plot):
        raise TlbenchError(f"--output and --plot name the same file, {found.output}; choose two")
    if args.html:
        from tlbench.htmlreport import check_html_output

        found.page = check_html_output(args.html, inputs)
        for flag, other in (("--output", found.output), ("--plot", found.plot)):
            if other is not None and _same(other, found.page):
                raise TlbenchError(
                    f"--html and {flag} name the same file, {found.page}; choose two"
                )
    return found


def _same(a: Path, b: Path) -> bool:
    return a.absolute() == b.absolute()


def _records(args: argparse.Namespace, inputs: list[Path]) -> tuple[list[Any], list[Any]]:
    """(records, rows) of the results files; an error when nothing can be shown."""
    records = results.read(inputs)
    if not records:
        raise TlbenchError(f"no records in {', '.join(args.results)}")
    rows = report.summarize(records, cost=args.cost, pareto_by=args.pareto_by)
    rows = report.sort_rows(rows, args.sort)
    if not rows:
        raise TlbenchError(
            f"none of the {len(records)} record(s) in {', '.join(args.results)} can be shown "
            "(the warnings above say what they lack)"
        )
    return records, rows


def main(args: argparse.Namespace, console: Console) -> int:
    """Compare the runs of results files: a table, a text format, and optionally a plot."""
    # The records, and then the rows, live until the report is made and hold no cycles: the
    # cyclic collector is off meanwhile, so it never walks their millions of objects (2 of
    # 10 s on 50,000 records, and 0.3 s more each time reading or summarising turned it
    # back on). They are freed before it is on again.
    with results.gc_paused():
        return _report(args, console)


def _report(args: argparse.Namespace, console: Console) -> int:
    missing = [p for p in args.results if not Path(p).expanduser().exists()]
    if missing:
        raise TlbenchError(f"results file not found: {', '.join(missing)}")
    inputs = [Path(p).expanduser() for p in args.results]
    if args.columns is not None:
        try:
            tables.check_columns(args.columns)
        except ValueError as exc:
            raise TlbenchError(f"--columns: {exc}") from None
    outputs = _outputs(args, inputs)
    records, rows = _records(args, inputs)
    from tlbench.select import report_checks

    # Where the results hold a full grid: how well each score ranked the fine-tuned backbones.
    checks = report_checks(records)
    if outputs.plot is not None:
        from tlbench.plot import plot_comparison

        outputs.plot = plot_comparison(rows, records, outputs.plot)
    _write(args, console, outputs.output, rows, records, checks)
    if outputs.page is not None:
        from tlbench.htmlreport import write_html_report

        write_html_report(
            outputs.page,
            rows,
            records,
            sources=args.results,
            group_by=args.group_by,
            checks=checks,
            pareto_by=args.pareto_by,
        )
    terminal = outputs.output is not None or args.format == "table"
    where = console if terminal else Console(stderr=True)
    # Default and tuned rows of the same cells: how far tuning moved the ranking.
    for line in report.tuning_lines(report.tuning_changes(rows)):
        where.print(Text.assemble("tuning: ", line), soft_wrap=True)
    if outputs.plot is not None:
        where.print(Text.assemble("plot: ", str(outputs.plot)), soft_wrap=True)
    if outputs.page is not None:
        where.print(Text.assemble("html: ", str(outputs.page)), soft_wrap=True)
    return 0


def _write(
    args: argparse.Namespace,
    console: Console,
    output: Path | None,
    rows: list[Any],
    records: list[Any],
    checks: list[Any],
) -> None:
    """The report itself: to `--output`, as rich tables, or as text on stdout."""
    if output is not None:
        text = _text(args, rows, checks)  # "table": plain, no colour
        try:
            results.write_text_atomic(output, text)
        except OSError as exc:
            raise TlbenchError(
                f"cannot write the report to {output}: {exc.strerror or exc}. Choose another --output."
            ) from None
        console.print(Text.assemble("report: ", str(output)), soft_wrap=True)
    elif args.format == "table":
        # The rows summarised once: each warning about the records is printed once.
        print_rows(
            console,
            rows,
            args.group_by,
            columns=args.columns,
            wide=args.wide,
            pareto_by=args.pareto_by,
        )
        print_ranking_checks(console, checks)
    else:
        sys.stdout.write(_text(args, rows, checks))


def _text(args: argparse.Namespace, rows: list[Any], checks: list[Any]) -> str:
    """The report in a text format; html is the styled tables of the `--html` page."""
    if args.format == "html":
        from tlbench.htmlreport import render_fragment

        return render_fragment(rows, args.group_by, checks, args.pareto_by)
    return tables.render(rows, args.format, args.group_by, checks, pareto_by=args.pareto_by)
