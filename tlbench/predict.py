"""`tlbench predict`: classify images with a checkpoint saved by `tlbench run --save-models`.

The checkpoint (`<key>.safetensors` with its `<key>.json` sidecar, or an older
`<key>.pt`) is read and the model rebuilt by `tlbench.checkpoint`, the module
that also writes it. Images go through the same decode, resize and
centre crop as the evaluation split did in training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

# The checkpoint format lives in tlbench.checkpoint; predict's callers find it here too.
from tlbench.checkpoint import (  # noqa: F401
    CHECKPOINT_FORMAT,
    SAFETENSORS_FORMAT,
    build_model,
    checkpoint_preprocessing,
    load_checkpoint,
)
from tlbench.errors import TlbenchError
from tlbench.plugin_types import Preprocessing


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

    store_size = preprocessing.resize_for(image_size)
    source = FileImages(paths, [0] * len(paths))
    images = torch.zeros(len(paths), 3, store_size, store_size, dtype=torch.uint8)
    errors: list[str | None] = []
    for i in range(len(paths)):
        try:
            # A copy: the decoded array views PIL's read-only buffer.
            images[i] = torch.from_numpy(_decode_one(source, i, store_size).copy())
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
        try:
            probs.append(model(x).float().softmax(1).cpu())
        except RuntimeError as exc:  # e.g. a kernel larger than a 1 px input
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise TlbenchError(
                f"the model cannot classify images at {image_size} px (the checkpoint's "
                f"image_size): {type(exc).__name__}: {first}"
            ) from exc
    p = torch.cat(probs) if probs else torch.zeros(0, 1)
    if not torch.isfinite(p).all():
        raise TlbenchError(
            "the model gave probabilities that are not numbers (NaN or infinite): its weights "
            "or preprocessing are damaged; save the checkpoint again (tlbench run --save-models)"
        )
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


class _OneImage:
    """One PIL image (or image file) as the `ImageSource` `_decode_one` reads."""

    def __init__(self, image: Any):
        self.image = image

    def load(self, index: int) -> Any:
        from PIL import Image

        if isinstance(self.image, (str, os.PathLike)):
            with Image.open(self.image) as opened:
                opened.load()
                return opened
        return self.image


@dataclass(frozen=True)
class EvalTransform:
    """A checkpoint's preprocessing for one image, as its evaluation split had it.

    `transform(image)` takes a PIL image or an image file and returns the float
    tensor `(3, image_size, image_size)` in [0, 1] that the classifier takes
    (it normalises with the backbone's mean and std itself): the shorter side
    resized to the training store size (`Preprocessing.resize_for`), the centre
    square kept, then the centre `image_size` crop. Stack them for a batch.
    """

    image_size: int
    preprocessing: Preprocessing

    def __call__(self, image: Any) -> torch.Tensor:
        from tlbench.data import _decode_one, center_crop

        store_size = self.preprocessing.resize_for(self.image_size)
        square = torch.from_numpy(_decode_one(_OneImage(image), 0, store_size).copy())
        return center_crop(square[None], self.image_size)[0]
