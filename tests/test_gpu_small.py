"""The small ones of issue 22.9: CUDA events per epoch, one device read per evaluation,
threads beside a timed epoch. (FlopsMemo's removal, the bf16 plan-time warning and
`torch.cuda.set_device` in workers are tested in test_gpu_flops and test_gpu_devices.)
"""

from __future__ import annotations

import threading
from typing import ClassVar

import pytest
import torch
from torch import nn

from tlbench import evaluation, image_fit
from tlbench.data import ImageTensors
from tlbench.engine import Execution, ImageClassifier, evaluate_logits, train_images
from tlbench.plugin_types import Hyperparameters, Preprocessing

CPU = torch.device("cpu")


def _fit(epochs: int = 3, **kw):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = ImageClassifier(net, nn.Linear(4, 3), Preprocessing(resize=8, crop=8))
    g = torch.Generator().manual_seed(0)
    data = ImageTensors(
        torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8, generator=g), torch.arange(10) % 3
    )
    hp = Hyperparameters(epochs=epochs, batch_size=4, lr=0.01)
    return train_images(
        model, [{"params": list(model.parameters()), "lr": hp.lr}], data, data,
        num_classes=3, image_size=8, hp=hp, ex=Execution(CPU), seed=0, **kw,
    )  # fmt: skip


class _EventClock:
    """A PhaseClock as on CUDA: an event per start and stop, held until `collect`."""

    held: ClassVar[list[int]] = []

    def __init__(self, device):
        self.pending, self.seconds = 0, {}

    def start(self, phase):
        self.pending += 1

    def stop(self, phase):
        self.pending += 1

    def collect(self):
        _EventClock.held.append(self.pending)
        self.pending = 0
        return dict(self.seconds)


def test_cuda_events_are_collected_every_epoch_not_held_to_the_end(monkeypatch):
    monkeypatch.setattr(image_fit, "PhaseClock", _EventClock)
    _EventClock.held = []
    _fit(epochs=3)
    steps = 3  # 10 images in batches of 4
    assert max(_EventClock.held) == 4 * steps  # one epoch's events at most (2 phases x 2)
    assert _EventClock.held[:3] == [4 * steps] * 3


class _OnDevice(torch.Tensor):
    """A tensor "on the GPU": every read of its value by the host is counted."""

    reads = 0
    READS: ClassVar[set] = {torch.Tensor.cpu, torch.Tensor.item, torch.Tensor.__float__, torch.Tensor.tolist,
             torch.Tensor.numpy, torch.Tensor.__int__, torch.Tensor.__bool__}  # fmt: skip

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in cls.READS:
            cls.reads += 1
            plain = args[0].as_subclass(torch.Tensor).clone()
            return func(plain, *args[1:], **(kwargs or {}))
        return super().__torch_function__(func, types, args, kwargs)


def test_evaluation_reads_the_device_once(monkeypatch):
    real = evaluation.eval_counts

    def on_device(*args, **kwargs):
        return tuple(t.as_subclass(_OnDevice) for t in real(*args, **kwargs))

    monkeypatch.setattr(evaluation, "eval_counts", on_device)
    labels = torch.tensor([0, 1, 2, 2, 1, 0, 2])
    logits = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 1, 1, 2, 2]), 3).float()
    for per_image in (False, True):
        _OnDevice.reads = 0
        out = evaluate_logits(lambda a, b: logits[a:b], labels, 3, 2, CPU, per_image)
        assert _OnDevice.reads == 1, per_image
        assert out["accuracy"] == torch.tensor(5 / 7).item()
        expected = torch.nn.functional.cross_entropy(logits, labels, reduction="sum").double() / 7
        assert out["loss"] == pytest.approx(float(expected), rel=1e-6)
    assert out["correct"].tolist() == [True, True, True, False, True, False, True]


def test_a_thread_beside_a_timed_epoch_is_named_in_the_record():
    # Threads an earlier test of the session left (a tracker's, Ray's) may be alive too:
    # the record must name what runs beside the epoch, this thread among them.
    before = _fit(epochs=1).cost().get("timed_with_threads", [])
    assert "live-display-refresh" not in before
    stop = threading.Event()
    display = threading.Thread(target=stop.wait, name="live-display-refresh", daemon=True)
    display.start()
    try:
        cost = _fit(epochs=1).cost()
    finally:
        stop.set()
        display.join()
    assert sorted(cost["timed_with_threads"]) == sorted([*before, "live-display-refresh"])
