"""Memory: a run's peak, what the host gives back, what fits on the device, and running out.

`PeakMemory` measures a run's peak (CUDA peak allocated, or the process's
peak RSS on a CPU); `release_host_memory` hands glibc's freed arenas back to
the OS between epochs. A split stays on the GPU when it fits
(`fits_on_device`). When a fit runs out of memory anyway, `is_out_of_memory`
recognises it in every form PyTorch raises it, and `next_attempt_after_oom`
says what to try next: the data on the host first, then half the batch.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import re
import resource
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


def vm_kib(field: str) -> int | None:
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
        #: peaks of phases closed with `close_phase`, recorded beside the run's own.
        self.phases: dict[str, int] = {}

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.rss_reset = self._reset_rss_peak()

    def close_phase(self, name: str) -> dict[str, int]:
        """Keep the peak since the last reset as `<name>_peak_memory_bytes`, then reset.

        For a phase whose peak is not the run's: feature extraction, which a
        `linear` run pays only when its features are not cached. Closed after
        it, the run's peak is the training's whether the cache hit or missed,
        and the extraction's is recorded apart.
        """
        if self.device.type == "cuda":
            peak = int(torch.cuda.max_memory_allocated(self.device))
        else:
            peak = self._host()[0]
        self.phases[f"{name}_peak_memory_bytes"] = peak
        self.reset()
        return {f"{name}_peak_memory_bytes": peak}

    @staticmethod
    def _reset_rss_peak() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            return False
        # Trust the reset only if it took: right after it, the mark is the current RSS.
        hwm, rss = vm_kib("VmHWM"), vm_kib("VmRSS")
        return hwm is not None and rss is not None and hwm <= rss * 1.05 + 1024

    def _host(self) -> tuple[int, str]:
        hwm = vm_kib("VmHWM")
        if hwm is not None:
            return hwm * 1024, "process_peak_rss" if self.rss_reset else "process_peak_rss_lifetime"
        # ru_maxrss is KiB on Linux and never resets.
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return int(rss), "process_peak_rss_lifetime"

    def read(self, resident_bytes: int = 0) -> dict[str, Any]:
        """The peaks since `reset()`; `resident_bytes`: dataset tensors kept on the device.

        On CUDA the splits are kept on the GPU when they fit (a quarter of free
        memory), so the raw peak holds them on an H200 and not on a T4.
        `model_peak_memory_bytes` is the peak without them (they stay allocated
        throughout training, so the subtraction is exact): the figure that
        means the same on every GPU.
        """
        host_bytes, host_kind = self._host()
        if self.device.type == "cuda":
            peak = int(torch.cuda.max_memory_allocated(self.device))
            return {
                "peak_memory_bytes": peak,
                "peak_memory_kind": "cuda_max_allocated",
                "resident_data_bytes": int(resident_bytes),
                "model_peak_memory_bytes": max(0, peak - int(resident_bytes)),
                "peak_host_memory_bytes": host_bytes,
                **self.phases,
            }
        return {"peak_memory_bytes": host_bytes, "peak_memory_kind": host_kind, **self.phases}


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


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    """Keep a split on the GPU when it takes under a quarter of free memory."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes < free // 4


def to_device_if_fits(images: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """The whole uint8 split on the device when it fits (`fits_on_device`), else None."""
    if fits_on_device(images.numel() * images.element_size(), device):
        return images.to(device)
    return None


def nbytes(*tensors: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is an out-of-memory in any of the forms PyTorch raises it.

    `torch.OutOfMemoryError` (the caching allocator, `torch.cuda.OutOfMemoryError`);
    a `RuntimeError` from cuDNN, cuBLAS or the CUDA runtime whose message says
    it failed to allocate (`CUDNN_STATUS_ALLOC_FAILED`, `CUBLAS_STATUS_ALLOC_FAILED`,
    "CUDA error: out of memory"), from MPS or from the CPU allocator; and any of
    these wrapped by another exception, as `torch.compile` wraps an OOM met while
    compiling (`BackendCompilerFailed`, through `inner_exception` or the cause
    chain). "out of resource" (Triton's shared memory per block) is not memory
    a smaller batch frees, and is not an OOM.
    """
    return any(
        isinstance(current, torch.OutOfMemoryError)
        or (isinstance(current, RuntimeError) and _OOM_MESSAGE.search(str(current)) is not None)
        for current in _exception_chain(exc, inner=True)
    )


def _exception_chain(exc: BaseException, *, inner: bool) -> Iterator[BaseException]:
    """`exc` and each exception it was raised from or while handling, once each; with
    `inner`, also what `torch.compile` wraps (`inner_exception`)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        wrapped = getattr(current, "inner_exception", None) if inner else None
        stack += [wrapped, current.__cause__, current.__context__]


_OOM_MESSAGE = re.compile(
    r"out of memory|CUDNN_STATUS_ALLOC_FAILED|CUBLAS_STATUS_ALLOC_FAILED|CUSOLVER_STATUS_ALLOC_FAILED"
    r"|CUFFT_ALLOC_FAILED|DefaultCPUAllocator: (?:can't allocate|not enough) memory",
    re.IGNORECASE,
)


class DataOnDeviceOOM(RuntimeError):
    """A fit ran out of device memory with its data on the device (`__cause__`: the OOM).

    The data is the one allocation that need not be there: the next attempt
    keeps it on the host, at the same batch (`next_attempt_after_oom`).
    """

    def __init__(self, resident_bytes: int):
        self.resident_bytes = resident_bytes
        super().__init__(
            f"out of memory with {resident_bytes / 2**20:.0f} MiB of data on the device"
            if resident_bytes > 0
            else "out of memory while putting the data on the device"
        )


@dataclass(frozen=True)
class Attempt:
    """How a fit is tried: its batch size, and whether its data may stay on the device."""

    batch_size: int
    data_on_device: bool = True


def next_attempt_after_oom(exc: BaseException, attempt: Attempt) -> Attempt | None:
    """What to try after an out-of-memory `exc` in `attempt`; None when nothing is left.

    First the data moves to the host at the same batch (when the failed fit
    had it on the device: a `DataOnDeviceOOM` in the chain), so the batch
    size, and with it the result, stays what was asked; then the batch halves.
    """
    if attempt.data_on_device and any(
        isinstance(current, DataOnDeviceOOM) for current in _exception_chain(exc, inner=False)
    ):
        return dataclasses.replace(attempt, data_on_device=False)
    if attempt.batch_size <= 1:
        return None
    return dataclasses.replace(attempt, batch_size=attempt.batch_size // 2)
