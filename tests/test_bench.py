"""`tlbench bench BACKBONE...` (issue 27): inference cost of backbones without training."""

from __future__ import annotations

import json

import pytest
import torch
from imagetree import assert_clean_error

from tlbench import testing
from tlbench.engine import Execution
from tlbench.inference import InferenceSettings, Timer, bench_backbone


def test_bench_prints_latency_throughput_and_size_per_backbone(run_cli):
    result = run_cli(
        "bench", "tiny", "small_cnn", "--image-size", "16", "--batch", "4", "--repeats", "5",
        "--device", "cpu", "--format", "json",
    )  # fmt: skip
    assert result.code == 0, result
    rows = json.loads(result.out)
    assert [r["backbone"] for r in rows] == ["tiny", "small_cnn"]
    for row in rows:
        assert row["image_size"] == 16 and row["throughput_batch"] == 4
        assert row["latency_ms_p90"] >= row["latency_ms_p50"] > 0
        assert row["throughput_images_per_s"] > 0
        assert row["params"] > 0 and row["flops_per_image"] > 0
        assert row["latency_samples"] >= 5
    # The head has --num-classes outputs (default 1000), as an ImageNet classifier's.
    assert rows[1]["params"] > rows[0]["params"]


def test_bench_table_and_markdown(run_cli):
    table = run_cli("bench", "tiny", "--image-size", "16", "--batch", "2", "--repeats", "5")
    assert table.code == 0, table
    assert "latency ms p50" in table.out and "tiny" in table.out
    md = run_cli(
        "bench", "tiny", "--image-size", "16", "--batch", "2", "--repeats", "5",
        "--format", "markdown",
    )  # fmt: skip
    assert md.code == 0 and "| tiny | 16 |" in md.out


def test_bench_refuses_an_unknown_backbone_before_timing_any(run_cli):
    result = run_cli("bench", "tiny", "no_such_net", "--image-size", "16")
    assert result.code == 2
    assert "no_such_net" in result.err and "Traceback" not in result.err
    assert "timing tiny" not in result.out + result.err


def test_bench_refuses_a_zero_batch(run_cli):
    assert_clean_error(run_cli("bench", "tiny", "--batch", "0"), "--batch must be at least 1")


def test_bench_uses_the_same_timing_as_a_trained_model():
    """Warm-up untimed and synchronised, through `measure`: one fake call costs 2 ms."""
    clock = {"now": 0.0}

    def tick() -> float:
        clock["now"] += 0.001  # each reading: 1 ms; a timed call reads twice
        return clock["now"]

    figures = bench_backbone(
        testing.tiny_backbone(),
        image_size=16,
        batch=3,
        ex=Execution(torch.device("cpu")),
        num_classes=5,
        settings=InferenceSettings(warmup=2, repeats=6, min_repeats=6),
        timer=Timer(tick),
    )
    assert figures["latency_ms_p50"] == pytest.approx(1.0)
    assert figures["throughput_images_per_s"] == pytest.approx(3 / 0.001)
    assert figures["num_classes"] == 5
