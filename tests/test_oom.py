"""GPU out of memory: retried at half the batch size (recorded), or a clear failure.

There is no GPU here, so the test makes training raise the very exception
PyTorch raises (`torch.cuda.OutOfMemoryError`) whenever the batch is larger
than a limit, as a GPU with that much memory would.
"""

from __future__ import annotations

import pytest
import torch
from imagetree import learning, read_records

import tlbench.regimes
import tlbench.runner
from tlbench.runner import Runner


def gpu_with_room_for(monkeypatch: pytest.MonkeyPatch, limit: int, attempts: list[int]) -> None:
    """Image training and feature extraction raise OOM above `limit` images a batch."""
    real_train, real_extract = tlbench.regimes.train_images, tlbench.regimes.extract_features

    def check(batch: int) -> None:
        if batch > limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (batch {batch})")

    def train_images(model, groups, train, *args, hp, on_epoch=None, **kwargs):
        batch = min(hp.batch_size, len(train))
        attempts.append(batch)

        def epoch_then_oom(epoch, metrics):
            # A whole epoch trains first (changing the weights), as when a later,
            # larger step no longer fits: the retry must not start from these weights.
            check(batch)
            if on_epoch is not None:
                on_epoch(epoch, metrics)

        return real_train(model, groups, train, *args, hp=hp, on_epoch=epoch_then_oom, **kwargs)

    def extract_features(model, data, image_size, batch_size, ex):
        attempts.append(batch_size)
        check(batch_size)
        return real_extract(model, data, image_size, batch_size, ex)

    monkeypatch.setattr(tlbench.regimes, "train_images", train_images)
    monkeypatch.setattr(tlbench.regimes, "extract_features", extract_features)


def test_oom_is_retried_at_half_the_batch_and_recorded(plugins, tiny_config, monkeypatch):
    tiny_config.strategies = ["scratch"]
    tiny_config.hyperparameters = {"epochs": 2, "batch_size": 32}
    attempts: list[int] = []
    gpu_with_room_for(monkeypatch, 8, attempts)
    (record,) = Runner(tiny_config, plugins).run()
    assert record["status"] == "ok", record["reason"]
    assert attempts == [32, 16, 8]
    assert record["cost"]["batch_sizes_tried"] == [32, 16, 8]
    assert record["cost"]["batch_size"] == 8
    # The run keeps the key of what was asked, and says what was used.
    assert record["config"]["hyperparameters"]["batch_size"] == 32
    assert record["config"]["hyperparameters_used"]["batch_size"] == 8
    assert len(record["accuracy"]["curve"]) == 2  # the failed attempts' epochs are not in it

    # Each retry starts from fresh weights: the result is that of a run asked at batch 8.
    monkeypatch.undo()
    tiny_config.hyperparameters = {"epochs": 2, "batch_size": 8}
    tiny_config.out = tiny_config.out + ".direct"
    (direct,) = Runner(tiny_config, plugins).run()
    assert learning(record) == learning(direct)


def test_oom_during_feature_extraction_is_retried_too(plugins, tiny_config, monkeypatch):
    tiny_config.strategies = ["linear"]
    tiny_config.hyperparameters = {"epochs": 2, "batch_size": 16}
    attempts: list[int] = []
    gpu_with_room_for(monkeypatch, 16, attempts)
    (record,) = Runner(tiny_config, plugins).run()
    assert record["status"] == "ok", record["reason"]
    assert attempts == [32, 16, 16]  # 2 x batch_size a batch; then the eval split
    assert record["cost"]["batch_sizes_tried"] == [16, 8]
    assert record["config"]["hyperparameters_used"]["batch_size"] == 8


def test_a_batch_larger_than_the_data_halves_from_what_was_tried(plugins, tiny_config, monkeypatch):
    tiny_config.strategies = ["scratch"]
    tiny_config.hyperparameters = {"epochs": 1, "batch_size": 1000}  # tinyset trains on 48
    gpu_with_room_for(monkeypatch, 20, [])
    (record,) = Runner(tiny_config, plugins).run()
    assert record["cost"]["batch_sizes_tried"] == [48, 24, 12]


def test_no_retry_fails_the_run_with_a_clear_reason_and_the_grid_goes_on(
    run_cli, tmp_path, monkeypatch
):
    attempts: list[int] = []
    gpu_with_room_for(monkeypatch, 8, attempts)
    out = tmp_path / "results.jsonl"
    result = run_cli(
        "run", "--datasets", "tinyset", "--backbones", "tiny", "--strategies", "scratch,finetune",
        "--epochs", "1", "--device", "cpu", "--out", str(out), "--no-cache", "--quiet",
        "--no-retry", "--batch-size", "16",
    )  # fmt: skip
    failed = [r for r in read_records(out) if r["status"] == "failed"]
    assert [r["config"]["strategy"] for r in failed] == ["scratch", "finetune"]
    for r in failed:
        assert r["reason"].startswith("GPU out of memory at batch size 16 (--no-retry)")
        assert "--batch-size" in r["reason"]
    assert attempts == [16, 16]  # no second attempt for either run
    assert result.code == 1, result
    assert "GPU out of memory at batch size 16" in " ".join(result.out.split())
    assert "Traceback" not in result.out + result.err


def test_oom_even_at_batch_one_fails_with_a_clear_reason(plugins, tiny_config, monkeypatch):
    tiny_config.strategies = ["linear"]
    tiny_config.hyperparameters = {"epochs": 1, "batch_size": 4}
    gpu_with_room_for(monkeypatch, 0, [])
    (record,) = Runner(tiny_config, plugins).run()
    assert record["status"] == "failed"
    assert record["reason"].startswith("GPU out of memory even at batch size 1 (tried [4, 2, 1])")
