"""Energy where the hardware tells it: the GPU board's counter, or the CPU package's.

An `EnergyMeter` reads a cumulative energy counter in joules before and
after a timed phase; the difference is what the phase drew. Two sources:

- NVIDIA GPUs: NVML's total energy counter (`nvmlDeviceGetTotalEnergyConsumption`,
  millijoules since the driver loaded; Volta and newer), for the board the run
  uses, found by its PCI bus id.
- CPUs: Linux RAPL (`/sys/class/powercap/intel-rapl:N/energy_uj`, one per
  package; AMD exposes the same files), summed over packages, with the
  counter's wrap-around undone. Often root-only since 2020 (CVE-2020-8694).

Anything else is "not measured", with the reason: a meter never invents a
figure. A CPU package counter sees the whole package (other processes too),
and a GPU board counter the whole board: the record says which source it
read, so a reader knows what the joules cover.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RAPL_ROOT = Path("/sys/class/powercap")


@dataclass
class EnergyMeter:
    """A cumulative counter in joules (`read`), or None with `reason` when there is none."""

    source: str | None
    reason: str | None = None
    read: Callable[[], float] | None = field(default=None, repr=False)

    @property
    def available(self) -> bool:
        return self.read is not None

    def facts(self) -> dict[str, Any]:
        """What the record says about the meter: its source, or why there is none."""
        if self.read is None:
            return {"energy_source": None, "energy_reason": self.reason}
        if self.reason:  # the counter failed during the last span
            return {"energy_source": self.source, "energy_reason": self.reason}
        return {"energy_source": self.source}

    @contextlib.contextmanager
    def span(self) -> Iterator[_Span]:
        """Measure the joules of the block: `span.joules` after it (None when not measured).

        A counter that fails between the two readings gives None, never a
        partial figure.
        """
        span = _Span()
        if self.read is None:
            yield span
            return
        self.reason = None  # a failure of an earlier span is not this one's
        try:
            before = self.read()
        except Exception as exc:  # a counter that stopped answering: measured nothing
            self.reason = f"the {self.source} counter could not be read: {exc}"
            yield span
            return
        yield span
        try:
            after = self.read()
        except Exception as exc:
            self.reason = f"the {self.source} counter could not be read: {exc}"
            return
        span.joules = max(0.0, after - before)


@dataclass
class _Span:
    joules: float | None = None


def meter_for(
    device: Any, *, nvml: Any = None, bus_id: str | None = None, rapl_root: Path | None = None
) -> EnergyMeter:
    """The energy meter of a `torch.device`: NVML for CUDA, RAPL for a CPU.

    `nvml`: the `pynvml` module (from nvidia-ml-py) or a stand-in with its
    functions, imported when a CUDA device asks for it; `bus_id`: the GPU's
    PCI bus id (default: torch's for the device); `rapl_root`: the powercap
    folder (default `RAPL_ROOT`).
    """
    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        return _nvml_meter(device, nvml, bus_id)
    if kind == "cpu":
        return _rapl_meter(RAPL_ROOT if rapl_root is None else rapl_root)
    return EnergyMeter(None, f"no energy counter is read on {kind} devices")


# --------------------------------------------------------------------------- NVML


def _nvml_meter(device: Any, nvml: Any, bus_id: str | None) -> EnergyMeter:
    if nvml is None:
        try:
            import pynvml as nvml  # nvidia-ml-py
        except ImportError:
            return EnergyMeter(
                None, "NVML is not installed (pip install nvidia-ml-py) to read the GPU's energy"
            )
    try:
        nvml.nvmlInit()
        handle = nvml.nvmlDeviceGetHandleByPciBusId(bus_id or _pci_bus_id(device))
        nvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # raises where unsupported
    except Exception as exc:
        return EnergyMeter(None, f"NVML gives no energy counter for this GPU: {exc}")
    return EnergyMeter(
        "nvml", read=lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0
    )


def _pci_bus_id(device: Any) -> str:
    """The PCI bus id of a CUDA device as NVML spells it ("00000000:3B:00.0")."""
    import torch

    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"


# --------------------------------------------------------------------------- RAPL


def _rapl_meter(root: Path) -> EnergyMeter:
    if not root.is_dir():
        return EnergyMeter(
            None, f"no RAPL interface on this machine ({root} is absent; a VM or container?)"
        )
    packages = sorted(
        p
        for p in root.glob("intel-rapl:*")
        if p.name.count(":") == 1 and (p / "energy_uj").exists()
    )
    if not packages:
        return EnergyMeter(None, f"{root} has no package energy counters (intel-rapl:N)")
    ranges: list[int] = []
    for package in packages:
        try:
            (package / "energy_uj").read_text()
            ranges.append(int((package / "max_energy_range_uj").read_text()))
        except PermissionError:
            return EnergyMeter(
                None,
                f"{package / 'energy_uj'} is not readable by this user (root-only since "
                "CVE-2020-8694; `sudo chmod a+r` it to measure CPU energy)",
            )
        except (OSError, ValueError) as exc:
            return EnergyMeter(None, f"{package} could not be read: {exc}")
    return EnergyMeter("rapl", read=_RaplCounter(packages, ranges))


class _RaplCounter:
    """The packages' counters summed, in joules, growing even where a counter wraps."""

    def __init__(self, packages: list[Path], ranges: list[int]):
        self.files = [p / "energy_uj" for p in packages]
        self.ranges = ranges
        self.last: list[int] | None = None
        self.total_uj = 0

    def __call__(self) -> float:
        now = [int(f.read_text()) for f in self.files]
        if self.last is not None:
            for before, after, wrap in zip(self.last, now, self.ranges, strict=True):
                self.total_uj += after - before if after >= before else after + wrap - before
        self.last = now
        return self.total_uj / 1e6
