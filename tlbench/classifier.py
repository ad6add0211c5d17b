"""The model wrappers: the backbone's normalisation, the linear head and the image classifier.

An `ImageClassifier` takes images in [0, 1], normalises them with the
backbone's statistics (`Normalize`), computes the backbone's features and
applies the head; the saved model is this module. `FeatureHead` is the head
trained on cached features: it standardises them by the training split's
statistics before its linear layer.
"""

from __future__ import annotations

import torch
from torch import nn

from tlbench.plugin_types import Preprocessing


class Normalize(nn.Module):
    """(x - mean) / std with the backbone's own statistics; part of the saved model."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class FeatureHead(nn.Module):
    """Standardise features with the training set's statistics, then a linear layer."""

    def __init__(self, feature_dim: int, num_classes: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(feature_dim))
        self.register_buffer("std", torch.ones(feature_dim))
        self.linear = nn.Linear(feature_dim, num_classes)
        # Zero, as a logistic-regression probe starts: a feature that never varied in
        # training (std clamped to 1e-6) gets no gradient, so a random weight on it
        # would stay and, times 1e6 on a test image, decide every prediction.
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def standardise_by(self, features: torch.Tensor) -> None:
        """Keep `features`' mean and std (the training split's): the head applies them."""
        with torch.no_grad():
            self.mean.copy_(features.mean(0))
            if len(features) > 1:
                self.std.copy_(features.std(0).clamp_min(1e-6))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear((features - self.mean) / self.std)


class ImageClassifier(nn.Module):
    """Images in [0, 1] -> normalise -> backbone features -> head -> logits."""

    def __init__(self, backbone: nn.Module, head: nn.Module, preprocessing: Preprocessing):
        super().__init__()
        self.normalize = Normalize(preprocessing.mean, preprocessing.std)
        self.backbone = backbone
        self.head = head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return trainable, total
