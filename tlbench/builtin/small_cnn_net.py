"""The network of `small_cnn` (imported only when it is built: registering needs no torch)."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Four conv3x3-BN-ReLU-maxpool blocks, then global average pooling: (B, 3, H, W) -> (B, 256).

    Global pooling (rather than the tutorials' flatten into a Linear) makes it
    work at any image size of 16 px or more. `widths`: the blocks' channels
    (`tlbench.builtin.small_cnn.WIDTHS` for the registered backbone).
    """

    def __init__(self, widths: tuple[int, ...]) -> None:
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
