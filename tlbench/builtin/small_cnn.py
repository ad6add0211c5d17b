"""The small CNN that image-classification tutorials train from scratch: the no-transfer baseline."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tlbench.api import Backbone, Preprocessing
from tlbench.errors import WeightsUnavailableError
from tlbench.hookspecs import hookimpl

WIDTHS = (32, 64, 128, 256)


class SmallCNN(nn.Module):
    """Four conv3x3-BN-ReLU-maxpool blocks, then global average pooling: (B, 3, H, W) -> (B, 256).

    Global pooling (rather than the tutorials' flatten into a Linear) makes it
    work at any image size of 16 px or more.
    """

    def __init__(self, widths: tuple[int, ...] = WIDTHS) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for width in widths:
            layers += [
                nn.Conv2d(cin, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            cin = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He init for ReLU nets (as torchvision's ResNets): trains faster from scratch
                # than PyTorch's default uniform init.
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)


def _build(pretrained: bool) -> nn.Module:
    # Strategies that need pretrained weights skip this backbone (its `weights` is
    # None), so this only fires when called directly.
    if pretrained:
        raise WeightsUnavailableError(
            "small_cnn has no pretrained weights; build it with pretrained=False "
            "(`--strategies scratch`)."
        )
    return SmallCNN()


@hookimpl
def tlbench_register_backbones(register: Callable[[Backbone], None]) -> None:
    register(
        Backbone(
            name="small_cnn",
            build=_build,
            feature_dim=WIDTHS[-1],
            preprocessing=Preprocessing(),
            weights=None,
            description="tutorials' custom CNN baseline: 4 conv-BN-ReLU-pool blocks, 0.4M params, scratch only",
            min_image_size=16,
        )
    )
