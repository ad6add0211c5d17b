"""Datasheet peaks and model FLOPs utilisation.

MFU is taken against `device_peak`, a table of dense datasheet peaks per
precision (`PEAKS`) that answers "unknown" (with the reason) rather than a
wrong number: for a CPU, a MIG slice, a cut-down part or a device it does not
know.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple


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
            f"{name!r} is not in tlbench's peak table (peaks.PEAKS); no MFU rather than a guess",
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
