"""The small CNN that image-classification tutorials train from scratch: the no-transfer baseline.

The network (`SmallCNN`) is in `tlbench.builtin.small_cnn_net`, imported when
it is built, so registering the backbone imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tlbench.errors import WeightsUnavailableError
from tlbench.hookspecs import hookimpl
from tlbench.plugin_types import Backbone, Preprocessing

if TYPE_CHECKING:
    from torch import nn

WIDTHS = (32, 64, 128, 256)


def parameter_count(widths: tuple[int, ...] = WIDTHS) -> int:
    """Parameters of `SmallCNN(widths)`, without building it: per block a bias-free 3x3
    convolution (9 * in * out) and a BatchNorm's weight and bias (2 * out)."""
    total, cin = 0, 3
    for width in widths:
        total += 9 * cin * width + 2 * width
        cin = width
    return total


def stages(module: nn.Module) -> list[tuple[str, list[str]]]:
    """One stage per conv-BN-ReLU-pool block (`SmallCNN.features`, four layers a block)."""
    return [
        (f"block{i + 1}", [f"features.{4 * i}", f"features.{4 * i + 1}"])
        for i in range(len(WIDTHS))
    ]


def _build(pretrained: bool) -> nn.Module:
    # Strategies that need pretrained weights skip this backbone (its `weights` is
    # None), so this only fires when called directly.
    if pretrained:
        raise WeightsUnavailableError(
            "small_cnn has no pretrained weights; build it with pretrained=False "
            "(`--strategies scratch`)."
        )
    from tlbench.builtin.small_cnn_net import SmallCNN

    return SmallCNN(WIDTHS)


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
            num_params=parameter_count(),
            stages=stages,
        )
    )


def __getattr__(name: str) -> Any:
    # PEP 562: `from tlbench.builtin.small_cnn import SmallCNN` imports torch only then.
    if name == "SmallCNN":
        from tlbench.builtin.small_cnn_net import SmallCNN

        return SmallCNN
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
