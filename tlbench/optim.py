"""Optimisation: the optimiser, the learning-rate schedule and one training step.

`make_optimizer` (AdamW or SGD, no weight decay on biases and normalisation
parameters, fused kernels on CUDA) and `make_schedule` (linear warm-up, then
cosine, step or constant, per step) are shared by every fit; `TrainStep` is
the one step every fit runs: forward under autocast, backward, the
optimiser's step, the schedule's. `SGD`, `AdamW` and `LBFGS` are torch's,
less the import of torch._dynamo their first use makes (`_eager`).
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
from typing import Any

import torch
from torch import nn

from tlbench.execution import Execution
from tlbench.plugin_types import Hyperparameters

#: The methods every torch.optim optimiser inherits wrapped in `torch._disable_dynamo`.
_DYNAMO_WRAPPED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")


def _eager(optimizer_class: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """`optimizer_class` running torch's own code without importing torch._dynamo.

    A torch.optim optimiser imports torch._dynamo on first use, 1.5 s on a
    2-core CPU (more than the rest of a warm `tlbench run`) and an exit hook
    besides: `add_param_group`, `zero_grad`, `state_dict` and `load_state_dict`
    are wrapped in `torch._disable_dynamo`, which imports it to mark them not
    compilable, and `step` in `_use_grad_for_differentiable`, which imports it
    to break a compiled graph around the step. tlbench never compiles an
    optimiser step, and in eager mode both wrappers only call what they wrap
    (the second under `torch.set_grad_enabled(differentiable)`). So the
    subclass calls the wrapped functions themselves (`inspect.unwrap`) and sets
    the grad mode as `step`'s wrapper did: the same arithmetic bit for bit and
    the same state dicts (tests/test_optim_eager.py), without the import.
    """
    methods: dict[str, Any] = {
        name: inspect.unwrap(getattr(torch.optim.Optimizer, name)) for name in _DYNAMO_WRAPPED
    }
    step = inspect.unwrap(optimizer_class.step)

    def eager_step(self: torch.optim.Optimizer, closure: Any = None) -> Any:
        with torch.set_grad_enabled(bool(self.defaults.get("differentiable", False))):
            return step(self, closure)

    methods.update(step=eager_step, __module__=__name__, __doc__=optimizer_class.__doc__)
    return type(optimizer_class.__name__, (optimizer_class,), methods)


SGD = _eager(torch.optim.SGD)
AdamW = _eager(torch.optim.AdamW)
LBFGS = _eager(torch.optim.LBFGS)


def make_optimizer(
    groups: list[dict], hp: Hyperparameters, device: torch.device | None = None
) -> torch.optim.Optimizer:
    """AdamW or SGD; no weight decay on biases and normalisation parameters.

    On CUDA the fused kernels (one launch per step for all parameters, and no
    host sync under a gradient scaler); elsewhere PyTorch's default.
    """
    split: list[dict] = []
    for group in groups:
        params = [p for p in group["params"] if p.requires_grad]
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        if decay:
            split.append({**group, "params": decay, "weight_decay": hp.weight_decay})
        if no_decay:
            split.append({**group, "params": no_decay, "weight_decay": 0.0})
    if not split:
        raise ValueError("the strategy left no trainable parameter")
    kernels: dict[str, Any] = (
        {"fused": True} if device is not None and device.type == "cuda" else {}
    )
    if hp.optimizer == "sgd":
        nesterov = hp.nesterov and hp.momentum > 0
        make = functools.partial(SGD, lr=hp.lr, momentum=hp.momentum, nesterov=nesterov)
    elif hp.optimizer == "adamw":
        make = functools.partial(AdamW, lr=hp.lr)
    else:
        raise ValueError(f"unknown optimizer {hp.optimizer!r} (adamw or sgd)")
    try:
        return make(split, **kernels)
    except RuntimeError:  # a parameter the fused kernel does not take: the foreach one
        return make(split, foreach=True)


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


def group_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """Each parameter group's learning rate now, by the group's name (a strategy's
    `param_groups` names them; an unnamed one is `group<i>`): the rate of the next step."""
    rates: dict[str, float] = {}
    for i, group in enumerate(optimizer.param_groups):
        rates.setdefault(str(group.get("name") or f"group{i}"), float(group["lr"]))
    return rates


class TrainStep:
    """One optimisation step of the shared loop, exactly as `train_images` runs it.

    Forward under the execution's autocast (none in fp32 and tf32), loss,
    backward, optimiser step (through a gradient scaler in fp16) and, if given,
    the per-step learning-rate schedule. Returns the loss detached and still on
    the device: reading it is left to the caller, at a logging boundary, so a
    step never waits on the host. Public so that a benchmark can time the
    harness's step against a bare PyTorch loop on the same model, batch, dtype
    and memory format (`benchmarks/test_speed.py`).
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
        self.dtype = ex.autocast_dtype
        self.device_type = ex.device.type
        self.scaler = ex.grad_scaler()

    @property
    def autocast(self) -> bool:
        return self.dtype is not None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.dtype is not None:
            with torch.autocast(self.device_type, dtype=self.dtype):
                loss = self.criterion(self.model(x), y)
        else:
            loss = self.criterion(self.model(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        if self.schedule is not None:
            self.schedule.step()
        return loss.detach()

    def state(self) -> dict[str, Any]:
        """What a step changes besides the model: optimiser, schedule and scaler (copied)."""
        return copy.deepcopy(
            {
                "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict() if self.schedule is not None else None,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            }
        )

    def restore(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.schedule is not None:
            self.schedule.load_state_dict(state["schedule"])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
