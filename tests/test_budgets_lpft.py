"""Data budgets (`--shots`, `--train-fraction`), LP-FT, and the transferability scores in records."""

from __future__ import annotations

import numpy as np
import pytest

import tlbench
from tlbench import regimes, testing
from tlbench.budget import budget_indices, describe, parse_budgets
from tlbench.errors import ConfigError
from tlbench.runner import Runner


def _plugins():
    return tlbench.Plugins(entry_points=False, extra=[("tiny", testing.TINY_PLUGIN)])


# --------------------------------------------------------------------------- the sampler

LABELS = np.array([0] * 10 + [1] * 6 + [2] * 3)


def test_budgets_parse_in_order_and_all_is_no_budget():
    assert parse_budgets(["1", "5", "all"], [0.5, 1.0]) == [
        "shots=1",
        "shots=5",
        None,
        "fraction=0.5",
    ]
    assert parse_budgets() == [None]
    assert [describe(b) for b in ("shots=5", "fraction=0.25", None)] == ["5-shot", "25%", "all"]


@pytest.mark.parametrize(
    ("shots", "fractions"), [(["0"], []), (["five"], []), ([], [0.0]), ([], [1.5])]
)
def test_bad_budgets_are_config_errors(shots, fractions):
    with pytest.raises(ConfigError):
        parse_budgets(shots, fractions)


def test_shots_are_stratified_and_short_classes_are_reported():
    indices, facts = budget_indices(LABELS, "shots=4", seed=0)
    assert np.bincount(LABELS[indices]).tolist() == [4, 4, 3]  # class 2 has only 3
    assert facts["short_classes"] == {"2": 3}
    assert facts["budget_images"] == 11
    assert list(indices) == sorted(set(indices.tolist()))


def test_fractions_round_per_class_and_keep_one_image_at_least():
    indices, _ = budget_indices(LABELS, "fraction=0.2", seed=0)
    assert np.bincount(LABELS[indices]).tolist() == [2, 1, 1]  # 0.2 * 3 rounds to 1, not 0


def test_the_subset_is_drawn_from_the_seed_and_nested_across_budgets():
    one, _ = budget_indices(LABELS, "shots=1", seed=0)
    five, _ = budget_indices(LABELS, "shots=5", seed=0)
    again, _ = budget_indices(LABELS, "shots=5", seed=0)
    other, _ = budget_indices(LABELS, "shots=5", seed=1)
    assert set(one) <= set(five)
    assert list(five) == list(again)
    assert list(five) != list(other)


# --------------------------------------------------------------------------- runs with budgets


def test_budgets_are_an_axis_of_the_grid_and_never_touch_the_eval_split(tiny_config):
    tiny_config.strategies = ["linear"]
    tiny_config.shots = ["2", "all"]
    records = Runner(tiny_config, _plugins()).run()
    by_budget = {r["config"].get("budget"): r for r in records}
    assert set(by_budget) == {"shots=2", None}
    assert by_budget["shots=2"]["key"] != by_budget[None]["key"]
    small, full = by_budget["shots=2"]["data"], by_budget[None]["data"]
    assert small["train_images"] == 2 * small["num_classes"]
    assert small["train_images_available"] == full["train_images"]
    assert small["eval_images"] == full["eval_images"]
    assert "budget" not in by_budget[None]["config"]  # full-data keys stay as they were


# --------------------------------------------------------------------------- LP-FT


def test_lp_ft_fine_tunes_from_the_probes_head_and_its_loss_falls(tiny_config, monkeypatch):
    captured: dict[str, dict] = {}
    real_probe, real_train = regimes.train_head_on_features, regimes.train_images

    def probe(head, *args, **kwargs):
        captured["init"] = {k: v.clone() for k, v in head.state_dict().items()}
        fit = real_probe(head, *args, **kwargs)
        captured["probe"] = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}
        return fit

    def train(model, groups, *args, **kwargs):
        captured["start"] = {
            k: v.detach().cpu().clone() for k, v in model.head.state_dict().items()
        }
        return real_train(model, groups, *args, **kwargs)

    monkeypatch.setattr(regimes, "train_head_on_features", probe)
    monkeypatch.setattr(regimes, "train_images", train)
    tiny_config.strategies = ["lp-ft"]
    tiny_config.hyperparameters = {"epochs": 3, "batch_size": 16}
    (record,) = Runner(tiny_config, _plugins()).run()
    assert record["status"] == "ok", record["reason"]
    for name, value in captured["start"].items():
        assert np.array_equal(value.numpy(), captured["probe"][name].numpy()), name
    assert not np.array_equal(captured["init"]["linear.weight"], captured["probe"]["linear.weight"])
    curve = record["accuracy"]["curve"]
    assert curve[-1]["train_loss"] < curve[0]["train_loss"]
    assert record["accuracy"]["probe"]["epochs"] == tlbench.LP_FT.probe.epochs
    assert record["cost"]["train_seconds"] >= record["cost"]["probe_train_seconds"] > 0
    # The backbone trains too, at the head's rate: nothing frozen.
    assert record["cost"]["trainable_params"] == record["cost"]["total_params"]


# --------------------------------------------------------------------------- scores


def test_every_feature_run_records_its_transferability_scores(tiny_config):
    tiny_config.strategies = ["linear", "finetune"]
    linear, finetune = Runner(tiny_config, _plugins()).run()
    scores = linear["scores"]
    assert set(scores) >= {"logme", "knn_accuracy", "h_score", "seconds"}
    assert 0 <= scores["knn_accuracy"] <= 1
    assert np.isfinite(scores["logme"]) and scores["h_score"] >= 0
    assert "scores" not in finetune
