"""The Python API: tlbench.run, Results, load_results, list_* and create_backbone.

One small grid (the tiny backbone, scratch and linear, 2 epochs at 16 px)
trains once per module; the tests read it through every view and check the
values against the records themselves.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

import tlbench
from tlbench import tables, testing


def tiny_plugins() -> tlbench.Plugins:
    return tlbench.Plugins(entry_points=False, extra=[("tiny", testing.TINY_PLUGIN)])


#: the grid of every test here (tests/conftest.py's tiny_config, two strategies).
GRID = dict(
    backbones="tiny",  # one name is a list of one
    datasets=["tinyset"],
    strategies=["scratch", "linear"],
    seeds=0,
    image_size=16,
    epochs=2,
    batch_size=16,
    device="cpu",
)


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory):
    """(Results of the in-memory grid, its working folder, the temp folder it used)."""
    base = tmp_path_factory.mktemp("api")
    scratch = base / "tmp"
    scratch.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)
        mp.setattr(tempfile, "tempdir", str(scratch))
        results = tlbench.run(
            **GRID, cache_dir=str(base / "cache"), progress=False, plugins=tiny_plugins()
        )
    return results, base, scratch


def test_run_keeps_the_records_in_memory_and_no_file(grid) -> None:
    results, base, scratch = grid
    assert isinstance(results, tlbench.Results)
    assert len(results) == 2
    assert [r["config"]["strategy"] for r in results] == ["scratch", "linear"]  # grid order
    assert {r["status"] for r in results} == {"ok"}
    assert all(r["config"]["hyperparameters"]["epochs"] == 2 for r in results)
    assert all(len(r["accuracy"]["curve"]) == 2 for r in results)
    assert results.source is None
    # Nothing outlives the call: no results/ in the working folder, the temporary file removed.
    assert not (base / "results").exists()
    assert [p.name for p in scratch.iterdir() if p.name.startswith("tlbench")] == []


def test_results_is_a_sequence_with_filters(grid) -> None:
    results, _, _ = grid
    first = results[0]
    assert first is next(iter(results))
    sliced = results[1:]
    assert isinstance(sliced, tlbench.Results)
    assert [r["key"] for r in sliced] == [results[1]["key"]]
    linear = results.where(strategy="linear")
    assert len(linear) == 1 and linear[0]["config"]["strategy"] == "linear"
    assert len(results.where(strategy=["linear", "scratch"], backbone="tiny")) == 2
    assert len(results.where(backbone="resnet18")) == 0
    assert len(results.ok) == 2 and len(results.failed) == 0
    assert "2 runs (2 ok)" in repr(results)


def test_to_pandas_one_row_per_run_with_units(grid) -> None:
    results, _, _ = grid
    df = results.to_pandas()
    assert len(df) == 2
    for column in ("top1_final", "top1_best", "train_seconds", "peak_memory_mb"):
        assert column in df.columns
    for (_, row), record in zip(df.iterrows(), results, strict=True):
        assert row["key"] == record["key"]
        assert row["strategy"] == record["config"]["strategy"]
        assert row["top1_final"] == record["accuracy"]["final"]
        assert row["best_epoch"] == record["accuracy"]["best_epoch"]
        assert row["train_seconds"] == record["cost"]["train_seconds"]
        assert row["peak_memory_mb"] == pytest.approx(record["cost"]["peak_memory_bytes"] / 1e6)
        assert row["train_images_per_s"] == record["cost"]["train_images_per_s"]
        assert row["lr"] == record["config"]["hyperparameters"]["lr"]
        assert row["epochs"] == 2 and row["epochs_completed"] == 2
    curves = results.curves()
    assert [(c["strategy"], c["epoch"]) for c in curves] == [
        ("scratch", 1),
        ("scratch", 2),
        ("linear", 1),
        ("linear", 2),
    ]


def test_to_pandas_without_pandas_says_what_to_install(
    grid, monkeypatch: pytest.MonkeyPatch
) -> None:
    results, _, _ = grid
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install pandas"):
        results.to_pandas()


def test_table_is_the_report_comparison(grid) -> None:
    results, _, _ = grid
    text = results.table()
    lines = text.splitlines()
    assert lines[0] == "dataset: tinyset"
    for record in results:
        strategy = record["config"]["strategy"]
        (row,) = [line for line in lines if line.split()[:2] == ["tiny", strategy]]
        assert f"{100 * record['accuracy']['final']:.1f}" in row
    assert tables.LEGEND in text
    markdown = results.table("markdown")
    assert markdown.startswith("### dataset: tinyset")
    assert sum(line.startswith("| tiny ") for line in markdown.splitlines()) == 2
    with pytest.raises(ValueError, match="sort must be one of"):
        results.table(sort="speed")


def test_html_for_notebooks(grid) -> None:
    results, _, _ = grid
    page = results._repr_html_()
    # The styled table of the --html page: its style, scoped, and its interval bars.
    assert '<table class="comparison"' in page and ".tlbench-report table" in page
    assert page.count("<tr") == 3  # the header and one row per backbone x strategy
    assert "2 runs (2 ok)" in page


def test_plot_to_a_file_and_in_memory(grid, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    results, _, _ = grid
    path = results.plot(tmp_path / "tradeoff.png")
    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = results.plot()
    assert image._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"
    assert image.save(tmp_path / "again.png").stat().st_size == len(image.png)


def test_out_appends_and_resumes(grid, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    results, base, _ = grid
    out = tmp_path / "runs.jsonl"
    common = dict(**GRID, cache_dir=str(base / "cache"), plugins=tiny_plugins())
    first = tlbench.run(**common, out=out, progress=False)
    assert first.source == out
    assert len(out.read_text().splitlines()) == 2
    assert capsys.readouterr().out == ""  # progress=False is silent
    # The same grid again: nothing trains, the done runs are still the answer.
    again = tlbench.run(**common, out=out, progress=True)
    assert [r["key"] for r in again] == [r["key"] for r in first]
    assert [r["time"] for r in again] == [r["time"] for r in first]
    assert len(out.read_text().splitlines()) == 2
    # Not a terminal here: plain progress lines.
    assert "grid: 2 runs — 0 to train, 2 already done" in capsys.readouterr().out
    # The same keys as the in-memory grid: one configuration, one key.
    assert [r["key"] for r in first] == [r["key"] for r in results]


def test_load_results(grid, tmp_path: Path) -> None:
    results, _, _ = grid
    path = tmp_path / "runs.jsonl"
    ok = results[1]
    interrupted = {
        **ok,
        "status": "interrupted",
        "reason": "Ctrl-C",
        "time": "2999-01-01T00:00:00+00:00",
    }
    lines = [json.dumps(r) for r in [*results, interrupted]]
    path.write_text("\n".join(lines) + "\n")
    loaded = tlbench.load_results(path)
    # One record per run: the later interruption does not hide the finished run.
    assert sorted(r["key"] for r in loaded) == sorted(r["key"] for r in results)
    assert {r["status"] for r in loaded} == {"ok"}
    assert loaded.source == path
    everything = tlbench.load_results(path, history=True)
    assert [r["status"] for r in everything] == ["ok", "ok", "interrupted"]
    assert loaded.table() == results.table()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tlbench.load_results(tmp_path / "missing.jsonl")


def test_bad_options_fail_before_training(tmp_path: Path) -> None:
    plugins = tiny_plugins()
    out = tmp_path / "runs.jsonl"
    with pytest.raises(TypeError, match=r"'epoch'\. Did you mean 'epochs'"):
        tlbench.run(**GRID, epoch=3, out=out, plugins=plugins)
    with pytest.raises(tlbench.ConfigError, match="image_size"):
        tlbench.run(**{**GRID, "image_size": "big"}, out=out, plugins=plugins)
    with pytest.raises(tlbench.ConfigError, match="lr must be"):
        tlbench.run(**GRID, lr=-1.0, out=out, plugins=plugins)
    with pytest.raises(tlbench.UnknownNameError, match="tiny"):
        tlbench.run(**{**GRID, "backbones": ["tiyn"]}, out=out, plugins=plugins)
    with pytest.raises(tlbench.ConfigError, match="Did you mean 'mlflow'"):
        tlbench.run(**GRID, log_to="mlfow", out=out, plugins=plugins)
    assert not out.exists()


def test_run_options_are_the_config_fields() -> None:
    from dataclasses import fields

    from tlbench.config import RunConfig
    from tlbench.plugin_types import Hyperparameters

    options = set(tlbench.run_options())
    expected = {f.name for f in fields(RunConfig)} - {
        "hyperparameters",
        "strategy_overrides",
        "source",
    }
    expected |= {f.name for f in fields(Hyperparameters)} | {"config", "progress", "plugins"}
    assert options == expected


def test_config_file_then_keywords(grid, tmp_path: Path) -> None:
    _, base, _ = grid
    config = tmp_path / "grid.toml"
    config.write_text(
        'strategies = ["linear"]\nepochs = 1\nout = "from-the-file.jsonl"\n', encoding="utf-8"
    )
    results = tlbench.run(
        backbones=["tiny"],
        datasets=["tinyset"],
        image_size=16,
        device="cpu",
        batch_size=8,
        config=config,
        cache_dir=str(base / "cache"),
        progress=False,
        plugins=tiny_plugins(),
    )
    (record,) = results
    assert record["config"]["strategy"] == "linear"
    assert record["config"]["hyperparameters"]["epochs"] == 1  # from the file
    assert record["config"]["hyperparameters"]["batch_size"] == 8  # the keyword
    assert not Path("from-the-file.jsonl").exists()  # out=None beats the file's out


def test_list_functions() -> None:
    plugins = tiny_plugins()
    assert tlbench.list_backbones("tiny*", plugins=plugins) == ["tiny", "tiny_random"]
    assert "tinyset" in tlbench.list_datasets(plugins=plugins)
    assert {"scratch", "linear", "finetune"} <= set(tlbench.list_strategies(plugins=plugins))
    assert "efficientnet_lite0" in tlbench.list_backbones("efficientnet_lite*")


def test_create_backbone() -> None:
    plugins = tiny_plugins()
    model = tlbench.create_backbone("tiny", plugins=plugins)
    spec = model.tlbench_backbone
    features = model(torch.zeros(2, 3, 16, 16))
    assert features.shape == (2, spec.feature_dim)
    # "Pretrained" is the same fixed weights every time; random init is not them.
    again = tlbench.create_backbone("tiny", plugins=plugins)
    random = tlbench.create_backbone("tiny", pretrained=False, plugins=plugins)
    for a, b in zip(model.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)
    assert any(
        not torch.equal(a, b) for a, b in zip(model.parameters(), random.parameters(), strict=True)
    )
    with pytest.raises(tlbench.UnknownNameError, match="tiny"):
        tlbench.create_backbone("tinny", plugins=plugins)
    with pytest.raises(tlbench.WeightsUnavailableError, match="pretrained=False"):
        tlbench.create_backbone("tiny_random", plugins=plugins)


def test_import_stays_light() -> None:
    code = (
        "import sys, tlbench; "
        "print(sorted(m for m in ('torch', 'pandas', 'matplotlib', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_example_script_runs(tmp_path: Path) -> None:
    """examples/python_api.py end to end: the grid, the frame, the table and the plot.

    Slow: it trains EfficientNet-Lite0 from scratch at 32 px (about 50 s of CPU here).
    """
    pytest.importorskip("pandas")
    pytest.importorskip("matplotlib")
    script = Path(__file__).resolve().parents[1] / "examples" / "python_api.py"
    env = {**os.environ, "TLBENCH_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "out")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "<tlbench.Results: 4 runs (3 ok, 1 skipped)>" in out
    # The frame: one line per run, with the frame's column names.
    assert "top1_final" in out and "peak_memory_mb" in out
    assert (
        sum(line.split()[:3] == ["small_cnn", "linear", "skipped"] for line in out.splitlines())
        == 1
    )
    # The table: its heading, the skipped row's reason, the legend.
    assert "dataset: synthetic" in out
    assert "skipped: small_cnn has no pretrained weights" in out
    assert tables.LEGEND in out
    assert (tmp_path / "out" / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "results").exists()  # out=None: no results file


def test_progress_suits_where_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from tlbench.console import LiveProgress, PlainProgress
    from tlbench.python_api import _progress

    assert _progress(False) is None
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # a pipe or a log
    assert type(_progress(True)) is PlainProgress
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich's switch for "this is a terminal"
    assert type(_progress(True)) is LiveProgress
