"""The training loop of a linear head on cached features (mini-batch, on the device).

The full-batch L-BFGS alternative is `tlbench.probe`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tlbench.classifier import FeatureHead
from tlbench.devices import host_to_device, synchronize
from tlbench.evaluation import evaluate_logits
from tlbench.execution import Execution
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
from tlbench.memory import nbytes
from tlbench.optim import TrainStep, group_rates, make_optimizer, make_schedule
from tlbench.plugin_types import Hyperparameters
from tlbench.rungs import Rung, Training


@contextlib.contextmanager
def one_cpu_thread(device: torch.device) -> Iterator[None]:
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


#: evaluation batch of the head on cached features (a linear layer: large batches are cheap).
HEAD_EVAL_BATCH = 4096


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
    warmup: bool = True,
    rung: Rung | None = None,
) -> FitResult:
    """Train the linear head on cached features: mini-batch, on the device, L2 by weight decay.

    The choice (rather than full-batch L-BFGS): the strategy's own optimiser,
    schedule, batch size and epochs, exactly as a tutorial trains its head, so
    `linear` differs from the tutorial only in computing the frozen features
    once instead of every epoch. The features are standardised with the
    training split's mean and std (stored in the head, so it applies to raw
    features), which lets one learning rate suit every backbone's feature scale.
    The features never leave the device; the loss is read once per epoch. As
    in `train_images`, the upload is timed apart and every batch size is met
    once in an undone warm-up before the clock starts; every epoch is then
    measured. On a CPU the head trains on one thread: its matrices are too
    small to gain from more, and on a busy machine every parallel region of
    every tiny op would wait for descheduled threads (measured: 30x slower on
    2 shared cores). A `rung` trains only some epochs of the schedule
    (`tlbench.rungs`), continuing from an earlier rung's state.
    """
    rung = rung or Rung.whole(hp.epochs)
    with one_cpu_thread(ex.device):
        fit, result = _HeadFit.upload(
            head, (train_x, train_y, eval_x, eval_y), hp, num_classes=num_classes, ex=ex, seed=seed
        )
        if warmup:
            tell_phase(on_phase, "train warm-up")
            fit.warm_up(result)
        n = len(fit.train_y)
        training = Training(head, fit.step, [fit.generator], fit.batch)
        rung.restore(training, result)
        for epoch in range(rung.start + 1, rung.stop + 1):
            tell_phase(on_phase, "train")
            rates = group_rates(fit.optimizer)
            train_loss, elapsed = fit.epoch(result)
            count_epoch(result, epoch, train_loss, elapsed, n, fit.steps)
            # The features are already on the device: the whole step is compute.
            result.phase_seconds["compute"] = result.measured_seconds
            head.eval()
            tell_phase(on_phase, "eval")
            t0 = time.perf_counter()
            evaluation = fit.evaluate(per_image=epoch == rung.stop)  # the final one, for pairing
            result.eval_seconds += time.perf_counter() - t0
            result.eval_images += len(fit.eval_y)
            record_epoch(result, epoch, train_loss, evaluation, elapsed, n, on_epoch, rates)
        rung.save(training, result)
        return result


@dataclass
class _HeadFit:
    """The parts of one fit of a head on features, on the device (`train_head_on_features`)."""

    head: FeatureHead
    optimizer: torch.optim.Optimizer
    step: TrainStep
    train_x: torch.Tensor
    train_y: torch.Tensor
    eval_x: torch.Tensor
    eval_y: torch.Tensor
    num_classes: int
    batch: int
    steps: int
    generator: torch.Generator
    device: torch.device

    @classmethod
    def upload(
        cls, head: FeatureHead, data: tuple[torch.Tensor, ...], hp: Hyperparameters, **given: Any
    ) -> tuple[_HeadFit, FitResult]:
        """The features to the device (timed apart), the head standardised by them, and
        its optimiser: the fit and its result so far. `data`: training features and
        labels, evaluation features and labels; `given`: `num_classes`, `ex`, `seed`."""
        ex, seed = given["ex"], given["seed"]
        device = ex.device
        ex.apply_backends()
        synchronize(device)
        t0 = time.perf_counter()
        train_x, train_y, eval_x, eval_y = (t.to(device) for t in data)
        synchronize(device)
        upload_seconds = time.perf_counter() - t0
        resident = nbytes(train_x, train_y, eval_x, eval_y) if device.type != "cpu" else 0
        head.standardise_by(train_x)
        head.to(device)
        n = len(train_x)
        batch = min(hp.batch_size, n)
        steps = math.ceil(n / batch)
        optimizer = make_optimizer(
            [{"params": list(head.parameters()), "lr": hp.lr, "name": "head"}], hp, device
        )
        schedule = make_schedule(optimizer, hp, steps)
        criterion = nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing)
        # A linear layer gains nothing from bf16 and would lose precision: fp32 always.
        step = TrainStep(
            head, optimizer, criterion, dataclasses.replace(ex, precision="fp32"), schedule
        )
        fit = cls(
            head, optimizer, step, train_x, train_y, eval_x, eval_y, given["num_classes"], batch,
            steps, torch.Generator().manual_seed(seed), device,
        )  # fmt: skip
        result = FitResult(
            batch_size=batch, upload_seconds=upload_seconds, resident_data_bytes=resident
        )
        return fit, result

    def evaluate(self, per_image: bool = False) -> dict[str, Any]:
        return evaluate_logits(
            lambda a, b: self.head(self.eval_x[a:b]),
            self.eval_y,
            self.num_classes,
            HEAD_EVAL_BATCH,
            self.device,
            per_image,
        )

    def warm_up(self, result: FitResult) -> None:
        """Every batch size once, and an evaluation, undone; timed as `warmup_seconds`."""
        train_sizes = batch_sizes(len(self.train_x), self.batch)
        t0 = time.perf_counter()
        with undone(self.head, self.step, [], self.device):
            self.head.train()
            start = 0
            for size in train_sizes:
                self.step(self.train_x[start : start + size], self.train_y[start : start + size])
                start += size
            self.head.eval()
            self.evaluate()
        synchronize(self.device)
        result.warmup_seconds = time.perf_counter() - t0
        result.warmup_steps = len(train_sizes)
        result.warmup_batches = {
            "train": train_sizes,
            "eval": batch_sizes(len(self.eval_y), HEAD_EVAL_BATCH),
        }

    def epoch(self, result: FitResult) -> tuple[float, float]:
        """One measured epoch: (mean training loss, wall seconds)."""
        n, batch = len(self.train_x), self.batch
        self.head.train()
        note_threads(result)
        synchronize(self.device)
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        perm = host_to_device(torch.randperm(n, generator=self.generator), self.device)
        for s in range(self.steps):
            idx = perm[s * batch : (s + 1) * batch]
            loss_sum.add_(self.step(self.train_x[idx], self.train_y[idx]), alpha=idx.shape[0])
        train_loss = float(loss_sum) / n  # the epoch's one host sync
        return train_loss, time.perf_counter() - t0
