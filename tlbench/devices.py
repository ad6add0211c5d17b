"""Devices: which one a run asked for, what it is, and moving tensors onto it.

`resolve_device` turns `--device` into a `torch.device` (or an error naming
what is missing); `synchronize` waits for queued work at a measurement
boundary; `host_to_device` copies without blocking. A figure is comparable
only with figures from the same kind of device: `device_identity` names it
(model, memory, MIG slice, compute capability) and gives the short `key` that
goes into the key of anything timed. `backend_state` reads back the numeric
settings (TF32, cuDNN autotuning) the process really runs with.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

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


def host_to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A non-blocking copy; from pinned memory, as a pageable source would make it blocking."""
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device, non_blocking=True)


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
