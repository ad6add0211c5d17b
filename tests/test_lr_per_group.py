"""The learning rate of every parameter group, every epoch (issue 24, item 4), in the record
and as tracker series: a discriminative-rate strategy can be checked (Lightning's
`LearningRateMonitor`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import get_type_hints

import pytest

import tlbench
from tlbench.record import Epoch
from tlbench.trackers import run_name


def grid(tmp_path: Path, plugins, **options):
    return list(
        tlbench.run(
            backbones=["tiny"],
            datasets=["tinyset"],
            image_size=16,
            epochs=2,
            batch_size=16,
            device="cpu",
            out=tmp_path / "runs.jsonl",
            cache_dir=str(tmp_path / "cache"),
            progress=False,
            plugins=plugins,
            **options,
        )
    )


def test_every_epoch_records_each_groups_rate(tmp_path, plugins):
    records = grid(
        tmp_path,
        plugins,
        strategies=["llrd", "finetune", "linear", "scratch"],
        strategy_options={"llrd": {"decay": 0.5}},
        warmup_epochs=0,
        schedule="constant",
        lr=0.01,
    )
    by = {r["config"]["strategy"]: r for r in records}
    assert {r["status"] for r in records} == {"ok"}, [r["reason"] for r in records]
    for record in records:
        for point in record["accuracy"]["curve"]:
            assert set(point) <= set(get_type_hints(Epoch)), "every curve key is declared"
    llrd = [p["lr"] for p in by["llrd"]["accuracy"]["curve"]]
    assert llrd == [{"head": 0.01, "conv1": 0.0025, "conv2": 0.005}] * 2
    finetune = [p["lr"] for p in by["finetune"]["accuracy"]["curve"]]
    assert finetune == [{"head": 0.01, "backbone": pytest.approx(0.001)}] * 2
    assert [p["lr"] for p in by["linear"]["accuracy"]["curve"]] == [{"head": 0.01}] * 2


def test_the_rate_follows_the_schedule(tmp_path, plugins):
    (record,) = grid(tmp_path, plugins, strategies=["scratch"], warmup_epochs=0, lr=0.01)
    first, second = (p["lr"]["head"] for p in record["accuracy"]["curve"])
    assert first == pytest.approx(0.01)
    assert 0 < second < first  # cosine: half way down at the second epoch's first step


@pytest.mark.slow  # MLflow's and TensorBoard's own libraries
def test_trackers_log_each_groups_rate_as_its_own_series(tmp_path, plugins, monkeypatch):
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for name in list(os.environ):
        if name.startswith(("MLFLOW_", "WANDB_")) or name == "TLBENCH_TENSORBOARD_DIR":
            monkeypatch.delenv(name)
    (record,) = grid(
        tmp_path,
        plugins,
        strategies=["llrd"],
        strategy_options={"llrd": {"decay": 0.5}},
        log_to=["mlflow", "tensorboard"],
    )
    expected = {
        f"lr/{group}": [(p["epoch"], p["lr"][group]) for p in record["accuracy"]["curve"]]
        for group in ("head", "conv1", "conv2")
    }
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tlbench")
    (run,) = client.search_runs([experiment.experiment_id])
    for series, points in expected.items():
        history = client.get_metric_history(run.info.run_id, series)
        found = [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)]
        assert found == [(s, pytest.approx(v)) for s, v in points]
    folder = tmp_path / "tensorboard" / "tinyset" / run_name(record["config"], record["key"])
    events = EventAccumulator(str(folder))
    events.Reload()
    for series, points in expected.items():
        found = [(e.step, e.value) for e in events.Scalars(series)]
        assert found == [(s, pytest.approx(v, rel=1e-6)) for s, v in points]
