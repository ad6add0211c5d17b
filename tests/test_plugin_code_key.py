"""Run keys see a plugin's code (issue 24, item 1).

Editing a plugin used to return its old results as "already done": the key held names,
weights, hyperparameters and data, never the plugin's version or source. A plugin here is
a real distribution in a temporary site folder (a module and a `.dist-info` with its
`tlbench` entry point), loaded the way `pip install -e` leaves one; editing its file or
bumping its version must rerun its runs, with the plan saying why, while the keys of
builtin-only runs stay exactly as they were.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

import tlbench
from tlbench import testing
from tlbench.config import RunConfig
from tlbench.runner import Runner

#: a strategy plugin whose code a user edits between two runs.
PLUGIN = """
    from tlbench import FINETUNE, Strategy, hookimpl, all_trainable

    SCALE = {scale}


    def groups(backbone, head, hp):
        found = all_trainable(backbone, head, hp)
        for group in found:
            group["lr"] *= SCALE
        return found


    @hookimpl
    def tlbench_register_strategies(register):
        register(Strategy("scaled", "finetune at a scaled LR", FINETUNE.defaults, True,
                          param_groups=groups))
"""


class Site:
    """A temporary site folder holding one plugin distribution, editable in place."""

    def __init__(self, root: Path):
        self.root = root
        self.info: Path | None = None

    def install(self, version: str, scale: float) -> None:
        (self.root / "scaleplug.py").write_text(textwrap.dedent(PLUGIN.format(scale=scale)))
        if self.info is not None:
            for file in self.info.iterdir():
                file.unlink()
            self.info.rmdir()
        self.info = self.root / f"scaleplug-{version}.dist-info"
        self.info.mkdir()
        (self.info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: scaleplug\nVersion: {version}\n"
        )
        (self.info / "entry_points.txt").write_text("[tlbench]\nscaled = scaleplug\n")
        sys.modules.pop("scaleplug", None)  # the next load imports the file as it is now
        importlib.invalidate_caches()


@pytest.fixture
def site(tmp_path, monkeypatch):
    root = tmp_path / "site"
    root.mkdir()
    for var in testing.PLUGIN_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TLBENCH_LOAD_PLUGINS", "scaled")
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # an edit is never read from a .pyc
    monkeypatch.syspath_prepend(str(root))
    yield Site(root)
    sys.modules.pop("scaleplug", None)


def plan(tmp_path: Path) -> tuple[list, list[str]]:
    plugins = tlbench.Plugins(builtins=True, extra=[("tiny", testing.TINY_PLUGIN)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        planned = Runner(config(tmp_path), plugins).plan()
    return planned, [str(w.message) for w in caught]


def config(tmp_path: Path) -> RunConfig:
    return RunConfig(
        backbones=["tiny"],
        datasets=["tinyset"],
        strategies=["scaled", "finetune"],
        seeds=[0],
        image_size=16,
        hyperparameters={"epochs": 1, "batch_size": 16},
        out=str(tmp_path / "runs.jsonl"),
        cache_dir=str(tmp_path / "cache"),
        device="cpu",
    )


def train(tmp_path: Path) -> list[dict]:
    plugins = tlbench.Plugins(builtins=True, extra=[("tiny", testing.TINY_PLUGIN)])
    return Runner(config(tmp_path), plugins).run()


def statuses(runs: list) -> dict[str, str]:
    return {p.spec.strategy: p.status for p in runs}


def test_an_edited_plugin_reruns_and_the_plan_says_why(site, tmp_path):
    site.install("0.1", scale=1.0)
    first = {r["config"]["strategy"]: r for r in train(tmp_path)}
    assert {s: r["status"] for s, r in first.items()} == {"scaled": "ok", "finetune": "ok"}
    runs, _ = plan(tmp_path)
    assert statuses(runs) == {"scaled": "done", "finetune": "done"}

    site.install("0.1", scale=0.5)  # the user edits the plugin; the version stays
    runs, notes = plan(tmp_path)
    assert statuses(runs) == {"scaled": "pending", "finetune": "done"}
    assert any("strategy scaled's code changed (its source was edited)" in n for n in notes), notes
    code = first["scaled"]["config"]["code"]["strategy"]
    assert (code["distribution"], code["version"]) == ("scaleplug", "0.1")
    assert "code" not in first["finetune"]["config"], "builtins add nothing to the key"

    train(tmp_path)
    site.install("0.2", scale=0.5)  # the same source, released as a new version
    runs, notes = plan(tmp_path)
    assert statuses(runs) == {"scaled": "pending", "finetune": "done"}
    assert any("strategy scaled's code changed (scaleplug 0.1 -> 0.2)" in n for n in notes), notes


def test_force_still_redoes_everything(site, tmp_path):
    site.install("0.1", scale=1.0)
    train(tmp_path)
    plugins = tlbench.Plugins(builtins=True, extra=[("tiny", testing.TINY_PLUGIN)])
    forced = Runner(RunConfig(**{**config(tmp_path).__dict__, "force": True}), plugins).plan()
    assert statuses(forced) == {"scaled": "pending", "finetune": "pending"}


def test_builtin_only_runs_have_no_code_in_their_keys(tmp_path):
    plugins = tlbench.Plugins(entry_points=False)
    cfg = RunConfig(
        backbones=["small_cnn"],
        datasets=["synthetic"],
        strategies=["scratch"],
        seeds=[0],
        image_size=16,
        out=str(tmp_path / "runs.jsonl"),
        device="cpu",
    )
    (run,) = Runner(cfg, plugins).plan()
    assert run.spec.code is None and run.spec.options is None
    assert "code" not in run.spec.config() and "options" not in run.spec.config()
    assert plugins.code_identity("backbone", "small_cnn") is None
    assert plugins.code_identity("strategy", "scratch") is None
