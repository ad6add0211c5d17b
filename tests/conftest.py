"""Shared fixtures: a tiny in-memory plugin so most tests train in well under a second."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import tlbench
from tlbench.api import Backbone, Dataset, DatasetSplits, Preprocessing
from tlbench.config import RunConfig

REPO = Path(__file__).resolve().parents[1]
FLOWERS12 = REPO.parent / "shared" / "data" / "flowers12"

COLOURS = [(220, 40, 40), (40, 200, 60), (50, 70, 230)]


class ColourSquares:
    """Class k: a square of colour k on a noisy grey background, at a random place."""

    def __init__(self, n: int, seed: int, size: int = 24):
        self.n, self.seed, self.size = n, seed, size
        self.labels = [i % len(COLOURS) for i in range(n)]

    def __len__(self) -> int:
        return self.n

    def load(self, index: int) -> Image.Image:
        rng = np.random.default_rng((self.seed, index))
        img = rng.integers(90, 160, size=(self.size, self.size, 3), dtype=np.uint8)
        side = int(rng.integers(6, 12))
        x, y = rng.integers(0, self.size - side, size=2)
        img[y : y + side, x : x + side] = COLOURS[self.labels[index]]
        return Image.fromarray(img)

    def describe(self, index: int) -> str:
        return f"tiny[{self.seed}][{index}]"


def tiny_net(width: int = 8) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )


def build_tiny(pretrained: bool) -> nn.Module:
    if pretrained:
        # "Pretrained" weights: a fixed initialisation, the same every time.
        with torch.random.fork_rng():
            torch.manual_seed(1234)
            return tiny_net()
    return tiny_net()


class TinyPlugin:
    """Registers `tiny` (with 'pretrained' weights), `tiny_random` and `tinyset`."""

    @tlbench.hookimpl
    def tlbench_register_backbones(self, register):
        register(Backbone("tiny", build_tiny, 16, Preprocessing(resize=18, crop=16), weights="tiny-v1",
                          description="a two-layer test CNN", min_image_size=8))
        register(Backbone("tiny_random", lambda pretrained: tiny_net(), 16, Preprocessing(resize=18, crop=16),
                          description="a test CNN without weights", min_image_size=8))

    @tlbench.hookimpl
    def tlbench_register_datasets(self, register):
        def load(request):
            return DatasetSplits(
                classes=["red", "green", "blue"],
                train=ColourSquares(48, seed=0),
                eval=ColourSquares(18, seed=1),
                eval_split="test",
                fingerprint="tinyset-v1",
            )

        register(Dataset("tinyset", load, description="coloured squares, 3 classes", native_size=16))


@pytest.fixture
def plugins() -> tlbench.Plugins:
    return tlbench.Plugins(entry_points=False, extra=[("tiny", TinyPlugin())])


@pytest.fixture
def tiny_config(tmp_path: Path) -> RunConfig:
    return RunConfig(
        backbones=["tiny"],
        datasets=["tinyset"],
        strategies=["scratch", "linear", "finetune"],
        seeds=[0],
        image_size=16,
        hyperparameters={"epochs": 2, "batch_size": 16},
        out=str(tmp_path / "results.jsonl"),
        cache_dir=str(tmp_path / "cache"),
        device="cpu",
    )
