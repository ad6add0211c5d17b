"""Where a worker's runs train: its device claimed, and a spec planned for another device refused.

A spec's key, precision and label are planned before any worker exists
(`tlbench.plan.execution_settings`). A worker checks that its own device is
the one the spec was planned for (its type and, on a GPU, its model) before
it trains: a T4 worker of a mixed Ray cluster must not train a spec keyed,
and set to bf16, for the driver's H100.
"""

from __future__ import annotations

from typing import Any

from tlbench.plugin_types import RunSpec


def claim_device(device: str) -> None:
    """Make a worker's GPU its current device (`torch.cuda.set_device`).

    Otherwise every library call that takes "the current device" (a bare
    `torch.cuda.Event().record()`, cuBLAS handles, `torch.cuda.synchronize()`
    without an argument, a third-party kernel) works on cuda:0, whichever
    GPU the worker was given.
    """
    import torch

    if device.startswith("cuda"):
        index = torch.device(device).index
        torch.cuda.set_device(index if index is not None else 0)


def device_mismatch(spec: RunSpec, device: str | None) -> str | None:
    """Why `spec` must not train on `device` (a worker's), or None when it may."""
    from tlbench.devices import device_identity, resolve_device

    planned = spec.execution
    here = resolve_device(device or planned["device"])
    if here.type != planned["device"]:
        return (
            f"planned for {planned['device']} but this worker runs on {device}: its key, "
            "precision and timings would name a device it did not train on"
        )
    model = planned.get("device_model")
    if model is not None:
        actual = device_identity(here)["key"]
        if actual != model:
            return (
                f"planned for {model} but this worker's device is {actual}: its key, precision "
                "and timings would name a device it did not train on; run one grid per device model"
            )
    return None


def refused(spec: RunSpec, plugins: Any, reason: str) -> Any:
    """The failed record of a spec a worker refused to train."""
    from tlbench.trial import make_record

    return make_record(spec, "failed", plugins, reason=f"not run here: {reason}")
