"""The `tlbench` command in-process on the tiny plugin: run, progress modes, show, help."""

from __future__ import annotations

import gc
import importlib.metadata
import io
import re
import sys

import pytest
from rich.console import Console

import tlbench
import tlbench.cli
import tlbench.plugins
from tlbench import results
from tlbench.cli import main
from tlbench.console import (
    GridClock,
    LiveProgress,
    PlainProgress,
    format_duration,
    make_progress,
    short_dataset,
)
from tlbench.runner import Runner

ANSI = re.compile(r"\x1b\[")
ANSI_CODE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def run_args(tmp_path):
    return [
        "run",
        "--backbones",
        "tiny",
        "--datasets",
        "tinyset",
        "--image-size",
        "16",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "runs.jsonl"),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]


def terminal(width: int = 140) -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=width, color_system="standard")


# --------------------------------------------------------------------------- run


def test_run_in_a_log_prints_plain_lines_then_the_table(tiny_cli, run_args, capsys):
    assert main(run_args) == 0
    out = capsys.readouterr().out
    assert not ANSI.search(out)  # not a terminal: no colour, no cursor movement
    assert "grid: 3 runs — 3 to train, 0 already done, 0 skipped" in out
    assert "[2/3] tiny / linear / tinyset / seed 0 at 16 px" in out
    assert re.search(r"epoch 2/2  loss \d\.\d{3}  acc \d+\.\d%  [\d,]+ img/s", out)
    assert re.search(r"-> tiny / finetune / tinyset / seed 0: top-1 \d+\.\d% \(best", out)
    assert "tinyset: top-1 against training cost" in out
    table = out[out.index("tinyset: top-1") :]
    for strategy in ("scratch", "linear", "finetune"):
        assert re.search(rf"^tiny +{strategy} ", table, re.MULTILINE)
    assert f"results: {run_args[run_args.index('--out') + 1]}" in out.replace("\n", "")


def test_rerun_resumes_and_force_redoes(tiny_cli, run_args, capsys):
    assert main(run_args) == 0
    capsys.readouterr()
    assert main(run_args) == 0
    out = capsys.readouterr().out
    assert "0 to train, 3 already done" in out and "epoch 1/2" not in out
    assert "tinyset: top-1" in out  # the table of the finished grid is still shown
    assert main([*run_args, "--force", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "epoch 1/2" not in out and "grid:" not in out and "tinyset: top-1" in out
    assert len(results.read(run_args[run_args.index("--out") + 1])) == 6


def test_run_with_every_run_failing_exits_1(tiny_cli, run_args, capsys, monkeypatch):
    import tlbench.regimes
    from tlbench.engine import Diverged

    def diverging(*args, **kwargs):
        raise Diverged(1, float("nan"))

    monkeypatch.setattr(tlbench.regimes, "train_images", diverging)
    assert main([*run_args, "--strategies", "scratch", "-q"]) == 1
    out = capsys.readouterr().out
    assert "failed: training loss became" in out.replace("\n", " ")


def test_ctrl_c_keeps_finished_runs_and_closes_the_live_display(
    tiny_cli, run_args, monkeypatch, capsys
):
    console = terminal()
    monkeypatch.setattr(
        tlbench.console,
        "PipeSafeConsole",
        lambda **k: console if not k.get("stderr") else Console(**k),
    )
    made = []

    class Interrupting(LiveProgress):
        def epoch(self, metrics, epochs):
            super().epoch(metrics, epochs)
            if self.clock.finished == 1:  # in the second run
                raise KeyboardInterrupt

    def make(c, **k):
        made.append(Interrupting(c))
        return made[-1]

    monkeypatch.setattr(tlbench.console, "make_progress", make)
    assert main(run_args) == 130
    out = ANSI_CODE.sub("", console.file.getvalue())
    assert "interrupted" in out and "1 finished run(s) of this grid are kept" in out
    assert "run the same command again to resume" in out
    assert not made[0].bars.live.is_started  # the terminal is given back
    records = results.read(run_args[run_args.index("--out") + 1])
    assert [(r["config"]["strategy"], r["status"]) for r in records] == [
        ("scratch", "ok"),
        ("linear", "interrupted"),
    ]


# --------------------------------------------------------------------------- progress


def test_plain_epoch_lines_are_throttled_in_logs(plugins, tiny_config, monkeypatch):
    tiny_config.strategies = ["linear"]
    tiny_config.hyperparameters = {"epochs": 12, "batch_size": 16}
    console = Console(file=io.StringIO(), width=200)
    Runner(tiny_config, plugins, PlainProgress(console)).run()
    epochs = [
        line.split()[1]
        for line in console.file.getvalue().splitlines()
        if line.startswith("    epoch")
    ]
    assert epochs == ["1/12", "12/12"]  # a fast head: first and last only
    monkeypatch.setattr(PlainProgress, "EPOCH_LINE_SECONDS", 0.0)
    tiny_config.force = True
    console = Console(file=io.StringIO(), width=200)
    Runner(tiny_config, plugins, PlainProgress(console)).run()
    assert console.file.getvalue().count("    epoch ") == 12


def test_long_dataset_paths_are_shortened_in_progress_lines():
    assert short_dataset("imagefolder:/data/sets/flowers12/") == "imagefolder:…/flowers12"
    assert short_dataset("imagefolder:flowers") == "imagefolder:flowers"
    assert short_dataset("cifar10") == "cifar10"


def test_grid_clock_eta_counts_runs_and_the_current_epochs():
    clock = GridClock(4)
    assert clock.eta() is None
    clock.started -= 30  # 30 s in: one run done and half of the next
    clock.finished, clock.fraction = 1, 0.5
    assert clock.eta() == pytest.approx(30 / 1.5 * 2.5, rel=0.01)
    assert [format_duration(s) for s in (None, 0.34, 12, 75, 3725)] == [
        "?",
        "0.3s",
        "12s",
        "1m15s",
        "1h02m",
    ]


def test_make_progress_picks_the_mode():
    assert type(make_progress(terminal())) is LiveProgress
    assert type(make_progress(terminal(), plain=True)) is PlainProgress
    log = Console(file=io.StringIO())
    assert type(make_progress(log)) is PlainProgress
    quiet = make_progress(terminal(), quiet=True)
    assert type(quiet) is PlainProgress and quiet.quiet


def test_live_progress_shows_grid_and_run_with_phase_epoch_and_metrics(plugins, tiny_config):
    tiny_config.seeds = [0]
    frames: list[str] = []
    evaluations: list[str] = []

    class Recording(LiveProgress):
        def frame(self) -> str:
            screen = Console(file=io.StringIO(), width=140, record=True)
            screen.print(self.renderable())
            return screen.export_text()

        def phase(self, name, done=None, total=None):
            super().phase(name, done, total)
            if name.startswith("decode") and done:
                frames.append(self.frame())
            if name == "eval" and self.clock.finished == 1 and self._epochs:
                evaluations.append(self.frame())  # the runner's own report, before epoch 2's eval

        def epoch(self, metrics, epochs):
            super().epoch(metrics, epochs)
            if self.clock.finished == 1 and metrics["epoch"] == 1:
                frames.append(self.frame())

    tiny_config.cache_dir = None
    tiny_config.no_cache = True
    console = terminal()
    progress = Recording(console)
    Runner(tiny_config, plugins, progress).run()
    decode = next(f for f in frames if "images" in f)
    assert re.search(r"tiny / scratch / seed 0 .* \d+/\d+ images .* decode train", decode)
    training, evaluating = frames[-1], evaluations[0]
    grid, run = training.splitlines()[:2]
    assert "grid" in grid and "run 2/3" in grid and re.search(r"eta \d+(\.\d)?s", grid)
    assert "tiny / linear / seed 0" in run and "epoch 1/2" in run
    assert re.search(r"train +loss \d\.\d{3}  acc \d+\.\d%  [\d,]+ img/s", run)
    assert re.search(r"eval +loss \d\.\d{3}", evaluating.splitlines()[1])
    out = ANSI_CODE.sub("", console.file.getvalue())
    assert "-> tiny / finetune / tinyset / seed 0: top-1" in out
    assert not progress.bars.live.is_started  # stopped at the end of the grid


def test_plain_progress_lines(plugins, tiny_config):
    console = Console(file=io.StringIO(), width=200)
    tiny_config.strategies = ["linear"]
    Runner(tiny_config, plugins, PlainProgress(console)).run()
    lines = console.file.getvalue().splitlines()
    assert lines[0] == "grid: 1 runs — 1 to train, 0 already done, 0 skipped"
    assert lines[1] == "[1/1] tiny / linear / tinyset / seed 0 at 16 px"
    assert "    decode train: 48 images" in lines and "    features" in lines
    assert sum(line.startswith("    epoch ") for line in lines) == 2
    assert lines[-1].startswith("grid done: 1 runs in ")


# --------------------------------------------------------------------------- show and help


def test_show_backbone_dataset_strategy(tiny_cli, capsys):
    assert main(["show", "tiny"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"feature width +16", out)
    assert re.search(r"pretrained weights +tiny-fixed-init", out)
    assert "resize the shorter side to 18, centre crop 16" in out
    # `show` builds nothing: a plugin that declares no parameter count gets none printed.
    assert re.search(r"parameters +not declared by its plugin; computed at run time", out)
    assert main(["show", "tinyset"]) == 0
    assert "coloured squares" in capsys.readouterr().out
    assert main(["show", "linear"]) == 0
    out = capsys.readouterr().out
    assert "frozen: features computed once and cached" in out and "epochs=30" in out


def test_show_unknown_name_suggests(tiny_cli, capsys):
    assert main(["show", "tinyy"]) == 2
    err = capsys.readouterr().err
    assert "'tinyy'" in err and "'tiny'" in err and "tlbench list" in err


@pytest.mark.parametrize("command", ["run", "report", "predict", "show", "list", "plugins"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "usage: tlbench" in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "report" in capsys.readouterr().out


def test_the_script_is_main_then_a_shutdown_that_walks_none_of_what_is_left(
    tiny_cli, monkeypatch, capsys
):
    """`tlbench` and `python -m tlbench` run `console_main`: `main`'s exit code, with the
    objects the command left frozen out of the garbage collector, so that Python's
    shutdown does not walk them again (`tlbench.cli.console_main`)."""
    import tlbench.__main__

    scripts = importlib.metadata.entry_points(group="console_scripts", name="tlbench")
    assert [script.value for script in scripts] == ["tlbench.cli:console_main"]
    assert tlbench.__main__.console_main is tlbench.cli.console_main
    monkeypatch.setattr(sys, "argv", ["tlbench", "show", "no_such_backbone"])
    frozen = gc.get_freeze_count()
    assert tlbench.cli.console_main() == 2  # main's code: an unknown name is a usage error
    assert "no_such_backbone" in capsys.readouterr().err
    assert gc.get_freeze_count() > frozen  # what the command left joined the frozen objects
