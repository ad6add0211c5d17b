"""The trial uses what the GPU round made (issue 22): counted training FLOPs, an untimed
extraction warm-up, the extraction's peak apart, and an OOM retry that first moves the data."""

from __future__ import annotations

import torch

import tlbench.regimes
from tlbench.engine import DataOnDeviceOOM
from tlbench.runner import Runner


def test_a_fine_tune_records_the_training_flops_it_counted(plugins, tiny_config):
    tiny_config.strategies = ["finetune"]
    (record,) = Runner(tiny_config, plugins).run()
    cost = record["cost"]
    assert cost["train_flops_per_image"] > cost["forward_flops_per_image"] > 0


def test_a_probe_warms_its_extraction_up_untimed_and_keeps_its_peak_apart(plugins, tiny_config):
    tiny_config.strategies = ["linear"]
    (miss,) = Runner(tiny_config, plugins).run()
    assert miss["cost"]["feature_cache"] == "none"
    assert miss["cost"]["feature_warmup_seconds"] > 0
    assert miss["cost"]["extraction_peak_memory_bytes"] > 0
    tiny_config.force = True
    (hit,) = Runner(tiny_config, plugins).run()
    assert hit["cost"]["feature_cache"] == "disk"
    assert hit["cost"]["feature_warmup_seconds"] == 0
    assert "extraction_peak_memory_bytes" not in hit["cost"]


def test_an_oom_with_the_data_on_the_device_first_retries_with_it_on_the_host(
    plugins, tiny_config, monkeypatch
):
    real = tlbench.regimes.train_images
    tried: list[tuple[int, bool]] = []

    def train_images(model, groups, train, evalset, *, data_on_device=True, **kwargs):
        tried.append((kwargs["hp"].batch_size, data_on_device))
        if data_on_device:
            try:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory")
            except torch.cuda.OutOfMemoryError as oom:
                raise DataOnDeviceOOM(1 << 20) from oom
        return real(model, groups, train, evalset, data_on_device=data_on_device, **kwargs)

    monkeypatch.setattr(tlbench.regimes, "train_images", train_images)
    tiny_config.strategies = ["scratch"]
    (record,) = Runner(tiny_config, plugins).run()
    assert record["status"] == "ok", record["reason"]
    assert tried == [(16, True), (16, False)]  # the same batch: the result is the one asked
    assert record["cost"]["batch_sizes_tried"] == [16, 16]
    assert record["cost"]["data_on_host_after_oom"] is True
    assert "hyperparameters_used" not in record["config"]


def test_the_report_shows_the_models_own_peak_where_the_record_has_it():
    from tlbench.report import summarize

    def record(key, strategy, cost):
        return {
            "key": key,
            "status": "ok",
            "config": {"backbone": "b", "dataset": "d", "strategy": strategy, "seed": 0},
            "accuracy": {"final": 0.5, "best": 0.5, "best_epoch": 1},
            "cost": {"train_seconds": 1.0, **cost},
        }

    rows = summarize(
        [
            # On a GPU that held the dataset: 3 GB raw, 1 GB of it the model's own.
            record("a", "finetune", {"peak_memory_bytes": 3e9, "model_peak_memory_bytes": 1e9}),
            record("b", "scratch", {"peak_memory_bytes": 2e9}),  # a CPU record: the raw peak
        ]
    )
    assert {r.strategy: r.peak_memory_mb for r in rows} == {"finetune": 1000.0, "scratch": 2000.0}
