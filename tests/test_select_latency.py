"""`tlbench select --max-latency-ms` (issue 27): finalists ranked under a latency budget.

The probe and the fine-tune are the same network, so the latency the probe
measured is the finalist's: a backbone over the budget (or not measured) is
neither ranked nor trained in stage 2, and the summary names it with why.
"""

from __future__ import annotations

import pytest
from test_select import PROBES, TwoTiny, _record

import tlbench
from tlbench import select, testing


def _timed(record, ms):
    return {**record, "inference": {"latency_ms_p50": ms}}


TIMED = [_timed(PROBES[0], 4.0), _timed(PROBES[1], 30.0), PROBES[2]]  # c: not measured


def test_a_backbone_over_the_budget_is_neither_ranked_nor_a_finalist():
    assert select.finalists(TIMED, "probe", 1) == ["b"]  # no budget: the best probe
    assert select.finalists(TIMED, "probe", 1, max_latency_ms=10) == ["a"]
    assert select.finalists(TIMED, "probe", 3, max_latency_ms=30) == ["b", "a"]
    assert select.finalists(TIMED, "probe", 1, max_latency_ms=1) == []


def test_the_summary_picks_within_the_budget_and_names_what_it_left_out():
    finals = [_record("a", "finetune", 0.65, seconds=10), _record("b", "finetune", 0.9)]
    (found,) = select.summarize(
        TIMED + finals,
        backbones=["a", "b", "c"],
        finalist_strategy="finetune",
        rank_by="probe",
        top_k=1,
        max_latency_ms=10,
    )
    assert [name for name, _ in found.ranking] == ["a"]
    assert found.finalists == ["a"] and found.pick == "a"  # b is better, and too slow
    assert found.over_latency == {"b": 30.0, "c": None}
    assert found.max_latency_ms == 10


@pytest.fixture
def two_tiny(monkeypatch):
    real = tlbench.plugins.Plugins
    monkeypatch.setattr(
        tlbench.plugins,
        "Plugins",
        lambda **k: real(
            entry_points=False, extra=[("tiny", testing.TINY_PLUGIN), ("two", TwoTiny())]
        ),
    )


def _select(tmp_path, *extra):
    from tlbench.cli import main

    return main([
        "select", "--backbones", "tiny_a,tiny_b", "--datasets", "tinyset", "--image-size", "16",
        "--epochs", "1", "--batch-size", "16", "--out", str(tmp_path / "r.jsonl"),
        "--cache-dir", str(tmp_path / "c"), "--device", "cpu", "--plain", *extra,
    ])  # fmt: skip


def test_select_under_a_generous_budget_picks_and_says_nothing_was_left_out(
    tmp_path, two_tiny, capsys
):
    assert _select(tmp_path, "--max-latency-ms", "60000") == 0
    out = capsys.readouterr().out
    assert "pick: tiny_" in out and "over the latency budget" not in out


def test_select_with_no_backbone_within_the_budget_says_so_before_stage_two(
    tmp_path, two_tiny, capsys
):
    from tlbench import results

    assert _select(tmp_path, "--max-latency-ms", "0.000001") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "no backbone answers within --max-latency-ms 1e-06" in err
    assert "tiny_a (" in err and "ms)" in err and "Traceback" not in err
    strategies = {r["config"]["strategy"] for r in results.read(tmp_path / "r.jsonl")}
    assert strategies == {"linear"}  # no fine-tune was trained


def test_a_latency_budget_without_measuring_latency_is_refused(tmp_path, two_tiny, capsys):
    assert _select(tmp_path, "--max-latency-ms", "5", "--no-inference") == 2
    assert "drop --no-inference" in capsys.readouterr().err
    assert _select(tmp_path, "--max-latency-ms", "0") == 2
    with pytest.raises(ValueError, match="max_latency_ms"):
        tlbench.select(["tiny_a"], ["tinyset"], max_latency_ms=-1)
