"""The one training loop every strategy shares, and evaluation.

The loop is tight: batches are gathered from the decoded uint8 tensor (on the
device when it fits), augmented there, and the loss is accumulated on the
device; the host reads it back once per epoch. Timing follows
`tlbench.timing`: warm-up steps excluded, device synchronised only at
measurement boundaries.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tlbench.api import Hyperparameters, Preprocessing
from tlbench.data import ImageTensors, center_crop, random_resized_crop_flip
from tlbench.timing import PhaseClock, synchronize

#: steps at the start of the first epoch left out of throughput (allocator, cuDNN autotune, compile).
WARMUP_STEPS = 3


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, loss: float):
        self.epoch, self.loss = epoch, loss
        super().__init__(f"training loss became {loss} in epoch {epoch}; try a smaller --lr")


@dataclass(frozen=True)
class Execution:
    """How the work runs on the hardware; stored beside every figure it produced."""

    device: torch.device
    precision: str = "fp32"  # "fp32" or "bf16" (autocast)
    channels_last: bool = False
    compile: bool = False

    @property
    def autocast(self) -> torch.autocast:
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": str(self.device),
            "precision": self.precision,
            "memory_format": "channels_last" if self.channels_last else "contiguous",
            "compile": self.compile,
        }


class Normalize(nn.Module):
    """(x - mean) / std with the backbone's own statistics; part of the saved model."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class FeatureHead(nn.Module):
    """Standardise features with the training set's statistics, then a linear layer."""

    def __init__(self, feature_dim: int, num_classes: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(feature_dim))
        self.register_buffer("std", torch.ones(feature_dim))
        self.linear = nn.Linear(feature_dim, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear((features - self.mean) / self.std)


class ImageClassifier(nn.Module):
    """Images in [0, 1] -> normalise -> backbone features -> head -> logits."""

    def __init__(self, backbone: nn.Module, head: nn.Module, preprocessing: Preprocessing):
        super().__init__()
        self.normalize = Normalize(preprocessing.mean, preprocessing.std)
        self.backbone = backbone
        self.head = head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return trainable, total


# --------------------------------------------------------------------------- optimisation


def make_optimizer(groups: list[dict], hp: Hyperparameters) -> torch.optim.Optimizer:
    """AdamW or SGD; no weight decay on biases and normalisation parameters."""
    split: list[dict] = []
    for group in groups:
        params = [p for p in group["params"] if p.requires_grad]
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        base = {k: v for k, v in group.items() if k != "params"}
        if decay:
            split.append({**base, "params": decay, "weight_decay": hp.weight_decay})
        if no_decay:
            split.append({**base, "params": no_decay, "weight_decay": 0.0})
    if not split:
        raise ValueError("the strategy left no trainable parameter")
    if hp.optimizer == "sgd":
        return torch.optim.SGD(split, lr=hp.lr, momentum=hp.momentum, nesterov=hp.momentum > 0)
    if hp.optimizer == "adamw":
        return torch.optim.AdamW(split, lr=hp.lr)
    raise ValueError(f"unknown optimizer {hp.optimizer!r} (adamw or sgd)")


def make_schedule(
    optimizer: torch.optim.Optimizer, hp: Hyperparameters, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step learning-rate factor: linear warm-up, then cosine, step or constant."""
    total = max(1, hp.epochs * steps_per_epoch)
    warmup = min(hp.warmup_epochs * steps_per_epoch, total // 2)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if hp.schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if hp.schedule == "step":
            return hp.gamma ** ((step // steps_per_epoch) // max(1, hp.step_size))
        if hp.schedule == "constant":
            return 1.0
        raise ValueError(f"unknown schedule {hp.schedule!r} (cosine, step or constant)")

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --------------------------------------------------------------------------- results of a fit


@dataclass
class FitResult:
    curve: list[dict[str, Any]] = field(default_factory=list)
    best_accuracy: float = 0.0
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    measured_images: int = 0
    measured_seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)
    eval_images: int = 0
    batch_size: int = 0

    @property
    def final_accuracy(self) -> float:
        return self.curve[-1]["eval_accuracy"] if self.curve else 0.0

    def cost(self) -> dict[str, Any]:
        """Throughput figures from the measured (post warm-up) steps."""
        out: dict[str, Any] = {
            "train_seconds": self.train_seconds,
            "eval_seconds": self.eval_seconds,
            "batch_size": self.batch_size,
        }
        if self.measured_seconds > 0 and self.measured_images:
            out["train_images_per_s"] = self.measured_images / self.measured_seconds
            compute = self.phase_seconds.get("compute", 0.0)
            data = self.phase_seconds.get("data", 0.0)
            out["compute_images_per_s"] = self.measured_images / compute if compute else None
            out["data_images_per_s"] = self.measured_images / data if data else None
            # The share of end-to-end step time not spent computing: waiting for data.
            out["data_stall_fraction"] = max(0.0, 1.0 - compute / self.measured_seconds)
        if self.eval_seconds > 0 and self.eval_images:
            out["eval_images_per_s"] = self.eval_images / self.eval_seconds
        return out


EpochCallback = Callable[[int, dict[str, Any]], None]


def _record_epoch(
    result: FitResult, epoch: int, train_loss: float, evaluation: dict[str, Any], seconds: float,
    images: int, state: Callable[[], dict[str, torch.Tensor]] | None, on_epoch: EpochCallback | None,
) -> None:
    metrics = {
        "epoch": epoch,
        "train_loss": train_loss,
        "eval_accuracy": evaluation["accuracy"],
        "eval_balanced_accuracy": evaluation["balanced_accuracy"],
        "eval_loss": evaluation["loss"],
        "epoch_seconds": seconds,
        "train_images_per_s": images / seconds if seconds > 0 else None,
    }
    result.curve.append(metrics)
    if evaluation["accuracy"] > result.best_accuracy or result.best_epoch == 0:
        result.best_accuracy, result.best_epoch = evaluation["accuracy"], epoch
        if state is not None:
            result.best_state = state()
    if on_epoch is not None:
        on_epoch(epoch, metrics)


def _state_copy(module: nn.Module) -> Callable[[], dict[str, torch.Tensor]]:
    return lambda: {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------- evaluation


@torch.inference_mode()
def evaluate_logits(
    logits_of: Callable[[int, int], torch.Tensor],
    labels: torch.Tensor,
    num_classes: int,
    batch_size: int,
    device: torch.device,
) -> dict[str, Any]:
    """Top-1, balanced accuracy and mean loss; `logits_of(start, stop)` gives a batch's logits."""
    n = len(labels)
    labels = labels.to(device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        logits = logits_of(start, stop).float()
        y = labels[start:stop]
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        confusion += torch.bincount(y * num_classes + logits.argmax(1), minlength=num_classes**2)
    confusion = confusion.view(num_classes, num_classes).cpu()  # the one sync
    correct = confusion.diag()
    support = confusion.sum(1)
    present = support > 0
    return {
        "accuracy": float(correct.sum() / max(1, n)),
        "balanced_accuracy": float((correct[present] / support[present]).mean()) if present.any() else 0.0,
        "loss": float(loss_sum) / max(1, n),
    }


def evaluate_images(
    model: nn.Module, data: ImageTensors, image_size: int, num_classes: int, batch_size: int,
    ex: Execution, images_on_device: torch.Tensor | None = None,
) -> dict[str, Any]:
    model.eval()
    images = images_on_device if images_on_device is not None else data.images

    def logits_of(start: int, stop: int) -> torch.Tensor:
        x = images[start:stop].to(ex.device, non_blocking=True)
        x = center_crop(x, image_size)
        if ex.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with ex.autocast:
            return model(x)

    return evaluate_logits(logits_of, data.labels, num_classes, batch_size, ex.device)


# --------------------------------------------------------------------------- image training


def _to_device_if_fits(images: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """The whole uint8 split on the GPU when it takes under a quarter of free memory."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    if images.numel() * images.element_size() < free // 4:
        return images.to(device)
    return None


def train_images(
    model: ImageClassifier,
    groups: list[dict],
    train: ImageTensors,
    evalset: ImageTensors,
    *,
    num_classes: int,
    image_size: int,
    hp: Hyperparameters,
    ex: Execution,
    seed: int,
    on_epoch: EpochCallback | None = None,
    keep_best: bool = False,
) -> FitResult:
    """Train `model` end to end on decoded images; evaluate after every epoch."""
    device = ex.device
    n = len(train)
    batch = min(hp.batch_size, n)
    # A last batch of one breaks BatchNorm in training mode; drop it when it happens.
    drop_last = n % batch == 1
    steps = n // batch if drop_last else math.ceil(n / batch)
    optimizer = make_optimizer(groups, hp)
    schedule = make_schedule(optimizer, hp, steps)
    criterion = nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing)
    generator = torch.Generator().manual_seed(seed)

    model.to(device)
    if ex.channels_last:
        model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if ex.compile else model
    train_images_dev = _to_device_if_fits(train.images, device)
    eval_images_dev = _to_device_if_fits(evalset.images, device)
    src_images = train_images_dev if train_images_dev is not None else train.images
    src_labels = train.labels.to(device) if train_images_dev is not None else train.labels
    pin = device.type == "cuda" and train_images_dev is None

    result = FitResult(batch_size=batch)
    clock = PhaseClock(device)
    state = _state_copy(model) if keep_best else None
    step_index = 0
    for epoch in range(1, hp.epochs + 1):
        model.train()
        synchronize(device)
        epoch_start = time.perf_counter()
        measure_start = epoch_start if step_index >= WARMUP_STEPS else None
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        seen = 0
        perm = torch.randperm(n, generator=generator)
        if train_images_dev is not None:
            perm = perm.to(device)
        for s in range(steps):
            measuring = measure_start is not None
            if measuring:
                clock.start("data")
            idx = perm[s * batch : (s + 1) * batch]
            x, y = src_images[idx], src_labels[idx]
            if pin:
                x, y = x.pin_memory(), y.pin_memory()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            x = random_resized_crop_flip(x, image_size, generator) if hp.augment else center_crop(x, image_size)
            if ex.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if measuring:
                clock.stop("data")
                clock.start("compute")
            with ex.autocast:
                loss = criterion(step_model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.detach().double() * len(idx)
            seen += len(idx)
            if measuring:
                clock.stop("compute")
                result.measured_images += len(idx)
            step_index += 1
            if measure_start is None and step_index >= WARMUP_STEPS:
                synchronize(device)  # the warm-up boundary
                measure_start = time.perf_counter()
        train_loss = float(loss_sum) / max(1, seen)  # the epoch's one host sync
        epoch_end = time.perf_counter()
        result.train_seconds += epoch_end - epoch_start
        if measure_start is not None:
            result.measured_seconds += epoch_end - measure_start
        if not math.isfinite(train_loss):
            raise Diverged(epoch, train_loss)

        t0 = time.perf_counter()
        evaluation = evaluate_images(
            step_model, evalset, image_size, num_classes, 2 * batch, ex, eval_images_dev
        )
        eval_seconds = time.perf_counter() - t0
        result.eval_seconds += eval_seconds
        result.eval_images += len(evalset)
        _record_epoch(
            result, epoch, train_loss, evaluation, epoch_end - epoch_start, seen, state, on_epoch
        )
    synchronize(device)
    result.phase_seconds = clock.collect()
    return result


# --------------------------------------------------------------------------- cached features


@torch.inference_mode()
def extract_features(
    model: ImageClassifier, data: ImageTensors, image_size: int, batch_size: int, ex: Execution
) -> torch.Tensor:
    """Backbone features of every image (centre crop), as float32 on the CPU."""
    model.eval().to(ex.device)
    if ex.channels_last:
        model.to(memory_format=torch.channels_last)
    chunks = []
    for start in range(0, len(data), batch_size):
        x = data.images[start : start + batch_size].to(ex.device, non_blocking=True)
        x = center_crop(x, image_size)
        if ex.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with ex.autocast:
            chunks.append(model.features(x).float())
    return torch.cat(chunks).cpu()


def train_head_on_features(
    head: FeatureHead,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    eval_x: torch.Tensor,
    eval_y: torch.Tensor,
    *,
    num_classes: int,
    hp: Hyperparameters,
    ex: Execution,
    seed: int,
    on_epoch: EpochCallback | None = None,
    keep_best: bool = False,
) -> FitResult:
    """Train the linear head on cached features, mini-batch, on the device."""
    device = ex.device
    train_x, train_y = train_x.to(device), train_y.to(device)
    eval_x, eval_y = eval_x.to(device), eval_y.to(device)
    with torch.no_grad():
        head.mean.copy_(train_x.mean(0))
        head.std.copy_(train_x.std(0).clamp_min(1e-6) if len(train_x) > 1 else torch.ones_like(head.std))
    head.to(device)
    n = len(train_x)
    batch = min(hp.batch_size, n)
    steps = math.ceil(n / batch)
    optimizer = make_optimizer([{"params": list(head.parameters()), "lr": hp.lr}], hp)
    schedule = make_schedule(optimizer, hp, steps)
    criterion = nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing)
    generator = torch.Generator().manual_seed(seed)
    result = FitResult(batch_size=batch)
    state = _state_copy(head) if keep_best else None
    for epoch in range(1, hp.epochs + 1):
        head.train()
        synchronize(device)
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        perm = torch.randperm(n, generator=generator).to(device)
        for s in range(steps):
            idx = perm[s * batch : (s + 1) * batch]
            loss = criterion(head(train_x[idx]), train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.detach().double() * len(idx)
        train_loss = float(loss_sum) / n
        elapsed = time.perf_counter() - t0
        result.train_seconds += elapsed
        result.measured_seconds += elapsed
        result.measured_images += n
        result.phase_seconds["compute"] = result.measured_seconds  # features are in memory: no data phase
        if not math.isfinite(train_loss):
            raise Diverged(epoch, train_loss)
        head.eval()
        t0 = time.perf_counter()
        evaluation = evaluate_logits(
            lambda a, b: head(eval_x[a:b]), eval_y, num_classes, 4096, device
        )
        result.eval_seconds += time.perf_counter() - t0
        result.eval_images += len(eval_y)
        _record_epoch(result, epoch, train_loss, evaluation, elapsed, n, state, on_epoch)
    return result


def copy_module(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module)
