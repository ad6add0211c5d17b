"""What a trained model costs to run: latency, throughput, memory and energy per image.

Measured after training, on the run's device and precision, the way training
is timed (DESIGN "Timing honestly"): each input shape runs `warmup` times
before any clock starts (allocator, autotuning, lazy initialisation; recorded
apart as `warmup_seconds`), the device is synchronised before and after every
timed call, and a figure is the median of repeated timings with their spread.

- Latency: one image per call (batch 1), p50 and p90 of up to `repeats`
  calls (at least `min_repeats`, then until `budget_seconds` is spent).
- Throughput: images per second at a serving batch (default: the run's
  training batch), the median over repeated calls, with min and max.
- Peak memory of inference alone, parameters, FLOPs per image at the run's size.
- Energy per 1,000 images where the hardware has a counter (`tlbench.energy`).

The cost depends on the model's architecture, input size, device and
precision, not on its weights, so a process measures a (backbone, size,
classes, execution, batch) once and every later run of it reuses the figure,
with `reused: true`: rows that share a model share its inference cost.
Inference cost is part of no run key.

`onnx_parity` exports the trained classifier with `torch.onnx`, runs it with
onnxruntime on the evaluation split and compares its top-1 with PyTorch's on
the same images; a difference beyond the tolerance the record states is a
parity failure, reported loudly, and the run still counts.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tlbench.data import center_crop
from tlbench.devices import synchronize
from tlbench.energy import EnergyMeter, meter_for
from tlbench.memory import PeakMemory, vm_kib

#: top-1 of an exported model may differ from PyTorch's by this many points (of 100) at
#: most: float reordering flips a few near-ties, a wrong export flips many.
ONNX_TOLERANCE_POINTS = 0.5


@dataclass(frozen=True)
class InferenceSettings:
    """How inference is timed; part of no run key."""

    #: the throughput batch; None: the run's training batch.
    batch: int | None = None
    warmup: int = 3
    repeats: int = 30
    min_repeats: int = 5
    #: time spent on one figure's repeats once `min_repeats` are in, seconds.
    budget_seconds: float = 1.0
    #: "onnx": export each trained model and check its parity; None: no export.
    export: str | None = None


@dataclass
class Timer:
    """The clock and the device barrier of a timing (a test passes fakes of both)."""

    clock: Callable[[], float] = time.perf_counter
    sync: Callable[[], None] = lambda: None

    @classmethod
    def on(cls, device: torch.device) -> Timer:
        return cls(time.perf_counter, lambda: synchronize(device))


@dataclass
class Timings:
    """Seconds of each timed call, and the untimed warm-up's."""

    samples: list[float]
    warmup_seconds: float


def time_calls(call: Callable[[], Any], settings: InferenceSettings, timer: Timer) -> Timings:
    """Warm `call` up untimed, then time it alone, synchronised, repeatedly."""
    t0 = timer.clock()
    for _ in range(settings.warmup):
        call()
    timer.sync()
    warmup = timer.clock() - t0
    samples: list[float] = []
    spent = 0.0
    while len(samples) < settings.repeats and (
        len(samples) < settings.min_repeats or spent < settings.budget_seconds
    ):
        timer.sync()
        start = timer.clock()
        call()
        timer.sync()
        samples.append(timer.clock() - start)
        spent += samples[-1]
    return Timings(samples, warmup)


#: the batch-1 figures: the same for a model whatever its serving batch.
LATENCY_FIGURES = (
    "latency_ms_p50",
    "latency_ms_p90",
    "latency_ms_min",
    "latency_ms_max",
    "latency_samples",
)


def latency_figures(timings: Timings) -> dict[str, Any]:
    """Batch-1 latency in milliseconds: p50, p90, min, max and how many calls."""
    ms = [s * 1000 for s in timings.samples]
    p50, p90 = (float(q) for q in np.quantile(ms, [0.5, 0.9]))
    return {
        "latency_ms_p50": p50,
        "latency_ms_p90": p90,
        "latency_ms_min": min(ms),
        "latency_ms_max": max(ms),
        "latency_samples": len(ms),
    }


def throughput_figures(timings: Timings, batch: int) -> dict[str, Any]:
    """Images per second at `batch`: the median call's, with the slowest and fastest."""
    rates = [batch / s for s in timings.samples if s > 0]
    return {
        "throughput_batch": batch,
        "throughput_images_per_s": statistics.median(rates) if rates else None,
        "throughput_images_per_s_min": min(rates) if rates else None,
        "throughput_images_per_s_max": max(rates) if rates else None,
        "throughput_samples": len(rates),
    }


def inputs(images: torch.Tensor, count: int, image_size: int, ex: Any) -> torch.Tensor:
    """`count` centre crops of the split's uint8 images (cycled when it has fewer), as the
    model sees them in evaluation: on the device, in the execution's memory format."""
    index = torch.arange(count) % len(images)
    x = center_crop(images[index].to(ex.device), image_size)
    return ex.to_input(x)


def measure(
    model: nn.Module,
    images: torch.Tensor,
    *,
    image_size: int,
    ex: Any,
    settings: InferenceSettings,
    batch: int,
    timer: Timer | None = None,
    meter: EnergyMeter | None = None,
    latency: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Latency, throughput, peak memory and energy of `model` on `images` (uint8 splits).

    `latency`: the batch-1 figures of this model measured before (a run of it at
    another serving batch): kept, not timed again.
    """
    timer = timer or Timer.on(ex.device)
    meter = meter or meter_for(ex.device)
    model.eval()
    one, many = inputs(images, 1, image_size, ex), inputs(images, batch, image_size, ex)

    def forward(x: torch.Tensor) -> Callable[[], Any]:
        def call() -> Any:
            with torch.inference_mode(), ex.autocast:
                return model(x)

        return call

    memory = PeakMemory(ex.device)
    memory.reset()
    before = _in_use(ex.device)
    warmup = 0.0
    if latency is None:
        timed = time_calls(forward(one), settings, timer)
        latency, warmup = latency_figures(timed), timed.warmup_seconds
    with meter.span() as energy:
        throughput = time_calls(forward(many), settings, timer)
    peak = memory.read()
    images_timed = batch * len(throughput.samples)
    return {
        **{k: latency[k] for k in LATENCY_FIGURES},
        **throughput_figures(throughput, batch),
        "warmup_seconds": warmup + throughput.warmup_seconds,
        "peak_memory_bytes": peak["peak_memory_bytes"],
        "peak_memory_kind": peak["peak_memory_kind"],
        "memory_added_bytes": max(0, peak["peak_memory_bytes"] - before),
        "threads": torch.get_num_threads() if ex.device.type == "cpu" else None,
        "compiled": False,
        **meter.facts(),
        "energy_joules_per_1000": (
            None if energy.joules is None else energy.joules / images_timed * 1000
        ),
    }


def _in_use(device: torch.device) -> int:
    """Bytes allocated on the device (CUDA), or resident in this process (CPU), now."""
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    kib = vm_kib("VmRSS")
    return 0 if kib is None else kib * 1024


# --------------------------------------------------------------------------- ONNX


def onnx_parity(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    image_size: int,
    ex: Any,
    settings: InferenceSettings,
    batch: int,
    path: Path | None = None,
    tolerance_points: float = ONNX_TOLERANCE_POINTS,
) -> dict[str, Any]:
    """Export `model`, run it with onnxruntime on the split, compare its top-1 with PyTorch's.

    Returns `status` "ok", "parity failed" (top-1 apart by more than the
    tolerance, or the two disagreeing on more images than it: an export that
    is as often right but about other images is wrong too) or "not exported"
    (the exporter's or onnxruntime's reason).
    The comparison runs in float32 on the CPU for both, so it checks the
    export, not the run's precision; PyTorch's figure is computed here on
    the same crops, not taken from training.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        return {
            "status": "not exported",
            "reason": "onnxruntime is not installed (pip install 'tlbench[export]')",
        }
    model = model.eval().float().to("cpu")
    with tempfile.TemporaryDirectory() as scratch:
        target = path or Path(scratch) / "model.onnx"
        t0 = time.perf_counter()
        try:
            _export(model, image_size, target)
            session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        except Exception as exc:
            return {"status": "not exported", "reason": f"{type(exc).__name__}: {exc}"[:500]}
        export_seconds = time.perf_counter() - t0
        torch_pred, onnx_pred, max_diff = _predictions(model, session, images, image_size)
        one = center_crop(images[:1], image_size).numpy()
        name = session.get_inputs()[0].name
        timings = time_calls(lambda: session.run(None, {name: one}), settings, Timer())
    n = len(labels)
    torch_top1 = float((torch_pred == labels).sum()) / n
    onnx_top1 = float((onnx_pred == labels).sum()) / n
    apart = abs(onnx_top1 - torch_top1) * 100
    agree = float((torch_pred == onnx_pred).float().mean())
    disagree = (1 - agree) * 100
    result: dict[str, Any] = {
        "status": "ok" if max(apart, disagree) <= tolerance_points else "parity failed",
        "format": "onnx",
        "runtime": f"onnxruntime {ort.__version__} (CPUExecutionProvider)",
        "top1": onnx_top1,
        "torch_top1": torch_top1,
        "tolerance_points": tolerance_points,
        "predictions_agree": agree,
        "max_abs_logit_difference": max_diff,
        "images": n,
        "export_seconds": export_seconds,
        **latency_figures(timings),
    }
    if path is not None:
        result["path"] = str(path)
    if result["status"] != "ok":
        result["reason"] = (
            f"the exported model's top-1 is {onnx_top1:.1%} against PyTorch's {torch_top1:.1%} "
            f"on the same {n} images ({apart:.2f} points apart) and their predictions differ "
            f"on {disagree:.2f}% of them; {tolerance_points} points are allowed"
        )
    return result


def _export(model: nn.Module, image_size: int, target: Path) -> None:
    """`torch.onnx.export` (the dynamo exporter) with a dynamic batch dimension."""
    import warnings

    example = torch.rand(2, 3, image_size, image_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(target),
            input_names=["images"],
            output_names=["logits"],
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            verbose=False,
        )


def _predictions(
    model: nn.Module, session: Any, images: torch.Tensor, image_size: int, batch: int = 64
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Both models' predicted classes on the split's centre crops, and the largest logit gap."""
    name = session.get_inputs()[0].name
    torch_pred, onnx_pred, max_diff = [], [], 0.0
    for start in range(0, len(images), batch):
        x = center_crop(images[start : start + batch], image_size)
        with torch.inference_mode():
            theirs = model(x).float()
        ours = torch.from_numpy(session.run(None, {name: x.numpy()})[0]).float()
        max_diff = max(max_diff, float((theirs - ours).abs().max()))
        torch_pred.append(theirs.argmax(1))
        onnx_pred.append(ours.argmax(1))
    return torch.cat(torch_pred), torch.cat(onnx_pred), max_diff


# --------------------------------------------------------------------------- tlbench bench


def bench_backbone(
    backbone: Any,
    *,
    image_size: int,
    batch: int,
    ex: Any,
    num_classes: int = 1000,
    settings: InferenceSettings | None = None,
    timer: Timer | None = None,
) -> dict[str, Any]:
    """Inference cost of a backbone with a `num_classes`-way head, untrained (`tlbench bench`).

    Weights do not change the cost, so the network is built without its
    pretrained weights (nothing is downloaded); the images are random, at
    `image_size`. Timed as a trained model is (`measure`), with the same FLOP
    count and parameter count the records carry.
    """
    from tlbench.classifier import FeatureHead, ImageClassifier, count_parameters
    from tlbench.flops import forward_flops

    settings = settings or InferenceSettings()
    torch.manual_seed(0)
    model = ImageClassifier(
        backbone.build(False),
        FeatureHead(backbone.feature_dim, num_classes),
        backbone.preprocessing,
    )
    ex.place(model).eval()
    images = torch.randint(0, 256, (batch, 3, image_size, image_size), dtype=torch.uint8)
    figures = measure(
        model, images, image_size=image_size, ex=ex, settings=settings, batch=batch, timer=timer
    )
    return {
        "backbone": backbone.name,
        "image_size": image_size,
        "num_classes": num_classes,
        "device": str(ex.device),
        "precision": ex.precision,
        "params": count_parameters(model)[1],
        "flops_per_image": forward_flops(model, image_size, ex.device),
        **figures,
    }
