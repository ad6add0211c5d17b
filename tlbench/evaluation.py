"""Evaluation: top-1, balanced accuracy and mean loss, read back from the device once.

Counts accumulate on the device (`eval_counts`: a confusion matrix filled with
`scatter_add_`, no host read per batch); `evaluate_logits` reads them back in
one transfer. `evaluate_images` evaluates a model on the centre crops of a
decoded split; the head fits evaluate logits of cached features.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tlbench.data import ImageTensors, center_crop
from tlbench.devices import host_to_device
from tlbench.execution import Execution


@torch.inference_mode()
def evaluate_logits(
    logits_of: Callable[[int, int], torch.Tensor],
    labels: torch.Tensor,
    num_classes: int,
    batch_size: int,
    device: torch.device,
    per_image: bool = False,
) -> dict[str, Any]:
    """Top-1, balanced accuracy and mean loss; `logits_of(start, stop)` gives a batch's logits.

    Counts accumulate on the device (`eval_counts`, no host read); the
    confusion matrix and the loss are read back once, here. With `per_image`,
    "correct" is also returned: a bool per image, in `labels`' order, read back
    in that same transfer.
    """
    n = len(labels)
    cells = num_classes * num_classes
    hits = torch.zeros(n, dtype=torch.long, device=device) if per_image else None
    confusion, loss_sum = eval_counts(logits_of, labels, num_classes, batch_size, device, hits)
    # One transfer holds them all (counts are exact in float64 up to 2**53): the one sync.
    parts = [confusion, *([hits] if hits is not None else []), loss_sum.reshape(1)]
    both = torch.cat([p.double() for p in parts]).cpu()
    confusion = both[:cells].long().view(num_classes, num_classes)
    loss_sum = both[-1]
    correct = confusion.diag()
    support = confusion.sum(1)
    present = support > 0
    out = {
        "accuracy": float(correct.sum() / max(1, n)),
        "balanced_accuracy": float((correct[present] / support[present]).mean())
        if present.any()
        else 0.0,
        "loss": float(loss_sum) / max(1, n),
    }
    if hits is not None:
        out["correct"] = both[cells:-1].bool()
    return out


@torch.inference_mode()
def eval_counts(
    logits_of: Callable[[int, int], torch.Tensor],
    labels: torch.Tensor,
    num_classes: int,
    batch_size: int,
    device: torch.device,
    hits: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The flat confusion matrix and the summed loss of an evaluation, left on the device.

    `hits`, when given (a tensor of len(labels) on the device), is set to 1 where
    an image was classified correctly, 0 elsewhere.

    Per-class hits are added into a preallocated matrix with `scatter_add_`:
    `torch.bincount` on CUDA reads its input's range back to the host, a sync
    per batch. Nothing here waits on the host (the GPU check runs it under
    `torch.cuda.set_sync_debug_mode("error")`).
    """
    n = len(labels)
    labels = host_to_device(labels, device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        logits = logits_of(start, stop).float()
        y = labels[start:stop]
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        predicted = logits.argmax(1)
        cells = y * num_classes + predicted
        confusion.scatter_add_(0, cells, torch.ones_like(cells))
        if hits is not None:
            hits[start:stop] = predicted == y
    return confusion, loss_sum


def evaluate_images(
    model: nn.Module,
    data: ImageTensors,
    image_size: int,
    num_classes: int,
    batch_size: int,
    ex: Execution,
    images_on_device: torch.Tensor | None = None,
    per_image: bool = False,
) -> dict[str, Any]:
    """Evaluate on the centre crop of every image (torchvision's resize + centre crop)."""
    model.eval()
    images = images_on_device if images_on_device is not None else data.images
    logits_of = image_logits(model, images, image_size, ex)
    return evaluate_logits(logits_of, data.labels, num_classes, batch_size, ex.device, per_image)


def image_logits(
    model: nn.Module, images: torch.Tensor, image_size: int, ex: Execution
) -> Callable[[int, int], torch.Tensor]:
    """`logits_of(start, stop)` for `evaluate_logits`: the centre crops of a uint8 split."""

    def logits_of(start: int, stop: int) -> torch.Tensor:
        x = center_crop(host_to_device(images[start:stop], ex.device), image_size)
        with ex.autocast:
            return model(ex.to_input(x))

    return logits_of
