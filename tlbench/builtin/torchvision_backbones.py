"""torchvision's ImageNet classifiers as feature extractors, with their default weights.

Preprocessing, weights name and URL are read from each model's default weights
(torchvision's multi-weight API), never restated here. Pretrained weights go
through torchvision's own download-and-cache code (torch.hub, into
`$TORCH_HOME/hub/checkpoints/`); offline with nothing cached, building raises
`WeightsUnavailableError` naming the file to place and where to get it.
"""

from __future__ import annotations

import functools
import http.client
import os
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision import models

from tlbench.api import Backbone, Preprocessing
from tlbench.errors import WeightsUnavailableError
from tlbench.hookspecs import hookimpl


@dataclass(frozen=True)
class _Spec:
    name: str
    title: str
    #: width of the pooled features the classifier reads.
    feature_dim: int
    #: dotted path of the final classification layer(s) replaced by nn.Identity.
    head: str


SPECS: tuple[_Spec, ...] = (
    _Spec("resnet18", "ResNet-18", 512, "fc"),
    _Spec("resnet34", "ResNet-34", 512, "fc"),
    _Spec("resnet50", "ResNet-50", 2048, "fc"),
    _Spec("resnet101", "ResNet-101", 2048, "fc"),
    # MobileNetV3's classifier is Linear-Hardswish-Dropout-Linear; the features are
    # the pooled 576/960 channels before its hidden layer, so all of it goes.
    _Spec("mobilenet_v3_small", "MobileNetV3-Small", 576, "classifier"),
    _Spec("mobilenet_v3_large", "MobileNetV3-Large", 960, "classifier"),
    _Spec("efficientnet_b0", "EfficientNet-B0", 1280, "classifier"),
    # ConvNeXt normalises the pooled features in its classifier (LayerNorm2d, Flatten,
    # Linear): keep the first two, they are part of the representation.
    _Spec("convnext_tiny", "ConvNeXt-T", 768, "classifier.2"),
    # ViT's features are the final class token (the encoder's LayerNorm included).
    _Spec("vit_b_16", "ViT-B/16", 768, "heads"),
)


def default_weights(name: str) -> models.WeightsEnum:
    """torchvision's default (best) ImageNet weights of model `name`."""
    return models.get_model_weights(name).DEFAULT


def weights_id(weights: models.WeightsEnum) -> str:
    """The weights' enum name, e.g. "ResNet18_Weights.IMAGENET1K_V1": stable across runs."""
    return f"{type(weights).__name__}.{weights.name}"


def cache_path(weights: models.WeightsEnum) -> str:
    """Where torch.hub keeps (and first looks for) the weights' file."""
    filename = os.path.basename(urlparse(weights.url).path)
    return os.path.join(torch.hub.get_dir(), "checkpoints", filename)


def strip_head(model: nn.Module, head: str) -> nn.Module:
    """Replace the layer at dotted path `head` by nn.Identity, in place."""
    parent_name, _, attr = head.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.Identity())
    return model


def _unavailable(name: str, weights: models.WeightsEnum, reason: str) -> WeightsUnavailableError:
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


def _preprocessing(weights: models.WeightsEnum) -> Preprocessing:
    transform = weights.transforms()
    return Preprocessing(
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        resize=transform.resize_size[0],
        crop=transform.crop_size[0],
        interpolation=transform.interpolation.value,
    )


def _description(spec: _Spec, weights: models.WeightsEnum) -> str:
    meta = weights.meta
    top1 = meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")
    facts = [f"{meta['num_params'] / 1e6:.1f}M params"]
    if "_ops" in meta:
        facts.append(f"{meta['_ops']:.2f} GFLOPs")
    if top1 is not None:
        facts.append(f"ImageNet top-1 {top1:.1f}%")
    return f"{spec.title} (torchvision {weights.name}, downloaded): " + ", ".join(facts)


def backbone(spec: _Spec) -> Backbone:
    """The `Backbone` for one torchvision model; builds nothing yet."""
    weights = default_weights(spec.name)
    min_size = weights.meta.get("min_size", (1, 1))[0]
    # ViT's position embeddings fix its input at the size it was trained at.
    fixed = min_size if spec.name.startswith("vit_") else None
    build_fn: Callable[[bool], nn.Module] = functools.partial(build, spec.name, spec.head)
    return Backbone(
        name=spec.name,
        build=build_fn,
        feature_dim=spec.feature_dim,
        preprocessing=_preprocessing(weights),
        weights=weights_id(weights),
        weights_source=weights.url,
        description=_description(spec, weights),
        # Below 32 px a stride-32 network has nothing left to pool.
        min_image_size=max(32, min_size),
        fixed_image_size=fixed,
    )


@hookimpl
def tlbench_register_backbones(register: Callable[[Backbone], None]) -> None:
    for spec in SPECS:
        register(backbone(spec))
