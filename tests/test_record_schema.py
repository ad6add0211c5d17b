"""Every key a trial writes is declared in `tlbench.record` (issue 23): one schema, one place."""

from __future__ import annotations

from typing import get_type_hints

import pytest

from tlbench.record import Accuracy, Cost, RunRecord
from tlbench.runner import Runner

STRATEGIES = ["scratch", "linear", "logreg", "finetune", "lp-ft"]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    import tlbench
    from tlbench import testing
    from tlbench.config import RunConfig

    folder = tmp_path_factory.mktemp("schema")
    plugins = tlbench.Plugins(entry_points=False, extra=[("tiny", testing.TINY_PLUGIN)])
    config = RunConfig(
        backbones=["tiny"],
        datasets=["tinyset"],
        strategies=STRATEGIES,
        seeds=[0],
        image_size=16,
        hyperparameters={"epochs": 2, "batch_size": 16},
        out=str(folder / "r.jsonl"),
        cache_dir=str(folder / "cache"),
        device="cpu",
        save_models=True,
    )
    found = Runner(config, plugins).run()
    assert [r["status"] for r in found] == ["ok"] * len(STRATEGIES), [r["reason"] for r in found]
    return found


@pytest.mark.parametrize(
    "part, schema", [(None, RunRecord), ("cost", Cost), ("accuracy", Accuracy)]
)
def test_every_key_of_a_real_record_of_each_strategy_is_declared(records, part, schema):
    declared = set(get_type_hints(schema))
    for record in records:
        keys = set(record if part is None else record[part])
        undeclared = keys - declared
        assert not undeclared, f"{record['config']['strategy']}: {sorted(undeclared)}"
