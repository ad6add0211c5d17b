"""The one training loop every strategy shares, feature extraction, and evaluation.

The loop is tight: batches are gathered from the decoded uint8 tensor (on the
device when it fits, else through pinned memory with non-blocking copies),
augmented there, and one `TrainStep` runs forward, backward and the optimiser.
The loss is accumulated on the device and read back once per epoch: nothing in
the step loop waits on the host. Timing follows `tlbench.timing`: the first
`WARMUP_STEPS` steps are excluded (allocator, cuDNN autotuning, compilation),
the device is synchronised only at measurement boundaries, and the time of
every measured step is split into a data and a compute phase.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tlbench.api import Hyperparameters, Preprocessing
from tlbench.data import ImageTensors, center_crop, random_resized_crop_flip
from tlbench.timing import PhaseClock, release_host_memory, synchronize

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

    @classmethod
    def resolve(
        cls,
        device: torch.device,
        precision: str = "auto",
        channels_last: bool | None = None,
        compile: bool = False,
    ) -> Execution:
        """The harness's defaults for `device`, where a setting is left unset.

        `precision="auto"` is bf16 autocast on CUDA and fp32 elsewhere (CPU bf16
        is an option: few CPUs run it faster). Channels-last is on everywhere
        unless turned off: on this project's 2-core CPU, training steps ran 1.10x
        (ResNet-18) to 1.37x (EfficientNet-Lite0) faster, and Lite0 inference
        1.29x (benchmarks/measure_memory_format.py); on CUDA it is what cuDNN's
        fastest convolutions expect.
        """
        if precision == "auto":
            precision = "bf16" if device.type == "cuda" else "fp32"
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, not {precision!r}")
        return cls(device, precision, True if channels_last is None else channels_last, compile)

    @property
    def autocast(self) -> torch.autocast:
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"
        )

    def place(self, model: nn.Module) -> nn.Module:
        """Move `model` to the device, in channels-last if asked; returns `model`."""
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def prepare(self, model: nn.Module) -> nn.Module:
        """`place` the model for training and return what to call.

        The returned module is `torch.compile(model)` under `compile=True`; it
        shares its parameters with `model`, so optimisers and state dicts built
        on `model` stay valid.
        """
        self.place(model)
        return torch.compile(model) if self.compile else model

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        """A float batch already on the device, in the execution's memory format."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

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
        return torch.optim.SGD(
            split, lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov and hp.momentum > 0
        )
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


# --------------------------------------------------------------------------- the step


class TrainStep:
    """One optimisation step of the shared loop, exactly as `train_images` runs it.

    Forward under the execution's autocast (none in fp32), loss, backward,
    optimiser step and, if given, the per-step learning-rate schedule. Returns
    the loss detached and still on the device: reading it is left to the caller,
    at a logging boundary, so a step never waits on the host. Public so that a
    benchmark can time the harness's step against a bare PyTorch loop on the
    same model, batch, dtype and memory format (`benchmarks/test_speed.py`).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        criterion: nn.Module,
        ex: Execution,
        schedule: torch.optim.lr_scheduler.LRScheduler | None = None,
    ):
        self.model, self.optimizer, self.criterion = model, optimizer, criterion
        self.schedule = schedule
        self.autocast = ex.precision == "bf16"
        self.device_type = ex.device.type

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.autocast:
            with torch.autocast(self.device_type, dtype=torch.bfloat16):
                loss = self.criterion(self.model(x), y)
        else:
            loss = self.criterion(self.model(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.schedule is not None:
            self.schedule.step()
        return loss.detach()


def _to_device_if_fits(images: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """The whole uint8 split on the GPU when it takes under a quarter of free memory."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    if images.numel() * images.element_size() < free // 4:
        return images.to(device)
    return None


def _host_to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A non-blocking copy; from pinned memory, as a pageable source would make it blocking."""
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device, non_blocking=True)


class BatchLoader:
    """Training batches from a decoded split, ready for `TrainStep`: the data phase.

    The split stays a uint8 tensor; a batch is gathered by index (on the GPU
    when the split fits there, else on the host and copied through pinned
    memory without blocking), then augmented (random resized crop + flip,
    `augment=True`) or centre-cropped there, converted to float in [0, 1] and
    put in the execution's memory format. Nothing here reads a device value
    back to the host. The augmentation's random numbers come from a generator
    on the device, so drawing them needs no host-to-device copy.
    """

    def __init__(
        self, data: ImageTensors, image_size: int, ex: Execution, *, augment: bool, seed: int
    ):
        self.ex, self.image_size, self.augment = ex, image_size, augment
        on_device = _to_device_if_fits(data.images, ex.device)
        self.on_device = on_device is not None
        self.images = on_device if on_device is not None else data.images
        self.labels = data.labels.to(ex.device) if self.on_device else data.labels
        self.augment_generator = torch.Generator(device=ex.device).manual_seed(seed)

    def __len__(self) -> int:
        return len(self.labels)

    def permutation(self, generator: torch.Generator) -> torch.Tensor:
        """This epoch's order, drawn on the host (the same order on every device)."""
        perm = torch.randperm(len(self.labels), generator=generator)
        return _host_to_device(perm, self.ex.device) if self.on_device else perm

    def __call__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.ex.device
        x, y = self.images[idx], self.labels[idx]
        x, y = _host_to_device(x, device), _host_to_device(y, device)
        if self.augment:
            x = random_resized_crop_flip(x, self.image_size, self.augment_generator)
        else:
            x = center_crop(x, self.image_size)
        return self.ex.to_input(x), y


# --------------------------------------------------------------------------- results of a fit


@dataclass
class FitResult:
    """What a fit produced: the accuracy curve and the raw timing behind its cost figures."""

    curve: list[dict[str, Any]] = field(default_factory=list)
    best_accuracy: float = 0.0
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    #: wall seconds of all training epochs, warm-up included (end to end).
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    #: images and wall seconds of the measured (post warm-up) steps only.
    measured_images: int = 0
    measured_seconds: float = 0.0
    measured_steps: int = 0
    warmup_steps: int = 0
    #: seconds of the measured steps spent in each phase ("data", "compute").
    phase_seconds: dict[str, float] = field(default_factory=dict)
    eval_images: int = 0
    batch_size: int = 0

    @property
    def final_accuracy(self) -> float:
        return self.curve[-1]["eval_accuracy"] if self.curve else 0.0

    def cost(self) -> dict[str, Any]:
        """Throughput figures from the measured (post warm-up) steps.

        `train_images_per_s` is end to end (wall clock over the measured steps),
        `compute_images_per_s` and `data_images_per_s` count only the time in
        each phase, and `data_stall_fraction` is the share of the measured wall
        time not spent computing: the time the model waited for its data (and
        for the loop's own bookkeeping, which is charged to data rather than
        flattering compute).
        """
        out: dict[str, Any] = {
            "train_seconds": self.train_seconds,
            "eval_seconds": self.eval_seconds,
            "batch_size": self.batch_size,
            "warmup_steps": self.warmup_steps,
            "measured_steps": self.measured_steps,
        }
        if self.measured_seconds > 0 and self.measured_images:
            compute = self.phase_seconds.get("compute", 0.0)
            data = self.phase_seconds.get("data", 0.0)
            out["train_images_per_s"] = self.measured_images / self.measured_seconds
            out["compute_images_per_s"] = self.measured_images / compute if compute > 0 else None
            out["data_images_per_s"] = self.measured_images / data if data > 0 else None
            out["data_stall_fraction"] = min(1.0, max(0.0, 1.0 - compute / self.measured_seconds))
        if self.eval_seconds > 0 and self.eval_images:
            out["eval_images_per_s"] = self.eval_images / self.eval_seconds
        return out


EpochCallback = Callable[[int, dict[str, Any]], None]
#: told "eval" when an epoch's training is done and its evaluation starts (the live view).
PhaseCallback = Callable[[str], None]


def _record_epoch(
    result: FitResult,
    epoch: int,
    train_loss: float,
    evaluation: dict[str, Any],
    seconds: float,
    images: int,
    state: Callable[[], dict[str, torch.Tensor]] | None,
    on_epoch: EpochCallback | None,
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
    """Top-1, balanced accuracy and mean loss; `logits_of(start, stop)` gives a batch's logits.

    Counts accumulate on the device; the confusion matrix is read back once.
    """
    n = len(labels)
    labels = _host_to_device(labels, device)
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
        "balanced_accuracy": float((correct[present] / support[present]).mean())
        if present.any()
        else 0.0,
        "loss": float(loss_sum) / max(1, n),
    }


def evaluate_images(
    model: nn.Module,
    data: ImageTensors,
    image_size: int,
    num_classes: int,
    batch_size: int,
    ex: Execution,
    images_on_device: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Evaluate on the centre crop of every image (torchvision's resize + centre crop)."""
    model.eval()
    images = images_on_device if images_on_device is not None else data.images

    def logits_of(start: int, stop: int) -> torch.Tensor:
        x = center_crop(_host_to_device(images[start:stop], ex.device), image_size)
        with ex.autocast:
            return model(ex.to_input(x))

    return evaluate_logits(logits_of, data.labels, num_classes, batch_size, ex.device)


# --------------------------------------------------------------------------- image training


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
    on_phase: PhaseCallback | None = None,
    keep_best: bool = False,
) -> FitResult:
    """Train `model` end to end on decoded images; evaluate after every epoch.

    Every step is `BatchLoader` (the data phase) then `TrainStep` (the compute
    phase). The first `WARMUP_STEPS` steps are run but left out of the
    throughput figures; the device is synchronised at the warm-up boundary and
    at each epoch's end, where the loss is read back: never inside the loop.
    """
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
    # A seed of its own for the augmentation: a second generator seeded with the
    # same number would draw the very stream the permutations draw.
    augment_seed = int(torch.randint(2**62, (1,), generator=generator))

    step_model = ex.prepare(model)
    step = TrainStep(step_model, optimizer, criterion, ex, schedule)
    loader = BatchLoader(train, image_size, ex, augment=hp.augment, seed=augment_seed)
    eval_images_dev = _to_device_if_fits(evalset.images, device)

    result = FitResult(batch_size=batch, warmup_steps=min(WARMUP_STEPS, steps * hp.epochs))
    clock = PhaseClock(device)
    state = _state_copy(model) if keep_best else None
    step_index = 0
    release_host_memory()  # what building and loading the model left behind
    for epoch in range(1, hp.epochs + 1):
        model.train()
        synchronize(device)
        epoch_start = time.perf_counter()
        measure_start = epoch_start if step_index >= WARMUP_STEPS else None
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        seen = 0
        perm = loader.permutation(generator)
        for s in range(steps):
            measuring = measure_start is not None
            if measuring:
                clock.start("data")
            x, y = loader(perm[s * batch : (s + 1) * batch])
            if measuring:
                clock.stop("data")
                clock.start("compute")
            loss = step(x, y)
            loss_sum.add_(loss, alpha=y.shape[0])
            if measuring:
                clock.stop("compute")
                result.measured_images += y.shape[0]
                result.measured_steps += 1
            seen += y.shape[0]
            step_index += 1
            if measure_start is None and step_index == WARMUP_STEPS:
                synchronize(device)  # the warm-up boundary: a measurement boundary
                measure_start = time.perf_counter()
        train_loss = float(loss_sum) / max(1, seen)  # the epoch's one host sync
        epoch_end = time.perf_counter()
        result.train_seconds += epoch_end - epoch_start
        if measure_start is not None:
            result.measured_seconds += epoch_end - measure_start
        if not math.isfinite(train_loss):
            raise Diverged(epoch, train_loss)
        # The epoch's freed activations, before evaluation allocates its own on top.
        release_host_memory()

        if on_phase is not None:
            on_phase("eval")
        t0 = time.perf_counter()
        evaluation = evaluate_images(
            step_model, evalset, image_size, num_classes, 2 * batch, ex, eval_images_dev
        )
        eval_seconds = time.perf_counter() - t0  # evaluate_* ends on a host read: synchronised
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
    ex.place(model.eval())
    chunks = []
    for start in range(0, len(data), batch_size):
        x = _host_to_device(data.images[start : start + batch_size], ex.device)
        x = ex.to_input(center_crop(x, image_size))
        with ex.autocast:
            chunks.append(model.features(x).float())
    return torch.cat(chunks).cpu()


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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
    on_phase: PhaseCallback | None = None,
    keep_best: bool = False,
) -> FitResult:
    """Train the linear head on cached features: mini-batch, on the device, L2 by weight decay.

    The choice (rather than full-batch L-BFGS): the strategy's own optimiser,
    schedule, batch size and epochs, exactly as a tutorial trains its head, so
    `linear` differs from the tutorial only in computing the frozen features
    once instead of every epoch. The features are standardised with the
    training split's mean and std (stored in the head, so it applies to raw
    features), which lets one learning rate suit every backbone's feature scale.
    The features never leave the device; the loss is read once per epoch. The
    first epoch is left out of the throughput when there are several. On a CPU
    the head trains on one thread: its matrices are too small to gain from
    more, and on a busy machine every parallel region of every tiny op would
    wait for descheduled threads (measured: 30x slower on 2 shared cores).
    """
    with _one_cpu_thread(ex.device):
        device = ex.device
        train_x, train_y = train_x.to(device), train_y.to(device)
        eval_x, eval_y = eval_x.to(device), eval_y.to(device)
        with torch.no_grad():
            head.mean.copy_(train_x.mean(0))
            if len(train_x) > 1:
                head.std.copy_(train_x.std(0).clamp_min(1e-6))
        head.to(device)
        n = len(train_x)
        batch = min(hp.batch_size, n)
        steps = math.ceil(n / batch)
        optimizer = make_optimizer([{"params": list(head.parameters()), "lr": hp.lr}], hp)
        schedule = make_schedule(optimizer, hp, steps)
        criterion = nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing)
        # A linear layer gains nothing from bf16 and would lose precision: fp32 always.
        step = TrainStep(
            head, optimizer, criterion, dataclasses.replace(ex, precision="fp32"), schedule
        )
        generator = torch.Generator().manual_seed(seed)
        warmup_epochs = 1 if hp.epochs > 1 else 0
        result = FitResult(batch_size=batch, warmup_steps=warmup_epochs * steps)
        state = _state_copy(head) if keep_best else None
        for epoch in range(1, hp.epochs + 1):
            head.train()
            synchronize(device)
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            perm = _host_to_device(torch.randperm(n, generator=generator), device)
            for s in range(steps):
                idx = perm[s * batch : (s + 1) * batch]
                loss_sum.add_(step(train_x[idx], train_y[idx]), alpha=idx.shape[0])
            train_loss = float(loss_sum) / n  # the epoch's one host sync
            elapsed = time.perf_counter() - t0
            result.train_seconds += elapsed
            if epoch > warmup_epochs:
                result.measured_seconds += elapsed
                result.measured_images += n
                result.measured_steps += steps
                # The features are already on the device: the whole step is compute.
                result.phase_seconds["compute"] = result.measured_seconds
            if not math.isfinite(train_loss):
                raise Diverged(epoch, train_loss)
            head.eval()
            if on_phase is not None:
                on_phase("eval")
            t0 = time.perf_counter()
            evaluation = evaluate_logits(
                lambda a, b: head(eval_x[a:b]), eval_y, num_classes, 4096, device
            )
            result.eval_seconds += time.perf_counter() - t0
            result.eval_images += len(eval_y)
            _record_epoch(result, epoch, train_loss, evaluation, elapsed, n, state, on_epoch)
        return result
