"""Feature extraction: the frozen backbone's features of every image, and its untimed warm-up.

What a frozen-backbone run trains its head on; `tlbench.features` caches them.
"""

from __future__ import annotations

import time

import torch

from tlbench.classifier import ImageClassifier
from tlbench.data import ImageTensors, center_crop
from tlbench.devices import host_to_device, synchronize
from tlbench.execution import Execution
from tlbench.fitting import batch_sizes


@torch.inference_mode()
def extract_features(
    model: ImageClassifier, data: ImageTensors, image_size: int, batch_size: int, ex: Execution
) -> torch.Tensor:
    """Backbone features of every image (centre crop), as float32 on the CPU."""
    ex.apply_backends()
    ex.place(model.eval())
    chunks = []
    for start in range(0, len(data), batch_size):
        x = host_to_device(data.images[start : start + batch_size], ex.device)
        x = ex.to_input(center_crop(x, image_size))
        with ex.autocast:
            chunks.append(model.features(x).float())
    return torch.cat(chunks).cpu()


@torch.inference_mode()
def warm_up_extraction(
    model: ImageClassifier, data: ImageTensors, image_size: int, batch_size: int, ex: Execution
) -> float:
    """Run each batch shape `extract_features` will meet once, untimed; returns its seconds.

    cuDNN autotuning, kernel and handle set-up of the extraction's shapes (the
    full and the last, partial batch): one-off costs that `train_images`' own
    warm-up keeps out of a fine-tune's compared time, and so out of
    `linear`'s. Call it before timing `extract_features` with the same
    arguments; record the seconds apart.
    """
    ex.apply_backends()
    ex.place(model.eval())
    synchronize(ex.device)
    t0 = time.perf_counter()
    for size in batch_sizes(len(data), batch_size):
        x = host_to_device(data.images[:size], ex.device)
        with ex.autocast:
            model.features(ex.to_input(center_crop(x, image_size)))
    synchronize(ex.device)
    return time.perf_counter() - t0
