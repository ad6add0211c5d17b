"""`flat_record`: the columns of `Results.to_pandas()` and of the trackers' logged values.

A notebook reads these column names and units; a column fed from the wrong
field, or renamed, changes every analysis built on it without an error. The
record below gives every field a value of its own, and the row it must
become is written out by hand.
"""

from __future__ import annotations

from tlbench.record import flat_record

RECORD = {
    "key": "k1",
    "status": "ok",
    "reason": "why",
    "time": "2026-12-07T00:00:00Z",
    "config": {
        "backbone": "bb",
        "weights": "w",
        "dataset": "ds",
        "strategy": "st",
        "seed": 3,
        "budget": "5-shot",
        "image_size": 96,
        "device": "cpu",
        "precision": "fp32",
        "memory_format": "channels_last",
        "compile": False,
        "hyperparameters": {"lr": 0.01, "epochs": 7},
    },
    "accuracy": {
        "final": 0.81,
        "best": 0.83,
        "best_epoch": 5,
        "final_balanced": 0.79,
        "curve": [{"epoch": i} for i in range(1, 7)],
    },
    "cost": {
        "wall_seconds": 11.0,
        "data_prep_seconds": 1.5,
        "feature_seconds": 2.5,
        "train_seconds": 6.5,
        "eval_seconds": 0.5,
        "train_images_per_s": 101.0,
        "compute_images_per_s": 102.0,
        "eval_images_per_s": 103.0,
        "data_stall_fraction": 0.04,
        "peak_memory_bytes": 2_500_000,
        "trainable_params": 130,
        "total_params": 1300,
        "forward_flops_per_image": 4_000_000,
        "feature_cache": "disk",
        "energy_joules": 55.5,
    },
    "inference": {
        "latency_ms_p50": 1.25,
        "latency_ms_p90": 1.75,
        "throughput_images_per_s": 640.0,
        "throughput_batch": 32,
        "energy_joules_per_1000": 9.5,
        "onnx": {"status": "ok", "top1": 0.8},
    },
    "data": {"num_classes": 12, "train_images": 720, "eval_images": 240},
    "environment": {"device_name": "cpu-name", "tlbench": "0.1.0", "torch": "2.14.1"},
}

ROW = {
    "key": "k1",
    "status": "ok",
    "reason": "why",
    "time": "2026-12-07T00:00:00Z",
    "backbone": "bb",
    "weights": "w",
    "dataset": "ds",
    "strategy": "st",
    "seed": 3,
    "budget": "5-shot",
    "image_size": 96,
    "device": "cpu",
    "precision": "fp32",
    "memory_format": "channels_last",
    "compile": False,
    "lr": 0.01,
    "epochs": 7,
    "top1_final": 0.81,
    "top1_best": 0.83,
    "best_epoch": 5,
    "balanced_top1_final": 0.79,
    "epochs_completed": 6,  # the curve's length: the record does not say
    "wall_seconds": 11.0,
    "data_prep_seconds": 1.5,
    "feature_seconds": 2.5,
    "train_seconds": 6.5,
    "eval_seconds": 0.5,
    "train_images_per_s": 101.0,
    "compute_images_per_s": 102.0,
    "eval_images_per_s": 103.0,
    "data_stall_fraction": 0.04,
    "peak_memory_mb": 2.5,
    "trainable_params": 130,
    "total_params": 1300,
    "forward_flops_per_image": 4_000_000,
    "feature_cache": "disk",
    "train_energy_j": 55.5,
    "latency_ms_p50": 1.25,
    "latency_ms_p90": 1.75,
    "inference_images_per_s": 640.0,
    "inference_batch": 32,
    "inference_j_per_1000": 9.5,
    "onnx_status": "ok",
    "onnx_top1": 0.8,
    "num_classes": 12,
    "train_images": 720,
    "eval_images": 240,
    "device_name": "cpu-name",
    "tlbench_version": "0.1.0",
    "torch_version": "2.14.1",
}


def test_every_column_comes_from_its_own_field_with_its_unit():
    row = flat_record(RECORD)
    assert row == ROW
    assert list(row) == list(ROW)  # the column order a DataFrame shows


def test_a_record_that_says_how_many_epochs_it_completed_is_taken_at_its_word():
    record = {**RECORD, "epochs_completed": 2}
    assert flat_record(record)["epochs_completed"] == 2


def test_an_interrupted_run_counts_the_epochs_of_its_partial_curve():
    accuracy = {"final": None, "best": None, "curve": []}
    record = {**RECORD, "status": "interrupted", "accuracy": accuracy}
    record["partial_curve"] = [{"epoch": 1}, {"epoch": 2}]
    row = flat_record(record)
    assert row["epochs_completed"] == 2
    assert row["top1_final"] is None and row["top1_best"] is None


def test_a_record_without_its_parts_gives_none_for_every_column_it_lacks():
    row = flat_record({"key": "k", "status": "failed"})
    assert row["key"] == "k" and row["status"] == "failed"
    assert set(row) == set(ROW) - {"lr", "epochs"}  # no hyperparameters: no columns for them
    assert all(v is None for k, v in row.items() if k not in ("key", "status"))


def test_a_value_of_the_wrong_type_is_none_not_a_number():
    # A hand-edited or foreign record: a bool or a string where a number belongs.
    cost = {**RECORD["cost"], "train_seconds": "6.5", "peak_memory_bytes": True}
    row = flat_record({**RECORD, "cost": cost})
    assert row["train_seconds"] is None and row["peak_memory_mb"] is None
    assert row["wall_seconds"] == 11.0


def test_the_record_is_left_as_it_was():
    before = repr(RECORD)
    flat_record(RECORD)
    assert repr(RECORD) == before  # the hyperparameters are popped from a copy of the config
