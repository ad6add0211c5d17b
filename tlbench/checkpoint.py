"""Checkpoints: the one format `tlbench run --save-models` writes and `tlbench predict` reads.

A checkpoint is a plain dict of tensors, strings, numbers, lists and dicts
(no pickled objects), loaded with `weights_only=True`: opening one never
executes code. It carries its own config (nanoGPT's habit): the backbone's
registered name, the head kind, the classes, the input size and the
preprocessing, and the run's key and provenance. `build_model` rebuilds the
classifier from the backbone registered under that name (random init, no
download), the head it names and the saved weights, loaded strictly, so a
backbone that changed since shows as an error rather than as quietly wrong
predictions.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tlbench.api import Backbone, Preprocessing, RunSpec
from tlbench.errors import TlbenchError, UnknownNameError

CHECKPOINT_FORMAT = "tlbench-checkpoint-1"
REQUIRED_KEYS = (
    "state_dict",
    "backbone",
    "head",
    "num_classes",
    "classes",
    "image_size",
    "preprocessing",
)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a tlbench checkpoint; a file that is not one raises a `TlbenchError`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise TlbenchError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or damaged files
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        first = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        raise TlbenchError(
            f"{path} is not a tlbench checkpoint (cannot be read as one: {first[:200]}). "
            "Checkpoints are written by `tlbench run --save-models`."
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        found = (
            checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        )
        raise TlbenchError(
            f"{path} is not a tlbench checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT!r}). "
            "Checkpoints are written by `tlbench run --save-models`."
        )
    missing = [k for k in REQUIRED_KEYS if k not in checkpoint]
    if missing:
        raise TlbenchError(f"{path}: damaged tlbench checkpoint, missing {', '.join(missing)}")
    problem = _field_problem(checkpoint)
    if problem:
        raise TlbenchError(f"{path}: damaged tlbench checkpoint, {problem}")
    return checkpoint


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _field_problem(c: dict[str, Any]) -> str | None:
    """What is wrong with the fields' types and values, or None: a tampered or damaged file
    must be an error message, not a traceback deep inside the model."""
    state = c["state_dict"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        return "state_dict is not a mapping of names to tensors"
    for key in ("backbone", "head"):
        if not isinstance(c[key], str):
            return f"{key} is not a name ({c[key]!r})"
    if not _is_int(c["num_classes"]) or c["num_classes"] < 1:
        return f"num_classes is not a positive integer ({c['num_classes']!r})"
    classes = c["classes"]
    if not isinstance(classes, list) or not all(isinstance(n, str) for n in classes):
        return f"classes is not a list of class names ({classes!r:.80})"
    if len(classes) != c["num_classes"]:
        return "class names do not match num_classes"
    if not _is_int(c["image_size"]) or c["image_size"] < 1:
        return f"image_size is not a positive integer ({c['image_size']!r})"
    p = c["preprocessing"]
    known = {f.name for f in dataclasses.fields(Preprocessing)}
    if not isinstance(p, dict) or not set(p) <= known:
        extra = sorted(set(p) - known) if isinstance(p, dict) else p
        return f"preprocessing has unknown fields {extra!r}"
    for key in ("mean", "std"):
        value = p.get(key, (0.0, 0.0, 0.0))
        if (
            not isinstance(value, (list, tuple))
            or len(value) != 3
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        ):
            return f"preprocessing {key} is not three numbers ({value!r})"
    for key in ("resize", "crop"):
        if key in p and (not _is_int(p[key]) or p[key] < 1):
            return f"preprocessing {key} is not a positive integer ({p[key]!r})"
    return None


def checkpoint_preprocessing(checkpoint: dict[str, Any]) -> Preprocessing:
    """The backbone's preprocessing as saved with the weights."""
    p = dict(checkpoint["preprocessing"])
    for key in ("mean", "std"):
        if key in p:
            p[key] = tuple(p[key])
    return Preprocessing(**p)


def build_model(checkpoint: dict[str, Any], plugins: Any) -> nn.Module:
    """The checkpoint's classifier: registered backbone (random init) + head + saved weights."""
    from tlbench.engine import FeatureHead, ImageClassifier

    name = checkpoint["backbone"]
    try:
        backbone = plugins.backbones.get(name)
    except UnknownNameError:
        raise TlbenchError(
            f"the checkpoint needs backbone {name!r}, which no loaded plugin provides; "
            "install the plugin that trained it (see `tlbench plugins`)"
        ) from None
    n = checkpoint["num_classes"]
    kind = checkpoint["head"]
    if kind == "feature":
        head: nn.Module = FeatureHead(backbone.feature_dim, n)
    elif kind == "linear":
        head = nn.Linear(backbone.feature_dim, n)
    else:
        raise TlbenchError(f"unknown head kind {kind!r} in the checkpoint (feature or linear)")
    model = ImageClassifier(backbone.build(False), head, checkpoint_preprocessing(checkpoint))
    try:
        model.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as exc:
        raise TlbenchError(
            f"the checkpoint's weights do not fit backbone {name!r} as registered now "
            f"(did its plugin change?): {str(exc).splitlines()[0]}"
        ) from None
    return model.eval()


def save_checkpoint(
    folder: Path,
    spec: RunSpec,
    backbone: Backbone,
    model: nn.Module,
    best_state: dict[str, torch.Tensor],
    *,
    head_only: bool,
    classes: list[str],
    best_epoch: int,
    best_accuracy: float,
) -> Path:
    """Write the best epoch's weights with everything `tlbench predict` needs; returns the path.

    `model` is the whole classifier (normalisation, backbone, head);
    `best_state` holds the best epoch's weights of the head alone
    (`head_only`, cached features) or of the whole model. Written to a
    temporary name and renamed, so a reader never sees half a checkpoint.
    """
    from tlbench import __version__

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    prefix = "head." if head_only else ""
    state.update({prefix + k: v for k, v in best_state.items()})
    path = folder / f"{spec.key}.pt"
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": state,
        "backbone": backbone.name,
        "strategy": spec.strategy,
        "head": "feature" if head_only else "linear",
        "num_classes": len(classes),
        "classes": list(classes),
        "image_size": spec.image_size,
        "preprocessing": backbone.preprocessing.to_dict(),
        "best_epoch": best_epoch,
        "best_accuracy": best_accuracy,
        # Provenance, so a checkpoint found alone can be traced to its record.
        "key": spec.key,
        "dataset": spec.dataset,
        "seed": spec.seed,
        "weights": spec.weights,
        "tlbench_version": __version__,
    }
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(path)
    return path
