"""Clocks: time per phase of a step loop, and wall time per section of a run.

On a CPU every op is synchronous, so `time.perf_counter` around a phase is its
cost. On CUDA, work is queued asynchronously: `PhaseClock` times phases with
CUDA events (read once, at the epoch boundary, so the step loop never waits on
the host), and `Stopwatch` reads the wall clock only after `synchronize`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from tlbench.devices import synchronize


class PhaseClock:
    """Accumulates time spent in named phases ("data", "compute") without host syncs."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self._open: dict[str, Any] = {}
        self._events: list[tuple[str, Any, Any]] = []
        self.seconds: dict[str, float] = {}

    def _record(self) -> Any:
        # On the run's device's stream: a bare `record()` uses the current device's,
        # which is cuda:0 for a run on cuda:1 unless the caller switched devices.
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        return event

    def start(self, phase: str) -> None:
        self._open[phase] = self._record() if self.cuda else time.perf_counter()

    def stop(self, phase: str) -> None:
        begin = self._open.pop(phase)
        if self.cuda:
            end = self._record()
            self._events.append((phase, begin, end))
        else:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - begin

    def collect(self) -> dict[str, float]:
        """Totals so far; on CUDA call only after a synchronize."""
        for phase, begin, end in self._events:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + begin.elapsed_time(end) / 1000
        self._events.clear()
        return dict(self.seconds)


@dataclass
class Stopwatch:
    """Wall seconds per named section of a run, synchronised at each boundary."""

    device: torch.device
    seconds: dict[str, float] = field(default_factory=dict)

    def section(self, name: str) -> _Section:
        return _Section(self, name)


class _Section:
    def __init__(self, watch: Stopwatch, name: str):
        self.watch, self.name = watch, name

    def __enter__(self) -> _Section:
        synchronize(self.watch.device)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        synchronize(self.watch.device)
        elapsed = time.perf_counter() - self.t0
        self.watch.seconds[self.name] = self.watch.seconds.get(self.name, 0.0) + elapsed
