"""`tlbench cache`: what the decoded-image and feature caches hold; prune or clear them.

The options and the logic live in `tlbench.cachecmd`, which imports neither
torch nor numpy.
"""

from __future__ import annotations

import argparse
from typing import Any

from tlbench import cachecmd


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    cache = subparsers.add_parser(
        "cache",
        help="what the decoded-image and feature caches hold; prune or clear them",
        description="List, prune or clear the decoded-image and feature caches.",
    )
    cachecmd.add_arguments(cache)
    return cache


def main(args: argparse.Namespace, console: Any = None) -> int:
    return cachecmd.main(args, console)
