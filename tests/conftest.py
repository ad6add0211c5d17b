"""Shared fixtures: a tiny in-memory plugin so most tests train in well under a second."""

from __future__ import annotations

import functools
import gc
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import tlbench
from tlbench import testing
from tlbench.config import RunConfig

# pytest-xdist's controller loads this file too and runs no test: importing torch here
# held back its workers' start by 3 s.
if TYPE_CHECKING:
    from torch import nn

# Python's bytecode caches are written in this session even where PYTHONDONTWRITEBYTECODE
# is set (it is on this machine): pytest rewrites the asserts of every test module and of
# hypothesis's 73 modules, and keeps the result in __pycache__ (git-ignored here) only when
# bytecode may be written. Without it every pytest process parsed and rewrote them all
# again: collecting the inner loop in one process took 19-22 s; with it, 14.5 s the first
# time (which writes it) and 8.0-8.2 s after.
sys.dont_write_bytecode = False

REPO = Path(__file__).resolve().parents[1]
FLOWERS12 = REPO.parent / "shared" / "data" / "flowers12"


@functools.cache
def _mutmut_durations() -> dict[str, float]:
    """Each test's seconds as mutmut's stats run measured them (`mutants/mutmut-stats.json`)."""
    try:
        return json.loads(Path("mutmut-stats.json").read_text())["duration_by_test"]
    except (OSError, ValueError, KeyError):
        return {}


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`-n auto`), each worker's torch, and every process it starts,
    gets its share of the cores.

    torch's default is one thread per core in every process: two workers on two
    cores would each run two threads and spend their time waiting on each other.
    """
    # `-n` alone means xdist's `load`: each worker is given its share of the tests up
    # front, and at the end one worker runs the slow ones it holds while the other has
    # nothing left. `worksteal` lets an idle worker take tests queued on a busy one: the
    # whole suite took 476 s against 537 s and 568 s with `load` (one run each, 2026-12-07).
    if getattr(config.option, "dist", "no") == "load" and not os.environ.get("PYTEST_XDIST_WORKER"):
        config.option.dist = "worksteal"
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        import torch

        share = max(1, (os.cpu_count() or 1) // int(workers))
        torch.set_num_threads(share)
        # And every process a test starts (a `tlbench run`, the example script, a
        # plugin author's pytest) inherits the same share: with torch's default, two
        # workers' children each spun one OpenMP thread per core against the other's
        # (the four subprocess tests of test_python_api, test_closed_output,
        # test_startup and test_resume took 135 s under -n 2 with their default, 54 s
        # with this, 2026-12-07, load about 4).
        os.environ.setdefault("OMP_NUM_THREADS", str(share))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Leave what collection built out of every later garbage collection (`gc.freeze`).

    Collection imports torch, scipy, hypothesis, mlflow and the rest: an inner-loop
    worker held about a million objects, and each full collection walked them all
    (0.4 s; 40 of them took 16 s of each worker's 115 s, then the worker's exit
    walked them again). They live as long as the process: none is garbage.
    """
    gc.freeze()


@pytest.hookimpl(trylast=True)  # after pytest's own, which tears the fixtures down
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After a test file's last test, collect its garbage and freeze what it left alive.

    Imports, memos and caches a file leaves are then walked by no later collection
    either (full collections took 7.5 s of a worker with the freeze above alone,
    5.9 s with this). Freezing right after a collection leaves no garbage behind.
    """
    if nextitem is None or nextitem.path != item.path:
        gc.collect()
        gc.freeze()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order the tests for whoever runs them; one process's order is otherwise unchanged.

    Under mutmut, a mutant's tests run cheapest first: mutmut stops at a mutant's
    first failing test but hands pytest the tests in no set order, so a mutant the
    quickest test kills often paid for a grid test first.

    Under pytest-xdist the order is left as collected. Handing the slow tests out
    first was tried: the branch that did it never ran (the `-n` option is the
    controller's, None in the workers, which collect), and once it did, the README's
    command took 599 s against 537 s in file order (one run each, 2026-12-07, quiet).
    """
    if os.environ.get("MUTANT_UNDER_TEST"):
        durations = _mutmut_durations()
        items.sort(key=lambda item: durations.get(item.nodeid, 0.0))


#: built with random weights, ViT-B/16 (86M parameters, at 224 px only) and ResNet-101
#: (44M) take 0.5-2 s a test: slow; the other builtins keep their checks in the inner loop.
LARGEST_BUILTINS = ("vit_b_16", "resnet101")


def by_size(names: list[str]) -> list:
    """`names` as parameters, the largest builtin backbones among them marked slow."""
    return [
        pytest.param(name, marks=pytest.mark.slow) if name in LARGEST_BUILTINS else name
        for name in names
    ]


#: the tiny test objects `tlbench.testing` ships to plugin authors, used here too.
ColourSquares = testing.ColourSquares


def tiny_net() -> nn.Module:
    """The tiny backbone's network, freshly initialised."""
    return testing.tiny_backbone().build(False)


class FakeClock:
    """`time` for a fit module (`monkeypatch.setattr(module, "time", ...)`): each reading
    advances 1 ms, so each timed span is 1 ms; `advance` adds more."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 0.001
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


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
