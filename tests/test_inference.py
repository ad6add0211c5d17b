"""Inference cost (issue 27): timed honestly, recorded under its own heading, in no key.

The timing rules are the training's (DESIGN "Timing honestly"): warm-up calls
are untimed and recorded apart, and the device is synchronised around every
timed call. A fake clock and a fake asynchronous device show both: the
device queues work and only a synchronisation moves the clock, so a timing
that forgot to synchronise would read 0 ms, and one that timed the warm-up
would read the stand-in for autotuning (100 s).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import tlbench
from tlbench import inference, testing
from tlbench.engine import Execution
from tlbench.inference import InferenceSettings, Timer, latency_figures, time_calls
from tlbench.runner import Runner

EX = Execution(torch.device("cpu"))
#: what one call costs on the fake device, seconds; the first call costs FIRST_CALL more.
CALL = 0.005
FIRST_CALL = 100.0


class FakeDevice:
    """An asynchronous device: calls queue work, `sync` waits for it (moves the clock)."""

    def __init__(self):
        self.now = 0.0
        self.queued = 0.0
        self.calls = 0
        self.syncs = 0

    def clock(self) -> float:
        return self.now

    def sync(self) -> None:
        self.syncs += 1
        self.now += self.queued
        self.queued = 0.0

    def launch(self) -> None:
        self.calls += 1
        self.queued += CALL + (FIRST_CALL if self.calls == 1 else 0.0)

    def timer(self) -> Timer:
        return Timer(self.clock, self.sync)


class OnFakeDevice(nn.Module):
    """A real network whose every forward pass also launches work on the fake device."""

    def __init__(self, inner: nn.Module, device: FakeDevice):
        super().__init__()
        self.inner, self.device = inner, device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.device.launch()
        return self.inner(x)


def test_timed_calls_exclude_the_warm_up_and_wait_for_the_device():
    device = FakeDevice()
    settings = InferenceSettings(warmup=3, repeats=10, min_repeats=10)
    timings = time_calls(device.launch, settings, device.timer())
    assert timings.samples == pytest.approx([CALL] * 10)  # not 0 (unsynchronised), not 100 s
    assert timings.warmup_seconds == pytest.approx(FIRST_CALL + 3 * CALL)
    assert device.calls == 13


def test_without_a_synchronisation_the_same_calls_would_read_zero():
    """The fake is a fair test: a timer that does not wait sees nothing of the work."""
    device = FakeDevice()
    timings = time_calls(device.launch, InferenceSettings(warmup=1), Timer(device.clock))
    assert max(timings.samples) == 0.0


def test_repeats_stop_at_the_budget_once_the_minimum_is_in():
    device = FakeDevice()
    # 19 calls of 5 ms are under the budget, 20 over it.
    settings = InferenceSettings(warmup=1, repeats=1000, min_repeats=5, budget_seconds=0.0975)
    timings = time_calls(device.launch, settings, device.timer())
    assert len(timings.samples) == 20
    slow = InferenceSettings(warmup=1, repeats=1000, min_repeats=5, budget_seconds=0.0)
    assert len(time_calls(device.launch, slow, device.timer()).samples) == 5


def test_latency_quantiles_are_numpys():
    samples = [0.003, 0.001, 0.010, 0.002, 0.004, 0.007, 0.005]
    figures = latency_figures(inference.Timings(samples, 0.0))
    ms = np.array(samples) * 1000
    assert figures["latency_ms_p50"] == pytest.approx(np.quantile(ms, 0.5))
    assert figures["latency_ms_p90"] == pytest.approx(np.quantile(ms, 0.9))
    assert (figures["latency_ms_min"], figures["latency_ms_max"]) == (1.0, 10.0)


def test_measure_times_a_real_model_at_batch_one_and_at_the_serving_batch():
    device = FakeDevice()
    model = OnFakeDevice(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)), device)
    images = torch.randint(0, 256, (5, 3, 10, 10), dtype=torch.uint8)
    settings = InferenceSettings(warmup=2, repeats=7, min_repeats=7)
    figures = inference.measure(
        model, images, image_size=8, ex=EX, settings=settings, batch=12, timer=device.timer()
    )
    assert figures["latency_ms_p50"] == pytest.approx(CALL * 1000)
    assert figures["latency_samples"] == 7
    assert figures["throughput_batch"] == 12  # more than the split holds: images are cycled
    assert figures["throughput_images_per_s"] == pytest.approx(12 / CALL)
    assert figures["warmup_seconds"] == pytest.approx(FIRST_CALL + 4 * CALL)
    assert figures["peak_memory_bytes"] > 0 and figures["memory_added_bytes"] >= 0


# --------------------------------------------------------------------------- ONNX


class ExportsDifferently(nn.Module):
    """A planted export bug: under `torch.onnx.export` the model swaps two classes."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x)
        if torch.compiler.is_exporting():
            return logits[:, [1, 0, *range(2, logits.shape[1])]]
        return logits


def _separable(n: int = 40) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A model that classifies its images well: bright images are class 0, dark class 1."""
    torch.manual_seed(0)
    labels = torch.arange(n) % 2
    images = torch.where(labels[:, None, None, None] == 0, 220, 30).expand(n, 3, 8, 8)
    images = images.to(torch.uint8).contiguous()
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[0] = 1.0
        model[1].bias.copy_(torch.tensor([-96.0, 0.0, -1e3]))
    return model, images, labels


def _parity(model: nn.Module, images, labels, **kwargs) -> dict:
    settings = InferenceSettings(warmup=1, repeats=5)
    return inference.onnx_parity(
        model, images, labels, image_size=8, ex=EX, settings=settings, batch=16, **kwargs
    )


@pytest.mark.slow  # torch.onnx's dynamo exporter (onnxscript)
def test_an_exported_model_agrees_with_pytorch(tmp_path):
    model, images, labels = _separable()
    result = _parity(model, images, labels, path=tmp_path / "m.onnx")
    assert result["status"] == "ok", result
    assert result["top1"] == result["torch_top1"] == 1.0
    assert result["predictions_agree"] == 1.0
    assert (tmp_path / "m.onnx").stat().st_size > 0
    assert result["latency_ms_p50"] > 0


@pytest.mark.slow  # torch.onnx's dynamo exporter (onnxscript)
def test_a_planted_export_difference_fails_parity_loudly():
    model, images, labels = _separable()
    result = _parity(ExportsDifferently(model), images, labels)
    assert result["status"] == "parity failed"
    assert (result["torch_top1"], result["top1"]) == (1.0, 0.0)
    assert "100.00 points apart" in result["reason"] and "differ on 100.00%" in result["reason"]


class DataDependent(nn.Module):
    """Python control flow on a tensor's value: nothing an exporter can trace."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(x.mean()) > 0.5:
            return x.flatten(1)[:, :3]
        return -x.flatten(1)[:, :3]


@pytest.mark.slow  # torch.onnx's dynamo exporter (onnxscript)
def test_a_model_that_does_not_export_says_why():
    _, images, labels = _separable(8)
    result = _parity(DataDependent(), images, labels)
    assert result["status"] == "not exported"
    assert result["reason"]


# --------------------------------------------------------------------------- in a run


def test_every_trained_run_records_its_inference_cost_and_a_model_is_measured_once(
    plugins, tiny_config
):
    tiny_config.strategies = ["linear", "finetune"]
    linear, finetune = Runner(tiny_config, plugins).run()
    for record in (linear, finetune):
        assert record["status"] == "ok", record["reason"]
        figures = record["inference"]
        assert figures["latency_ms_p90"] >= figures["latency_ms_p50"] > 0
        assert figures["throughput_images_per_s"] > 0
        assert figures["params"] == record["cost"]["total_params"]
        assert "inference" not in record["config"]
    # Both strategies train the same architecture at the same batch: one measurement.
    assert linear["inference"]["reused"] is False and finetune["inference"]["reused"] is True
    assert finetune["inference"]["latency_ms_p50"] == linear["inference"]["latency_ms_p50"]


def test_a_model_at_another_size_or_batch_is_measured_again(plugins, tiny_config):
    tiny_config.strategies = ["finetune"]
    (first,) = Runner(tiny_config, plugins).run()
    tiny_config.image_size = 20
    (bigger,) = Runner(tiny_config, plugins).run()
    tiny_config.inference_batch = 5
    tiny_config.force = True  # the batch of inference is in no key: the run is done
    (batch5,) = Runner(tiny_config, plugins).run()
    assert [r["inference"]["reused"] for r in (first, bigger, batch5)] == [False] * 3
    assert batch5["inference"]["throughput_batch"] == 5
    assert first["inference"]["throughput_batch"] == 16  # the run's training batch


def test_one_model_at_two_serving_batches_has_one_latency(plugins, tiny_config):
    """Two strategies training at different batches: two throughputs, one batch-1 latency."""
    tiny_config.strategies = ["linear", "finetune"]
    tiny_config.strategy_overrides = {"linear": {"batch_size": 8}}
    linear, finetune = Runner(tiny_config, plugins).run()
    assert linear["inference"]["throughput_batch"] == 8
    assert finetune["inference"]["throughput_batch"] == 16
    assert (linear["inference"]["reused"], finetune["inference"]["reused"]) == (False, False)
    assert finetune["inference"]["latency_reused"] is True
    assert finetune["inference"]["latency_ms_p50"] == linear["inference"]["latency_ms_p50"]


def test_inference_cost_is_in_no_run_key(plugins, tiny_config):
    tiny_config.strategies = ["scratch"]
    (measured,) = Runner(tiny_config, plugins).run()
    tiny_config.inference = False
    tiny_config.export = "onnx"
    tiny_config.inference_batch = 3
    tiny_config.force = True
    (unmeasured,) = Runner(tiny_config, plugins).run()
    assert measured["key"] == unmeasured["key"]
    assert "inference" in measured and "inference" not in unmeasured


@pytest.mark.slow  # torch.onnx's dynamo exporter (onnxscript)
def test_export_onnx_records_parity_beside_the_accuracy(plugins, tiny_config):
    tiny_config.strategies = ["finetune"]
    tiny_config.export = "onnx"
    (record,) = Runner(tiny_config, plugins).run()
    onnx = record["inference"]["onnx"]
    assert onnx["status"] == "ok", onnx
    assert onnx["torch_top1"] == pytest.approx(record["accuracy"]["final"], abs=0.02)
    assert abs(onnx["top1"] - onnx["torch_top1"]) * 100 <= onnx["tolerance_points"]


def test_trackers_log_the_inference_figures_with_the_final_ones(plugins, tiny_config):
    from tlbench.trackers import final_series

    tiny_config.strategies = ["scratch"]
    (record,) = Runner(tiny_config, plugins).run()
    series = final_series(record)
    assert series["final/latency_ms_p50"] == record["inference"]["latency_ms_p50"]
    assert series["final/inference_images_per_s"] > 0
    # Energy only where a counter measured it: never a made-up 0.
    assert ("final/train_energy_j" in series) == (record["cost"]["energy_joules"] is not None)


class _FeaturesExportDifferently:
    """A plugin backbone whose network permutes its features under torch.onnx.export."""

    @tlbench.hookimpl
    def tlbench_register_backbones(self, register):
        tiny = testing.tiny_backbone("tiny_bad_export")
        # Wrapped, the network's parameter names are not the stages' any more: none declared.
        register(dataclasses.replace(tiny, build=lambda p: _Permuted(tiny.build(p)), stages=None))


class _Permuted(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.inner(x)
        return features.flip(1) if torch.compiler.is_exporting() else features


@pytest.mark.slow  # torch.onnx's dynamo exporter (onnxscript)
def test_a_run_whose_export_disagrees_says_so_on_its_line_and_still_counts(tiny_config):
    from tlbench.console import describe_outcome

    plugins = tlbench.Plugins(
        entry_points=False,
        extra=[("tiny", testing.TINY_PLUGIN), ("bad", _FeaturesExportDifferently())],
    )
    tiny_config.backbones = ["tiny_bad_export"]
    tiny_config.strategies = ["linear"]  # learns the tiny set in two epochs
    tiny_config.export = "onnx"
    (record,) = Runner(tiny_config, plugins).run()
    assert record["status"] == "ok"  # the training counts; its export is what failed
    onnx = record["inference"]["onnx"]
    assert onnx["status"] == "parity failed", onnx
    line = describe_outcome(record)
    assert "ms per image at batch 1" in line
    assert "ONNX PARITY FAILED: the exported model's top-1 is" in line
