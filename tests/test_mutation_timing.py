"""The phase clock's CUDA path, on a machine without a GPU.

On CUDA the clock records events on the run's device's stream and reads their
elapsed times only at `collect()` (no host sync per step). The CPU tests never
reach that path, so a fake `torch.cuda` with the same rules as the real one
stands in: an event times only if created with `enable_timing=True`, and is
recorded on the stream it is given. Written for the mutants the mutation run
(results/mutation.md) found with no test.
"""

from __future__ import annotations

import pytest
import torch

from tlbench.timing import PhaseClock


class FakeStream:
    def __init__(self, device: torch.device):
        self.device = device


class FakeCuda:
    """`torch.cuda.Event` and `current_stream` on a clock the test moves by hand."""

    def __init__(self) -> None:
        self.now_ms = 0.0
        self.current_device = torch.device("cuda", 0)
        fake = self

        class Event:
            def __init__(self, enable_timing: bool = False):
                self.enable_timing = enable_timing
                self.stream: FakeStream | None = None
                self.at_ms: float | None = None

            def record(self, stream: FakeStream | None = None) -> None:
                self.stream = stream or FakeStream(fake.current_device)
                self.at_ms = fake.now_ms

            def elapsed_time(self, end: Event) -> float:
                if not (self.enable_timing and end.enable_timing):
                    raise RuntimeError(
                        "Both events must be created with argument 'enable_timing=True'"
                    )
                return end.at_ms - self.at_ms

        self.Event = Event

    def current_stream(self, device: torch.device | None = None) -> FakeStream:
        return FakeStream(self.current_device if device is None else device)


@pytest.fixture
def cuda(monkeypatch: pytest.MonkeyPatch) -> FakeCuda:
    fake = FakeCuda()
    monkeypatch.setattr(torch.cuda, "Event", fake.Event)
    monkeypatch.setattr(torch.cuda, "current_stream", fake.current_stream)
    return fake


def test_a_run_on_the_second_gpu_is_timed_on_its_stream(cuda: FakeCuda):
    device = torch.device("cuda", 1)
    clock = PhaseClock(device)
    clock.start("data")
    cuda.now_ms += 250.0
    clock.stop("data")
    clock.start("compute")
    cuda.now_ms += 1500.0
    clock.stop("compute")
    clock.start("data")
    cuda.now_ms += 50.0
    clock.stop("data")
    # Every event was recorded on cuda:1's stream, not on the current device's (cuda:0).
    assert [(begin.stream.device, end.stream.device) for _, begin, end in clock._events] == [
        (device, device)
    ] * 3
    assert clock.collect() == {"data": pytest.approx(0.3), "compute": pytest.approx(1.5)}
    assert clock.collect() == {"data": pytest.approx(0.3), "compute": pytest.approx(1.5)}


def test_a_stopwatch_adds_up_the_wall_seconds_of_each_section(monkeypatch):
    from tlbench import clocks

    ticks = iter([100.0, 102.5, 200.0, 200.25, 300.0, 301.0])
    monkeypatch.setattr(clocks.time, "perf_counter", lambda: next(ticks))
    watch = clocks.Stopwatch(torch.device("cpu"))
    for name in ("eval", "eval", "save"):
        with watch.section(name):
            pass
    assert watch.seconds == {"eval": 2.75, "save": 1.0}


def test_mfu_of_a_counted_training_figure_uses_it_and_says_so():
    from tlbench.peaks import device_peak, mfu

    h100 = {"type": "cuda", "name": "NVIDIA H100 80GB HBM3", "multiprocessors": 132, "mig": None}
    # 5 GFLOPs a training image counted (a frozen part has no backward), 20,000 img/s.
    out = mfu(4.1e9, 20_000, h100, "bf16", train_flops_per_image=5_000_000_000)
    assert out["mfu"] == 5e9 * 20_000 / 989.5e12
    assert out["train_flops_per_image"] == 5_000_000_000
    reason = device_peak(h100, "bf16").reason
    assert out["mfu_basis"] == (
        f"{reason}; training FLOPs counted (forward + backward of what trains)"
    )
