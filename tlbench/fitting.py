"""What every fit loop shares: its result, its epoch bookkeeping and its undone warm-up.

A fit (`image_fit.train_images`, `head_fit.train_head_on_features`,
`probe.fit_logistic_probe`) returns a `FitResult`: the accuracy curve and the
raw timing behind its cost figures. Each epoch is recorded (`record_epoch`,
which tells the run's `on_epoch`) and added to the measured totals
(`count_epoch`, which ends the fit with `Diverged` on a non-finite loss).
The warm-up before the clock meets every batch shape (`batch_sizes`) and is
undone (`undone`), so the result is the same as without it.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tlbench.optim import TrainStep


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, loss: float):
        self.epoch, self.loss = epoch, loss
        super().__init__(f"training loss became {loss} in epoch {epoch}; try a smaller --lr")


@dataclass
class FitResult:
    """What a fit produced: the accuracy curve and the raw timing behind its cost figures."""

    curve: list[dict[str, Any]] = field(default_factory=list)
    best_accuracy: float = 0.0
    best_epoch: int = 0
    #: wall seconds of all training epochs (warm-up and uploads excluded).
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    #: images and wall seconds of the measured steps (every step of every epoch).
    measured_images: int = 0
    measured_seconds: float = 0.0
    measured_steps: int = 0
    #: training steps run (and undone) in the warm-up, before the clock started.
    warmup_steps: int = 0
    #: wall seconds of the warm-up (every shape met once: autotuning, compilation, set-up).
    warmup_seconds: float = 0.0
    #: the batch sizes the warm-up ran: {"train": [...], "eval": [...]}.
    warmup_batches: dict[str, list[int]] = field(default_factory=dict)
    #: wall seconds putting the splits (or features) on the device, before the clock.
    upload_seconds: float = 0.0
    #: bytes of data kept on the device during the fit (0 when it stays on the host).
    resident_data_bytes: int = 0
    #: seconds of the measured steps spent in each phase ("data", "compute").
    phase_seconds: dict[str, float] = field(default_factory=dict)
    eval_images: int = 0
    batch_size: int = 0
    #: which evaluation images the last epoch classified correctly (bool, on the host, in
    #: the eval split's order): what pairs two single runs image by image.
    final_correct: torch.Tensor | None = None
    #: graphs torch.compile captured in this fit (None: the fit was not compiled).
    compiled_graphs: int | None = None
    #: other Python threads alive during the timed epochs (`note_threads`).
    timed_with_threads: list[str] = field(default_factory=list)

    @property
    def final_accuracy(self) -> float:
        return self.curve[-1]["eval_accuracy"] if self.curve else 0.0

    def cost(self) -> dict[str, Any]:
        """Throughput figures from the measured steps (the warm-up is never among them).

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
            "warmup_seconds": self.warmup_seconds,
            "upload_seconds": self.upload_seconds,
            "resident_data_bytes": self.resident_data_bytes,
            "batch_size": self.batch_size,
            "warmup_steps": self.warmup_steps,
            "warmup_batches": self.warmup_batches,
            "measured_steps": self.measured_steps,
        }
        if self.compiled_graphs is not None:
            out["compiled_graphs"] = self.compiled_graphs
        if self.timed_with_threads:
            out["timed_with_threads"] = list(self.timed_with_threads)
        if self.measured_seconds > 0 and self.measured_images:
            compute = self.phase_seconds.get("compute", 0.0)
            data = self.phase_seconds.get("data", 0.0)
            out["train_images_per_s"] = self.measured_images / self.measured_seconds
            out["compute_images_per_s"] = self.measured_images / compute if compute > 0 else None
            out["data_images_per_s"] = self.measured_images / data if data > 0 else None
            # Phases never add up to more than the wall time they lie in, so at most 1.
            out["data_stall_fraction"] = max(0.0, 1.0 - compute / self.measured_seconds)
        if self.eval_seconds > 0 and self.eval_images:
            out["eval_images_per_s"] = self.eval_images / self.eval_seconds
        return out


EpochCallback = Callable[[int, dict[str, Any]], None]

#: told "eval" when an epoch's training is done and its evaluation starts (the live view).
PhaseCallback = Callable[[str], None]


def record_epoch(
    result: FitResult,
    epoch: int,
    train_loss: float,
    evaluation: dict[str, Any],
    seconds: float,
    images: int,
    on_epoch: EpochCallback | None,
    rates: dict[str, float] | None = None,
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
    if rates is not None:
        metrics["lr"] = rates
    result.curve.append(metrics)
    if evaluation.get("correct") is not None:
        result.final_correct = evaluation["correct"]
    if evaluation["accuracy"] > result.best_accuracy or result.best_epoch == 0:
        result.best_accuracy, result.best_epoch = evaluation["accuracy"], epoch
    if on_epoch is not None:
        on_epoch(epoch, metrics)


def count_epoch(
    result: FitResult, epoch: int, train_loss: float, seconds: float, images: int, steps: int
) -> None:
    """Add a trained epoch to the measured totals; a non-finite loss ends the fit."""
    result.train_seconds += seconds
    result.measured_seconds += seconds
    result.measured_images += images
    result.measured_steps += steps
    if not math.isfinite(train_loss):
        raise Diverged(epoch, train_loss)


def tell_phase(on_phase: PhaseCallback | None, name: str) -> None:
    if on_phase is not None:
        on_phase(name)


def batch_sizes(n: int, batch: int, drop_last: bool = False) -> list[int]:
    """The distinct batch sizes a pass over `n` items in batches of `batch` meets, in order."""
    if n <= batch:
        return [n]
    rest = n % batch
    return [batch] + ([rest] if rest and not drop_last else [])


@contextlib.contextmanager
def undone(
    module: nn.Module, step: TrainStep, generators: list[torch.Generator], device: torch.device
) -> Iterator[None]:
    """Run the block, then put back all it changed: weights, buffers, optimiser, schedule, scaler, RNG.

    The copy of the weights goes to the host, so the warm-up adds nothing to
    the device's peak memory. Weights are copied back in place: the optimiser,
    a compiled graph and the caller keep the very same parameter objects.
    """
    weights = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
    step_state = step.state()
    generator_states = [g.get_state() for g in generators]
    rng_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        yield
    with torch.no_grad():
        module.load_state_dict(weights)
    step.restore(step_state)
    for generator, state in zip(generators, generator_states, strict=True):
        generator.set_state(state)


#: threads that never run while a fit is timed (the pool worker's parent watch, asleep).
IDLE_THREAD_PREFIX = "tlbench-idle"


def note_threads(result: FitResult) -> None:
    """Name the other Python threads alive in a timed epoch (a live display's refresh thread).

    They share the interpreter, and on a CPU the cores, with the timed loop:
    a record that says so is not compared as if the run had the process alone.
    """
    me = threading.current_thread()
    for thread in threading.enumerate():
        name = thread.name
        idle = name.startswith(IDLE_THREAD_PREFIX)
        if thread is not me and not idle and name not in result.timed_with_threads:
            result.timed_with_threads.append(name)
