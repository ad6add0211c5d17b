"""Config values at their bounds, and the messages that say which flag to fix.

Written for the mutants the mutation run (results/mutation.md) found unchecked:
each bound is pinned on both sides, since an off-by-one there either refuses a
valid setting or lets through one that trains at chance or diverges.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from tlbench.config import SEED_RANGE, make_config
from tlbench.errors import ConfigError
from tlbench.plugin_types import Hyperparameters


def rejected(**flags) -> str:
    with pytest.raises(ConfigError) as info:
        make_config(**flags)
    return str(info.value)


def test_the_largest_seed_numpy_accepts_is_taken_and_one_more_is_refused():
    assert SEED_RANGE == (0, 2**32 - 1)
    assert make_config(seeds=[0, 2**32 - 1]).seeds == [0, 2**32 - 1]
    assert rejected(seeds=[1, 2**32]) == (
        "--seeds: a seed must be between 0 and 4294967295, not 4294967296"
    )
    assert rejected(seeds=[-1]) == "--seeds: a seed must be between 0 and 4294967295, not -1"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        # an exclusive lower bound: lr 0 never moves a weight
        ({"lr": 0.0}, "--lr: lr must be > 0.0, not 0.0 (valid: > 0 and <= 10)"),
        ({"gamma": 0.0}, "--gamma: gamma must be > 0.0, not 0.0 (valid: > 0 and <= 10)"),
        # an inclusive upper bound, just passed
        ({"lr": 10.5}, "--lr: lr must be <= 10, not 10.5 (valid: > 0 and <= 10)"),
        # an exclusive upper bound: momentum 1 never forgets a gradient
        ({"momentum": 1.0}, "--momentum: momentum must be < 1, not 1.0 (valid: >= 0 and < 1)"),
        (
            {"label_smoothing": 1.0},
            "--label-smoothing: label_smoothing must be < 1, not 1.0 (valid: >= 0 and < 1)",
        ),
        # a flag with an underscore is named as the user typed it
        (
            {"weight_decay": -1.0},
            "--weight-decay: weight_decay must be >= 0.0, not -1.0 (valid: >= 0 and <= 10)",
        ),
        ({"lr": math.nan}, "--lr: lr must be a number (valid: > 0 and <= 10), not nan"),
        ({"image_size": 4096}, "--image-size: image_size must be <= 2048, not 4096"),
    ],
)
def test_a_value_just_outside_its_range_is_refused_with_the_range(flags, message):
    assert rejected(**flags).startswith(message)


@pytest.mark.parametrize(
    "flags",
    [
        {"lr": 10.0},  # the inclusive upper bounds themselves
        {"gamma": 10.0},
        {"backbone_lr_mult": 100.0},
        {"momentum": 0.999},
        {"label_smoothing": 0.0},  # inclusive lower bounds
        {"weight_decay": 0.0},
        {"lr": 1e-9},
    ],
)
def test_a_value_on_an_inclusive_bound_or_just_inside_is_taken(flags):
    config = make_config(**flags)
    assert config.hyperparameters == flags


@pytest.mark.parametrize("value", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_test_fraction_must_leave_images_on_both_sides(value):
    # 0 evaluates on nothing, 1 trains on nothing; nan compares false with both bounds.
    assert rejected(test_fraction=value) == (
        f"--test-fraction: test_fraction must be between 0 and 1, not {value!r}"
    )


@pytest.mark.parametrize("value", [0.001, 0.5, 0.999])
def test_test_fraction_inside_0_1_is_taken(value):
    assert make_config(test_fraction=value).test_fraction == value


def test_a_flag_beats_the_file_without_touching_tables_that_do_not_set_it(tmp_path: Path):
    path = tmp_path / "grid.toml"
    path.write_text('backbones = ["tiny"]\n[strategy.linear]\nepochs = 4\n')
    config = make_config(path, lr=0.1)
    assert config.backbones == ["tiny"]
    assert config.strategy_overrides == {"linear": {"epochs": 4}}
    linear = config.hyperparameters_for("linear", Hyperparameters(lr=0.5, epochs=1))
    assert (linear.lr, linear.epochs) == (0.1, 4)


def test_an_unknown_setting_is_named():
    assert rejected(epoch=3) == "unknown setting 'epoch'"


# --------------------------------------------------------------------------- a run's stored config


def test_a_run_stores_every_setting_under_its_name_and_the_budget_only_when_set():
    from tlbench.plugin_types import RunSpec

    hp = Hyperparameters(epochs=3, lr=0.01)
    execution = {"device": "cpu", "precision": "fp32"}
    spec = RunSpec("r18", "flowers", "linear", 7, 96, hp, execution, "IMAGENET1K_V1", "fp1")
    assert spec.config() == {
        "backbone": "r18",
        "weights": "IMAGENET1K_V1",
        "dataset": "flowers",
        "strategy": "linear",
        "seed": 7,
        "image_size": 96,
        "hyperparameters": dict(hp.__dict__),
        "device": "cpu",
        "precision": "fp32",
    }
    with_budget = RunSpec("r18", "flowers", "linear", 7, 96, hp, execution, None, "fp1", "shots=5")
    assert with_budget.config()["budget"] == "shots=5"
    # The budget is part of the key only when set; the fingerprint always is.
    assert with_budget.key != spec.key
    assert RunSpec(
        "r18", "flowers", "linear", 7, 96, hp, execution, "IMAGENET1K_V1", "fp2"
    ).key != (spec.key)
    # A halving rung's stop, like the holdout of a tuning trial: stored, keyed, only when set.
    rung = dataclasses.replace(spec, holdout="validation=0.2", stop_epoch=2)
    assert rung.config() == {**spec.config(), "holdout": "validation=0.2", "stop_epoch": 2}
    assert rung.key != dataclasses.replace(rung, stop_epoch=3).key
    assert "stop_epoch" not in dataclasses.replace(rung, stop_epoch=None).config()
    # A strategy's options set off their defaults, and the third-party code behind a run.
    code = {"backbone": {"distribution": "tlbench-timm", "version": "1.0", "source": "ab12"}}
    plugged = dataclasses.replace(spec, options={"alpha": 0.5}, code=code)
    assert plugged.config() == {**spec.config(), "options": {"alpha": 0.5}, "code": code}
    assert plugged.config()["code"]["backbone"] is not code["backbone"]  # a copy, not the spec's
    assert len({spec.key, plugged.key, dataclasses.replace(plugged, code=None).key}) == 3
