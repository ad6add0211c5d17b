"""Budgets at their edges: no images, an unknown kind, and the facts a record keeps.

Written for the mutants the mutation run's second shard (results/mutation.md) left
alive in `budget.budget_indices`.
"""

from __future__ import annotations

import numpy as np
import pytest

from tlbench.budget import budget_indices


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
