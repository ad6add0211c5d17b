"""Tiny image-folder trees written into a test's tmp_path, and the CLI run in-process.

Shared by the reliability tests (bad input, caches, interruption, OOM): real
files on disk, so the builtin `imagefolder` dataset and the decode cache see
exactly what a user's folder would give them.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import tlbench
from tlbench import cli

#: class name -> the colour of its square; three classes are easy to learn at 16 px.
CLASS_COLOURS = {"cat": (220, 40, 40), "dog": (40, 200, 60), "fox": (50, 70, 230)}


def square_image(colour: tuple[int, int, int], seed: int, size: int = 24) -> Image.Image:
    """A square of `colour` on a noisy grey background, at a seeded random place."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(90, 160, size=(size, size, 3), dtype=np.uint8)
    side = size // 2
    x, y = rng.integers(0, size - side, size=2)
    pixels[y : y + side, x : x + side] = colour
    return Image.fromarray(pixels)


def make_split(
    folder: Path,
    per_class: int,
    *,
    classes: dict[str, tuple[int, int, int]] | None = None,
    seed: int = 0,
    size: int = 24,
) -> Path:
    """`folder/<class>/<i>.png` for every class; returns `folder`."""
    for c, (name, colour) in enumerate((classes or CLASS_COLOURS).items()):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            square_image(colour, seed * 100_000 + c * 1000 + i, size).save(
                folder / name / f"{i:03d}.png"
            )
    return folder


def make_tree(
    root: Path,
    train: int = 6,
    val: int = 2,
    *,
    classes: dict[str, tuple[int, int, int]] | None = None,
    size: int = 24,
) -> Path:
    """`root/train/<class>/` and `root/val/<class>/`; returns `root`."""
    make_split(root / "train", train, classes=classes, seed=0, size=size)
    make_split(root / "val", val, classes=classes, seed=1, size=size)
    return root


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every line of a results file, strictly: a torn line fails the test."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class CLIResult:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


def learning(record: dict) -> list[tuple[float, float, float]]:
    """A run's loss and accuracy curve, without its timings."""
    return [
        (c["train_loss"], c["eval_loss"], c["eval_accuracy"]) for c in record["accuracy"]["curve"]
    ]


def cli_runner(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """A `run(*args)` that calls `tlbench.cli.main` with the builtins plus the tiny test plugin.

    Use it from a fixture (`run_cli = cli_runner(monkeypatch, capsys)`).
    Installed third-party plugins are never loaded; the cache goes where the
    caller's --cache-dir says.
    """
    from conftest import TinyPlugin

    factory = functools.partial(tlbench.Plugins, entry_points=False, extra=[("tiny", TinyPlugin())])
    monkeypatch.setattr("tlbench.plugins.Plugins", factory)
    monkeypatch.setenv("TLBENCH_LOAD_PLUGINS", "")
    monkeypatch.setenv("COLUMNS", "1000")  # rich wraps long messages at the terminal width

    def run(*args: str) -> CLIResult:
        code = cli.main([str(a) for a in args])
        captured = capsys.readouterr()
        return CLIResult(code, captured.out, captured.err)

    return run


def assert_clean_error(result: CLIResult, *fragments: str) -> None:
    """Exit code 2, `error:` with every fragment on stderr, and no traceback anywhere."""
    assert result.code == 2, result
    assert "error:" in result.err, result
    text = " ".join(result.err.split())  # rich may wrap long lines
    for fragment in fragments:
        assert fragment in text, (fragment, result)
    assert "Traceback" not in result.err + result.out, result
