"""tlbench-timm: every timm model as a tlbench backbone, named `timm:<model_name>`.

Registers one backbone `Family`, `timm`. `timm:resnet50`,
`timm:convnext_tiny.fb_in22k` (a pretrained tag) or any other name timm's
`create_model` accepts resolves to a `tlbench.Backbone` with timm's own
preprocessing (mean, std, input size, crop_pct, interpolation from the
model's `pretrained_cfg`) and its pooled features (`num_classes=0`).

Pretrained weights are used only when they are already on this machine; a
run never downloads them (unless `TLBENCH_TIMM_DOWNLOAD=1`). They are looked
for, in order, in `$TLBENCH_TIMM_WEIGHTS_DIR/<model>.{safetensors,pth,bin}`,
the Hugging Face hub cache and torch hub's checkpoint folder, where timm
itself puts them. A model whose weights are not found has no pretrained
weights (`linear` and `finetune` are skipped with that reason; building it
pretrained raises `WeightsUnavailableError` saying where to put them).

`timm:<model>@random` is the honest way to exercise pretrained strategies
offline: its "weights" are a fixed random initialisation (the same tensors on
every build), recorded as `random-init:seed0` in every result, never as
ImageNet weights.

Nothing here imports timm or torch until a `timm:` name is used, so loading
the plugin costs nothing to `tlbench list` or runs that do not use it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from tlbench import Backbone, Family, Preprocessing, WeightsUnavailableError, hookimpl

if TYPE_CHECKING:
    from torch import nn

__version__ = "0.1.0"

#: shown by `tlbench list backbones`; `tlbench list backbones 'timm:*'` lists every model.
FEATURED = (
    "resnet10t",
    "resnet18",
    "resnet50",
    "mobilenetv3_small_050",
    "mobilenetv3_large_100",
    "efficientnet_b0",
    "regnety_008",
    "convnext_tiny",
    "vit_small_patch16_224",
)

#: suffix asking for fixed random weights in place of pretrained ones.
RANDOM_SUFFIX = "@random"
#: the seed of those weights; part of the recorded weights identifier.
RANDOM_SEED = 0
#: a folder of weight files named after the model (`resnet18.a1_in1k.safetensors`).
WEIGHTS_DIR_ENV = "TLBENCH_TIMM_WEIGHTS_DIR"
#: "1": report weights even when they are not local and let timm download them.
DOWNLOAD_ENV = "TLBENCH_TIMM_DOWNLOAD"
_EXTENSIONS = (".safetensors", ".pth", ".pt", ".bin")


def list_models() -> list[str]:
    """Every architecture timm can build (a pretrained tag may be appended: `resnet18.a1_in1k`)."""
    import timm

    return timm.list_models()


def _pretrained_cfg(model_name: str) -> Any:
    from timm.models import get_pretrained_cfg

    try:
        return get_pretrained_cfg(model_name)
    except RuntimeError as exc:  # timm: "Invalid pretrained tag (x) for resnet18."
        raise LookupError(str(exc)) from None


def find_weights(model_name: str, cfg: Any) -> tuple[str | None, list[str]]:
    """(the local weights file of `model_name`, or None; every place looked, for messages)."""
    names = [model_name]
    if cfg is not None and cfg.tag and "." not in model_name:
        names.insert(0, f"{model_name}.{cfg.tag}")
    looked: list[str] = []
    found = _in_weights_dir(names, looked)
    if found is None and cfg is not None:
        found = _in_caches(cfg, looked)
    return found, looked


def _in_weights_dir(names: list[str], looked: list[str]) -> str | None:
    """The first of `names` with a weights extension in $TLBENCH_TIMM_WEIGHTS (or None)."""
    folder = os.environ.get(WEIGHTS_DIR_ENV)
    if not folder:
        looked.append(f"${WEIGHTS_DIR_ENV}/{names[0]}{{{','.join(_EXTENSIONS)}}} (not set)")
        return None
    for name in names:
        for ext in _EXTENSIONS:
            path = Path(folder).expanduser() / f"{name}{ext}"
            looked.append(str(path))
            if path.is_file():
                return str(path)
    return None


def _in_caches(cfg: Any, looked: list[str]) -> str | None:
    """The pretrained config's own file, the Hugging Face cache, then torch hub's (or None)."""
    if cfg.file:
        looked.append(str(cfg.file))
        if Path(cfg.file).is_file():
            return str(cfg.file)
    if cfg.hf_hub_id:
        found, where = _hf_cached(cfg.hf_hub_id, cfg.hf_hub_filename)
        looked.append(where)
        if found:
            return found
    if cfg.url:
        import torch

        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(cfg.url).path)
        looked.append(f"torch hub checkpoints: {path}")
        if path.is_file():
            return str(path)
    return None


def _hf_cached(repo_id: str, filename: str | None) -> tuple[str | None, str]:
    try:
        from huggingface_hub import constants, try_to_load_from_cache
    except ImportError:
        return None, f"Hugging Face hub cache (huggingface_hub not installed): {repo_id}"
    repo = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    for name in [filename] if filename else ["model.safetensors", "pytorch_model.bin"]:
        hit = try_to_load_from_cache(repo_id, name)
        if isinstance(hit, str):
            return hit, str(repo)
    return None, f"Hugging Face hub cache: {repo}/snapshots/<revision>/model.safetensors"


def _feature_dim(model_name: str, size: int) -> int:
    """The width of the pooled features, from a forward pass on the meta device (no memory, no time)."""
    import timm
    import torch

    with torch.device("meta"):
        model = timm.create_model(model_name, pretrained=False, num_classes=0)
        try:
            out = model(torch.empty(1, 3, size, size))
            if out.ndim == 2:
                return int(out.shape[1])
        except Exception:  # an op without a meta kernel: trust the model's attributes
            pass
    # timm >= 1.0: head_hidden_size is the pre-logits width (MobileNetV3's conv_head).
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


class _Builder:
    """`Backbone.build` of one timm model: random, from a local file, downloaded, or an error."""

    def __init__(self, model_name: str, mode: str, weights_file: str | None, message: str):
        self.model_name, self.mode, self.weights_file, self.message = (
            model_name,
            mode,
            weights_file,
            message,
        )

    def __repr__(self) -> str:
        return f"timm.create_model({self.model_name!r}, num_classes=0; weights: {self.mode})"

    def __call__(self, pretrained: bool) -> nn.Module:
        import timm
        import torch

        name = self.model_name
        if not pretrained:
            return timm.create_model(name, pretrained=False, num_classes=0)
        if self.mode == "random":
            # Fixed random "weights": the same tensors on every build, whatever the run's seed.
            with torch.random.fork_rng():
                torch.manual_seed(RANDOM_SEED)
                return timm.create_model(name, pretrained=False, num_classes=0)
        if self.mode == "missing":
            raise WeightsUnavailableError(self.message)
        overlay = {"file": self.weights_file, "source": "file"} if self.weights_file else None
        try:
            return timm.create_model(
                name, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay
            )
        except Exception as exc:  # a corrupt file, or a download that failed
            where = self.weights_file or "the Hugging Face hub"
            raise WeightsUnavailableError(
                f"timm:{name}: loading its pretrained weights from {where} failed "
                f"({type(exc).__name__}: {exc}). Run without them with `--strategies scratch` "
                f"or `--backbones timm:{name}{RANDOM_SUFFIX}`."
            ) from exc


def stages(module: nn.Module) -> list[tuple[str, list[str]]]:
    """The model's stages as timm groups them for layer-wise decay: its own coarse
    `group_matcher` through `timm.models.group_parameters`, stem first."""
    from timm.models import group_parameters

    matcher = getattr(module, "group_matcher", None)
    if matcher is None:
        raise ValueError(f"{type(module).__name__} has no group_matcher: timm knows no stages")
    groups = group_parameters(module, matcher(coarse=True))
    return [("stem" if i == 0 else f"stage{i}", names) for i, names in enumerate(groups.values())]


def resolve(argument: str) -> Backbone:
    """The backbone for `timm:<argument>`; `LookupError` when timm has no such model."""
    if argument.startswith("hf-hub:"):  # a model published on the Hub: see hf_hub.py
        from tlbench_timm.hf_hub import resolve_hf_hub

        return resolve_hf_hub(argument)
    import timm

    random_weights = argument.endswith(RANDOM_SUFFIX)
    model_name = argument[: -len(RANDOM_SUFFIX)] if random_weights else argument
    arch = model_name.split(".", 1)[0]
    if not timm.is_model(arch):
        raise LookupError(f"timm {timm.__version__} has no model {arch!r}")
    cfg = _pretrained_cfg(model_name)
    data = cfg.to_dict() if cfg is not None else {}
    crop = int(data.get("input_size", (3, 224, 224))[-1])
    crop_pct = float(data.get("crop_pct") or 0.875)
    preprocessing = Preprocessing(
        mean=tuple(data.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(data.get("std", (0.229, 0.224, 0.225))),
        resize=round(crop / crop_pct),
        crop=crop,
        interpolation=str(data.get("interpolation") or "bilinear"),
    )
    fixed = crop if data.get("fixed_input_size") else None
    tag = f"{arch}.{cfg.tag}" if cfg is not None and cfg.tag else model_name
    version = timm.__version__

    weights_file, looked = (None, []) if random_weights else find_weights(model_name, cfg)
    message = ""
    if random_weights:
        mode, weights = "random", f"random-init:seed{RANDOM_SEED}"
        source = f"none: fixed random initialisation (seed {RANDOM_SEED}), timm {version}"
        description = f"timm {model_name} with FIXED RANDOM weights standing in for pretrained ones"
    elif weights_file:
        mode, weights, source = "file", tag, f"{weights_file} (timm {version})"
        description = f"timm {model_name}, pretrained {tag} (local)"
    elif cfg is not None and (cfg.hf_hub_id or cfg.url) and os.environ.get(DOWNLOAD_ENV) == "1":
        mode, weights, source = "download", tag, f"downloaded by timm {version} ({DOWNLOAD_ENV}=1)"
        description = f"timm {model_name}, pretrained {tag} (downloaded when used)"
    else:
        mode, weights, source = "missing", None, ""
        description = f"timm {model_name}; no pretrained weights on this machine"
        places = "\n".join(f"  - {p}" for p in looked)
        message = (
            f"timm:{model_name}: no pretrained weights ({tag}) on this machine, and tlbench does "
            f"not download them during a run. timm's weights are looked for in:\n{places}\n"
            f'Fill the Hugging Face cache on a connected machine (`python -c "import timm; '
            f"timm.create_model('{tag}', pretrained=True)\"`) and copy it here, put the file in "
            f"${WEIGHTS_DIR_ENV}, or set {DOWNLOAD_ENV}=1 to let timm download it. To run "
            f"without pretrained weights use `--strategies scratch`, or "
            f"`--backbones timm:{model_name}{RANDOM_SUFFIX}` for fixed random weights, recorded as such."
        )
    return Backbone(
        name=f"timm:{argument}",
        build=_Builder(model_name, mode, weights_file, message),
        feature_dim=_feature_dim(model_name, fixed or max(crop, 32)),
        preprocessing=preprocessing,
        weights=weights,
        weights_source=source,
        description=description,
        min_image_size=fixed or 32,
        fixed_image_size=fixed,
        stages=stages,
    )


TIMM = Family(
    name="timm",
    resolve=resolve,
    members=list_models,
    featured=FEATURED,
    description="any timm model, its own preprocessing, local pretrained weights",
    argument_help="<model_name>[@random]",
)


@hookimpl
def tlbench_register_backbones(register) -> None:
    register(TIMM)
