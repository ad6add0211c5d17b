"""`tlbench select`: the ranking, the pick, its compute, and the check of the shortcut."""

from __future__ import annotations

import math

import pytest

import tlbench
from tlbench import select, stats, testing


def _record(
    backbone, strategy, accuracy, *, seed=0, seconds=10.0, flops=None, params=None, scores=None
):
    record = {
        "key": f"{backbone}-{strategy}-{seed}",
        "status": "ok",
        "config": {"backbone": backbone, "strategy": strategy, "seed": seed, "dataset": "ds",
                   "dataset_fingerprint": "f", "image_size": 32},
        "accuracy": {"final": accuracy, "best": accuracy},
        "cost": {"train_seconds": seconds, "feature_seconds": 0.0, "forward_flops_per_image": flops,
                 "total_params": params, "feature_cache": "none" if strategy == "linear" else None},
        "data": {"eval_images": 100},
    }  # fmt: skip
    if scores is not None:
        record["scores"] = scores
    return record


PROBES = [
    _record("a", "linear", 0.60, seconds=1, flops=1e9, params=5, scores={"logme": 0.1}),
    _record("b", "linear", 0.70, seconds=2, flops=2e9, params=9, scores={"logme": 0.3}),
    _record("c", "linear", 0.50, seconds=4, flops=4e9, params=1, scores={"logme": 0.2}),
]


def test_stage_one_ranks_by_the_chosen_value_best_first():
    assert [b for b, _ in select.rank(PROBES, "probe")] == ["b", "a", "c"]
    assert [b for b, _ in select.rank(PROBES, "logme")] == ["b", "c", "a"]
    assert [b for b, _ in select.rank(PROBES, "params")] == ["b", "a", "c"]
    with pytest.raises(ValueError, match="rank-by"):
        select.rank(PROBES, "vibes")


def test_the_pick_its_interval_and_a_flop_scaled_full_grid_estimate():
    finals = [_record("b", "finetune", 0.80, seconds=20)]
    (found,) = select.summarize(
        PROBES + finals,
        backbones=["a", "b", "c"],
        finalist_strategy="finetune",
        rank_by="probe",
        top_k=1,
    )
    assert found.finalists == ["b"] and found.pick == "b"
    # One seed: a bootstrap over the 100 evaluation images, 80 of them right.
    expected = stats.bootstrap_interval([1] * 80 + [0] * 20)
    assert (found.interval.lower, found.interval.upper) == (expected.lower, expected.upper)
    assert found.spent_seconds == 1 + 2 + 4 + 20
    # Fine-tuning costs 20 s per 2 GFLOPs (b); a and c scale by their FLOPs: 10 s and 40 s.
    assert found.full_grid_basis == "estimated"
    assert found.full_grid_seconds == pytest.approx(7 + 10 + 20 + 40)


def test_the_full_grid_is_measured_when_every_backbone_was_fine_tuned():
    finals = [
        _record("a", "finetune", 0.75, seconds=11),
        _record("b", "finetune", 0.80, seconds=20),
        _record("c", "finetune", 0.85, seconds=41),
    ]
    (found,) = select.summarize(
        PROBES + finals,
        backbones=["a", "b", "c"],
        finalist_strategy="finetune",
        rank_by="probe",
        top_k=2,
    )
    assert found.finalists == ["b", "a"] and found.pick == "b"
    assert found.full_grid_basis == "measured"
    assert found.full_grid_seconds == 7 + 11 + 20 + 41
    checks = {c.rank_by: c for c in select.check(PROBES + finals)}
    # The probe ranks b > a > c, the fine-tune c > b > a: picking by it loses 5 points.
    assert checks["probe"].regret == pytest.approx(0.05)
    assert checks["probe"].tau == pytest.approx(
        stats.weighted_tau([0.6, 0.7, 0.5], [0.75, 0.8, 0.85])
    )
    assert checks["params"].regret == pytest.approx(0.05)  # params rank b (9) first too
    assert checks["logme"].regret == pytest.approx(0.05)
    assert math.isfinite(checks["logme"].tau) and checks["logme"].backbones == 3


class TwoTiny:
    @tlbench.hookimpl
    def tlbench_register_backbones(self, register):
        register(testing.tiny_backbone("tiny_a"))
        register(testing.tiny_backbone("tiny_b"))


def test_select_end_to_end_appends_ordinary_records(tmp_path, monkeypatch, capsys):
    real = tlbench.plugins.Plugins
    monkeypatch.setattr(
        tlbench.plugins,
        "Plugins",
        lambda **k: real(
            entry_points=False, extra=[("tiny", testing.TINY_PLUGIN), ("two", TwoTiny())]
        ),
    )
    from tlbench import results
    from tlbench.cli import main

    out = tmp_path / "r.jsonl"
    code = main([
        "select", "--backbones", "tiny_a,tiny_b", "--datasets", "tinyset", "--image-size", "16",
        "--epochs", "2", "--batch-size", "16", "--out", str(out), "--cache-dir", str(tmp_path / "c"),
        "--device", "cpu", "--plain", "--top-k", "1",
    ])  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0, text
    records = results.read(out)
    tested = [r for r in records if not r["config"].get("holdout")]
    assert sorted(r["config"]["strategy"] for r in tested) == ["finetune", "linear", "linear"]
    # Every choice is made on validation: one run per cell on the validation split.
    validation = [r for r in records if r["config"].get("holdout")]
    assert sorted(r["config"]["strategy"] for r in validation) == ["finetune", "linear", "linear"]
    assert all(r["data"]["eval_split"] == "validation=0.2" for r in validation)
    assert all(r["status"] == "ok" for r in records)
    assert "pick: tiny_" in text and "95% CI" in text and "why: the " in text
    assert (
        main(["select", "--backbones", "tiny_a", "--datasets", "tinyset", "--strategies", "linear"])
        == 2
    )
