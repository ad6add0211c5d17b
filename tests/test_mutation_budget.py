"""Budgets at their edges: no images, an unknown kind, and the facts a record keeps.

Written for the mutants the mutation run's second shard (results/mutation.md) left
alive in `budget.budget_indices`; then, for what its recheck left, the messages of
`parse_budgets` and `parse_holdout`, the bounds of a validation fraction and the
validation images themselves.
"""

from __future__ import annotations

import numpy as np
import pytest

from tlbench.budget import (
    budget_indices,
    holdout_name,
    parse_budgets,
    parse_holdout,
    validation_split,
)
from tlbench.errors import ConfigError


def test_a_budget_of_a_split_without_images_takes_no_indices_as_integers():
    indices, facts = budget_indices(np.array([], dtype=np.int64), "shots=2", seed=0)
    assert indices.dtype == np.int64 and indices.tolist() == []
    assert facts == {"budget": "shots=2", "budget_images": 0, "short_classes": {}}


def test_the_facts_name_the_budget_the_images_taken_and_the_short_classes():
    labels = np.array([0, 0, 0, 1, 2, 2])
    indices, facts = budget_indices(labels, "shots=2", seed=3)
    assert facts == {"budget": "shots=2", "budget_images": 5, "short_classes": {"1": 1}}
    assert sorted(labels[indices].tolist()) == [0, 0, 1, 2, 2]


def test_an_unknown_kind_of_budget_is_refused_by_name():
    with pytest.raises(ValueError) as info:
        budget_indices(np.array([0, 1]), "images=3", seed=0)
    assert str(info.value) == "unknown budget 'images=3'"


# --------------------------------------------------------------------------- parse_budgets


def test_all_images_then_a_number_of_shots_are_two_budgets_in_that_order():
    assert parse_budgets(["all", " 5 "], [0.5, 1.0]) == [None, "shots=5", "fraction=0.5"]


@pytest.mark.parametrize(
    ("shots", "fractions", "message"),
    [
        (["five"], [], "--shots takes whole numbers of images per class or 'all', not 'five'"),
        ([2.5], [], "--shots takes whole numbers of images per class or 'all', not 2.5"),
        (["0"], [], "--shots must be at least 1 image per class, not 0"),
        ([], [0.0], "--train-fraction must be in (0, 1], not 0.0"),
        ([], [1.5], "--train-fraction must be in (0, 1], not 1.5"),
        ([], [float("nan")], "--train-fraction must be in (0, 1], not nan"),
    ],
)
def test_a_budget_that_cannot_be_is_refused_saying_what_would_do(shots, fractions, message):
    with pytest.raises(ConfigError) as info:
        parse_budgets(shots, fractions)
    assert str(info.value) == message


# --------------------------------------------------------------------------- holdout


@pytest.mark.parametrize("fraction", [0.05, 0.5, 0.95])
def test_a_holdout_name_reads_back_as_its_fraction(fraction):
    assert parse_holdout(holdout_name(fraction)) == fraction


@pytest.mark.parametrize("holdout", ["validation=0", "validation=1", "validation=1.5"])
def test_a_validation_fraction_is_strictly_between_0_and_1(holdout):
    fraction = holdout.partition("=")[2]
    with pytest.raises(ValueError) as info:
        parse_holdout(holdout)
    assert str(info.value) == f"a validation fraction must be in (0, 1), not {float(fraction)!r}"


def test_an_unknown_holdout_is_refused_by_name():
    with pytest.raises(ValueError) as info:
        parse_holdout("test=0.2")
    assert str(info.value) == "unknown holdout 'test=0.2'"


def test_the_validation_images_of_a_split_never_change_between_versions():
    # Tuning trials on disk were chosen on these images; a resumed or compared study must
    # draw the same ones. round(0.4 x 5) = 2 of each class. (Recorded at d182f3e.)
    fit, validation = validation_split(np.array([0] * 5 + [1] * 5), 0.4)
    assert validation.tolist() == [0, 4, 5, 8]
    assert fit.tolist() == [1, 2, 3, 6, 7, 9]


def test_a_split_without_images_holds_out_no_indices_as_integers():
    fit, validation = validation_split(np.array([], dtype=np.int64), 0.2)
    assert fit.dtype == validation.dtype == np.int64
    assert fit.tolist() == validation.tolist() == []
