"""Every cache and memo driven twice: a second run that differs in one keyed field gets its own result.

A process keeps what its runs computed for the next run: decoded images,
backbone features, the FLOP counts of a (backbone, image size) forward and
of a training step, the transferability scores of a run's training features. A key that misses a
field hands the second run the first run's result, silently: leave the
budget and the seed out of the scores' key and every run of
`--shots 1,5,all` reports the 1-shot LogME. The other cache tests run one
changed setting once; here each run is the second of its process (the
in-process memos and memory caches) or of its cache folder (the disk
caches), after a run that differs in exactly one keyed field: budget, seed,
image size, precision, dataset fingerprint or a tuning trial's holdout. Its result (scores, curve,
per-image results, FLOPs, images trained on) must be the one a cold process
computes for it, and differ from the first run's.

Runs go through `TrialHost.run` (a run spec in, a record out), so the tests
do not depend on how a trial is split into parts inside.

Driven twice elsewhere: the decode cache's per-process memo of file digests
(same size, old modification time: `cp -p`), in
`tests/test_reliability_round3.py::test_decode_cache_sees_same_size_content_copied_with_its_old_mtime`.
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
from pathlib import Path
from typing import Any

import pytest

import tlbench
from tlbench import testing
from tlbench.plugin_types import Dataset, DatasetSplits, Hyperparameters, RunSpec, Workspace
from tlbench.trial import TrialHost

TINYSET_FINGERPRINT = "tlbench-testing-colour-squares-v1"  # tlbench.testing's tinyset


def _otherset(request) -> DatasetSplits:
    """tinyset's classes and counts, other pixels: only the fingerprint tells them apart."""
    return DatasetSplits(
        classes=["red", "green", "blue"],
        train=testing.ColourSquares(48, seed=10),
        eval=testing.ColourSquares(18, seed=11),
        eval_split="test",
        fingerprint="other-colour-squares",
    )


class _Otherset:
    @tlbench.hookimpl
    def tlbench_register_datasets(self, register):
        register(Dataset("otherset", _otherset, description="other squares", native_size=16))


PLUGINS = tlbench.Plugins(
    entry_points=False, extra=[("tiny", testing.TINY_PLUGIN), ("other", _Otherset())]
)
EXECUTION = {
    "device": "cpu",
    "precision": "fp32",
    "memory_format": "channels_last",
    "compile": False,
}
BASE = RunSpec(
    backbone="tiny",
    dataset="tinyset",
    strategy="linear",
    seed=0,
    image_size=16,
    hp=Hyperparameters(epochs=1, batch_size=16),
    execution=EXECUTION,
    weights="tiny-fixed-init",
    dataset_fingerprint=TINYSET_FINGERPRINT,
)

#: keyed field -> (the first run's settings, the second run's): they differ only there.
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "budget": ({"budget": "shots=4"}, {"budget": "shots=8"}),
    "seed": ({"budget": "shots=4", "seed": 0}, {"budget": "shots=4", "seed": 1}),
    "image size": ({"image_size": 16}, {"image_size": 24}),
    "precision": ({}, {"execution": {**EXECUTION, "precision": "bf16"}}),
    "fingerprint": ({}, {"dataset": "otherset", "dataset_fingerprint": "other-colour-squares"}),
    # A tuning trial trains on the training split less its validation part.
    "holdout": ({}, {"holdout": "validation=0.25"}),
}


def _host(cache_dir: Path) -> TrialHost:
    return TrialHost(PLUGINS, Workspace(cache_dir=cache_dir, data_dir=cache_dir / "data"))


def result(record: dict[str, Any]) -> dict[str, Any]:
    """What a run found, as a user reads it: everything a reused result would get wrong."""
    assert record["status"] == "ok", record.get("reason")
    accuracy = record["accuracy"]
    return {
        "scores": {k: v for k, v in (record.get("scores") or {}).items() if k != "seconds"},
        "curve": [(c["train_loss"], c["eval_loss"], c["eval_accuracy"]) for c in accuracy["curve"]],
        "final_correct": accuracy.get("final_correct"),
        "flops": record["cost"].get("forward_flops_per_image"),
        "train_flops": record["cost"].get("train_flops_per_image"),
        "train_images": record["data"]["train_images"],
        "store_size": record["data"]["store_size"],
    }


def spec(strategy: str, settings: dict[str, Any]) -> RunSpec:
    return dataclasses.replace(BASE, strategy=strategy, **settings)


@functools.cache
def cold(strategy: str, case: str) -> tuple[tuple[str, Any], ...]:
    """The second run's result in a process and cache folder of its own."""
    with tempfile.TemporaryDirectory() as tmp:
        record = _host(Path(tmp)).run(spec(strategy, CASES[case][1]))
    return tuple(result(record).items())


#: `linear` reaches every cache (decoded images and features, on disk and in memory) and
#: the score memo; `finetune` the FLOPs memos (forward and training), in the process only.
WHERE = [("linear", "same process"), ("linear", "next process"), ("finetune", "same process")]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize(("strategy", "where"), WHERE)
def test_a_second_run_differing_in_one_keyed_field_gets_its_own_result(
    tmp_path, strategy, case, where
):
    first, second = (spec(strategy, settings) for settings in CASES[case])
    host = _host(tmp_path / "cache")
    before = result(host.run(first))
    if where == "next process":
        host = _host(tmp_path / "cache")  # a new process: only the disk caches are shared
    after = result(host.run(second))
    expected = dict(cold(strategy, case))
    assert after != before  # else a reused result could not show
    # Field by field, so a failure names what was reused.
    for field in expected:
        assert after[field] == expected[field], field


def test_the_same_spec_twice_reuses_everything_and_finds_the_same_result(tmp_path):
    # The other side of the key: what may be reused is reused, and changes nothing.
    host = _host(tmp_path / "cache")
    first = host.run(spec("linear", {"budget": "shots=4"}))
    again = host.run(spec("linear", {"budget": "shots=4"}))
    assert (again["cost"]["decode_cache"], again["cost"]["feature_cache"]) == ("memory", "memory")
    assert result(again) == result(first)
