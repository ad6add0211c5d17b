"""Honest measurement: devices and their identity, phase clocks, peak memory, FLOPs, peaks.

On a CPU every op is synchronous, so `time.perf_counter` around a phase is its
cost. On CUDA, work is queued asynchronously: phases are timed with CUDA
events (read once, at the epoch boundary, so the step loop never waits on the
host), and the wall clock is read only after `synchronize`.

A figure is comparable only with figures from the same kind of device:
`device_identity` names it (model, memory, MIG slice, compute capability) and
gives the short `key` that goes into the key of anything timed. MFU is taken
against `device_peak`, a table of dense datasheet peaks per precision that
answers "unknown" (with the reason) rather than a wrong number.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import importlib.util
import os
import platform
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

# --------------------------------------------------------------------------- devices

_DEVICE_NAME = re.compile(r"^(cpu|mps|cuda)(?::(\d+))?$")


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when available, else the CPU), `cpu`, `cuda`, `cuda:N` or `mps`.

    Raises `TlbenchError` naming what is missing when the device is not there,
    so a grid fails before planning rather than in its first run.
    """
    from tlbench.errors import TlbenchError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    match = _DEVICE_NAME.match(name.strip().lower())
    if match is None:
        raise TlbenchError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    kind, index = match.group(1), match.group(2)
    if kind == "cuda":
        if not torch.cuda.is_available():
            build = (
                "this PyTorch has no CUDA" if torch.version.cuda is None else "no GPU is visible"
            )
            raise TlbenchError(
                f"--device {name} was asked for but no CUDA device is available ({build})"
            )
        count = torch.cuda.device_count()
        if index is not None and int(index) >= count:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            where = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
            raise TlbenchError(
                f"--device {name}: only {count} CUDA device(s) are visible{where}: cuda:0..cuda:{count - 1}"
            )
    if kind == "mps" and not (torch.backends.mps.is_available()):
        why = (
            "this PyTorch was built without MPS"
            if not torch.backends.mps.is_built()
            else ("MPS needs macOS 12.3+ on Apple silicon")
        )
        raise TlbenchError(f"--device mps was asked for but MPS is not available ({why})")
    return torch.device(kind if index is None else f"{kind}:{index}")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _cpu_model_name() -> str:
    """The CPU's marketing name (/proc/cpuinfo on Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware", "cpu model") and value.strip():
                return " ".join(value.split())
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            if out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "cpu"


def _host_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


_MIG_IN_NAME = re.compile(r"\bMIG\b\s*(\d+g\.\d+gb)?", re.IGNORECASE)


def _mig_slice(name: str, index: int) -> str | None:
    """The MIG profile ("1g.10gb") when the CUDA device is a MIG slice, else None."""
    match = _MIG_IN_NAME.search(name)
    if match:
        return match.group(1) or "MIG"
    visible = [
        v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()
    ]
    if index < len(visible) and visible[index].upper().startswith("MIG-"):
        return "MIG"
    return None


def device_identity(device: torch.device) -> dict[str, Any]:
    """Which device this is, as far as results are comparable: name, memory, MIG slice.

    `key` is a short stable string for the keys of anything timed (run keys,
    feature-cache keys, report groups): the device kind, the model name, its
    memory in whole GiB and its MIG slice, never the index (which GPU of eight
    ran a run is the executor's choice, not part of its result). `slug` is the
    same in a file-name-safe form. On a CPU the name is the CPU model; a
    machine's CPU count is kept beside it, not in the key.
    """
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        name = str(props.name)
        mig = _mig_slice(name, index)
        capability = f"{props.major}.{props.minor}"
        total = int(props.total_memory)
        sms = int(getattr(props, "multi_processor_count", 0)) or None
        uuid = str(getattr(props, "uuid", "")) or None
    else:
        index, mig, capability, sms, uuid = None, None, None, None, None
        name = _cpu_model_name()
        total = _host_memory_bytes()
    gib = f"{round(total / 2**30)}GiB" if total else "?GiB"
    base = name if device.type != "cuda" or mig is None or "MIG" in name else f"{name} MIG {mig}"
    key = f"{device.type}/{base}" + (f"/{gib}" if device.type == "cuda" else "")
    return {
        "type": device.type,
        "index": index,
        "name": name,
        "total_memory_bytes": total,
        "compute_capability": capability,
        "multiprocessors": sms,
        "mig": mig,
        "uuid": uuid,
        "cpu_count": os.cpu_count(),
        "key": key,
        "slug": _slug(f"{device.type}-{base}" if device.type != "cuda" else base),
    }


def device_name(device: torch.device) -> str:
    """The device's model name: the GPU's, or the CPU's (not just "x86_64")."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpu_model_name()


# --------------------------------------------------------------------------- peaks for MFU


@dataclass(frozen=True)
class _PeakEntry:
    label: str
    pattern: str  # matched against the lower-cased device name, in table order
    sms: int  # streaming multiprocessors of the full part (fewer: a slice or a cut-down part)
    tflops: dict[str, float]  # dense (no 2:4 sparsity) TFLOP/s per tlbench precision
    missing: dict[str, str] = field(default_factory=dict)  # precision -> why there is no peak
    source: str = ""


_NO_BF16 = "has no bf16 tensor cores (bf16 runs emulated, far below any tensor peak)"
_NO_TF32 = "has no TF32 tensor cores"

#: Dense peaks from NVIDIA's datasheets: "bf16"/"fp16" are tensor-core peaks with
#: fp32 accumulation (what autocast uses), "tf32" the TF32 tensor-core peak, "fp32"
#: the plain CUDA-core fp32 peak. Datasheets mostly print the 2:4-sparse figure
#: (marked *); the dense one is half of it. Order matters: a more specific name first.
PEAKS: tuple[_PeakEntry, ...] = (
    _PeakEntry("H200 NVL", r"\bh200 nvl\b", 132,
               {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0}, source="H200 NVL datasheet"),
    _PeakEntry("H200 SXM", r"\bh200\b", 132,
               {"bf16": 989.5, "fp16": 989.5, "tf32": 494.5, "fp32": 67.0}, source="H200 SXM datasheet"),
    _PeakEntry("GH200", r"\bgh200\b", 132,
               {"bf16": 989.5, "fp16": 989.5, "tf32": 494.5, "fp32": 67.0}, source="GH200 datasheet"),
    _PeakEntry("H100 NVL", r"\bh100 nvl\b", 132,
               {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0}, source="H100 NVL datasheet"),
    _PeakEntry("H100 PCIe", r"\bh100 pcie\b", 114,
               {"bf16": 756.5, "fp16": 756.5, "tf32": 378.0, "fp32": 51.0}, source="H100 PCIe datasheet"),
    # "NVIDIA H100 80GB HBM3" is how the SXM part names itself.
    _PeakEntry("H100 SXM", r"\bh100\b", 132,
               {"bf16": 989.5, "fp16": 989.5, "tf32": 494.5, "fp32": 67.0}, source="H100 SXM datasheet"),
    _PeakEntry("A100", r"\ba100\b", 108,
               {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}, source="A100 datasheet"),
    _PeakEntry("L40S", r"\bl40s\b", 142,
               {"bf16": 362.05, "fp16": 362.05, "tf32": 183.0, "fp32": 91.6}, source="L40S datasheet"),
    _PeakEntry("L40", r"\bl40\b", 142,
               {"bf16": 181.05, "fp16": 181.05, "tf32": 90.5, "fp32": 90.5}, source="L40 datasheet"),
    _PeakEntry("L4", r"\bl4\b", 58,
               {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3}, source="L4 datasheet"),
    _PeakEntry("A10", r"\ba10\b", 72,
               {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2}, source="A10 datasheet"),
    _PeakEntry("RTX 4090", r"\brtx 4090\b", 128,
               {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6, "fp32": 82.6}, source="Ada (AD102) whitepaper"),
    _PeakEntry("RTX 3090", r"\brtx 3090\b(?! ti)", 82,
               {"bf16": 71.0, "fp16": 71.0, "tf32": 35.6, "fp32": 35.6}, source="Ampere (GA102) whitepaper"),
    _PeakEntry("T4", r"\bt4\b", 40, {"fp16": 65.0, "fp32": 8.1},
               {"bf16": "T4 (Turing) " + _NO_BF16, "tf32": "T4 (Turing) " + _NO_TF32}, source="T4 datasheet"),
    _PeakEntry("V100S", r"\bv100s\b", 80, {"fp16": 130.0, "fp32": 16.4},
               {"bf16": "V100 (Volta) " + _NO_BF16, "tf32": "V100 (Volta) " + _NO_TF32}, source="V100S datasheet"),
    _PeakEntry("V100 PCIe", r"\bv100\b.*\bpcie\b", 80, {"fp16": 112.0, "fp32": 14.0},
               {"bf16": "V100 (Volta) " + _NO_BF16, "tf32": "V100 (Volta) " + _NO_TF32}, source="V100 datasheet"),
    _PeakEntry("V100 SXM2", r"\bv100\b", 80, {"fp16": 125.0, "fp32": 15.7},
               {"bf16": "V100 (Volta) " + _NO_BF16, "tf32": "V100 (Volta) " + _NO_TF32}, source="V100 datasheet"),
)  # fmt: skip


class Peak(NamedTuple):
    """A device's dense peak for one precision, or None and the reason there is none."""

    tflops: float | None
    reason: str
    #: the table entry that matched ("H100 SXM"), where one did.
    entry: str | None = None


def device_peak(identity: dict[str, Any], precision: str) -> Peak:
    """The dense peak (TFLOP/s) of the device `identity` describes, for `precision`.

    None, with the reason, rather than a wrong figure: for a CPU, a MIG slice
    or a part with fewer multiprocessors than the full chip (a slice's share of
    the peak is not published), a device the table does not know, or a
    precision the device has no tensor cores for.
    """
    name = identity.get("name") or "?"
    if identity.get("type") != "cuda":
        return Peak(None, f"no peak-FLOPs table for {identity.get('type')} devices ({name})")
    if identity.get("mig"):
        return Peak(
            None,
            f"{name} is a MIG slice ({identity['mig']}): its share of the peak is not published",
        )
    lowered = " ".join(name.lower().split())
    for entry in PEAKS:
        if re.search(entry.pattern, lowered):
            break
    else:
        return Peak(
            None,
            f"{name!r} is not in tlbench's peak table (timing.PEAKS); no MFU rather than a guess",
        )
    sms = identity.get("multiprocessors")
    if sms and sms < entry.sms:
        return Peak(
            None,
            f"{name} has {sms} of the {entry.sms} multiprocessors of a full {entry.label} "
            "(a MIG slice or a cut-down part): no published peak",
            entry.label,
        )
    if precision in entry.missing:
        return Peak(None, entry.missing[precision], entry.label)
    if precision not in entry.tflops:
        return Peak(None, f"no {precision} peak for {entry.label}", entry.label)
    value = entry.tflops[precision]
    kind = "CUDA-core" if precision == "fp32" else "tensor-core"
    return Peak(
        value, f"{entry.label}, dense {precision} {kind} peak ({entry.source})", entry.label
    )


def mfu(
    forward_flops_per_image: int | None,
    train_images_per_s: float | None,
    identity: dict[str, Any],
    precision: str,
    train_flops_per_image: int | None = None,
) -> dict[str, Any]:
    """Model FLOPs utilisation of a training run, with the peak and the FLOP count it used.

    The FLOPs of a training image are `train_flops_per_image` where it was
    counted (`training_flops`: forward and backward under the run's
    `requires_grad`, so a frozen part costs no backward), else assumed 3x the
    forward FLOPs (forward, then the two matmuls of the backward per forward
    matmul), which overstates a partly frozen model up to 3x. Returns `mfu`
    (None when there is no honest figure), `mfu_peak_tflops`, `mfu_basis`:
    which peak and which count, or why none, and `train_flops_per_image`
    (the counted figure, or None).
    """
    peak = device_peak(identity, precision)
    out: dict[str, Any] = {
        "mfu": None,
        "mfu_peak_tflops": peak.tflops,
        "mfu_basis": peak.reason,
        "train_flops_per_image": train_flops_per_image,
    }
    if peak.tflops is None:
        return out
    if not (train_flops_per_image or forward_flops_per_image) or not train_images_per_s:
        out["mfu_basis"] = f"{peak.reason}; no FLOP count or no measured throughput"
        return out
    if train_flops_per_image:
        flops = train_flops_per_image
        count = "training FLOPs counted (forward + backward of what trains)"
    else:
        flops = 3 * forward_flops_per_image  # type: ignore[operator]
        count = "training FLOPs assumed 3x forward (no counted figure)"
    out["mfu"] = flops * train_images_per_s / (peak.tflops * 1e12)
    out["mfu_basis"] = f"{peak.reason}; {count}"
    return out


def backend_state() -> dict[str, Any]:
    """The process's numeric settings as they are now: TF32 for matmul and cuDNN, cudnn.benchmark.

    Read back rather than assumed, so a record says how its run really ran.
    Where this PyTorch has the per-backend API (`fp32_precision`), it is what
    is read, each operator's word resolved through the levels it inherits
    from ("none": the CUDA level, then the process level): once anything used
    that API, the legacy `allow_tf32` getters raise or answer for a level the
    operators no longer follow.
    """
    state: dict[str, Any] = {"cudnn_benchmark": bool(torch.backends.cudnn.benchmark)}
    if hasattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision"):
        state["tf32_matmul"] = _effective_tf32(torch.backends.cuda.matmul.fp32_precision, "matmul")
        state["tf32_cudnn"] = _effective_tf32(torch.backends.cudnn.conv.fp32_precision, "conv")
        return state
    for key, legacy in (
        ("tf32_matmul", lambda: torch.backends.cuda.matmul.allow_tf32),
        ("tf32_cudnn", lambda: torch.backends.cudnn.allow_tf32),
    ):
        try:
            state[key] = bool(legacy())
        except RuntimeError:
            state[key] = None
    return state


def _effective_tf32(word: str, op: str) -> bool | None:
    """Whether an operator whose own word is `word` runs fp32 in TF32 (None: a word not known)."""
    for level in (word, torch.backends.cudnn.fp32_precision, torch.backends.fp32_precision):
        if level != "none":
            return {"tf32": True, "ieee": False}.get(level)
    if op == "matmul":  # nothing set at any level: torch.set_float32_matmul_precision decides
        return torch.get_float32_matmul_precision() != "highest"
    return True  # cuDNN convolutions' default


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


def forward_flops(
    model: nn.Module, image_size: int, device: torch.device | None = None
) -> int | None:
    """Forward FLOPs for one image of the computation training runs (2 FLOPs per multiply-add).

    Counted with torch's FLOP counter in training mode: in `eval()` under
    `no_grad`, attention takes PyTorch's fused fast path, which the counter
    scores as zero (ViT-B/16: 22.5 instead of 35.1 GFLOPs). The count runs on
    the meta device (shapes only, no memory, no kernels) with the model's
    parameters and buffers swapped for meta tensors, so the model's weights,
    BatchNorm statistics, the random-number state and its device are left as
    they were, and CPU and GPU give the same figure: torchvision's published
    GFLOPS, which are multiply-adds. Where a model cannot run on meta tensors
    (a custom op without a meta kernel), it is counted by running it on its own
    device (where its parameters are, whatever `device` says), with its
    buffers and the random-number state restored afterwards.

    Returns None when neither works, never raises: a caller must not cache or
    store a None (a later count, e.g. after placement, may succeed).
    """
    for count in (_flops_on_meta, _flops_in_place):
        try:
            flops = count(model, image_size, device)
        except Exception:  # an op the counter cannot trace: report none rather than a guess
            continue
        if flops:
            return flops
    return None


_FLOP_BATCH = 2  # BatchNorm in training mode needs more than one value per channel


class FlopCount(NamedTuple):
    """FLOPs per image of a training step: the forward alone, and forward plus backward."""

    forward: int
    #: forward + backward under the model's `requires_grad` flags: a frozen layer's
    #: weight gradient is not computed, nor an input gradient below the first layer
    #: that trains (ResNet-50 at 224 px, last stage trainable: 11.0 G, not 3 x 8.2 G).
    train: int


def training_flops(model: nn.Module, image_size: int) -> FlopCount | None:
    """The FLOPs one training image costs, counted (never assumed) on the meta device.

    One forward and one backward of a loss, as `forward_flops` counts (training
    mode, shapes only, the model's weights, statistics and random state left
    alone), with every parameter's `requires_grad` as the run set it: what
    the run's steps really compute. None when the model cannot run on meta
    tensors; never raises. A caller keeps it per (backbone, image size,
    strategy): the frozen part, and so the count, is the strategy's.
    """
    try:
        return _training_flops_on_meta(model, image_size)
    except Exception:  # an op the meta device or the counter cannot trace: none, not a guess
        return None


def _training_flops_on_meta(model: nn.Module, image_size: int) -> FlopCount | None:
    from torch.func import functional_call
    from torch.utils.flop_counter import FlopCounterMode

    params = {
        k: torch.empty_like(v, device="meta").requires_grad_(v.requires_grad)
        for k, v in model.named_parameters()
    }
    buffers = {k: torch.empty_like(v, device="meta") for k, v in model.named_buffers()}
    x = torch.zeros(_FLOP_BATCH, 3, image_size, image_size, device="meta")
    was_training = model.training
    model.train()
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.enable_grad():
            out = functional_call(model, {**params, **buffers}, (x,))
            forward = int(counter.get_total_flops())
            if out.requires_grad:
                out.float().sum().backward()
            total = int(counter.get_total_flops())
    finally:
        model.train(was_training)
    if not forward:
        return None
    return FlopCount(forward // _FLOP_BATCH, total // _FLOP_BATCH)


def _count(call: Any, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        call(x)
    return int(counter.get_total_flops()) // _FLOP_BATCH


def _flops_on_meta(model: nn.Module, image_size: int, device: torch.device | None) -> int:
    from torch.func import functional_call

    tensors = {
        **{k: torch.empty_like(v, device="meta") for k, v in model.named_parameters()},
        **{k: torch.empty_like(v, device="meta") for k, v in model.named_buffers()},
    }
    x = torch.zeros(_FLOP_BATCH, 3, image_size, image_size, device="meta")
    was_training = model.training
    model.train()
    try:
        return _count(lambda inp: functional_call(model, tensors, (inp,)), x)
    finally:
        model.train(was_training)


def _flops_in_place(model: nn.Module, image_size: int, device: torch.device | None) -> int:
    where = next((p.device for p in model.parameters()), device or torch.device("cpu"))
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    was_training = model.training
    rng = [where.index or 0] if where.type == "cuda" else []
    model.train()
    try:
        with torch.random.fork_rng(devices=rng):
            return _count(model, torch.zeros(_FLOP_BATCH, 3, image_size, image_size, device=where))
    finally:
        model.train(was_training)
        with torch.no_grad():
            for name, value in model.named_buffers():
                value.copy_(buffers[name])


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


def _torchvision_version() -> str | None:
    """`torchvision.__version__` (with its build tag, "0.29.1+cu130") without importing
    torchvision, which costs as much as importing torch: a run that uses no torchvision
    backbone or dataset never loads it."""
    spec = importlib.util.find_spec("torchvision")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        try:
            text = Path(folder, "version.py").read_text(encoding="utf-8")
        except OSError:
            continue
        if found := re.search(r"^__version__ = ['\"]([^'\"]+)['\"]", text, re.M):
            return found.group(1)
    try:
        return importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(device: torch.device, plugin_versions: dict[str, str]) -> dict[str, Any]:
    from tlbench.version import __version__

    torchvision_version = _torchvision_version()

    return {
        "tlbench": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device.type,
        "device_name": device_name(device),
        "device_identity": device_identity(device),
        **(backend_state() if device.type == "cuda" else {}),
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "plugins": plugin_versions,
        "git_sha": git_sha(),
    }
