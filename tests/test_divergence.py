"""A NaN or infinite training loss fails the run, in both training loops, and the grid goes on.

Two loops train in tlbench: `train_images` (scratch, finetune: images through
the whole model) and `train_head_on_features` (linear: the head on cached
features). Either one, when its epoch's loss is not finite, must stop with
`Diverged` naming the epoch; the run's record is then "failed" with the epoch
and a hint, never "ok" with an accuracy computed from NaN weights, and a
rerun trains it again.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_net
from torch import nn

from tlbench.data import ImageTensors
from tlbench.engine import (
    Diverged,
    Execution,
    FeatureHead,
    ImageClassifier,
    train_head_on_features,
    train_images,
)
from tlbench.plugin_types import Hyperparameters, Preprocessing
from tlbench.runner import Runner

EX = Execution(torch.device("cpu"))
INF = float("inf")


def _features(n: int = 48, dim: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    x = torch.randn(n, dim, generator=g) + 3.0 * y[:, None].float()
    return x, y


def _head_fit(x, y, hp, head=None):
    head = head or FeatureHead(x.shape[1], 2)
    return train_head_on_features(head, x, y, x, y, num_classes=2, hp=hp, ex=EX, seed=0)


# --------------------------------------------------------------------------- the feature-head loop


def test_feature_head_stops_on_a_nan_loss_in_the_epoch_it_happens():
    x, y = _features()
    with pytest.raises(Diverged) as info:
        _head_fit(x, y, Hyperparameters(epochs=3, batch_size=16, lr=INF))  # 3 steps an epoch
    assert info.value.epoch == 1 and math.isnan(info.value.loss)
    assert "epoch 1" in str(info.value) and "--lr" in str(info.value)


def test_feature_head_stops_on_an_infinite_loss():
    """Logits of +-2e38 on the wrong class: every sample's loss overflows to +inf, not NaN."""
    x = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(8, 1)
    y = torch.tensor([1, 0]).repeat(8)  # each sample labelled with the class it scores lowest
    head = FeatureHead(2, 2)
    with torch.no_grad():
        head.linear.weight.copy_(torch.tensor([[1e38, -1e38], [-1e38, 1e38]]))
        head.linear.bias.zero_()
    with pytest.raises(Diverged) as info:
        _head_fit(x, y, Hyperparameters(epochs=2, batch_size=4, lr=1e-3, weight_decay=0.0), head)
    assert info.value.epoch == 1 and info.value.loss == INF


def test_feature_head_stops_on_nan_features():
    x, y = _features()
    x[5, 2] = float("nan")  # e.g. a backbone that overflowed on one image
    with pytest.raises(Diverged) as info:
        _head_fit(x, y, Hyperparameters(epochs=2, batch_size=16, lr=1e-3))
    assert info.value.epoch == 1


def test_feature_head_diverging_later_names_that_epoch():
    x, y = _features()
    calls = []

    def explode_in_epoch_2(epoch, metrics):
        calls.append(epoch)
        if epoch == 1:
            with torch.no_grad():
                head.linear.weight.fill_(float("nan"))

    head = FeatureHead(4, 2)
    hp = Hyperparameters(epochs=3, batch_size=16, lr=1e-3)
    with pytest.raises(Diverged) as info:
        train_head_on_features(
            head, x, y, x, y, num_classes=2, hp=hp, ex=EX, seed=0, on_epoch=explode_in_epoch_2
        )
    assert calls == [1] and info.value.epoch == 2


def test_a_finite_head_fit_does_not_raise():
    x, y = _features()
    fit = _head_fit(x, y, Hyperparameters(epochs=2, batch_size=16, lr=1e-2))
    assert all(math.isfinite(c["train_loss"]) for c in fit.curve) and len(fit.curve) == 2


# --------------------------------------------------------------------------- the image loop


def _image_fit(hp: Hyperparameters):
    torch.manual_seed(0)
    model = ImageClassifier(tiny_net(), nn.Linear(16, 3), Preprocessing(resize=18, crop=16))
    g = torch.Generator().manual_seed(0)
    data = ImageTensors(
        torch.randint(0, 256, (12, 3, 18, 18), dtype=torch.uint8, generator=g), torch.arange(12) % 3
    )
    groups = [{"params": list(model.parameters()), "lr": hp.lr}]
    return train_images(
        model, groups, data, data, num_classes=3, image_size=16, hp=hp, ex=EX, seed=0
    )


def test_image_loop_stops_on_a_nan_loss():
    with pytest.raises(Diverged) as info:
        _image_fit(Hyperparameters(epochs=2, batch_size=4, lr=INF))
    assert info.value.epoch == 1 and not math.isfinite(info.value.loss)


# --------------------------------------------------------------------------- in a grid


@pytest.mark.parametrize("strategy", ["linear", "finetune", "scratch"])
def test_a_diverged_run_is_recorded_failed_and_the_grid_goes_on(plugins, tiny_config, strategy):
    other = "scratch" if strategy == "linear" else "linear"
    tiny_config.strategies = [strategy, other]
    tiny_config.strategy_overrides = {strategy: {"lr": INF}}
    records = Runner(tiny_config, plugins).run()
    diverged = records[0]
    assert diverged["config"]["strategy"] == strategy
    assert diverged["status"] == "failed", "a NaN loss was recorded as a finished run"
    assert diverged["failed_epoch"] == 1
    assert "training loss became nan in epoch 1" in diverged["reason"]
    assert "try a smaller --lr" in diverged["reason"]
    assert not diverged.get("accuracy")
    assert (records[1]["config"]["strategy"], records[1]["status"]) == (other, "ok")
    # The same command again: the failed run is trained again, the finished one is not.
    again = Runner(tiny_config, plugins).run()
    assert [(r["config"]["strategy"], r["status"]) for r in again] == [(strategy, "failed")]
