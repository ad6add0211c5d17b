"""The one training loop every strategy shares, feature extraction, and evaluation.

The loop is tight: batches are gathered from the decoded uint8 tensor (on the
device when it fits, else through pinned memory with non-blocking copies),
augmented there, and one `TrainStep` runs forward, backward and the optimiser.
The loss is accumulated on the device and read back once per epoch: nothing in
the step loop waits on the host. Timing follows `tlbench.timing`: before the
clock starts, the splits are uploaded (timed apart) and every shape the run
will meet (the full and the last, partial batch; training and evaluation) is
run once and undone (`warm-up`: cuDNN autotuning, compilation, kernel and
handle set-up, timed apart); then every step of every epoch is measured, the
device is synchronised only at measurement boundaries, and the time of every
step is split into a data and a compute phase.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tlbench.api import Hyperparameters, Preprocessing
from tlbench.data import ImageTensors, center_crop, random_resized_crop_flip
from tlbench.errors import TlbenchError
from tlbench.timing import PhaseClock, release_host_memory, synchronize

#: the precisions a run can ask for; "auto" resolves to one of them (`Execution.resolve`).
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: torch.compile's backend under `compile=True`. Tests set "eager" (dynamo's graph
#: capture without code generation): what they check is that graphs are captured.
COMPILE_BACKEND = "inductor"


class NothingCompiled(TlbenchError):
    """A run asked for `--compile` captured no graph: it would run eager, recorded as compiled."""


def compiled_graph_count() -> int:
    """Graphs dynamo has captured in this process so far (a counter that only grows)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, loss: float):
        self.epoch, self.loss = epoch, loss
        super().__init__(f"training loss became {loss} in epoch {epoch}; try a smaller --lr")


@dataclass(frozen=True)
class Execution:
    """How the work runs on the hardware; stored beside every figure it produced.

    `precision`: "fp32" is true IEEE fp32 (TF32 off for matmuls and cuDNN
    convolutions, which PyTorch otherwise runs in TF32 on Ampere and newer);
    "tf32" is fp32 storage with TF32 tensor-core math (CUDA, compute
    capability 8.0+); "bf16" and "fp16" are autocast, fp16 with a gradient
    scaler. Under autocast the ops it leaves in fp32 run in true fp32 too.
    """

    device: torch.device
    precision: str = "fp32"  # one of PRECISIONS
    channels_last: bool = False
    compile: bool = False
    #: cuDNN autotuning per input shape (CUDA): the one-off cost is paid in the warm-up.
    cudnn_benchmark: bool = True

    @classmethod
    def resolve(
        cls,
        device: torch.device,
        precision: str = "auto",
        channels_last: bool | None = None,
        compile: bool = False,
    ) -> Execution:
        """The harness's defaults for `device`, where a setting is left unset.

        `precision="auto"`: on CUDA bf16 autocast where the GPU runs bf16 natively
        (compute capability 8.0 or newer), else fp16 autocast with a gradient
        scaler; fp32 elsewhere (CPU bf16 is an option: few CPUs run it faster).
        Channels-last is on everywhere unless turned off: on this project's
        2-core CPU, training steps ran 1.10x (ResNet-18) to 1.37x
        (EfficientNet-Lite0) faster, and Lite0 inference 1.29x
        (benchmarks/measure_memory_format.py); on CUDA it is what cuDNN's
        fastest convolutions expect.
        """
        capability = _capability(device)
        if precision == "auto":
            if device.type == "cuda":
                precision = "bf16" if capability >= (8, 0) else "fp16"
            else:
                precision = "fp32"
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be auto, {', '.join(PRECISIONS)}, not {precision!r}")
        if precision == "tf32":
            if device.type != "cuda":
                raise ValueError(f"precision tf32 is a CUDA setting; on {device.type} use fp32")
            if capability < (8, 0):
                raise ValueError(
                    "precision tf32 needs compute capability 8.0 or newer (Ampere); this GPU "
                    f"has {capability[0]}.{capability[1]}: use fp32 or fp16"
                )
        return cls(device, precision, True if channels_last is None else channels_last, compile)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return _AUTOCAST_DTYPES.get(self.precision)

    @property
    def autocast(self) -> torch.autocast:
        dtype = self.autocast_dtype
        return torch.autocast(
            self.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None
        )

    @property
    def tf32(self) -> bool:
        """Whether fp32 matmuls and convolutions may run in TF32 (only `precision="tf32"`)."""
        return self.precision == "tf32"

    def apply_backends(self) -> None:
        """Set the process's TF32 and cuDNN autotuning flags this execution stands for (CUDA).

        Process-wide, so set again by every fit and extraction: a run never
        inherits the settings of the one before it.
        """
        if self.device.type != "cuda":
            return
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        set_tf32(self.tf32)
        self.check_backends()

    def check_backends(self) -> None:
        """Raise unless the process's TF32 flags, read back, are this execution's.

        A run keyed "fp32" whose convolutions ran in TF32 would be a wrong
        figure under a right-looking label: it fails instead, naming the flags.
        """
        if self.device.type != "cuda":
            return
        from tlbench.timing import backend_state

        state = backend_state()
        wrong = {
            k: state.get(k) for k in ("tf32_matmul", "tf32_cudnn") if state.get(k) != self.tf32
        }
        if wrong:
            raise TlbenchError(
                f"precision {self.precision} needs TF32 {'on' if self.tf32 else 'off'}, but "
                f"PyTorch reads back {wrong} after tlbench set it; the run would not be "
                f"{self.precision}"
            )

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """fp16 needs loss scaling (its range is too narrow for small gradients)."""
        if self.precision != "fp16":
            return None
        return torch.amp.GradScaler(self.device.type)

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
        on `model` stay valid. Dynamo is reset first: every backbone's
        `ImageClassifier.forward` is one code object, so without a reset the
        fits before this one would have spent its recompile limit and this one
        would silently run eager (measured: from the fourth backbone of a grid
        on, no graph at all).
        """
        self.place(model)
        if not self.compile:
            return model
        torch._dynamo.reset()
        return torch.compile(model, backend=COMPILE_BACKEND)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        """A float batch already on the device, in the execution's memory format."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def to_dict(self) -> dict[str, Any]:
        """The settings that change a result: part of run keys, so a pure function of the fields.

        The device is its type: which index ran a run is an executor's choice.
        On CUDA the TF32 and autotuning settings are included (what really ran
        is read back by `tlbench.timing.backend_state`).
        """
        out: dict[str, Any] = {
            "device": self.device.type,
            "precision": self.precision,
            "memory_format": "channels_last" if self.channels_last else "contiguous",
            "compile": self.compile,
        }
        if self.device.type == "cuda":
            out["tf32"] = self.tf32
            out["cudnn_benchmark"] = self.cudnn_benchmark
        return out


def set_tf32(on: bool) -> None:
    """TF32 on or off for fp32 matmuls and cuDNN convolutions (and RNNs), process-wide.

    Through the per-backend API (`fp32_precision`) where this PyTorch has it:
    there the legacy `allow_tf32` setters are not reliable once anything used
    the new API (with `torch.backends.fp32_precision = "tf32"` set first,
    `cudnn.allow_tf32 = False` left convolutions in TF32). cuDNN's conv and RNN
    flags are set alike, so the legacy getters still answer.
    """
    cudnn = torch.backends.cudnn
    if hasattr(getattr(cudnn, "conv", None), "fp32_precision"):
        word = "tf32" if on else "ieee"
        cudnn.fp32_precision = word  # CUDA's parent level, which the operators below inherit
        torch.backends.cuda.matmul.fp32_precision = word
        cudnn.conv.fp32_precision = word
        cudnn.rnn.fp32_precision = word
        return
    torch.backends.cuda.matmul.allow_tf32 = on
    cudnn.allow_tf32 = on


def _capability(device: torch.device) -> tuple[int, int]:
    if device.type != "cuda":
        return (0, 0)
    return tuple(torch.cuda.get_device_capability(device))  # type: ignore[return-value]


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
        # Zero, as a logistic-regression probe starts: a feature that never varied in
        # training (std clamped to 1e-6) gets no gradient, so a random weight on it
        # would stay and, times 1e6 on a test image, decide every prediction.
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def standardise_by(self, features: torch.Tensor) -> None:
        """Keep `features`' mean and std (the training split's): the head applies them."""
        with torch.no_grad():
            self.mean.copy_(features.mean(0))
            if len(features) > 1:
                self.std.copy_(features.std(0).clamp_min(1e-6))

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
        make = functools.partial(torch.optim.SGD, lr=hp.lr, momentum=hp.momentum, nesterov=nesterov)
    elif hp.optimizer == "adamw":
        make = functools.partial(torch.optim.AdamW, lr=hp.lr)
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


# --------------------------------------------------------------------------- the step


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


def _fits_on_device(nbytes: int, device: torch.device) -> bool:
    """Keep a split on the GPU when it takes under a quarter of free memory."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes < free // 4


def _to_device_if_fits(images: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """The whole uint8 split on the device when it fits (`_fits_on_device`), else None."""
    if _fits_on_device(images.numel() * images.element_size(), device):
        return images.to(device)
    return None


def _nbytes(*tensors: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is an out-of-memory in any of the forms PyTorch raises it.

    `torch.OutOfMemoryError` (the caching allocator, `torch.cuda.OutOfMemoryError`);
    a `RuntimeError` from cuDNN, cuBLAS or the CUDA runtime whose message says
    it failed to allocate (`CUDNN_STATUS_ALLOC_FAILED`, `CUBLAS_STATUS_ALLOC_FAILED`,
    "CUDA error: out of memory"), from MPS or from the CPU allocator; and any of
    these wrapped by another exception, as `torch.compile` wraps an OOM met while
    compiling (`BackendCompilerFailed`, through `inner_exception` or the cause
    chain). "out of resource" (Triton's shared memory per block) is not memory
    a smaller batch frees, and is not an OOM.
    """
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, torch.OutOfMemoryError):
            return True
        if isinstance(current, RuntimeError) and _OOM_MESSAGE.search(str(current)):
            return True
        stack += [
            getattr(current, "inner_exception", None),
            current.__cause__,
            current.__context__,
        ]
    return False


_OOM_MESSAGE = re.compile(
    r"out of memory|CUDNN_STATUS_ALLOC_FAILED|CUBLAS_STATUS_ALLOC_FAILED|CUSOLVER_STATUS_ALLOC_FAILED"
    r"|CUFFT_ALLOC_FAILED|DefaultCPUAllocator: (?:can't allocate|not enough) memory",
    re.IGNORECASE,
)


class DataOnDeviceOOM(RuntimeError):
    """A fit ran out of device memory with its data on the device (`__cause__`: the OOM).

    The data is the one allocation that need not be there: the next attempt
    keeps it on the host, at the same batch (`next_attempt_after_oom`).
    """

    def __init__(self, resident_bytes: int):
        self.resident_bytes = resident_bytes
        super().__init__(
            f"out of memory with {resident_bytes / 2**20:.0f} MiB of data on the device"
            if resident_bytes > 0
            else "out of memory while putting the data on the device"
        )


@dataclass(frozen=True)
class Attempt:
    """How a fit is tried: its batch size, and whether its data may stay on the device."""

    batch_size: int
    data_on_device: bool = True


def next_attempt_after_oom(exc: BaseException, attempt: Attempt) -> Attempt | None:
    """What to try after an out-of-memory `exc` in `attempt`; None when nothing is left.

    First the data moves to the host at the same batch (when the failed fit
    had it on the device: a `DataOnDeviceOOM` in the chain), so the batch
    size, and with it the result, stays what was asked; then the batch halves.
    """
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, DataOnDeviceOOM) and attempt.data_on_device:
            return dataclasses.replace(attempt, data_on_device=False)
        stack += [current.__cause__, current.__context__]
    if attempt.batch_size <= 1:
        return None
    return dataclasses.replace(attempt, batch_size=attempt.batch_size // 2)


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
        on_device = _to_device_if_fits(data.images, ex.device) if on_device else None
        self.on_device = on_device is not None
        self.images = on_device if on_device is not None else data.images
        self.labels = data.labels.to(ex.device) if self.on_device else data.labels
        #: bytes of this split kept on the device for the whole fit (0 when it stays on the host).
        self.device_bytes = _nbytes(self.images, self.labels) if self.on_device else 0
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
    #: other Python threads alive during the timed epochs (`_note_threads`).
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


def _record_epoch(
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


def group_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """Each parameter group's learning rate now, by the group's name (a strategy's
    `param_groups` names them; an unnamed one is `group<i>`): the rate of the next step."""
    rates: dict[str, float] = {}
    for i, group in enumerate(optimizer.param_groups):
        rates.setdefault(str(group.get("name") or f"group{i}"), float(group["lr"]))
    return rates


# --------------------------------------------------------------------------- evaluation


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
    labels = _host_to_device(labels, device)
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
        x = center_crop(_host_to_device(images[start:stop], ex.device), image_size)
        with ex.autocast:
            return model(ex.to_input(x))

    return logits_of


# --------------------------------------------------------------------------- image training


def _batch_sizes(n: int, batch: int, drop_last: bool = False) -> list[int]:
    """The distinct batch sizes a pass over `n` items in batches of `batch` meets, in order."""
    if n <= batch:
        return [n]
    rest = n % batch
    return [batch] + ([rest] if rest and not drop_last else [])


@contextlib.contextmanager
def _undone(
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
    _resident: list[int] | None = None,
) -> FitResult:
    """Train `model` end to end on decoded images; evaluate after every epoch.

    Before the clock: the splits go to the device when they fit (timed as
    `upload_seconds`, their bytes as `resident_data_bytes`), then the warm-up
    runs one training step at each batch size an epoch meets (full and last,
    partial batch) and one evaluation at each of its batch sizes, and undoes
    them (`_undone`): cuDNN autotuning, `torch.compile`'s graphs and
    recompilations, kernel and handle set-up all happen there, timed as
    `warmup_seconds`, so the result is the same as without it and no run pays
    a one-off cost another run of the same architecture does not. Then every
    step is `BatchLoader` (the data phase) then `TrainStep` (the compute phase),
    all of them measured; the device is synchronised at each epoch's end, where
    the loss is read back: never inside the loop.
    """
    fit = _ImageFit.make(model, groups, train, evalset, image_size, num_classes, hp, ex, seed)
    result = fit.upload(data_on_device)
    if _resident is not None:
        _resident[0] = result.resident_data_bytes
    release_host_memory()  # what building and loading the model left behind
    if warmup:
        _phase(on_phase, "train warm-up")
        fit.warm_up(result)
        _check_compiled(ex, result, fit.graphs_before)  # before the clock: fail in seconds
        release_host_memory()
    clock = PhaseClock(ex.device)
    for epoch in range(1, hp.epochs + 1):
        _phase(on_phase, "train")
        rates = group_rates(fit.optimizer)  # the epoch's first step's, per group (host values)
        train_loss, seconds, seen = fit.epoch(result, clock)
        _count_epoch(result, epoch, train_loss, seconds, seen, fit.steps)
        # The epoch's freed activations, before evaluation allocates its own on top.
        release_host_memory()
        _phase(on_phase, "eval")
        t0 = time.perf_counter()
        # The final evaluation's per image, for paired comparisons.
        evaluation = fit.evaluate(per_image=epoch == hp.epochs)
        result.eval_seconds += time.perf_counter() - t0  # evaluate_* ends on a host read
        result.eval_images += len(evalset)
        _record_epoch(result, epoch, train_loss, evaluation, seconds, seen, on_epoch, rates)
    synchronize(ex.device)
    result.phase_seconds = clock.collect()
    _check_compiled(ex, result, fit.graphs_before)
    return result


def _phase(on_phase: PhaseCallback | None, name: str) -> None:
    if on_phase is not None:
        on_phase(name)


def _count_epoch(
    result: FitResult, epoch: int, train_loss: float, seconds: float, images: int, steps: int
) -> None:
    """Add a trained epoch to the measured totals; a non-finite loss ends the fit."""
    result.train_seconds += seconds
    result.measured_seconds += seconds
    result.measured_images += images
    result.measured_steps += steps
    if not math.isfinite(train_loss):
        raise Diverged(epoch, train_loss)


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
            self.eval_images_dev = _to_device_if_fits(self.evalset.images, device)
        synchronize(device)
        return FitResult(
            batch_size=self.batch,
            upload_seconds=time.perf_counter() - t0,
            resident_data_bytes=self.loader.device_bytes + _nbytes(self.eval_images_dev),
        )

    def warm_up(self, result: FitResult) -> None:
        """One step at each training batch size, one evaluation at each eval batch size,
        undone (`_undone`), timed as `warmup_seconds`."""
        loader, device = self.loader, self.ex.device
        assert loader is not None
        train_sizes = _batch_sizes(len(self.train), self.batch, self.drop_last)
        eval_sizes = _batch_sizes(len(self.evalset), self.eval_batch)
        t0 = time.perf_counter()
        with _undone(self.model, self.step, [loader.augment_generator], device):
            self.model.train()
            start = 0
            for size in train_sizes:
                idx = torch.arange(start, start + size)
                x, y = loader(_host_to_device(idx, device) if loader.on_device else idx)
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
        _note_threads(result)
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
        _note_threads(result)
        return train_loss, epoch_end - epoch_start, seen

    def evaluate(self, per_image: bool) -> dict[str, Any]:
        return evaluate_images(
            self.step_model, self.evalset, self.image_size, self.num_classes, self.eval_batch,
            self.ex, self.eval_images_dev, per_image=per_image,
        )  # fmt: skip


#: threads that never run while a fit is timed (the pool worker's parent watch, asleep).
IDLE_THREAD_PREFIX = "tlbench-idle"


def _note_threads(result: FitResult) -> None:
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


# --------------------------------------------------------------------------- cached features


@torch.inference_mode()
def extract_features(
    model: ImageClassifier, data: ImageTensors, image_size: int, batch_size: int, ex: Execution
) -> torch.Tensor:
    """Backbone features of every image (centre crop), as float32 on the CPU."""
    ex.apply_backends()
    ex.place(model.eval())
    chunks = []
    for start in range(0, len(data), batch_size):
        x = _host_to_device(data.images[start : start + batch_size], ex.device)
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
    for size in _batch_sizes(len(data), batch_size):
        x = _host_to_device(data.images[:size], ex.device)
        with ex.autocast:
            model.features(ex.to_input(center_crop(x, image_size)))
    synchronize(ex.device)
    return time.perf_counter() - t0


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
    2 shared cores).
    """
    with _one_cpu_thread(ex.device):
        fit, result = _HeadFit.upload(
            head, (train_x, train_y, eval_x, eval_y), hp, num_classes=num_classes, ex=ex, seed=seed
        )
        if warmup:
            _phase(on_phase, "train warm-up")
            fit.warm_up(result)
        n = len(fit.train_y)
        for epoch in range(1, hp.epochs + 1):
            _phase(on_phase, "train")
            rates = group_rates(fit.optimizer)
            train_loss, elapsed = fit.epoch(result)
            _count_epoch(result, epoch, train_loss, elapsed, n, fit.steps)
            # The features are already on the device: the whole step is compute.
            result.phase_seconds["compute"] = result.measured_seconds
            head.eval()
            _phase(on_phase, "eval")
            t0 = time.perf_counter()
            evaluation = fit.evaluate(per_image=epoch == hp.epochs)  # the final one, for pairing
            result.eval_seconds += time.perf_counter() - t0
            result.eval_images += len(fit.eval_y)
            _record_epoch(result, epoch, train_loss, evaluation, elapsed, n, on_epoch, rates)
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
        resident = _nbytes(train_x, train_y, eval_x, eval_y) if device.type != "cpu" else 0
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
        train_sizes = _batch_sizes(len(self.train_x), self.batch)
        t0 = time.perf_counter()
        with _undone(self.head, self.step, [], self.device):
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
            "eval": _batch_sizes(len(self.eval_y), HEAD_EVAL_BATCH),
        }

    def epoch(self, result: FitResult) -> tuple[float, float]:
        """One measured epoch: (mean training loss, wall seconds)."""
        n, batch = len(self.train_x), self.batch
        self.head.train()
        _note_threads(result)
        synchronize(self.device)
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        perm = _host_to_device(torch.randperm(n, generator=self.generator), self.device)
        for s in range(self.steps):
            idx = perm[s * batch : (s + 1) * batch]
            loss_sum.add_(self.step(self.train_x[idx], self.train_y[idx]), alpha=idx.shape[0])
        train_loss = float(loss_sum) / n  # the epoch's one host sync
        return train_loss, time.perf_counter() - t0
