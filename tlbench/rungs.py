"""Successive-halving rungs: a run that trains the first epochs of its schedule, and goes on later.

A tuning trial under `--tune-pruner halving` trains in rungs: the first 3 of
its 30 epochs, then (if the pruner lets it on) epochs 4 to 10, then 11 to 30.
Each rung is a run spec of its own with `stop_epoch` set: it trains the first
`stop_epoch` epochs of the whole `hp.epochs`-epoch schedule (the learning
rate at epoch 3 is the 30-epoch schedule's, not a 3-epoch schedule's) and
leaves its training state (weights, optimiser, schedule, scaler, every random
stream, the curve so far) in `Workspace.rung_states`. The next rung of the
same trial finds the state of the latest earlier rung there and trains only
the epochs after it, so a trial that climbs every rung costs 30 epochs, not
3 + 10 + 30.

Resuming is an optimisation, like a cache: a rung continued from a state
ends exactly as the same rung trained from epoch 1 would (the test pins it),
so it is not part of the run's key. What the rung really trained is in its
record (`rung`: the epoch it resumed from, the epochs it trained) and in its
cost, which counts only those epochs; the search's cost adds every rung. A
state that is missing, unreadable or from another batch size (an
out-of-memory retry) is not used: the rung then trains from epoch 1.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tlbench.plugin_types import RunSpec

if TYPE_CHECKING:  # torch is imported where a state is read or written: the tuner needs none
    import torch
    from torch import nn

    from tlbench.fitting import FitResult

#: bumped when what a state holds changes (an older state is then not used).
STATE_VERSION = 1


class Stateful(Protocol):
    """What a fit's step is to a rung: its optimiser, schedule and scaler, as one state."""

    def state(self) -> dict[str, Any]: ...

    def restore(self, state: dict[str, Any]) -> None: ...


@dataclass
class Training:
    """What a rung's state is made of: the model, its step, its random streams and the batch
    size its schedule counts steps by."""

    module: nn.Module
    step: Stateful
    generators: list[torch.Generator]
    batch: int


@dataclass
class Rung:
    """Which epochs of its schedule a run trains, and the state it continues from and leaves.

    A run that is no rung trains epochs 1 to `stop` (its whole schedule) and
    neither reads nor writes a state (`whole`).
    """

    #: the last epoch this run trains.
    stop: int
    #: the state of an earlier rung of the same trial, if one may be there.
    load_from: Path | None = None
    #: where this rung's state is left for the next rung.
    save_to: Path | None = None
    #: the epochs the restored state had trained (0: this run starts at epoch 1).
    start: int = 0

    @classmethod
    def whole(cls, epochs: int) -> Rung:
        return cls(stop=epochs)

    @property
    def epochs_trained(self) -> int:
        return self.stop - self.start

    def facts(self, epochs: int) -> dict[str, Any]:
        """The record's `rung`: where this rung stops, of how many, and what it trained."""
        return {
            "stop_epoch": self.stop,
            "of_epochs": epochs,
            "resumed_from_epoch": self.start,
            "epochs_trained": self.epochs_trained,
        }

    def restore(self, training: Training, result: FitResult) -> None:
        """Continue from the earlier rung's state when there is a usable one: the weights,
        the step's state and every random stream as it left them, and its curve."""
        import torch

        self.start = 0  # an earlier attempt's (an out-of-memory retry's) is not this one's
        state = self._load(training.batch)
        if state is None:
            return
        with torch.no_grad():
            training.module.load_state_dict(state["module"])
        training.step.restore(state["step"])
        for generator, saved in zip(training.generators, state["generators"], strict=True):
            generator.set_state(saved)
        torch.set_rng_state(state["cpu_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        result.curve = list(state["curve"])
        for metrics in result.curve:
            if metrics["eval_accuracy"] > result.best_accuracy or result.best_epoch == 0:
                result.best_accuracy, result.best_epoch = metrics["eval_accuracy"], metrics["epoch"]
        self.start = int(state["epoch"])

    def save(self, training: Training, result: FitResult) -> None:
        """Leave this rung's state for the next (written whole or not at all)."""
        if self.save_to is None:
            return
        import torch

        state = {
            "version": STATE_VERSION,
            "epoch": self.stop,
            "batch": training.batch,
            "module": {k: v.detach().cpu() for k, v in training.module.state_dict().items()},
            "step": training.step.state(),
            "generators": [g.get_state() for g in training.generators],
            "cpu_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
            "curve": list(result.curve),
        }
        tmp = self.save_to.with_name(f".{self.save_to.name}.{os.getpid()}.tmp")
        try:
            self.save_to.parent.mkdir(parents=True, exist_ok=True)
            torch.save(state, tmp)
            os.replace(tmp, self.save_to)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            warnings.warn(
                f"cannot keep a tuning rung's training state in {self.save_to.parent} "
                f"({exc.strerror or exc}): its next rung trains from epoch 1",
                UserWarning,
                stacklevel=2,
            )

    def _load(self, batch: int) -> dict[str, Any] | None:
        if self.load_from is None or not self.load_from.is_file():
            return None
        import torch

        try:
            state = torch.load(self.load_from, map_location="cpu", weights_only=True)
        except Exception as exc:  # a torn or foreign file: train from epoch 1 instead
            warnings.warn(
                f"ignoring the unreadable tuning state {self.load_from} ({exc}); this rung "
                "trains from epoch 1",
                UserWarning,
                stacklevel=3,
            )
            return None
        usable = (
            isinstance(state, dict)
            and state.get("version") == STATE_VERSION
            and state.get("batch") == batch
            and isinstance(state.get("epoch"), int)
            and 0 < state["epoch"] < self.stop
        )
        return state if usable else None


def state_path(folder: Path, spec: RunSpec) -> Path:
    """Where the rung `spec` leaves its state in `folder`."""
    return folder / f"{spec.key}.pt"


def rung_for(spec: RunSpec, folder: Path | None) -> Rung:
    """The rung `spec` trains: its whole schedule, or (`spec.stop_epoch`) its first epochs,
    continuing from the latest earlier rung of the same trial whose state is in `folder`."""
    epochs = spec.hp.epochs
    if spec.stop_epoch is None:
        return Rung.whole(epochs)
    if folder is None:
        return Rung(stop=spec.stop_epoch)
    earlier = (
        state_path(folder, dataclasses.replace(spec, stop_epoch=stop))
        for stop in range(spec.stop_epoch - 1, 0, -1)
    )
    load_from = next((path for path in earlier if path.is_file()), None)
    save_to = state_path(folder, spec) if spec.stop_epoch < epochs else None
    return Rung(stop=spec.stop_epoch, load_from=load_from, save_to=save_to)


def forget(folder: Path, specs: list[RunSpec]) -> None:
    """Delete the states `specs` left (a trial that will train no further rung)."""
    for spec in specs:
        state_path(folder, spec).unlink(missing_ok=True)
