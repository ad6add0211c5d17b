"""The runner end to end on the tiny plugin: records, skips, resume, failures, determinism."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tlbench import results
from tlbench.errors import TlbenchError, UnknownNameError
from tlbench.runner import Runner


def test_grid_writes_one_complete_record_per_run(plugins, tiny_config):
    tiny_config.seeds = [0, 1]
    records = Runner(tiny_config, plugins).run()
    assert [(r["config"]["strategy"], r["config"]["seed"]) for r in records] == [
        ("scratch", 0),
        ("scratch", 1),
        ("linear", 0),
        ("linear", 1),
        ("finetune", 0),
        ("finetune", 1),
    ]
    assert results.read(tiny_config.out) == records
    # The tiny backbone: conv 3->8 (3x3, bias), BatchNorm(8), conv 8->16 (3x3, bias); head 16->3.
    backbone_params = (3 * 8 * 9 + 8) + 2 * 8 + (8 * 16 * 9 + 16)
    head_params = 16 * 3 + 3
    for r in records:
        assert r["status"] == "ok", r["reason"]
        curve = r["accuracy"]["curve"]
        assert [c["epoch"] for c in curve] == [1, 2]
        # Top-1 on the 18 evaluation images: a whole number of them, the last epoch's.
        assert r["accuracy"]["final"] == curve[-1]["eval_accuracy"]
        assert all(round(c["eval_accuracy"] * 18, 4).is_integer() for c in curve)
        best = max(c["eval_accuracy"] for c in curve)
        assert r["accuracy"]["best"] == best
        assert curve[r["accuracy"]["best_epoch"] - 1]["eval_accuracy"] == best
        assert r["data"]["train_images"] == 48 and r["data"]["eval_images"] == 18
        cost = r["cost"]
        for field in (
            "data_prep_seconds",
            "train_seconds",
            "eval_seconds",
            "train_images_per_s",
            "eval_images_per_s",
            "peak_memory_bytes",
        ):
            assert cost[field] > 0, field
        assert cost["total_params"] == backbone_params + head_params
        # Two evaluations of 18 images in eval_seconds.
        assert cost["eval_images_per_s"] == pytest.approx(2 * 18 / cost["eval_seconds"], rel=1e-6)
        assert r["environment"]["torch"] and r["environment"]["tlbench"]
    linear = records[2]
    assert linear["cost"]["trainable_params"] == head_params  # the head alone
    assert linear["cost"]["feature_seconds"] > 0
    for r in (records[0], records[4]):  # scratch and finetune train everything
        assert r["cost"]["trainable_params"] == r["cost"]["total_params"]
        assert r["cost"]["feature_seconds"] == 0


def test_strategy_needing_weights_is_skipped_with_reason(plugins, tiny_config):
    tiny_config.backbones = ["tiny_random"]
    records = Runner(tiny_config, plugins).run()
    status = {r["config"]["strategy"]: (r["status"], r["reason"]) for r in records}
    assert status["scratch"][0] == "ok"
    assert status["linear"] == (
        "skipped",
        "tiny_random has no pretrained weights; linear needs them",
    )
    assert status["finetune"][0] == "skipped"


def test_rerun_resumes_and_force_redoes(plugins, tiny_config):
    Runner(tiny_config, plugins).run()
    again = Runner(tiny_config, plugins)
    plans = again.plan()
    assert [p.status for p in plans] == ["done", "done", "done"]
    assert again.run(plans) == []
    assert len(results.read(tiny_config.out)) == 3
    tiny_config.force = True
    assert len(Runner(tiny_config, plugins).run()) == 3
    assert len(results.read(tiny_config.out)) == 6


def test_changed_hyperparameters_make_a_new_run(plugins, tiny_config):
    Runner(tiny_config, plugins).run()
    tiny_config.hyperparameters = {**tiny_config.hyperparameters, "lr": 0.01}
    assert all(p.status == "pending" for p in Runner(tiny_config, plugins).plan())


def test_same_seed_twice_gives_identical_curves(plugins, tiny_config, tmp_path):
    first = Runner(tiny_config, plugins).run()
    tiny_config.out = str(tmp_path / "second.jsonl")
    second = Runner(tiny_config, plugins).run()

    def curve(r):
        return [
            (c["train_loss"], c["eval_accuracy"], c["eval_loss"]) for c in r["accuracy"]["curve"]
        ]

    for a, b in zip(first, second, strict=True):
        assert curve(a) == curve(b)


def test_nan_loss_fails_that_run_and_the_grid_goes_on(plugins, tiny_config):
    tiny_config.strategies = ["scratch", "finetune"]
    tiny_config.strategy_overrides = {"scratch": {"lr": float("inf")}}
    records = Runner(tiny_config, plugins).run()
    assert records[0]["status"] == "failed"
    assert records[0]["failed_epoch"] == 1
    assert "nan" in records[0]["reason"] or "inf" in records[0]["reason"]
    assert records[1]["status"] == "ok"
    # The failed run is redone on the next invocation; the finished one is not.
    assert [p.status for p in Runner(tiny_config, plugins).plan()] == ["pending", "done"]


def test_unknown_names_fail_before_training(plugins, tiny_config):
    tiny_config.backbones = ["tiny", "tinny"]
    with pytest.raises(UnknownNameError, match=r"'tinny'.*'tiny'.*tlbench list backbones"):
        Runner(tiny_config, plugins).plan()
    tiny_config.backbones = ["tiny"]
    tiny_config.strategies = ["fintune"]
    with pytest.raises(UnknownNameError, match="'finetune'"):
        Runner(tiny_config, plugins).plan()
    tiny_config.strategies = ["linear"]
    tiny_config.datasets = ["tinyst"]
    with pytest.raises(UnknownNameError, match="'tinyset'"):
        Runner(tiny_config, plugins).plan()
    assert not results.read(tiny_config.out)


def test_features_are_cached_across_seeds_and_processes(plugins, tiny_config):
    tiny_config.strategies = ["linear"]
    tiny_config.seeds = [0, 1]
    first = Runner(tiny_config, plugins).run()
    assert [r["cost"]["feature_cache"] for r in first] == ["none", "memory"]
    tiny_config.force = True
    again = Runner(tiny_config, plugins).run()  # a new runner: nothing in memory
    assert [r["cost"]["feature_cache"] for r in again] == ["disk", "memory"]

    def losses(rs):
        return [[(c["train_loss"], c["eval_accuracy"]) for c in r["accuracy"]["curve"]] for r in rs]

    assert losses(again) == losses(first)


def test_feature_cache_hit_builds_no_backbone_and_reports_the_same_cost_facts(
    plugins, tiny_config, monkeypatch
):
    tiny_config.strategies = ["linear"]
    tiny_config.inference = False  # timing the trained model needs it whole: below
    builds = []
    tiny = plugins.backbones.get("tiny")
    counted = dataclasses.replace(
        tiny, build=lambda pretrained: builds.append(pretrained) or tiny.build(pretrained)
    )
    monkeypatch.setitem(plugins.backbones._items, "tiny", counted)
    (first,) = Runner(tiny_config, plugins).run()
    assert builds == [True]
    tiny_config.force = True
    (again,) = Runner(tiny_config, plugins).run()  # a new runner: the features come from disk
    assert again["cost"]["feature_cache"] == "disk"
    assert builds == [True]  # not built again
    facts = ("trainable_params", "total_params", "forward_flops_per_image")
    assert [again["cost"][k] for k in facts] == [first["cost"][k] for k in facts]
    assert first["cost"]["forward_flops_per_image"] > 0
    assert first["cost"]["total_params"] > first["cost"]["trainable_params"] > 0

    tiny_config.save_models = True  # a checkpoint holds the backbone: built for it
    (saved,) = Runner(tiny_config, plugins).run()
    assert saved["cost"]["feature_cache"] == "disk" and builds == [True, True]
    assert Path(saved["cost"]["checkpoint"]).is_file()

    # Inference is timed on the whole model: built once in a process (once per model
    # architecture), after training, whose cost facts stay the same.
    tiny_config.save_models, tiny_config.inference = False, True
    (timed,) = Runner(tiny_config, plugins).run()
    assert builds == [True, True, True] and timed["inference"]["reused"] is False
    assert [timed["cost"][k] for k in facts] == [first["cost"][k] for k in facts]


def test_batch_larger_than_dataset_works(plugins, tiny_config):
    tiny_config.hyperparameters = {"epochs": 1, "batch_size": 1000}
    records = Runner(tiny_config, plugins).run()
    assert all(r["status"] == "ok" for r in records)
    assert records[0]["cost"]["batch_size"] == 48


def test_nothing_to_run_is_an_error(plugins, tiny_config):
    tiny_config.seeds = []
    with pytest.raises(TlbenchError, match="nothing to run"):
        Runner(tiny_config, plugins).plan()


def test_record_config_holds_the_hyperparameters_used(plugins, tiny_config):
    tiny_config.strategies = ["finetune"]
    (record,) = Runner(tiny_config, plugins).run()
    hp = record["config"]["hyperparameters"]
    assert hp["epochs"] == 2 and hp["batch_size"] == 16
    assert hp["backbone_lr_mult"] == 0.1  # the strategy's own default survives the overrides
    assert record["config"]["precision"] == "fp32"
    assert dataclasses.is_dataclass(tiny_config)


# slow: TorchInductor's C++ build of the compiled model (about 12 s on 2 cores).
@pytest.mark.slow
def test_compile_trains_the_same_model_through_torch_compile(plugins, tiny_config):
    # --compile on a CPU: TorchInductor's C++ backend (needs a C++ compiler, as CI has).
    tiny_config.strategies = ["finetune"]
    (eager,) = Runner(tiny_config, plugins).run()
    tiny_config.compile, tiny_config.force = True, True
    (compiled,) = Runner(tiny_config, plugins).run()
    assert compiled["status"] == "ok", compiled.get("reason")
    assert (eager["cost"]["compile"], compiled["cost"]["compile"]) == (False, True)
    assert compiled["key"] != eager["key"]  # a setting of the run, so not resumed from the other

    def losses(r):
        return [c["train_loss"] for c in r["accuracy"]["curve"]]

    # Same data, seed and weights; fused kernels round differently, nothing more.
    assert losses(compiled) == pytest.approx(losses(eager), rel=1e-3)
