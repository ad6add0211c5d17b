"""`tlbench compare BASE.jsonl NEW.jsonl`: is NEW worse than BASE, cell by cell? A CI gate."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from tlbench import comparison
from tlbench.errors import TlbenchError

EPILOG_COMPARE = """examples:
  tlbench compare results/main.jsonl results/branch.jsonl
  tlbench compare base.jsonl new.jsonl --fail-if-worse 2 --format markdown > comparison.md
  tlbench compare base.jsonl new.jsonl --format json
  tlbench compare .benchmarks/*/0001_base.json .benchmarks/*/0002_new.json   saved benchmark_grid sessions

exit status: 0 when no cell is worse by more than --fail-if-worse points (and none that
finished in BASE failed in NEW), 1 when one is, 2 on bad input.
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    cmp = subparsers.add_parser(
        "compare",
        help="compare two results files cell by cell; exit 1 when a cell got worse",
        description="Per dataset x backbone x strategy x configuration: the top-1 difference "
        "NEW - BASE with a 95% paired interval (over the same test images where the records "
        "hold per-image results, else over common seeds), the training-cost ratio, and a "
        "verdict: better, worse or cannot tell.",
        epilog=EPILOG_COMPARE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmp.add_argument(
        "base",
        metavar="BASE.jsonl",
        help="the results to compare against: a results file, or a pytest-benchmark JSON "
        "file of tlbench.testing.benchmark_grid",
    )
    cmp.add_argument("new", metavar="NEW.jsonl", help="the results to judge (the same kinds)")
    cmp.add_argument(
        "--fail-if-worse",
        metavar="POINTS",
        type=float,
        default=comparison.FAIL_IF_WORSE_POINTS,
        help="exit 1 when a cell is surely worse (its interval below 0) by more than POINTS "
        f"points of top-1 (default: {comparison.FAIL_IF_WORSE_POINTS})",
    )
    cmp.add_argument(
        "--format",
        choices=comparison.FORMATS,
        default="table",
        help="table (default), markdown or json",
    )
    return cmp


def _read(path: str, what: str) -> list[dict[str, Any]]:
    if not Path(path).expanduser().is_file():
        raise TlbenchError(f"{what} results file not found: {path}")
    try:
        records = comparison.read_records(path)
    except ValueError as exc:
        raise TlbenchError(str(exc)) from None
    if not records:
        raise TlbenchError(f"no records in {path}")
    return records


def main(args: argparse.Namespace, console: Console) -> int:
    """Print the comparison; 1 when a cell fails the gate."""
    if not args.fail_if_worse >= 0:
        raise TlbenchError(f"--fail-if-worse must be 0 or more points, not {args.fail_if_worse:g}")
    found = comparison.compare(
        _read(args.base, "BASE"), _read(args.new, "NEW"), fail_if_worse=args.fail_if_worse
    )
    found.base, found.new = [args.base], [args.new]
    text = comparison.render(found, args.format)
    if args.format == "table":
        console.print(Text(text.rstrip("\n")), soft_wrap=True)
    else:
        sys.stdout.write(text)
    return 0 if found.ok else 1
