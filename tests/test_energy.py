"""Energy where the hardware tells it (issue 27): NVML on NVIDIA GPUs, RAPL on CPUs, else
"not measured" with the reason; never an invented figure.

The GPU path reads a stand-in NVML board (this machine has no GPU); the CPU
path reads a powercap tree the test writes, with the same file layout as
Linux's, and bumps its counter while the run trains.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import tlbench.energy
import tlbench.inference
import tlbench.regimes
from tlbench.energy import meter_for
from tlbench.runner import Runner

BUS = "00000000:3B:00.0"


class FakeNvml:
    """The part of pynvml the meter uses; the board's counter is in millijoules."""

    def __init__(self, *, supported: bool = True):
        self.supported = supported
        self.millijoules = 5_000_000
        self.asked_for: list[str] = []

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetHandleByPciBusId(self, bus: str) -> str:
        self.asked_for.append(bus)
        return f"handle {bus}"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> int:
        if not self.supported:
            raise RuntimeError("Not Supported")
        assert handle == f"handle {BUS}"
        return self.millijoules


def test_a_gpu_phase_draws_what_the_boards_counter_says():
    nvml = FakeNvml()
    meter = meter_for(torch.device("cuda:1"), nvml=nvml, bus_id=BUS)
    assert meter.facts() == {"energy_source": "nvml"}
    with meter.span() as span:
        nvml.millijoules += 1_250_500  # 1,250.5 J
    assert span.joules == pytest.approx(1250.5)
    assert nvml.asked_for == [BUS]


def test_a_gpu_without_an_energy_counter_is_not_measured_and_says_why():
    meter = meter_for(torch.device("cuda:0"), nvml=FakeNvml(supported=False), bus_id=BUS)
    with meter.span() as span:
        pass
    assert span.joules is None
    assert "Not Supported" in meter.facts()["energy_reason"]


def _rapl(root: Path, packages: dict[int, int], wrap: int = 1_000_000_000) -> Path:
    """A powercap tree: package counters in microjoules, and a core subdomain not to sum."""
    for index, value in packages.items():
        package = root / f"intel-rapl:{index}"
        package.mkdir(parents=True, exist_ok=True)
        (package / "energy_uj").write_text(f"{value}\n")
        (package / "max_energy_range_uj").write_text(f"{wrap}\n")
        core = root / f"intel-rapl:{index}:0"
        core.mkdir(exist_ok=True)
        (core / "energy_uj").write_text("123\n")
    return root


def _set(root: Path, index: int, value: int) -> None:
    (root / f"intel-rapl:{index}" / "energy_uj").write_text(f"{value}\n")


def test_cpu_packages_are_summed_and_a_wrapped_counter_is_undone(tmp_path):
    root = _rapl(tmp_path, {0: 10_000_000, 1: 999_000_000})
    meter = meter_for(torch.device("cpu"), rapl_root=root)
    with meter.span() as span:
        _set(root, 0, 12_500_000)  # +2.5 J
        _set(root, 1, 500_000)  # wrapped: +1.0 J + 0.5 J
    assert span.joules == pytest.approx(4.0)
    assert meter.facts() == {"energy_source": "rapl"}


def test_a_cpu_without_rapl_is_not_measured_and_says_why(tmp_path):
    meter = meter_for(torch.device("cpu"), rapl_root=tmp_path / "absent")
    with meter.span() as span:
        pass
    assert span.joules is None
    assert "no RAPL interface" in meter.facts()["energy_reason"]
    empty = meter_for(torch.device("cpu"), rapl_root=tmp_path)
    assert "no package energy counters" in empty.facts()["energy_reason"]


def test_a_counter_that_vanishes_mid_run_gives_no_figure(tmp_path):
    root = _rapl(tmp_path, {0: 1_000})
    meter = meter_for(torch.device("cpu"), rapl_root=root)
    with meter.span() as span:
        (root / "intel-rapl:0" / "energy_uj").unlink()
    assert span.joules is None
    assert "could not be read" in meter.facts()["energy_reason"]


def test_a_run_records_its_training_and_inference_energy(
    plugins, tiny_config, monkeypatch, tmp_path
):
    """Training drew 3 J (one bump per fit); inference 2 J over its throughput calls."""
    root = _rapl(tmp_path / "powercap", {0: 0})
    monkeypatch.setattr(tlbench.energy, "RAPL_ROOT", root)
    drawn = {"uj": 0}

    def draw(joules: float) -> None:
        drawn["uj"] += int(joules * 1e6)
        _set(root, 0, drawn["uj"])

    real_fit, real_timing = tlbench.regimes.train_images, tlbench.inference.time_calls

    def train_images(*args, **kwargs):
        result = real_fit(*args, **kwargs)
        draw(3.0)
        return result

    def time_calls(call, settings, timer):
        timings = real_timing(call, settings, timer)
        draw(2.0)
        return timings

    monkeypatch.setattr(tlbench.regimes, "train_images", train_images)
    monkeypatch.setattr(tlbench.inference, "time_calls", time_calls)
    tiny_config.strategies = ["scratch"]
    (record,) = Runner(tiny_config, plugins).run()
    assert record["status"] == "ok", record["reason"]
    assert record["cost"]["energy_source"] == "rapl"
    assert record["cost"]["energy_joules"] == pytest.approx(3.0)
    figures = record["inference"]
    images = figures["throughput_batch"] * figures["throughput_samples"]
    assert figures["energy_joules_per_1000"] == pytest.approx(2.0 / images * 1000)


def test_where_nothing_is_readable_the_record_says_so(plugins, tiny_config, monkeypatch, tmp_path):
    monkeypatch.setattr(tlbench.energy, "RAPL_ROOT", tmp_path / "none")
    tiny_config.strategies = ["scratch"]
    (record,) = Runner(tiny_config, plugins).run()
    assert record["cost"]["energy_joules"] is None
    assert "no RAPL interface" in record["cost"]["energy_reason"]
    assert record["inference"]["energy_joules_per_1000"] is None
    assert record["inference"]["energy_reason"] == record["cost"]["energy_reason"]
