"""Execution policy: how the work runs on the hardware, stored beside every figure it produced.

`Execution` holds the device, precision (fp32, tf32, bf16 or fp16 autocast),
memory format and compile mode of a run; it sets the process's TF32 and cuDNN
flags for them and checks they took, places and compiles models, and gives
the settings that go into run keys (`to_dict`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tlbench.errors import TlbenchError

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
        from tlbench.devices import backend_state

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
        is read back by `tlbench.devices.backend_state`).
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
