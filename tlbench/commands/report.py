"""`tlbench report`: compare the runs of one or more results files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from tlbench import report, results
from tlbench.commands.output import print_comparison, print_ranking_checks
from tlbench.errors import TlbenchError

EPILOG_REPORT = """examples:
  tlbench report results/runs.jsonl
  tlbench report a.jsonl b.jsonl --format markdown --sort time > comparison.md
  tlbench report results/runs.jsonl --group-by backbone --format csv -o runs.csv
  tlbench report results/runs.jsonl --plot tradeoff.png
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
        choices=report.FORMATS,
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

    return rep


def main(args: argparse.Namespace, console: Console) -> int:
    """Compare the runs of results files: a table, a text format, and optionally a plot."""
    missing = [p for p in args.results if not Path(p).expanduser().exists()]
    if missing:
        raise TlbenchError(f"results file not found: {', '.join(missing)}")
    inputs = [Path(p).expanduser() for p in args.results]
    # Every output location is checked before any work, and the paths printed are the files written.
    plot_path = None
    if args.plot:
        from tlbench.plot import _figure_class, check_image_path

        _figure_class()  # a missing matplotlib fails before any output is written
        plot_path = check_image_path(args.plot, "tradeoff.png", "--plot")
    output = results.check_report_output(args.output, inputs) if args.output else None
    if output is not None and plot_path is not None and output.absolute() == plot_path.absolute():
        raise TlbenchError(f"--output and --plot name the same file, {output}; choose two")
    page = None
    if args.html:
        from tlbench.htmlreport import check_html_output

        page = check_html_output(args.html, inputs)
        for flag, other in (("--output", output), ("--plot", plot_path)):
            if other is not None and other.absolute() == page.absolute():
                raise TlbenchError(f"--html and {flag} name the same file, {page}; choose two")
    records = results.read(inputs)
    if not records:
        raise TlbenchError(f"no records in {', '.join(args.results)}")
    rows = report.sort_rows(report.summarize(records), args.sort)
    if not rows:
        raise TlbenchError(
            f"none of the {len(records)} record(s) in {', '.join(args.results)} can be shown "
            "(the warnings above say what they lack)"
        )
    from tlbench.select import report_checks

    # Where the results hold a full grid: how well each score ranked the fine-tuned backbones.
    checks = report_checks(records)
    if plot_path is not None:
        from tlbench.plot import plot_comparison

        plot_path = plot_comparison(rows, records, plot_path)
    if output is not None:
        text = report.render(rows, args.format, args.group_by, checks)  # "table": plain, no colour
        try:
            results.write_text_atomic(output, text)
        except OSError as exc:
            raise TlbenchError(
                f"cannot write the report to {output}: {exc.strerror or exc}. Choose another --output."
            ) from None
        console.print(Text.assemble("report: ", str(output)), soft_wrap=True)
    elif args.format == "table":
        print_comparison(console, records, args.sort, args.group_by)
        print_ranking_checks(console, checks)
    else:
        sys.stdout.write(report.render(rows, args.format, args.group_by, checks))
    if page is not None:
        from tlbench.htmlreport import write_html_report

        write_html_report(
            page, rows, records, sources=args.results, group_by=args.group_by, checks=checks
        )
    where = console if output is not None or args.format == "table" else Console(stderr=True)
    if plot_path is not None:
        where.print(Text.assemble("plot: ", str(plot_path)), soft_wrap=True)
    if page is not None:
        where.print(Text.assemble("html: ", str(page)), soft_wrap=True)
    return 0
