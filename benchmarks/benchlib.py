"""Helpers of the speed benchmarks: harness runs in this process, and the ratio report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import tlbench
from tlbench.config import RunConfig
from tlbench.runner import Runner

#: lines printed in the "tlbench speed ratios" summary at the end of the run.
REPORT: list[str] = []


def report(benchmark: Any, name: str, figures: dict[str, Any]) -> None:
    """Store `figures` in the benchmark's extra_info and print them in the summary."""
    benchmark.extra_info.update(figures)
    shown = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
    )
    REPORT.append(f"{name}: {shown}")


def round_seconds(benchmark: Any) -> list[float]:
    """The timed rounds (warm-up rounds excluded) of a pedantic benchmark."""
    return list(benchmark.stats.stats.data)


def harness_config(tmp: Path, cache_dir: Path, device: torch.device, **changes: Any) -> RunConfig:
    """A `tlbench run` configuration writing under `tmp`, caching under `cache_dir`."""
    base: dict[str, Any] = {
        "backbones": ["efficientnet_lite0"],
        "strategies": ["linear"],
        "seeds": [0],
        "out": str(tmp / "results.jsonl"),
        "cache_dir": str(cache_dir),
        "device": str(device),
        "force": True,
    }
    base.update(changes)
    return RunConfig(**base)


def run_harness(config: RunConfig, plugins: tlbench.Plugins) -> dict[str, Any]:
    """One `tlbench run` of exactly one grid cell, in this process; returns its record."""
    (record,) = Runner(config, plugins).run()
    assert record["status"] == "ok", record.get("reason")
    return record
