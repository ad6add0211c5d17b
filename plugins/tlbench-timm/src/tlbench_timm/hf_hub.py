"""`timm:hf-hub:<org>/<model>[@<revision>][@random]`: a timm model published on the Hugging Face Hub.

A Hub repo made by timm (`push_to_hf_hub` / `save_for_hf`) holds `config.json`
(the architecture, its arguments and its pretrained config: mean, std, input size,
crop) and the weights (`model.safetensors` or `pytorch_model.bin`). Both are read
from the Hugging Face hub cache (`HF_HUB_CACHE`, where timm and `huggingface_hub`
put them), under the revision asked for (default `main`). As for every timm model,
nothing is downloaded during a run unless `TLBENCH_TIMM_DOWNLOAD=1`:

- config and weights cached: the backbone has pretrained weights, recorded as
  `hf-hub:<org>/<model>@<commit>` (the cached snapshot's commit);
- config cached, weights not: the backbone trains from scratch only; building it
  pretrained raises `WeightsUnavailableError` saying where the file goes;
- nothing cached: the architecture is unknown, so the name cannot be resolved;
  the error says how to fill the cache.

`@random` gives fixed random weights, as for the other timm names.

Imports torch, timm and huggingface_hub only when such a name is resolved.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlbench import Backbone, Preprocessing, WeightsUnavailableError

if TYPE_CHECKING:
    from torch import nn

PREFIX = "hf-hub:"
#: weight files of a timm Hub repo, in the order timm prefers them.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _settings() -> tuple[str, int, str]:
    from tlbench_timm import DOWNLOAD_ENV, RANDOM_SEED, RANDOM_SUFFIX

    return DOWNLOAD_ENV, RANDOM_SEED, RANDOM_SUFFIX


def split_argument(argument: str) -> tuple[str, str | None, bool]:
    """`hf-hub:org/model@rev@random` -> ("org/model", "rev", True)."""
    _, _, random_suffix = _settings()
    random_weights = argument.endswith(random_suffix)
    if random_weights:
        argument = argument[: -len(random_suffix)]
    repo, _, revision = argument[len(PREFIX) :].partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise LookupError(f"{PREFIX}{repo}: expected {PREFIX}<org>/<model>")
    return repo, revision or None, random_weights


def _cached(repo: str, filename: str, revision: str | None) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo, filename, revision=revision)
    return hit if isinstance(hit, str) else None


def _cache_folder(repo: str) -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"


def _fetch_config(repo: str, revision: str | None, download: bool, name: str) -> str:
    """The path of the repo's config.json: cached, or downloaded when downloads are allowed."""
    download_env, _, _ = _settings()
    found = _cached(repo, "config.json", revision)
    if found:
        return found
    how = (
        f"Fill the Hugging Face cache on a connected machine "
        f"(`python -c \"import timm; timm.create_model('{PREFIX}{repo}', pretrained=True)\"`) "
        f"and copy {_cache_folder(repo)} here, or set {download_env}=1 to let timm download it."
    )
    if not download:
        raise WeightsUnavailableError(
            f"{name}: {repo}'s config.json (its architecture) is not in the Hugging Face cache "
            f"({_cache_folder(repo)}), and tlbench does not download during a run. {how}"
        )
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(repo, "config.json", revision=revision)
    except Exception as exc:
        raise WeightsUnavailableError(
            f"{name}: downloading {repo}'s config.json failed ({type(exc).__name__}: {exc}). {how}"
        ) from exc


def _parse_config(path: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(architecture, pretrained config, model arguments) of a timm config.json."""
    cfg = json.loads(Path(path).read_text())
    if "pretrained_cfg" not in cfg:  # timm's older single-dict form
        pretrained = {k: v for k, v in cfg.items() if k not in ("architecture", "num_features")}
        return cfg["architecture"], pretrained, {}
    pretrained = dict(cfg["pretrained_cfg"])
    if "num_classes" in cfg:
        pretrained["num_classes"] = cfg["num_classes"]
    model_args = dict(cfg.get("model_args") or {})
    # tlbench asks for the pooled features (num_classes=0), whatever head the repo was saved with.
    model_args.pop("num_classes", None)
    return cfg["architecture"], pretrained, model_args


class HubBuilder:
    """`Backbone.build` of a Hub model: random, from the cached file, downloaded, or an error."""

    def __init__(
        self,
        repo: str,
        revision: str | None,
        architecture: str,
        pretrained_cfg: dict[str, Any],
        model_args: dict[str, Any],
        mode: str,
        weights_file: str | None,
        message: str,
    ):
        self.repo, self.revision = repo, revision
        self.architecture, self.pretrained_cfg, self.model_args = (
            architecture,
            pretrained_cfg,
            model_args,
        )
        self.mode, self.weights_file, self.message = mode, weights_file, message

    def __repr__(self) -> str:
        return f"timm.create_model({self.architecture!r} from {PREFIX}{self.repo}; weights: {self.mode})"

    def _create(self, pretrained: bool, overlay: dict[str, Any] | None = None) -> nn.Module:
        import timm

        return timm.create_model(
            self.architecture,
            pretrained=pretrained,
            num_classes=0,
            pretrained_cfg_overlay=overlay,
            **self.model_args,
        )

    def __call__(self, pretrained: bool) -> nn.Module:
        import torch

        _, random_seed, random_suffix = _settings()
        if not pretrained:
            return self._create(False)
        if self.mode == "random":
            with torch.random.fork_rng():
                torch.manual_seed(random_seed)
                return self._create(False)
        if self.mode == "missing":
            raise WeightsUnavailableError(self.message)
        try:
            if self.mode == "download":
                import timm

                at = f"@{self.revision}" if self.revision else ""
                return timm.create_model(f"{PREFIX}{self.repo}{at}", pretrained=True, num_classes=0)
            # The repo's own pretrained config, pointed at the cached file: timm loads it as
            # it loads any local weights file (dropping the classifier for num_classes=0).
            import dataclasses

            from timm.models import PretrainedCfg

            known = {f.name for f in dataclasses.fields(PretrainedCfg)} - {"hf_hub_id", "url"}
            overlay = {k: v for k, v in self.pretrained_cfg.items() if k in known}
            overlay.update(file=self.weights_file, source="file")
            return self._create(True, overlay)
        except Exception as exc:
            where = self.weights_file or "the Hugging Face hub"
            raise WeightsUnavailableError(
                f"timm:{PREFIX}{self.repo}: loading its pretrained weights from {where} failed "
                f"({type(exc).__name__}: {exc}). Run without them with `--strategies scratch` or "
                f"`--backbones timm:{PREFIX}{self.repo}{random_suffix}`."
            ) from exc


def _feature_dim(architecture: str, model_args: dict[str, Any], size: int) -> int:
    import timm
    import torch

    with torch.device("meta"):
        model = timm.create_model(architecture, pretrained=False, num_classes=0, **model_args)
        try:
            out = model(torch.empty(1, 3, size, size))
            if out.ndim == 2:
                return int(out.shape[1])
        except Exception:  # an op without a meta kernel: trust the model's attributes
            pass
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


def resolve_hf_hub(argument: str) -> Backbone:
    """The backbone for `timm:hf-hub:<org>/<model>[@<revision>][@random]`."""
    import timm

    download_env, random_seed, random_suffix = _settings()
    name = f"timm:{argument}"
    repo, revision, random_weights = split_argument(argument)
    download = os.environ.get(download_env) == "1"
    config_path = _fetch_config(repo, revision, download, name)
    architecture, pretrained_cfg, model_args = _parse_config(config_path)
    if not timm.is_model(architecture):
        raise LookupError(
            f"{name}: its config.json names the architecture {architecture!r}, which timm "
            f"{timm.__version__} does not have (a newer timm may)"
        )
    # The snapshot folder is named by the commit: the exact weights a result used.
    commit = Path(config_path).parent.name
    tag = f"{PREFIX}{repo}@{commit}"

    crop = int((pretrained_cfg.get("input_size") or (3, 224, 224))[-1])
    crop_pct = float(pretrained_cfg.get("crop_pct") or 0.875)
    preprocessing = Preprocessing(
        mean=tuple(pretrained_cfg.get("mean") or (0.485, 0.456, 0.406)),
        std=tuple(pretrained_cfg.get("std") or (0.229, 0.224, 0.225)),
        resize=round(crop / crop_pct),
        crop=crop,
        interpolation=str(pretrained_cfg.get("interpolation") or "bilinear"),
    )
    fixed = crop if pretrained_cfg.get("fixed_input_size") else None

    weights_file = None
    if not random_weights:
        weights_file = next(
            (f for f in (_cached(repo, w, revision) for w in WEIGHT_FILES) if f), None
        )
    message = ""
    if random_weights:
        mode, weights = "random", f"random-init:seed{random_seed}"
        source = f"none: fixed random initialisation (seed {random_seed}), timm {timm.__version__}"
        description = f"timm {architecture} from {PREFIX}{repo} with FIXED RANDOM weights"
    elif weights_file:
        mode, weights = "file", tag
        source = f"{weights_file} (timm {timm.__version__})"
        description = f"timm {architecture}, pretrained {tag} (local)"
    elif download:
        mode, weights = "download", tag
        source = f"downloaded by timm {timm.__version__} ({download_env}=1)"
        description = f"timm {architecture}, pretrained {tag} (downloaded when used)"
    else:
        mode, weights, source = "missing", None, ""
        description = (
            f"timm {architecture} from {PREFIX}{repo}; its weights are not on this machine"
        )
        snapshot = Path(config_path).parent
        message = (
            f"{name}: the weights of {repo} are not in the Hugging Face cache (looked for "
            f"{' and '.join(str(snapshot / w) for w in WEIGHT_FILES)}), and tlbench does not "
            f"download them during a run. Put the repo's weight file there, copy a filled cache "
            f"from a connected machine, or set {download_env}=1 to let timm download it. To run "
            f"without them use `--strategies scratch`, or `--backbones {name}{random_suffix}`."
        )
    from tlbench_timm import stages

    return Backbone(
        name=name,
        build=HubBuilder(
            repo, revision, architecture, pretrained_cfg, model_args, mode, weights_file, message
        ),
        feature_dim=_feature_dim(architecture, model_args, fixed or max(crop, 32)),
        preprocessing=preprocessing,
        weights=weights,
        weights_source=source,
        description=description,
        min_image_size=fixed or 32,
        fixed_image_size=fixed,
        stages=stages,
    )
