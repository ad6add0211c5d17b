"""The training loop on images that every end-to-end strategy shares.

The loop is tight: batches are gathered from the decoded uint8 tensor (on the
device when it fits, else through pinned memory with non-blocking copies),
augmented there, and one `TrainStep` runs forward, backward and the optimiser.
The loss is accumulated on the device and read back once per epoch: nothing in
the step loop waits on the host. Timing follows `tlbench.clocks`: before the
clock starts, the splits are uploaded (timed apart) and every shape the run
will meet (the full and the last, partial batch; training and evaluation) is
run once and undone (`warm-up`: cuDNN autotuning, compilation, kernel and
handle set-up, timed apart); then every step of every epoch is measured, the
device is synchronised only at measurement boundaries, and the time of every
step is split into a data and a compute phase.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tlbench.classifier import ImageClassifier
from tlbench.clocks import PhaseClock
from tlbench.data import ImageTensors, center_crop, random_resized_crop_flip
from tlbench.devices import host_to_device, synchronize
from tlbench.evaluation import evaluate_images
from tlbench.execution import Execution, NothingCompiled, compiled_graph_count
from tlbench.fitting import (
    EpochCallback,
    FitResult,
    PhaseCallback,
    batch_sizes,
    count_epoch,
    note_threads,
    record_epoch,
    tell_phase,
    undone,
)
from tlbench.memory import (
    DataOnDeviceOOM,
    is_out_of_memory,
    nbytes,
    release_host_memory,
    to_device_if_fits,
)
from tlbench.optim import TrainStep, group_rates, make_optimizer, make_schedule
from tlbench.plugin_types import Hyperparameters
from tlbench.rungs import Rung, Training


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
        self,
        data: ImageTensors,
        image_size: int,
        ex: Execution,
        *,
        augment: bool,
        seed: int,
        on_device: bool = True,
    ):
        self.ex, self.image_size, self.augment = ex, image_size, augment
        on_device = to_device_if_fits(data.images, ex.device) if on_device else None
        self.on_device = on_device is not None
        self.images = on_device if on_device is not None else data.images
        self.labels = data.labels.to(ex.device) if self.on_device else data.labels
        #: bytes of this split kept on the device for the whole fit (0 when it stays on the host).
        self.device_bytes = nbytes(self.images, self.labels) if self.on_device else 0
        self.augment_generator = torch.Generator(device=ex.device).manual_seed(seed)

    def __len__(self) -> int:
        return len(self.labels)

    def permutation(self, generator: torch.Generator) -> torch.Tensor:
        """This epoch's order, drawn on the host (the same order on every device)."""
        perm = torch.randperm(len(self.labels), generator=generator)
        return host_to_device(perm, self.ex.device) if self.on_device else perm

    def __call__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.ex.device
        x, y = self.images[idx], self.labels[idx]
        x, y = host_to_device(x, device), host_to_device(y, device)
        if self.augment:
            x = random_resized_crop_flip(x, self.image_size, self.augment_generator)
        else:
            x = center_crop(x, self.image_size)
        return self.ex.to_input(x), y


def train_images(
    model: ImageClassifier,
    groups: list[dict],
    train: ImageTensors,
    evalset: ImageTensors,
    *,
    data_on_device: bool = True,
    **kwargs: Any,
) -> FitResult:
    """`fit_images` (its arguments), with the splits on the device only if `data_on_device`.

    An out-of-memory while the data was on the device (or going there) is
    raised as a `DataOnDeviceOOM` from it, so the caller's retry moves the
    data to the host before it halves the batch (`next_attempt_after_oom`).
    """
    resident = [-1]  # -1: uploading; then the bytes kept on the device
    try:
        return fit_images(
            model, groups, train, evalset, data_on_device=data_on_device, _resident=resident,
            **kwargs,
        )  # fmt: skip
    except Exception as exc:
        uploading = resident[0] < 0 and data_on_device and kwargs["ex"].device.type == "cuda"
        if (resident[0] > 0 or uploading) and is_out_of_memory(exc):
            raise DataOnDeviceOOM(max(0, resident[0])) from exc
        raise


def fit_images(
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
    warmup: bool = True,
    data_on_device: bool = True,
    rung: Rung | None = None,
    _resident: list[int] | None = None,
) -> FitResult:
    """Train `model` end to end on decoded images; evaluate after every epoch.

    Before the clock: the splits go to the device when they fit (timed as
    `upload_seconds`, their bytes as `resident_data_bytes`), then the warm-up
    runs one training step at each batch size an epoch meets (full and last,
    partial batch) and one evaluation at each of its batch sizes, and undoes
    them (`undone`): cuDNN autotuning, `torch.compile`'s graphs and
    recompilations, kernel and handle set-up all happen there, timed as
    `warmup_seconds`, so the result is the same as without it and no run pays
    a one-off cost another run of the same architecture does not. Then every
    step is `BatchLoader` (the data phase) then `TrainStep` (the compute phase),
    all of them measured; the device is synchronised at each epoch's end, where
    the loss is read back: never inside the loop. A `rung` trains only some
    epochs of the schedule (`tlbench.rungs`), continuing from an earlier rung's state.
    """
    fit = _ImageFit.make(model, groups, train, evalset, image_size, num_classes, hp, ex, seed)
    result = fit.upload(data_on_device)
    if _resident is not None:
        _resident[0] = result.resident_data_bytes
    release_host_memory()  # what building and loading the model left behind
    if warmup:
        tell_phase(on_phase, "train warm-up")
        fit.warm_up(result)
        _check_compiled(ex, result, fit.graphs_before)  # before the clock: fail in seconds
        release_host_memory()
    rung = rung or Rung.whole(hp.epochs)
    assert fit.loader is not None
    streams = [fit.generator, fit.loader.augment_generator]
    training = Training(fit.model, fit.step, streams, fit.batch)
    rung.restore(training, result)
    clock = PhaseClock(ex.device)
    for epoch in range(rung.start + 1, rung.stop + 1):
        tell_phase(on_phase, "train")
        rates = group_rates(fit.optimizer)  # the epoch's first step's, per group (host values)
        train_loss, seconds, seen = fit.epoch(result, clock)
        count_epoch(result, epoch, train_loss, seconds, seen, fit.steps)
        # The epoch's freed activations, before evaluation allocates its own on top.
        release_host_memory()
        tell_phase(on_phase, "eval")
        t0 = time.perf_counter()
        # The final evaluation's per image, for paired comparisons.
        evaluation = fit.evaluate(per_image=epoch == rung.stop)
        result.eval_seconds += time.perf_counter() - t0  # evaluate_* ends on a host read
        result.eval_images += len(evalset)
        record_epoch(result, epoch, train_loss, evaluation, seconds, seen, on_epoch, rates)
    synchronize(ex.device)
    result.phase_seconds = clock.collect()
    _check_compiled(ex, result, fit.graphs_before)
    rung.save(training, result)
    return result


@dataclass
class _ImageFit:
    """The parts of one end-to-end fit, made once: what its warm-up, epochs and
    evaluations share (`fit_images`)."""

    model: ImageClassifier
    #: what a step calls: `model`, or `torch.compile(model)` under `compile=True`.
    step_model: nn.Module
    optimizer: torch.optim.Optimizer
    step: TrainStep
    train: ImageTensors
    evalset: ImageTensors
    image_size: int
    num_classes: int
    ex: Execution
    batch: int
    steps: int
    #: a last batch of one breaks BatchNorm in training mode: dropped when it happens.
    drop_last: bool
    generator: torch.Generator
    augment_seed: int
    augment: bool
    graphs_before: int
    loader: BatchLoader | None = None
    eval_images_dev: torch.Tensor | None = None

    @classmethod
    def make(
        cls,
        model: ImageClassifier,
        groups: list[dict],
        train: ImageTensors,
        evalset: ImageTensors,
        image_size: int,
        num_classes: int,
        hp: Hyperparameters,
        ex: Execution,
        seed: int,
    ) -> _ImageFit:
        n = len(train)
        batch = min(hp.batch_size, n)
        drop_last = n % batch == 1
        steps = n // batch if drop_last else math.ceil(n / batch)
        ex.apply_backends()
        # Placed before the optimiser is built: the fused CUDA kernels check where
        # parameters live.
        step_model = ex.prepare(model)
        optimizer = make_optimizer(groups, hp, ex.device)
        schedule = make_schedule(optimizer, hp, steps)
        criterion = nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing)
        generator = torch.Generator().manual_seed(seed)
        # A seed of its own for the augmentation: a second generator seeded with the
        # same number would draw the very stream the permutations draw.
        augment_seed = int(torch.randint(2**62, (1,), generator=generator))
        return cls(
            model=model,
            step_model=step_model,
            optimizer=optimizer,
            step=TrainStep(step_model, optimizer, criterion, ex, schedule),
            train=train,
            evalset=evalset,
            image_size=image_size,
            num_classes=num_classes,
            ex=ex,
            batch=batch,
            steps=steps,
            drop_last=drop_last,
            generator=generator,
            augment_seed=augment_seed,
            augment=hp.augment,
            graphs_before=compiled_graph_count() if ex.compile else 0,
        )

    @property
    def eval_batch(self) -> int:
        return 2 * self.batch

    def upload(self, data_on_device: bool) -> FitResult:
        """The splits to the device where they fit, timed: the fit's result so far."""
        device = self.ex.device
        synchronize(device)
        t0 = time.perf_counter()
        self.loader = BatchLoader(
            self.train,
            self.image_size,
            self.ex,
            augment=self.augment,
            seed=self.augment_seed,
            on_device=data_on_device,
        )
        if data_on_device:
            self.eval_images_dev = to_device_if_fits(self.evalset.images, device)
        synchronize(device)
        return FitResult(
            batch_size=self.batch,
            upload_seconds=time.perf_counter() - t0,
            resident_data_bytes=self.loader.device_bytes + nbytes(self.eval_images_dev),
        )

    def warm_up(self, result: FitResult) -> None:
        """One step at each training batch size, one evaluation at each eval batch size,
        undone (`undone`), timed as `warmup_seconds`."""
        loader, device = self.loader, self.ex.device
        assert loader is not None
        train_sizes = batch_sizes(len(self.train), self.batch, self.drop_last)
        eval_sizes = batch_sizes(len(self.evalset), self.eval_batch)
        t0 = time.perf_counter()
        with undone(self.model, self.step, [loader.augment_generator], device):
            self.model.train()
            start = 0
            for size in train_sizes:
                idx = torch.arange(start, start + size)
                x, y = loader(host_to_device(idx, device) if loader.on_device else idx)
                self.step(x, y)
                start += size
            k = sum(eval_sizes)
            resident = None if self.eval_images_dev is None else self.eval_images_dev[:k]
            evaluate_images(
                self.step_model, ImageTensors(self.evalset.images[:k], self.evalset.labels[:k]),
                self.image_size, self.num_classes, self.eval_batch, self.ex, resident,
            )  # fmt: skip
        synchronize(device)
        result.warmup_seconds = time.perf_counter() - t0
        result.warmup_steps = len(train_sizes)
        result.warmup_batches = {"train": train_sizes, "eval": eval_sizes}

    def epoch(self, result: FitResult, clock: PhaseClock) -> tuple[float, float, int]:
        """One measured epoch: (mean training loss, wall seconds, images seen)."""
        loader, device, batch = self.loader, self.ex.device, self.batch
        assert loader is not None
        self.model.train()
        note_threads(result)
        synchronize(device)
        epoch_start = time.perf_counter()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        seen = 0
        perm = loader.permutation(self.generator)
        for s in range(self.steps):
            clock.start("data")
            x, y = loader(perm[s * batch : (s + 1) * batch])
            clock.stop("data")
            clock.start("compute")
            loss = self.step(x, y)
            loss_sum.add_(loss, alpha=y.shape[0])
            clock.stop("compute")
            seen += y.shape[0]
        train_loss = float(loss_sum) / max(1, seen)  # the epoch's one host sync
        epoch_end = time.perf_counter()
        # This epoch's CUDA events are complete (the read above waited for them):
        # read and released now, not held to the end of the fit.
        clock.collect()
        note_threads(result)
        return train_loss, epoch_end - epoch_start, seen

    def evaluate(self, per_image: bool) -> dict[str, Any]:
        return evaluate_images(
            self.step_model, self.evalset, self.image_size, self.num_classes, self.eval_batch,
            self.ex, self.eval_images_dev, per_image=per_image,
        )  # fmt: skip


def _check_compiled(ex: Execution, result: FitResult, graphs_before: int) -> None:
    """Record how many graphs the fit captured; a compiled fit that captured none fails."""
    if not ex.compile:
        return
    result.compiled_graphs = compiled_graph_count() - graphs_before
    if result.compiled_graphs == 0:
        raise NothingCompiled(
            "--compile captured no graph (torch.compile fell back to eager: a recompile "
            "limit reached or a graph break on every frame); the run would be timed eager "
            "while recorded as compiled"
        )
