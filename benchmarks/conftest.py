"""Shared setup of the speed benchmarks: data, device, harness runs, and the ratio report.

Knobs (environment variables, all optional):

    TLBENCH_BENCH_DEVICE      cpu (default), cuda or auto: where harness and baselines run
    TLBENCH_BENCH_THREADS     torch intra-op threads (default: torch's choice, all cores)
    TLBENCH_BENCH_IMAGE_SIZE  image size of the `linear` benchmarks (default 128)
    TLBENCH_FLOWERS12         the flowers12 folder (default ../shared/data/flowers12)

Every ratio a benchmark asserts is also stored in its `extra_info` (so
`--benchmark-autosave` keeps it) and printed in a summary at the end of the run.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from benchlib import REPORT

import tlbench
from tlbench.engine import Execution
from tlbench.timing import device_name, resolve_device

REPO = Path(__file__).resolve().parents[1]
FLOWERS12 = Path(os.environ.get("TLBENCH_FLOWERS12", REPO.parent / "shared" / "data" / "flowers12"))


def pytest_configure(config: pytest.Config) -> None:
    if threads := os.environ.get("TLBENCH_BENCH_THREADS"):
        torch.set_num_threads(int(threads))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORT:
        terminalreporter.section("tlbench speed ratios")
        for line in REPORT:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def device() -> torch.device:
    return resolve_device(os.environ.get("TLBENCH_BENCH_DEVICE", "cpu"))


@pytest.fixture(scope="session")
def execution(device: torch.device) -> Execution:
    """The harness's own defaults for the device (`Execution.resolve`, as the runner uses)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return Execution.resolve(device)


@pytest.fixture(scope="session")
def machine(device: torch.device, execution: Execution) -> dict[str, Any]:
    """Provenance stored with every benchmark: the settings behind each figure."""
    return {
        "device_name": device_name(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "tlbench": tlbench.__version__,
        **execution.to_dict(),
    }


@pytest.fixture(scope="session")
def plugins() -> tlbench.Plugins:
    with warnings.catch_warnings():
        # A builtin that cannot load here (missing optional dependency) is not our subject.
        warnings.simplefilter("ignore", RuntimeWarning)
        return tlbench.Plugins()


@pytest.fixture(scope="session")
def flowers12() -> Path:
    if not (FLOWERS12 / "train").is_dir():
        pytest.skip(f"flowers12 not found at {FLOWERS12} (set TLBENCH_FLOWERS12)")
    return FLOWERS12


@pytest.fixture(scope="session")
def image_size() -> int:
    return int(os.environ.get("TLBENCH_BENCH_IMAGE_SIZE", "128"))
