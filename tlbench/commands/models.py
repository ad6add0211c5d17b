"""`tlbench models [RESULTS]`: the saved checkpoints, which is which, and where."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from tlbench.errors import TlbenchError

EPILOG_MODELS = """examples:
  tlbench models                               results/runs.jsonl and results/models/
  tlbench models results/flowers12.jsonl       the checkpoints its runs saved
  tlbench models results/models --format json  every checkpoint in a folder

load one from Python: model = tlbench.load_model(PATH); model.transform(image) makes its input.
"""
DEFAULTS = ("results/runs.jsonl", "results/models")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    cmd = subparsers.add_parser(
        "models",
        help="list saved checkpoints: backbone, strategy, dataset, accuracy, path",
        description="The checkpoints `tlbench run --save-models` wrote, found through the "
        "records of results files (with the run's accuracy) and in folders of checkpoints.",
        epilog=EPILOG_MODELS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument(
        "paths",
        nargs="*",
        metavar="RESULTS",
        help="results files (.jsonl) or folders of checkpoints (default: results/runs.jsonl "
        "and results/models, those that exist)",
    )
    cmd.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="table or json (default: table)",
    )
    return cmd


def _inputs(paths: list[str]) -> tuple[list[Path], list[Path]]:
    """(results files, folders); a missing path named on the command line is an error."""
    given = [Path(p).expanduser() for p in paths]
    if not given:
        given = [Path(p) for p in DEFAULTS if Path(p).exists()]
    missing = [str(p) for p in given if not p.exists()]
    if missing:
        raise TlbenchError(f"not found: {', '.join(missing)}")
    files = [p for p in given if p.is_file()]
    # A results file's runs saved into models/ beside it unless told otherwise.
    folders = [p for p in given if p.is_dir()]
    folders += [p.parent / "models" for p in files if (p.parent / "models").is_dir()]
    return files, list(dict.fromkeys(folders))


def main(args: argparse.Namespace, console: Console) -> int:
    from tlbench import results
    from tlbench.checkpoint import list_saved_models

    files, folders = _inputs(args.paths)
    if not files and not folders:
        raise TlbenchError(
            f"no results file or models folder given, and none of {', '.join(DEFAULTS)} exists"
        )
    records = list(results.answer_by_key(results.read(files)).values()) if files else []
    models = list_saved_models(records, folders)
    models.sort(key=lambda m: (m.dataset, -(_accuracy(m) or 0.0), m.path))
    if args.format == "json":
        sys.stdout.write(json.dumps([dataclasses.asdict(m) for m in models], indent=2) + "\n")
        return 0
    if not models:
        console.print("no saved checkpoints (tlbench run --save-models keeps them)")
        return 0
    from tabulate import tabulate

    from tlbench.identity import short_names

    short = short_names([m.dataset for m in models])
    rows = [
        [
            m.backbone,
            m.strategy,
            short.get(m.dataset, m.dataset),
            "" if m.seed is None else m.seed,
            "" if m.image_size is None else m.image_size,
            _pct(_accuracy(m)),
            m.path + ("" if m.exists else "  (missing)"),
        ]
        for m in models
    ]
    header = ["backbone", "strategy", "dataset", "seed", "px", "top-1 %", "path"]
    console.print(Text(tabulate(rows, headers=header, disable_numparse=True)), soft_wrap=True)
    return 0


def _accuracy(model: Any) -> float | None:
    """The top-1 a saved model is listed with: its record's, else its sidecar's."""
    return model.accuracy if model.accuracy is not None else model.saved_accuracy


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"
