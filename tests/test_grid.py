"""One grid driver (tlbench.grid) for `tlbench run`, `tlbench select`, `tlbench.run()` and
`tlbench.select()`: the results file is read once per command, the answers come back in
plan order, and the Python API's `select` finds what the command finds (issue 23)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tlbench
import tlbench.plugins
from tlbench import results, testing
from tlbench.cli import main
from tlbench.grid import Grid
from tlbench.runner import ResultsLog


class TwoTiny:
    @tlbench.hookimpl
    def tlbench_register_backbones(self, register):
        register(testing.tiny_backbone("tiny_a"))
        register(testing.tiny_backbone("tiny_b"))


def _plugins() -> tlbench.Plugins:
    return tlbench.Plugins(
        entry_points=False, extra=[("tiny", testing.TINY_PLUGIN), ("two", TwoTiny())]
    )


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every call of `tlbench.results.read` (the one function that reads a results file)."""
    calls: list[object] = []
    real = results.read

    def counting(paths):
        calls.append(paths)
        return real(paths)

    monkeypatch.setattr(results, "read", counting)
    monkeypatch.setattr(tlbench.plugins, "Plugins", lambda **k: _plugins())
    return calls


def _flags(tmp_path: Path, out: Path) -> list[str]:
    return [
        "--backbones", "tiny_a,tiny_b", "--datasets", "tinyset", "--image-size", "16",
        "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--quiet",
        "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip


def _keywords(tmp_path: Path) -> dict[str, object]:
    return dict(
        backbones=["tiny_a", "tiny_b"],
        datasets="tinyset",
        image_size=16,
        epochs=1,
        batch_size=16,
        device="cpu",
        cache_dir=str(tmp_path / "cache"),
        progress=False,
        plugins=_plugins(),
    )


# --------------------------------------------------------------------------- read once


def test_tlbench_run_reads_the_results_file_once(tmp_path, reads, capsys):
    out = tmp_path / "runs.jsonl"
    assert main(["run", *_flags(tmp_path, out), "--strategies", "scratch,linear"]) == 0
    assert len(reads) == 1  # was 4: planning, the runner, the claims, the final table
    reads.clear()
    assert main(["run", *_flags(tmp_path, out), "--strategies", "scratch,linear"]) == 0
    assert len(reads) == 1  # a rerun that trains nothing
    reads.clear()
    assert main(["run", *_flags(tmp_path, out), "--strategies", "linear", "--force"]) == 0
    assert len(reads) == 1
    # ...and the table still shows the grid: both backbones, both strategies.
    table = capsys.readouterr().out
    assert table.count("tiny_a") >= 1 and "linear" in table
    assert len(results.read(out)) == 6


def test_tlbench_select_reads_the_results_file_once_for_both_stages(tmp_path, reads, capsys):
    out = tmp_path / "runs.jsonl"
    assert main(["select", *_flags(tmp_path, out), "--top-k", "1"]) == 0
    assert len(reads) == 1  # was 8: four per stage, and once more for the summary
    assert "pick: tiny_" in capsys.readouterr().out


def test_the_python_api_reads_the_results_file_once(tmp_path, reads):
    found = tlbench.run(**_keywords(tmp_path), strategies="linear", out=tmp_path / "a.jsonl")
    assert len(found) == 2 and len(reads) == 1
    reads.clear()
    picked = tlbench.select(**_keywords(tmp_path), out=tmp_path / "b.jsonl")
    assert len(reads) == 1 and len(picked.results) == 3


def test_the_log_reads_again_only_when_another_process_wrote(tmp_path, reads):
    path = tmp_path / "runs.jsonl"
    record = {"key": "k1", "status": "ok", "config": {}, "accuracy": {"curve": [float("nan")]}}
    log = ResultsLog(path)
    assert log.records == [] and len(reads) == 1
    log.append(record)
    log.append({**record, "key": "k2"})
    assert [r["key"] for r in log.records] == ["k1", "k2"] and len(reads) == 1
    # What it keeps is what the file holds: JSON, where NaN is null.
    assert log.records == results.read(path)
    reads.clear()
    results.append(path, {**record, "key": "k3"})  # another process, as far as the log knows
    assert [r["key"] for r in log.records] == ["k1", "k2", "k3"] and len(reads) == 1


# --------------------------------------------------------------------------- the driver


def test_the_grids_answers_are_one_per_run_in_plan_order_done_ones_included(tiny_config):
    tiny_config.strategies = ["linear"]
    with Grid(tiny_config, _plugins()) as grid:
        grid.run()
    tiny_config.strategies = ["scratch", "linear"]
    with Grid(tiny_config, _plugins()) as grid:
        outcome = grid.run()
    answers = outcome.answers()
    assert [r["config"]["strategy"] for r in answers] == ["scratch", "linear"]
    assert [p.status for p in outcome.plans] == ["pending", "done"]
    assert len(outcome.records()) == 2 and outcome.out == Path(tiny_config.out).absolute()


def test_the_grid_removes_its_trackers_and_checks_a_finalist_first(tiny_config):
    plugins = _plugins()
    with pytest.raises(tlbench.UnknownNameError, match="finetuen"):
        Grid(tiny_config, plugins, finalists=["finetuen"])
    pytest.importorskip("tensorboard")
    from tlbench.trackers import plugin_name

    tiny_config.log_to = ["tensorboard"]
    with Grid(tiny_config, plugins) as grid:
        assert grid.plugins.pm.has_plugin(plugin_name("tensorboard"))
    assert not plugins.pm.has_plugin(plugin_name("tensorboard"))


# --------------------------------------------------------------------------- tlbench.select()


def test_tlbench_select_picks_as_the_command_does(tmp_path, reads, capsys):
    picked = tlbench.select(**_keywords(tmp_path), top_k=1)
    (selection,) = picked.selections
    assert selection.dataset == "tinyset" and selection.pick in ("tiny_a", "tiny_b")
    assert picked.picks == {"tinyset": selection.pick}
    assert [b for b, _ in selection.ranking] == sorted(
        ["tiny_a", "tiny_b"], key=lambda b: (-dict(selection.ranking)[b], b)
    )
    assert [(r["config"]["backbone"], r["config"]["strategy"]) for r in picked.results] == [
        ("tiny_a", "linear"),
        ("tiny_b", "linear"),
        (selection.pick, "finetune"),
    ]
    assert picked.results.source is None  # out=None: nothing outlives the call
    assert selection.interval is not None and selection.spent_seconds > 0
    assert "tinyset: tiny_" in repr(picked)
    # The command on the same grid picks the same backbone.
    out = tmp_path / "cli.jsonl"
    assert main(["select", *_flags(tmp_path, out)]) == 0
    assert f"pick: {selection.pick}" in capsys.readouterr().out


def test_tlbench_select_refuses_what_it_cannot_do_before_training(tmp_path):
    with pytest.raises(TypeError, match="picks its own strategies"):
        tlbench.select(**_keywords(tmp_path), strategies=["linear"])
    with pytest.raises(ValueError, match="rank_by"):
        tlbench.select(**_keywords(tmp_path), rank_by="vibes")
    with pytest.raises(ValueError, match="top_k"):
        tlbench.select(**_keywords(tmp_path), top_k=0)
    with pytest.raises(TypeError, match=r"tlbench.select\(\) got an unknown option 'epoch'"):
        tlbench.select(**_keywords(tmp_path), epoch=3)
    assert not (tmp_path / "cache").exists()  # nothing ran


def test_tlbench_select_is_also_the_module_of_the_algorithm():
    from tlbench import select

    assert select is tlbench.select and callable(select)
    assert select.front_door is tlbench.python_api.select  # the front door lives beside run()
    assert "select" in tlbench.__all__
    assert [b for b, _ in select.rank([], "probe")] == []
    assert json.dumps(select.RANK_BY)  # the module's names stay where they were


def test_docs_api_describes_tlbench_select_as_it_is():
    import inspect
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    section = text[text.index("## `tlbench.select(") : text.index("## `Results`")]
    parameters = inspect.signature(tlbench.python_api.select).parameters
    for name in re.findall(r"- \*\*`(\w+)`\*\*", section):
        assert name in parameters, name
    fields = set(tlbench.select.Selections.__dataclass_fields__) | {"picks"}
    assert set(re.findall(r"^\| `(\w+)` \|", section, re.M)) == fields
    # The example's keywords are tlbench.select's or tlbench.run's.
    example = section[section.index("```python") : section.index("```\n\n")]
    called = re.findall(r"^    (\w+)=", example, re.M)
    assert called and set(called) <= set(parameters) | set(tlbench.run_options())
