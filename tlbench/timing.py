"""Honest measurement: device sync at boundaries, phase clocks, peak memory, FLOPs.

On a CPU every op is synchronous, so `time.perf_counter` around a phase is its
cost. On CUDA, work is queued asynchronously: phases are timed with CUDA
events (read once, at the epoch boundary, so the step loop never waits on the
host), and the wall clock is read only after `synchronize`.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, for MFU.
_PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
    "A10G": 70.0,
    "RTX 4090": 165.0,
    "V100": 125.0,
    "T4": 65.0,
}


def resolve_device(name: str) -> torch.device:
    """`auto` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        from tlbench.errors import TlbenchError

        raise TlbenchError("--device cuda was asked for but no CUDA device is available")
    return device


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def peak_tflops(device: torch.device, precision: str) -> float | None:
    """The device's dense peak for `precision`, where known (for MFU)."""
    if device.type != "cuda" or precision != "bf16":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in _PEAK_BF16_TFLOPS.items():
        if key in name:
            return value
    return None


class PhaseClock:
    """Accumulates time spent in named phases ("data", "compute") without host syncs."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self._open: dict[str, Any] = {}
        self._events: list[tuple[str, Any, Any]] = []
        self.seconds: dict[str, float] = {}

    def start(self, phase: str) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._open[phase] = event
        else:
            self._open[phase] = time.perf_counter()

    def stop(self, phase: str) -> None:
        begin = self._open.pop(phase)
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._events.append((phase, begin, end))
        else:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - begin

    def collect(self) -> dict[str, float]:
        """Totals so far; on CUDA call only after a synchronize."""
        for phase, begin, end in self._events:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + begin.elapsed_time(end) / 1000
        self._events.clear()
        return dict(self.seconds)


def _vm_kib(field: str) -> int | None:
    """A `Vm*` line of /proc/self/status in KiB (Linux), or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class PeakMemory:
    """Peak memory of a run: CUDA peak allocated, or the process's peak RSS on a CPU.

    On a CPU, `reset()` clears the kernel's resident-set high-water mark
    (VmHWM, Linux 4.0+), so the figure is this run's peak and not that of an
    earlier, bigger run in the same process. Where the mark cannot be reset
    the figure is the process's lifetime peak and its `peak_memory_kind` says
    so. On CUDA the host's peak RSS is recorded beside the device figure.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.rss_reset = False

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.rss_reset = self._reset_rss_peak()

    @staticmethod
    def _reset_rss_peak() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            return False
        # Trust the reset only if it took: right after it, the mark is the current RSS.
        hwm, rss = _vm_kib("VmHWM"), _vm_kib("VmRSS")
        return hwm is not None and rss is not None and hwm <= rss * 1.05 + 1024

    def _host(self) -> tuple[int, str]:
        hwm = _vm_kib("VmHWM")
        if hwm is not None:
            return hwm * 1024, "process_peak_rss" if self.rss_reset else "process_peak_rss_lifetime"
        # ru_maxrss is KiB on Linux and never resets.
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return int(rss), "process_peak_rss_lifetime"

    def read(self) -> dict[str, Any]:
        host_bytes, host_kind = self._host()
        if self.device.type == "cuda":
            return {
                "peak_memory_bytes": int(torch.cuda.max_memory_allocated(self.device)),
                "peak_memory_kind": "cuda_max_allocated",
                "peak_host_memory_bytes": host_bytes,
            }
        return {"peak_memory_bytes": host_bytes, "peak_memory_kind": host_kind}


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 (glibc only; musl has no malloc_trim)
    except (OSError, AttributeError):
        return None
    return libc


def release_host_memory() -> None:
    """Return the memory glibc keeps after PyTorch freed it to the OS (`malloc_trim`).

    glibc's allocator keeps freed blocks in its arenas, fragmented, so a CPU
    training process grows by the size of its activations again and again:
    measured on EfficientNet-Lite0 at 224 px, batch 32, 2 CPU threads, the
    resident set left between steps rose from 0.8 to 3.0 GB in 8 steps, and an
    evaluation pass on top of it peaked at 3.9 GB (3.3 GB when trimmed).
    Called at epoch boundaries, never inside the step loop: a trim costs
    milliseconds but the next step page-faults the memory back in. A no-op
    where glibc is absent.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def forward_flops(model: nn.Module, image_size: int, device: torch.device) -> int | None:
    """Forward FLOPs for one image (torch's flop counter; 2 FLOPs per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, 3, image_size, image_size, device=device)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(x)
        return int(counter.get_total_flops())
    except Exception:  # an op the counter cannot trace: report none rather than a guess
        return None
    finally:
        model.train(was_training)


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


def git_sha() -> str | None:
    """The sha of the tlbench checkout, when it is one (an editable install)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device, plugin_versions: dict[str, str]) -> dict[str, Any]:
    import torchvision

    from tlbench import __version__

    return {
        "tlbench": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device.type,
        "device_name": device_name(device),
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "plugins": plugin_versions,
        "git_sha": git_sha(),
    }
