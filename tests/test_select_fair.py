"""`tlbench select` picks on validation, never on test, and never worse than what it beat."""

from __future__ import annotations

import dataclasses

import pytest

import tlbench
from tlbench import Plugins, hookimpl, select, testing
from tlbench.builtin.strategies import FINETUNE


def _record(backbone, strategy, accuracy, seed=0):
    return {
        "key": f"{backbone}-{strategy}-{seed}",
        "status": "ok",
        "config": {
            "backbone": backbone,
            "strategy": strategy,
            "dataset": "d",
            "dataset_fingerprint": "f",
            "image_size": 16,
            "seed": seed,
        },
        "accuracy": {"final": accuracy, "best": accuracy},
        "cost": {"train_seconds": 1.0, "feature_seconds": 0.0},
        "data": {"eval_images": 100},
    }


def _cell(backbone, strategy):
    return ("d", "f", None, 16, backbone, strategy)


def test_the_probe_is_picked_when_it_beats_the_finalist_on_validation():
    records = [_record("a", "linear", 0.95), _record("a", "finetune", 0.375)]
    validation = {_cell("a", "linear"): 0.93, _cell("a", "finetune"): 0.40}
    (found,) = select.summarize(
        records,
        backbones=["a"],
        finalist_strategy="finetune",
        rank_by="probe",
        top_k=1,
        validation=validation,
    )
    assert (found.pick, found.pick_strategy) == ("a", "linear")
    assert found.pick_accuracy == pytest.approx(0.95)  # reported on test, chosen on validation
    assert "probe beat the finetune" in found.why and "keep `linear`" in found.why
    assert found.validation == {"a / linear": 0.93, "a / finetune": 0.40}


def test_the_pick_follows_validation_even_where_test_would_disagree():
    records = [
        _record("a", "linear", 0.70),
        _record("b", "linear", 0.60),
        _record("a", "finetune", 0.90),
        _record("b", "finetune", 0.99),
    ]
    validation = {
        _cell("a", "linear"): 0.70,
        _cell("b", "linear"): 0.65,
        _cell("a", "finetune"): 0.88,
        _cell("b", "finetune"): 0.80,
    }
    (found,) = select.summarize(
        records,
        backbones=["a", "b"],
        finalist_strategy="finetune",
        rank_by="probe",
        top_k=2,
        validation=validation,
    )
    assert [b for b, _ in found.ranking] == ["a", "b"]  # by validation, not test
    assert (found.pick, found.pick_strategy) == ("a", "finetune")
    assert found.pick_accuracy == pytest.approx(0.90)


class _Wreck:
    """A plugin finalist that trains badly (a huge step), and flowers whose test labels lie."""

    @hookimpl
    def tlbench_register_strategies(self, register):
        register(
            dataclasses.replace(
                FINETUNE,
                name="wreck",
                defaults=FINETUNE.defaults.replace(lr=3.0, backbone_lr_mult=1.0),
                search_space=(),
            )
        )

    @hookimpl
    def tlbench_register_datasets(self, register):
        register(testing.lying_tiny_dataset("tinyset_lying"))


@pytest.fixture
def wreck(monkeypatch):
    real = tlbench.plugins.Plugins
    monkeypatch.setattr(
        tlbench.plugins,
        "Plugins",
        lambda **k: real(
            entry_points=False, extra=[("tiny", testing.TINY_PLUGIN), ("wreck", _Wreck())]
        ),
    )
    return Plugins


def _select(tmp_path, dataset, name):
    return tlbench.select(
        backbones=["tiny"],
        datasets=[dataset],
        finalist="wreck",
        image_size=16,
        epochs=3,
        batch_size=16,
        out=str(tmp_path / f"{name}.jsonl"),
        cache_dir=str(tmp_path / "cache"),
        device="cpu",
        progress=False,
    )


def test_select_keeps_the_probe_when_a_plugin_finalist_is_worse(tmp_path, wreck):
    (found,) = _select(tmp_path, "tinyset", "r").selections
    assert found.validation["tiny / linear"] > found.validation["tiny / wreck"]
    assert (found.pick, found.pick_strategy) == ("tiny", "linear")
    assert "the probe beat the wreck" in found.why
    assert found.pick_accuracy >= found.accuracy["tiny"]


def test_lying_test_labels_change_no_select_choice(tmp_path, wreck):
    honest = _select(tmp_path, "tinyset", "honest").selections[0]
    lying = _select(tmp_path, "tinyset_lying", "lying").selections[0]
    assert (lying.pick, lying.pick_strategy) == (honest.pick, honest.pick_strategy)
    assert lying.validation == pytest.approx(honest.validation)
    assert lying.pick_accuracy != honest.pick_accuracy  # the test split did change


def test_validation_runs_choose_but_are_never_what_a_pick_is_reported_with():
    held = _record("a", "linear", 0.10)
    held["config"]["holdout"] = "validation=0.2"
    held["key"] = "held"
    records = [_record("a", "linear", 0.95), _record("a", "finetune", 0.5), held]
    validation = {_cell("a", "linear"): 0.93, _cell("a", "finetune"): 0.40}
    (found,) = select.summarize(
        records,
        backbones=["a"],
        finalist_strategy="finetune",
        rank_by="probe",
        top_k=1,
        validation=validation,
    )
    assert found.pick_accuracy == pytest.approx(0.95)  # the test run alone
    assert found.interval.n == 100  # one run: a bootstrap over its images, not two "seeds"
    assert found.spent_seconds == 3.0  # probe, finalist and the validation run: 1 s each


def test_a_tuned_selection_chooses_on_the_searchs_validation(tmp_path, wreck):
    picked = tlbench.select(
        backbones=["tiny"],
        datasets=["tinyset"],
        finalist="finetune",
        image_size=16,
        epochs=2,
        batch_size=16,
        tune=2,
        tune_batch=2,
        out=str(tmp_path / "tuned.jsonl"),
        cache_dir=str(tmp_path / "cache"),
        device="cpu",
        progress=False,
    )
    (found,) = picked.selections
    tuned = {r["config"]["strategy"]: r["tuning"] for r in picked.results}
    # Each candidate's validation accuracy is its search's best: no extra validation run.
    assert found.validation == {
        f"tiny / {s}": pytest.approx(t["validation_accuracy"]) for s, t in tuned.items()
    }
    from tlbench.results import read

    held = [r for r in read(tmp_path / "tuned.jsonl") if r["config"].get("holdout")]
    assert len(held) == 2 + 2  # the two searches' trials, nothing else
    assert found.pick == "tiny" and found.pick_strategy in ("linear", "finetune")
