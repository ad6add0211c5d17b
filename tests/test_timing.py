"""Measurement pieces: phase clocks, stopwatches, peak memory, FLOPs, device peaks.

No speed assertions here (those live in benchmarks/); these check that each
figure measures what its name says.
"""

from __future__ import annotations

import mmap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tlbench import timing
from tlbench.errors import TlbenchError
from tlbench.timing import PeakMemory, PhaseClock, Stopwatch, forward_flops

CPU = torch.device("cpu")


def test_phase_clock_accumulates_each_phase_separately():
    clock = PhaseClock(CPU)
    for _ in range(3):
        clock.start("data")
        time.sleep(0.01)
        clock.stop("data")
        clock.start("compute")
        time.sleep(0.02)
        clock.stop("compute")
    seconds = clock.collect()
    assert set(seconds) == {"data", "compute"}
    assert 0.03 <= seconds["data"] < seconds["compute"]
    assert seconds["compute"] >= 0.06
    # collect() reports totals so far; it neither resets nor double-counts.
    assert clock.collect() == seconds


def test_phase_clock_refuses_a_stop_without_a_start():
    with pytest.raises(KeyError):
        PhaseClock(CPU).stop("data")


def test_stopwatch_sums_repeated_sections():
    watch = Stopwatch(CPU)
    for _ in range(2):
        with watch.section("features"):
            time.sleep(0.01)
    with watch.section("train"):
        pass
    assert watch.seconds["features"] >= 0.02
    assert watch.seconds["train"] < watch.seconds["features"]


def _touch(nbytes: int) -> np.ndarray:
    """`nbytes` of new pages from the kernel, written, so resident.

    Not `np.ones`: after a long session malloc may hand back memory an earlier
    test freed and that is still resident, and the process's RSS would not grow
    (this test failed so at the end of the whole inner loop in one process).
    """
    pages = np.frombuffer(mmap.mmap(-1, nbytes), dtype=np.uint8)
    pages[:] = 1
    return pages


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_peak_rss_reset_forgets_an_earlier_bigger_peak():
    big = 256 * 2**20
    memory = PeakMemory(CPU)
    block = _touch(big)
    del block
    memory.reset()
    if not memory.rss_reset:
        pytest.skip("this kernel does not reset VmHWM")
    after_reset = memory.read()
    assert after_reset["peak_memory_kind"] == "process_peak_rss"
    block = _touch(big // 2)
    during = memory.read()["peak_memory_bytes"]
    del block
    # The earlier 256 MiB block is forgotten, the 128 MiB one after the reset is seen.
    assert during - after_reset["peak_memory_bytes"] >= big // 2 * 0.9
    assert during - after_reset["peak_memory_bytes"] < big * 0.9


def test_peak_rss_without_a_reset_says_it_is_the_lifetime_peak(monkeypatch):
    monkeypatch.setattr(PeakMemory, "_reset_rss_peak", staticmethod(lambda: False))
    memory = PeakMemory(CPU)
    memory.reset()
    out = memory.read()
    assert out["peak_memory_kind"] == "process_peak_rss_lifetime"
    assert out["peak_memory_bytes"] > 0


def test_forward_flops_counts_two_per_multiply_add():
    conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Flatten())
    # 8x8 output positions x 4 out channels x (3 x 3 x 3) multiply-adds each.
    assert forward_flops(conv, 8, CPU) == 2 * 8 * 8 * 4 * 27
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    assert forward_flops(linear, 8, CPU) == 2 * 192 * 10


def test_forward_flops_restores_training_mode_and_reports_none_it_cannot_count():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten())
    model.train()
    assert forward_flops(model, 8, CPU) > 0
    assert model.training

    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("no")

    assert forward_flops(Broken(), 8, CPU) is None


def test_resolve_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert timing.resolve_device("auto").type == expected
    assert timing.resolve_device("cpu") == CPU
    if not torch.cuda.is_available():
        with pytest.raises(TlbenchError, match="no CUDA device"):
            timing.resolve_device("cuda")


@pytest.mark.skipif(timing._glibc() is None, reason="needs glibc")
def test_release_host_memory_returns_freed_fragmented_memory():
    # 256 MiB in 64 KiB blocks (below glibc's mmap threshold: they live in the heap),
    # one in eight kept, so the freed ones are holes glibc does not hand back itself.
    blocks = [bytearray(b"\x01" * (64 * 1024)) for _ in range(4096)]
    keep = blocks[::8]
    del blocks
    before = timing.vm_kib("VmRSS")
    timing.release_host_memory()
    after = timing.vm_kib("VmRSS")
    assert before - after > 100 * 1024  # KiB: most of the 224 MiB freed
    assert len(keep) == 512
