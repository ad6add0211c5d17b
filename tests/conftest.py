"""Shared fixtures: a tiny in-memory plugin so most tests train in well under a second."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

import tlbench
from tlbench import testing
from tlbench.config import RunConfig

REPO = Path(__file__).resolve().parents[1]
FLOWERS12 = REPO.parent / "shared" / "data" / "flowers12"

#: the tiny test objects `tlbench.testing` ships to plugin authors, used here too.
ColourSquares = testing.ColourSquares


def tiny_net() -> nn.Module:
    """The tiny backbone's network, freshly initialised."""
    return testing.tiny_backbone().build(False)


#: registers `tiny` (with fixed "pretrained" weights), `tiny_random` and `tinyset`;
#: importable (`tlbench.testing:TINY_PLUGIN`), so worker processes load it too.
TinyPlugin = testing.TinyPlugin


@pytest.fixture
def tiny_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """`tlbench ...` in-process with the tiny plugin and nothing else installed."""
    real = tlbench.plugins.Plugins
    monkeypatch.setattr(
        tlbench.plugins,
        "Plugins",
        lambda **k: real(entry_points=False, extra=[("tiny", testing.TINY_PLUGIN)]),
    )


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """`run_cli(*args)`: `tlbench.cli.main` with the builtins plus the tiny plugin (imagetree)."""
    from imagetree import cli_runner

    return cli_runner(monkeypatch, capsys)


@pytest.fixture
def plugins() -> tlbench.Plugins:
    return tlbench.Plugins(entry_points=False, extra=[("tiny", testing.TINY_PLUGIN)])


@pytest.fixture
def tiny_config(tmp_path: Path) -> RunConfig:
    return RunConfig(
        backbones=["tiny"],
        datasets=["tinyset"],
        strategies=["scratch", "linear", "finetune"],
        seeds=[0],
        image_size=16,
        hyperparameters={"epochs": 2, "batch_size": 16},
        out=str(tmp_path / "results.jsonl"),
        cache_dir=str(tmp_path / "cache"),
        device="cpu",
    )
