"""FLOP counting: the forward FLOPs of one image, and those of one training image.

Counted with torch's FLOP counter on the meta device (shapes only: no memory,
no kernels, the model's weights and random state left alone), and on the
model's own device where an op has no meta kernel; None, never a guess, when
neither works.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn


def forward_flops(
    model: nn.Module, image_size: int, device: torch.device | None = None
) -> int | None:
    """Forward FLOPs for one image of the computation training runs (2 FLOPs per multiply-add).

    Counted with torch's FLOP counter in training mode: in `eval()` under
    `no_grad`, attention takes PyTorch's fused fast path, which the counter
    scores as zero (ViT-B/16: 22.5 instead of 35.1 GFLOPs). The count runs on
    the meta device (shapes only, no memory, no kernels) with the model's
    parameters and buffers swapped for meta tensors, so the model's weights,
    BatchNorm statistics, the random-number state and its device are left as
    they were, and CPU and GPU give the same figure: torchvision's published
    GFLOPS, which are multiply-adds. Where a model cannot run on meta tensors
    (a custom op without a meta kernel), it is counted by running it on its own
    device (where its parameters are, whatever `device` says), with its
    buffers and the random-number state restored afterwards.

    Returns None when neither works, never raises: a caller must not cache or
    store a None (a later count, e.g. after placement, may succeed).
    """
    for count in (_flops_on_meta, _flops_in_place):
        try:
            flops = count(model, image_size, device)
        except Exception:  # an op the counter cannot trace: report none rather than a guess
            continue
        if flops:
            return flops
    return None


_FLOP_BATCH = 2  # BatchNorm in training mode needs more than one value per channel


class FlopCount(NamedTuple):
    """FLOPs per image of a training step: the forward alone, and forward plus backward."""

    forward: int
    #: forward + backward under the model's `requires_grad` flags: a frozen layer's
    #: weight gradient is not computed, nor an input gradient below the first layer
    #: that trains (ResNet-50 at 224 px, last stage trainable: 11.0 G, not 3 x 8.2 G).
    train: int


def training_flops(model: nn.Module, image_size: int) -> FlopCount | None:
    """The FLOPs one training image costs, counted (never assumed) on the meta device.

    One forward and one backward of a loss, as `forward_flops` counts (training
    mode, shapes only, the model's weights, statistics and random state left
    alone), with every parameter's `requires_grad` as the run set it: what
    the run's steps really compute. None when the model cannot run on meta
    tensors; never raises. A caller keeps it per (backbone, image size,
    strategy): the frozen part, and so the count, is the strategy's.
    """
    try:
        return _training_flops_on_meta(model, image_size)
    except Exception:  # an op the meta device or the counter cannot trace: none, not a guess
        return None


def _training_flops_on_meta(model: nn.Module, image_size: int) -> FlopCount | None:
    from torch.func import functional_call
    from torch.utils.flop_counter import FlopCounterMode

    params = {
        k: torch.empty_like(v, device="meta").requires_grad_(v.requires_grad)
        for k, v in model.named_parameters()
    }
    buffers = {k: torch.empty_like(v, device="meta") for k, v in model.named_buffers()}
    x = torch.zeros(_FLOP_BATCH, 3, image_size, image_size, device="meta")
    was_training = model.training
    model.train()
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.enable_grad():
            out = functional_call(model, {**params, **buffers}, (x,))
            forward = int(counter.get_total_flops())
            if out.requires_grad:
                out.float().sum().backward()
            total = int(counter.get_total_flops())
    finally:
        model.train(was_training)
    if not forward:
        return None
    return FlopCount(forward // _FLOP_BATCH, total // _FLOP_BATCH)


def _count(call: Any, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        call(x)
    return int(counter.get_total_flops()) // _FLOP_BATCH


def _flops_on_meta(model: nn.Module, image_size: int, device: torch.device | None) -> int:
    from torch.func import functional_call

    tensors = {
        **{k: torch.empty_like(v, device="meta") for k, v in model.named_parameters()},
        **{k: torch.empty_like(v, device="meta") for k, v in model.named_buffers()},
    }
    x = torch.zeros(_FLOP_BATCH, 3, image_size, image_size, device="meta")
    was_training = model.training
    model.train()
    try:
        return _count(lambda inp: functional_call(model, tensors, (inp,)), x)
    finally:
        model.train(was_training)


def _flops_in_place(model: nn.Module, image_size: int, device: torch.device | None) -> int:
    where = next((p.device for p in model.parameters()), device or torch.device("cpu"))
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    was_training = model.training
    rng = [where.index or 0] if where.type == "cuda" else []
    model.train()
    try:
        with torch.random.fork_rng(devices=rng):
            return _count(model, torch.zeros(_FLOP_BATCH, 3, image_size, image_size, device=where))
    finally:
        model.train(was_training)
        with torch.no_grad():
            for name, value in model.named_buffers():
                value.copy_(buffers[name])
