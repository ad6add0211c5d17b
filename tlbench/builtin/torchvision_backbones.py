"""torchvision's ImageNet classifiers as feature extractors, with their default weights.

Registering them imports neither torch nor torchvision: each model's default
weights are described here as plain data (`_Spec`: the weights' enum name,
URL, evaluation transform, sizes, parameter count and ImageNet figures),
copied from torchvision's multi-weight API and checked against it by the test
suite (tests/test_startup.py), so `tlbench list` and `show` stay instant.
torchvision is imported when a model is built. Pretrained weights go through
torchvision's own download-and-cache code (torch.hub, into
`$TORCH_HOME/hub/checkpoints/`); offline with nothing cached, building raises
`WeightsUnavailableError` naming the file to place and where to get it.
"""

from __future__ import annotations

import functools
import http.client
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from tlbench.errors import WeightsUnavailableError
from tlbench.hookspecs import hookimpl
from tlbench.plugin_types import Backbone, Preprocessing

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import nn
    from torchvision.models import WeightsEnum


@dataclass(frozen=True)
class _Spec:
    """One torchvision model and what its default weights declare (torchvision's `meta`)."""

    name: str
    title: str
    #: width of the pooled features the classifier reads.
    feature_dim: int
    #: dotted path of the final classification layer(s) replaced by nn.Identity.
    head: str
    #: the default weights' enum member: "ResNet18_Weights.IMAGENET1K_V1".
    weights: str
    url: str
    #: the weights' evaluation transform: shorter side resized to `resize`, centre crop `crop`.
    resize: int
    crop: int
    interpolation: str
    #: parameters of the whole classifier (torchvision's `num_params`) and without its head.
    classifier_params: int
    backbone_params: int
    gflops: float
    top1: float
    #: torchvision's `min_size`: the smallest input side the weights were declared for.
    min_size: int = 1


# Values from torchvision 0.29's default weights (`models.get_model_weights(name).DEFAULT`);
# tests/test_startup.py compares every field with the installed torchvision.
SPECS: tuple[_Spec, ...] = (
    _Spec("resnet18", "ResNet-18", 512, "fc", "ResNet18_Weights.IMAGENET1K_V1",
          "https://download.pytorch.org/models/resnet18-f37072fd.pth",
          256, 224, "bilinear", 11689512, 11176512, 1.814, 69.758),
    _Spec("resnet34", "ResNet-34", 512, "fc", "ResNet34_Weights.IMAGENET1K_V1",
          "https://download.pytorch.org/models/resnet34-b627a593.pth",
          256, 224, "bilinear", 21797672, 21284672, 3.664, 73.314),
    _Spec("resnet50", "ResNet-50", 2048, "fc", "ResNet50_Weights.IMAGENET1K_V2",
          "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
          232, 224, "bilinear", 25557032, 23508032, 4.089, 80.858),
    _Spec("resnet101", "ResNet-101", 2048, "fc", "ResNet101_Weights.IMAGENET1K_V2",
          "https://download.pytorch.org/models/resnet101-cd907fc2.pth",
          232, 224, "bilinear", 44549160, 42500160, 7.801, 81.886),
    # MobileNetV3's classifier is Linear-Hardswish-Dropout-Linear; the features are
    # the pooled 576/960 channels before its hidden layer, so all of it goes.
    _Spec("mobilenet_v3_small", "MobileNetV3-Small", 576, "classifier",
          "MobileNet_V3_Small_Weights.IMAGENET1K_V1",
          "https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth",
          256, 224, "bilinear", 2542856, 927008, 0.057, 67.668),
    _Spec("mobilenet_v3_large", "MobileNetV3-Large", 960, "classifier",
          "MobileNet_V3_Large_Weights.IMAGENET1K_V2",
          "https://download.pytorch.org/models/mobilenet_v3_large-5c1a4163.pth",
          232, 224, "bilinear", 5483032, 2971952, 0.217, 75.274),
    _Spec("efficientnet_b0", "EfficientNet-B0", 1280, "classifier",
          "EfficientNet_B0_Weights.IMAGENET1K_V1",
          "https://download.pytorch.org/models/efficientnet_b0_rwightman-7f5810bc.pth",
          256, 224, "bicubic", 5288548, 4007548, 0.386, 77.692),
    # ConvNeXt normalises the pooled features in its classifier (LayerNorm2d, Flatten,
    # Linear): keep the first two, they are part of the representation.
    _Spec("convnext_tiny", "ConvNeXt-T", 768, "classifier.2", "ConvNeXt_Tiny_Weights.IMAGENET1K_V1",
          "https://download.pytorch.org/models/convnext_tiny-983f1562.pth",
          236, 224, "bilinear", 28589128, 27820128, 4.456, 82.52, min_size=32),
    # ViT's features are the final class token (the encoder's LayerNorm included).
    _Spec("vit_b_16", "ViT-B/16", 768, "heads", "ViT_B_16_Weights.IMAGENET1K_V1",
          "https://download.pytorch.org/models/vit_b_16-c867db91.pth",
          256, 224, "bilinear", 86567656, 85798656, 17.564, 81.072, min_size=224),
)  # fmt: skip


def default_weights(name: str) -> WeightsEnum:
    """torchvision's default (best) ImageNet weights of model `name` (imports torchvision)."""
    from torchvision import models

    return models.get_model_weights(name).DEFAULT


def weights_id(weights: WeightsEnum) -> str:
    """The weights' enum name, e.g. "ResNet18_Weights.IMAGENET1K_V1": stable across runs."""
    return f"{type(weights).__name__}.{weights.name}"


def cache_path(weights: WeightsEnum) -> str:
    """Where torch.hub keeps (and first looks for) the weights' file."""
    import torch

    filename = os.path.basename(urlparse(weights.url).path)
    return os.path.join(torch.hub.get_dir(), "checkpoints", filename)


def strip_head(model: nn.Module, head: str) -> nn.Module:
    """Replace the layer at dotted path `head` by nn.Identity, in place."""
    from torch import nn

    parent_name, _, attr = head.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.Identity())
    return model


def _unavailable(name: str, weights: WeightsEnum, reason: str) -> WeightsUnavailableError:
    path = cache_path(weights)
    return WeightsUnavailableError(
        f"pretrained weights {weights_id(weights)} for backbone {name!r} {reason}.\n"
        f"  On a machine with internet, download\n    {weights.url}\n"
        f"  and put it at\n    {path}\n"
        "  (torch.hub's cache: $TORCH_HOME/hub/checkpoints; set TORCH_HOME to use another).\n"
        f"  Or run {name} without pretraining (`--strategies scratch`), or use a backbone "
        "whose weights ship offline (efficientnet_lite0)."
    )


def build(name: str, head: str, pretrained: bool) -> nn.Module:
    """torchvision model `name` without its classification head: (B, 3, H, W) -> (B, D)."""
    from torchvision import models

    if not pretrained:
        return strip_head(models.get_model(name, weights=None), head)
    weights = default_weights(name)
    # torch.hub loads a cached file without any network access; only a missing file
    # is downloaded, so the two failures get different advice.
    cached = os.path.exists(cache_path(weights))
    model = models.get_model(name, weights=None)
    try:
        # torchvision's own download-and-cache path, but never unpickling code:
        # torch.hub checks a file's hash only when it downloads it, so a file
        # planted in the cache must not be able to run anything.
        state = weights.get_state_dict(progress=False, weights_only=True)
        model.load_state_dict(state)
    except (OSError, http.client.HTTPException) as exc:
        if cached:
            raise _unavailable(name, weights, f"could not be read ({exc})") from exc
        raise _unavailable(
            name,
            weights,
            f"are not cached and could not be downloaded ({type(exc).__name__}: {exc})",
        ) from exc
    except Exception as exc:
        if not cached:
            raise
        # A truncated or foreign file in the cache: say which, so it can be replaced.
        raise _unavailable(
            name, weights, f"could not be loaded from the cached file ({type(exc).__name__}: {exc})"
        ) from exc
    return strip_head(model, head)


def stages(name: str, model: nn.Module) -> list[tuple[str, list[str]]]:
    """Model `name`'s stages from stem to head, grouped as timm's `group_matcher` groups the
    same architecture (a final convolution or norm joins the last stage)."""
    if name.startswith("resnet"):
        return [("stem", ["conv1", "bn1"])] + [(f"layer{i}", [f"layer{i}"]) for i in range(1, 5)]
    if name.startswith("vit_"):
        layers = [n for n, _ in model.encoder.layers.named_children()]
        found = [("embed", ["conv_proj", "class_token", "encoder.pos_embedding"])]
        found += [(layer, [f"encoder.layers.{layer}"]) for layer in layers]
        found[-1][1].append("encoder.ln")
        return found
    count = len(model.features)
    if name.startswith("convnext"):
        # features: stem, stage, downsample, stage, ...: each downsample opens its stage.
        found = [("stem", ["features.0"]), ("stage1", ["features.1"])]
        found += [(f"stage{i // 2 + 1}", [f"features.{i}", f"features.{i + 1}"]) for i in (2, 4, 6)]
        return [*found, ("norm", ["classifier.0"])]
    # MobileNetV3 (one stage per block) and EfficientNet (one per stage): the stem, the
    # blocks or stages, and the final 1x1 convolution with the last of them.
    found = [("stem", ["features.0"])]
    found += [(f"stage{i}", [f"features.{i}"]) for i in range(1, count - 1)]
    found[-1][1].append(f"features.{count - 1}")
    return found


def _description(spec: _Spec) -> str:
    tag = spec.weights.rpartition(".")[2]
    return (
        f"{spec.title} (torchvision {tag}, downloaded): {spec.classifier_params / 1e6:.1f}M "
        f"params, {spec.gflops:.2f} GFLOPs, ImageNet top-1 {spec.top1:.1f}%"
    )


def backbone(spec: _Spec) -> Backbone:
    """The `Backbone` for one torchvision model; builds and imports nothing yet."""
    build_fn: Callable[[bool], nn.Module] = functools.partial(build, spec.name, spec.head)
    return Backbone(
        name=spec.name,
        build=build_fn,
        feature_dim=spec.feature_dim,
        preprocessing=Preprocessing(
            resize=spec.resize, crop=spec.crop, interpolation=spec.interpolation
        ),
        weights=spec.weights,
        weights_source=spec.url,
        description=_description(spec),
        # Below 32 px a stride-32 network has nothing left to pool.
        min_image_size=max(32, spec.min_size),
        # ViT's position embeddings fix its input at the size it was trained at.
        fixed_image_size=spec.min_size if spec.name.startswith("vit_") else None,
        num_params=spec.backbone_params,
        stages=functools.partial(stages, spec.name),
    )


@hookimpl
def tlbench_register_backbones(register: Callable[[Backbone], None]) -> None:
    for spec in SPECS:
        register(backbone(spec))
