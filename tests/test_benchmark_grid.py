"""`tlbench.testing.benchmark_grid` and `check_accuracy`: a user's grid as a pytest-benchmark
benchmark whose comparison checks accuracy, not only time (issue 24).

The problem: pytest-benchmark measured the harness against bare loops, and
`--benchmark-compare` ignores accuracy, so a user's change that made a model
worse but not slower passed.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

import tlbench
from tlbench import cli, testing
from tlbench.record import decode_correct, encode_correct

GRID = dict(
    backbones=["tiny"],
    datasets=["tinyset"],
    strategies=["linear"],
    image_size=16,
    epochs=3,
    batch_size=16,
    lr=0.05,
    device="cpu",
    progress=False,
)


@pytest.fixture
def grid(benchmark, tmp_path):
    plugins = tlbench.Plugins(entry_points=False, extra=[("tiny", testing.TINY_PLUGIN)])
    results = testing.benchmark_grid(
        benchmark, **GRID, plugins=plugins, cache_dir=str(tmp_path / "cache")
    )
    return results, benchmark.extra_info


def _saved(path: Path, extra_info: dict) -> Path:
    """What `--benchmark-autosave` writes for one benchmark (its shape, trimmed)."""
    path.write_text(json.dumps({"benchmarks": [{"name": "test_grid", "extra_info": extra_info}]}))
    return path


def _worse(records: list[dict]) -> list[dict]:
    """The same runs with every evaluation image wrong: a planted regression."""
    out = copy.deepcopy(list(records))
    for r in out:
        n = len(decode_correct(r["accuracy"]["final_correct"]))
        r["accuracy"].update(final=0.0, best=0.0, final_correct=encode_correct([0] * n))
    return out


def test_the_benchmark_keeps_accuracy_and_records(grid) -> None:
    results, info = grid
    (record,) = results
    (cell,) = info["tlbench_cells"].values()
    assert cell["top1"] == record["accuracy"]["final"]
    assert cell["train_seconds"] == results.rows()[0].train_seconds
    assert info["tlbench_records"] == [record]
    json.dumps(info)  # what pytest-benchmark saves must be JSON


def test_check_accuracy_fails_on_a_worse_grid_and_passes_on_the_same(grid, tmp_path) -> None:
    results, info = grid
    assert results[0]["accuracy"]["final"] >= 0.5  # the tiny probe learns the colours
    saved = _saved(tmp_path / "0001_saved.json", info)
    assert testing.check_accuracy(saved, results).ok
    with pytest.raises(AssertionError, match="accuracy got worse") as failed:
        testing.check_accuracy(saved, _worse(results))
    assert "tiny / linear" in str(failed.value) and "WORSE" in str(failed.value)


def test_tlbench_compare_reads_saved_benchmark_sessions(grid, tmp_path, capsys) -> None:
    results, info = grid
    saved = _saved(tmp_path / "0001_saved.json", info)
    now = _saved(tmp_path / "0002_now.json", {**info, "tlbench_records": _worse(results)})
    assert cli.main(["compare", str(saved), str(now)]) == 1
    assert "WORSE" in capsys.readouterr().out
    empty = _saved(tmp_path / "0003_timing_only.json", {})
    assert cli.main(["compare", str(empty), str(now)]) == 2
    assert "holds tlbench records" in capsys.readouterr().err
