"""Memory on a GPU: an OOM with the data on the device, and comparable peaks (issue 22.6, 22.7).

Fakes stand in for the GPU: `_fits_on_device` says the splits fit (as on a
GPU with room), a model raises `torch.OutOfMemoryError` as an allocator would,
and `torch.cuda`'s peak counters are replaced by a script of values.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tlbench import memory
from tlbench.data import ImageTensors
from tlbench.engine import (
    Attempt,
    DataOnDeviceOOM,
    Execution,
    ImageClassifier,
    is_out_of_memory,
    next_attempt_after_oom,
    train_images,
)
from tlbench.plugin_types import Hyperparameters, Preprocessing
from tlbench.timing import PeakMemory

CPU = torch.device("cpu")


class _OutOfMemoryAt(nn.Module):
    """Raises an allocator's OOM in training at batch sizes of `limit` or more."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] >= self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.conv(x).mean((2, 3))


def _fit(limit: int, attempt: Attempt, fits: list):
    torch.manual_seed(0)
    model = ImageClassifier(_OutOfMemoryAt(limit), nn.Linear(4, 2), Preprocessing(resize=8, crop=8))
    data = ImageTensors(torch.zeros(8, 3, 8, 8, dtype=torch.uint8), torch.arange(8) % 2)
    hp = Hyperparameters(epochs=1, batch_size=attempt.batch_size, lr=0.01)
    return train_images(
        model, [{"params": list(model.parameters()), "lr": hp.lr}], data, data,
        num_classes=2, image_size=8, hp=hp, ex=Execution(CPU), seed=0,
        data_on_device=attempt.data_on_device,
    )  # fmt: skip


def test_an_oom_with_the_data_on_the_device_first_moves_the_data_to_the_host(monkeypatch):
    fits: list = []
    monkeypatch.setattr(memory, "fits_on_device", lambda n, d: fits.append(n) or True)
    with pytest.raises(DataOnDeviceOOM) as raised:
        _fit(limit=8, attempt=Attempt(8), fits=fits)
    assert is_out_of_memory(raised.value)  # still an OOM to every caller that asks
    assert raised.value.resident_bytes == 8 * 3 * 8 * 8 + 8 * 8 + 8 * 3 * 8 * 8
    retry = next_attempt_after_oom(raised.value, Attempt(8))
    assert retry == Attempt(8, data_on_device=False)  # the same batch: the result asked for
    fits.clear()
    with pytest.raises(torch.OutOfMemoryError) as again:  # the model itself is too big at 8
        _fit(limit=8, attempt=retry, fits=fits)
    assert fits == []  # the data was never offered to the device
    assert next_attempt_after_oom(again.value, retry) == Attempt(4, data_on_device=False)
    fit = _fit(limit=8, attempt=Attempt(4, data_on_device=False), fits=fits)
    assert fit.resident_data_bytes == 0 and fit.batch_size == 4


def test_an_oom_with_the_data_on_the_host_halves_the_batch_down_to_one():
    oom = torch.OutOfMemoryError("CUDA out of memory")
    assert next_attempt_after_oom(oom, Attempt(8)) == Attempt(4)
    assert next_attempt_after_oom(oom, Attempt(1, data_on_device=False)) is None
    # Data already on the host: a DataOnDeviceOOM cannot move it again; the batch halves.
    moved = DataOnDeviceOOM(100)
    assert next_attempt_after_oom(moved, Attempt(8, data_on_device=False)) == Attempt(4, False)


# --------------------------------------------------------------------------- 6: peaks


def _scripted_cuda_peaks(monkeypatch, peaks: list[int]) -> None:
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: peaks.pop(0))


def test_the_extraction_peak_is_recorded_apart_from_the_training_peak(monkeypatch):
    """A `linear` run's peak no longer depends on whether its features were cached."""
    _scripted_cuda_peaks(monkeypatch, [9_000_000_000, 1_000_000_000])
    miss = PeakMemory(torch.device("cuda"))
    miss.reset()
    assert miss.close_phase("extraction") == {"extraction_peak_memory_bytes": 9_000_000_000}
    out = miss.read(resident_bytes=200_000_000)
    assert out["peak_memory_bytes"] == 1_000_000_000  # the head's training only
    assert out["model_peak_memory_bytes"] == 800_000_000
    assert out["extraction_peak_memory_bytes"] == 9_000_000_000
    _scripted_cuda_peaks(monkeypatch, [1_000_000_000])
    hit = PeakMemory(torch.device("cuda"))  # features from the cache: no extraction
    hit.reset()
    out = hit.read(resident_bytes=200_000_000)
    assert out["model_peak_memory_bytes"] == 800_000_000  # as the miss's: comparable
    assert "extraction_peak_memory_bytes" not in out


def test_on_a_cpu_the_extraction_peak_is_the_resident_set_high_water_mark():
    memory = PeakMemory(CPU)
    memory.reset()
    block = torch.ones(64 * 2**20, dtype=torch.uint8)  # 64 MiB touched
    phase = memory.close_phase("extraction")
    del block
    assert phase["extraction_peak_memory_bytes"] >= 64 * 2**20
    assert memory.read()["extraction_peak_memory_bytes"] == phase["extraction_peak_memory_bytes"]
