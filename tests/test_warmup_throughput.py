"""Warm-up steps never count in throughput, also when an epoch is shorter than the warm-up.

The documented rule (DESIGN "Timing honestly", `tlbench.engine`): one-off
costs (allocator, autotuning, compilation) are paid in a warm-up that runs
before the clock and is undone, so the result is the same as without it.
Every training step after it is measured; none of the warm-up's steps, images
or seconds is. The cases that used to go wrong are the short ones: an epoch
with fewer steps than the warm-up, a fit of a single epoch, a last partial
batch. Here the first forward pass of a fit is made slow on purpose (a
stand-in for autotuning): that time must land in `warmup_seconds` and in no
throughput figure.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import FakeClock, tiny_net
from torch import nn

from tlbench import image_fit
from tlbench.data import ImageTensors
from tlbench.engine import (
    Execution,
    FeatureHead,
    ImageClassifier,
    train_head_on_features,
    train_images,
)
from tlbench.plugin_types import Hyperparameters, Preprocessing
from tlbench.runner import Runner

EX = Execution(torch.device("cpu"))
#: the stand-in for a one-off first-call cost (cuDNN autotuning, compilation), in fake seconds.
FIRST_CALL_SECONDS = 100.0


class SlowFirstCall(nn.Module):
    """Wraps a module; its first forward pass costs FIRST_CALL_SECONDS on `clock`."""

    def __init__(self, inner: nn.Module, clock: FakeClock):
        super().__init__()
        self.inner, self.clock, self.calls = inner, clock, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 1:
            self.clock.advance(FIRST_CALL_SECONDS)
        return self.inner(x)


def _data(n: int, seed: int = 0) -> ImageTensors:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 18, 18), dtype=torch.uint8, generator=g)
    return ImageTensors(images, torch.arange(n) % 3)


def _fit(n_train: int, batch: int, epochs: int, *, clock=None, warmup: bool = True):
    torch.manual_seed(0)
    backbone = SlowFirstCall(tiny_net(), clock) if clock else tiny_net()
    model = ImageClassifier(backbone, nn.Linear(16, 3), Preprocessing(resize=18, crop=16))
    hp = Hyperparameters(epochs=epochs, batch_size=batch, augment=False)
    groups = [{"params": list(model.parameters()), "lr": hp.lr}]
    return train_images(
        model, groups, _data(n_train), _data(6, seed=1), num_classes=3, image_size=16,
        hp=hp, ex=EX, seed=0, warmup=warmup,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("n_train", "batch", "epochs", "steps", "sizes"),
    [
        (8, 4, 1, 2, [4]),  # a single short epoch
        (8, 4, 3, 2, [4]),  # epochs of two steps
        (10, 4, 2, 3, [4, 2]),  # a last partial batch: two shapes to warm up
        (3, 8, 2, 1, [3]),  # a batch larger than the split: one step per epoch
    ],
)
def test_every_training_step_is_measured_and_no_warm_up_step_is(
    n_train, batch, epochs, steps, sizes
):
    fit = _fit(n_train, batch, epochs)
    assert fit.warmup_steps == len(sizes)
    assert fit.warmup_batches["train"] == sizes
    assert fit.measured_steps == steps * epochs
    assert fit.measured_images == n_train * epochs
    assert fit.measured_seconds == pytest.approx(fit.train_seconds)
    cost = fit.cost()
    assert cost["train_images_per_s"] == pytest.approx(fit.measured_images / fit.measured_seconds)
    assert (cost["measured_steps"], cost["warmup_steps"]) == (steps * epochs, len(sizes))


def test_the_first_calls_cost_lands_in_the_warm_up_not_in_the_throughput(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(image_fit, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    fit = _fit(8, 4, 1, clock=clock)  # one epoch of two steps: shorter than any warm-up
    assert fit.warmup_seconds >= FIRST_CALL_SECONDS
    assert fit.train_seconds < 1.0, "the warm-up's cost was timed as training"
    assert fit.measured_seconds < 1.0
    assert fit.cost()["train_images_per_s"] > 8.0


def test_the_warm_up_is_undone():
    warm, cold = _fit(10, 4, 2), _fit(10, 4, 2, warmup=False)
    assert cold.warmup_steps == 0 and cold.warmup_seconds == 0
    assert [c["train_loss"] for c in warm.curve] == [c["train_loss"] for c in cold.curve]
    assert [c["eval_loss"] for c in warm.curve] == [c["eval_loss"] for c in cold.curve]


def test_the_feature_head_measures_every_epoch_after_an_undone_warm_up():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 4, generator=g), torch.arange(10) % 2
    hp = Hyperparameters(epochs=3, batch_size=4)

    def fit(warmup: bool):
        torch.manual_seed(0)
        head = FeatureHead(4, 2)
        return train_head_on_features(
            head, x, y, x, y, num_classes=2, hp=hp, ex=EX, seed=0, warmup=warmup
        )

    warm, cold = fit(True), fit(False)
    assert warm.warmup_batches["train"] == [4, 2] and warm.warmup_steps == 2
    assert (warm.measured_steps, warm.measured_images) == (9, 30)
    assert warm.measured_seconds == pytest.approx(warm.train_seconds)
    assert [c["train_loss"] for c in warm.curve] == [c["train_loss"] for c in cold.curve]


@pytest.mark.parametrize(
    ("strategy", "epochs", "batch", "measured", "warmup"),
    [
        ("finetune", 3, 32, 3 * 2, 2),  # 48 images: steps of 32 and 16, two shapes
        ("linear", 2, 16, 2 * 3, 1),  # 48 feature rows: three steps of 16, one shape
    ],
)
def test_a_run_record_counts_every_step_and_no_warm_up(
    plugins, tiny_config, strategy, epochs, batch, measured, warmup
):
    tiny_config.strategies = [strategy]
    tiny_config.hyperparameters = {"epochs": epochs, "batch_size": batch}
    (record,) = Runner(tiny_config, plugins).run()
    assert record["status"] == "ok", record["reason"]
    cost = record["cost"]
    assert (cost["measured_steps"], cost["warmup_steps"]) == (measured, warmup)
    assert cost["train_images_per_s"] > 0
