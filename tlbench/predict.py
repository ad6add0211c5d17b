"""`tlbench predict`: classify images with a checkpoint saved by `tlbench run --save-models`.

A checkpoint is a plain dict of tensors, strings, numbers, lists and dicts
(no pickled objects), loaded with `weights_only=True`: opening one never
executes code. The model is rebuilt from the backbone registered under the
checkpoint's name (random init, no download), the head it names, and the
saved weights, loaded strictly, so a backbone that changed since shows as an
error rather than as quietly wrong predictions. Images go through the same
decode, resize and centre crop as the evaluation split did in training.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tlbench.api import Preprocessing
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


@dataclass
class ImageInput:
    path: str
    #: the class named by the image's folder, when it is one of the checkpoint's classes.
    true_label: str | None = None


def collect_images(inputs: list[str], classes: list[str]) -> list[ImageInput]:
    """Files as given; folders searched recursively for images (sorted)."""
    from tlbench.images import is_image_file

    known = set(classes)
    out: list[ImageInput] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and is_image_file(p.name)
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise TlbenchError(f"no images found in folder {path}")
            files = found
        elif path.is_file():
            files = [path]
        elif path.exists():
            # A FIFO or a device would block or never end: only regular files are images.
            raise TlbenchError(f"image {path} is not a regular file (a pipe or a device?)")
        else:
            raise TlbenchError(f"image {path} does not exist")
        for f in files:
            parent = f.parent.name
            out.append(ImageInput(str(f), parent if parent in known else None))
    return out


def load_images(
    paths: list[str], image_size: int, preprocessing: Preprocessing
) -> tuple[torch.Tensor, list[str | None]]:
    """uint8 `(N, 3, S, S)` centre squares (S = the training store size), and per image an
    error message or None; unreadable images are left black and reported."""
    from tlbench.data import _decode_one
    from tlbench.images import FileImages

    store = preprocessing.resize_for(image_size)
    source = FileImages(paths, [0] * len(paths))
    images = torch.zeros(len(paths), 3, store, store, dtype=torch.uint8)
    errors: list[str | None] = []
    for i in range(len(paths)):
        try:
            # A copy: the decoded array views PIL's read-only buffer.
            images[i] = torch.from_numpy(_decode_one(source, i, store).copy())
            errors.append(None)
        except Exception as exc:  # an unreadable file is reported, the others are classified
            errors.append(f"{type(exc).__name__}: {exc}")
    return images, errors


@torch.inference_mode()
def classify(
    model: nn.Module,
    images: torch.Tensor,
    image_size: int,
    k: int,
    *,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k probabilities and class indices, `(N, k)` each, with the evaluation centre crop."""
    from tlbench.data import center_crop

    model.to(device)
    probs = []
    for start in range(0, len(images), batch_size):
        x = center_crop(images[start : start + batch_size].to(device), image_size)
        probs.append(model(x).float().softmax(1).cpu())
    p = torch.cat(probs) if probs else torch.zeros(0, 1)
    k = max(1, min(k, p.shape[1]))
    return p.topk(k, dim=1)


def save_grid(
    path: str | os.PathLike[str],
    images: torch.Tensor,
    inputs: list[ImageInput],
    predictions: list[tuple[str, float] | None],
    *,
    columns: int = 6,
) -> Path:
    """The images in a grid, each titled with its prediction and (when known) its true label."""
    from tlbench.plot import _figure_class, check_image_path, literal, save_figure

    figure_class, canvas_class = _figure_class()
    # A folder or a name without a suffix: the file really written, which the caller prints.
    path = check_image_path(path, "predictions.png", "--grid")
    n = len(inputs)
    cols = max(1, min(columns, n))
    rows = (n + cols - 1) // cols
    # About one screen pixel per input pixel at 128 px: sharp enough, and a small file.
    fig = figure_class(figsize=(1.9 * cols, 2.25 * rows), layout="constrained")
    canvas_class(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i].permute(1, 2, 0).numpy())
        item, pred = inputs[i], predictions[i]
        if pred is None:
            ax.set_title(literal(f"unreadable\n{Path(item.path).name}"), fontsize=8, color="grey")
            continue
        label, p = pred
        colour = (
            "black" if item.true_label is None else "green" if label == item.true_label else "red"
        )
        truth = f"true: {item.true_label}" if item.true_label else Path(item.path).name
        ax.set_title(literal(f"{label} ({100 * p:.0f}%)\n{truth}"), fontsize=8, color=colour)
    save_figure(fig, path, "--grid")
    return path
