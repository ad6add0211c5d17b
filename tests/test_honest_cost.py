"""A run's cost is the same whatever the cache held (issue 21): features are charged as made."""

from __future__ import annotations

from pathlib import Path

import pytest

from tlbench.report import summarize, train_cost_seconds
from tlbench.results import read
from tlbench.runner import Runner


def test_a_linear_run_costs_its_extraction_whichever_grid_made_the_features(plugins, tiny_config):
    tiny_config.strategies = ["linear"]
    (cold,) = Runner(tiny_config, plugins).run()
    # Another results file, the same cache: the features are found on disk.
    tiny_config.out = str(Path(tiny_config.out).with_name("second.jsonl"))
    (warm,) = Runner(tiny_config, plugins).run()
    assert cold["cost"]["feature_cache"] == "none"
    assert warm["cost"]["feature_cache"] == "disk"
    made = cold["cost"]["feature_extract_seconds"]
    assert made > 0
    # The warm run is charged what making its features cost, not the read.
    assert warm["cost"]["feature_extract_seconds"] == pytest.approx(made)
    assert train_cost_seconds(warm) >= made
    (row,) = summarize(read(tiny_config.out))
    assert row.train_seconds >= made


def test_an_old_cache_entry_without_its_cost_is_charged_as_before(plugins, tiny_config):
    """Entries made before the cost was kept give None, and the report falls back."""
    tiny_config.strategies = ["linear"]
    (record,) = Runner(tiny_config, plugins).run()
    record["cost"]["feature_extract_seconds"] = None
    record["cost"]["feature_cache"] = "disk"
    record["cost"]["feature_seconds"] = 0.01
    assert train_cost_seconds(record) == pytest.approx(0.01 + record["cost"]["train_seconds"])
