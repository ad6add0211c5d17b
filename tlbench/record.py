"""The run record: what one run of a grid produced, one JSON line of the results file.

A record is a plain JSON object on disk and a plain dict in memory, so it
pickles, crosses process and machine boundaries, and old files stay readable;
`RunRecord` and its parts are `TypedDict`s that say which fields exist and
what they hold. Everything that reads records (results, report, plot, the
console) reads these fields, and `problems()` says what a record lacks before
a reader relies on it.

Schema history:

- 1: the first release.
- 2: `config` gains `dataset_fingerprint` (the identity of the images the run
  saw) and `dataset_id`; `execution` facts (TF32, cuDNN benchmark, device model)
  join `cost`. Schema 1 records are read as they are: a missing field is
  missing, never invented.
- 2, later: `accuracy.final_correct`, the final evaluation's per-image
  correctness (`encode_correct`), optional. Not a new version: nothing a
  reader relied on changed, and a tlbench that does not know the field
  ignores it; records without it are compared as before.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TypedDict, get_args

if TYPE_CHECKING:
    import numpy as np

    from tlbench.plugin_types import DatasetSplits, RunSpec

#: bumped when the record layout changes; readers accept every version up to it.
SCHEMA_VERSION = 2

Status = Literal["ok", "failed", "skipped", "interrupted"]
STATUSES: tuple[str, ...] = get_args(Status)


class Correct(TypedDict):
    """Which evaluation images a run classified correctly: a bitset, base64-encoded.

    Bit i (most significant bit of each byte first, numpy's `packbits`) is image i
    of the evaluation split, in the split's fixed order. 10,000 images take 1,668
    characters.
    """

    images: int
    bits: str


class Epoch(TypedDict, total=False):
    """One epoch of a run's curve (`Accuracy.curve`), as the epoch hook also hears it."""

    epoch: int
    train_loss: float
    eval_accuracy: float
    eval_balanced_accuracy: float
    eval_loss: float
    epoch_seconds: float
    train_images_per_s: float | None
    #: the learning rate of each parameter group at the epoch's first step, by the group's
    #: name ("head", "backbone", a stage's name); absent for an L-BFGS probe and in older
    #: records.
    lr: dict[str, float]


class Accuracy(TypedDict, total=False):
    """Top-1 on the held-out split, as fractions in [0, 1]."""

    best: float
    best_epoch: int
    final: float
    final_balanced: float | None
    #: one entry per epoch (`Epoch`).
    curve: list[Epoch]
    #: the final evaluation, image by image (`encode_correct`); absent in older records.
    final_correct: Correct
    #: LP-FT: the probe's final and best top-1 and its epochs.
    probe: dict[str, Any]


class Cost(TypedDict, total=False):
    """What the run cost; seconds are wall seconds, throughputs images per second.

    Every key a trial writes is declared here (a test runs each builtin
    strategy and checks); a key marked "CUDA" appears only on a GPU.
    """

    #: everything the run took, one-off costs included.
    wall_seconds: float
    data_prep_seconds: float
    #: what this run spent on features: extracting them, or reading them from the cache.
    feature_seconds: float
    #: what making the features it used cost, wherever they were made (None: an entry
    #: from before this was kept); the report charges this, so a cache hit is not free.
    feature_extract_seconds: float | None
    #: the untimed warm-up of the extraction's batch shapes (0 on a cache hit).
    feature_warmup_seconds: float
    #: where the features were computed: "cpu: <model>" or "cuda: <model>".
    features_device: str | None
    #: the compared training time (warm-up and uploads excluded); LP-FT: both stages.
    train_seconds: float
    #: LP-FT: the probe's part of `train_seconds`.
    probe_train_seconds: float
    eval_seconds: float
    warmup_seconds: float
    warmup_steps: int
    #: the batch sizes the warm-up ran: {"train": [...], "eval": [...]}.
    warmup_batches: dict[str, list[int]]
    #: putting the data (or features) on the device, before the clock.
    upload_seconds: float
    measured_steps: int
    batch_size: int
    train_images_per_s: float
    compute_images_per_s: float | None
    data_images_per_s: float | None
    data_stall_fraction: float
    eval_images_per_s: float
    #: the peak of the run's process (host) or of the device (CUDA), and which it is.
    peak_memory_bytes: int
    peak_memory_kind: str
    #: CUDA: the peak less the dataset kept on the device, the figure comparable across GPUs.
    model_peak_memory_bytes: int
    #: CUDA: the host process's own peak beside the device's.
    peak_host_memory_bytes: int
    #: bytes of data kept on the device during the fit (0 when it stayed on the host).
    resident_data_bytes: int
    #: the peak of feature extraction, apart from the run's (only when it extracted).
    extraction_peak_memory_bytes: int
    #: True when an out-of-memory retry moved the data to the host.
    data_on_host_after_oom: bool
    trainable_params: int
    total_params: int
    forward_flops_per_image: int | None
    #: forward and backward of one training image under the run's requires_grad flags.
    train_flops_per_image: int | None
    mfu: float | None
    mfu_peak_tflops: float | None
    #: which peak and which FLOP count (counted, or assumed 3x forward) `mfu` used.
    mfu_basis: str
    #: "none" (computed here), "disk", "memory" or "partial"; None: not a feature strategy.
    feature_cache: str | None
    decode_cache: str
    batch_sizes_tried: list[int]
    #: graphs torch.compile captured (compiled runs; none captured fails the run).
    compiled_graphs: int
    #: other Python threads alive during a timed epoch, by name.
    timed_with_threads: list[str]
    #: the execution settings (also in `config`): device type, precision, memory format,
    #: compile; CUDA: TF32 and cuDNN autotuning.
    device: str
    precision: str
    memory_format: str
    compile: bool
    tf32: bool
    cudnn_benchmark: bool
    #: --save-models: the checkpoint's path.
    checkpoint: str
    #: the training's energy in joules from the device's counter (`tlbench.energy`), which
    #: counter ("nvml": the GPU board, "rapl": the CPU packages), or why none was read.
    energy_joules: float | None
    energy_source: str | None
    energy_reason: str


class Onnx(TypedDict, total=False):
    """`--export onnx`: the exported classifier run with onnxruntime on the evaluation split."""

    #: "ok", "parity failed" (top-1 apart by more than the tolerance) or "not exported".
    status: str
    reason: str
    format: str
    runtime: str
    #: top-1 of the exported model and of PyTorch on the same crops, float32 on the CPU.
    top1: float
    torch_top1: float
    #: the largest allowed difference of the two, in points of 100; the share of images
    #: on which their predictions differ is held to it too.
    tolerance_points: float
    predictions_agree: float
    max_abs_logit_difference: float
    images: int
    export_seconds: float
    #: the exported model (kept beside the checkpoints with --save-models).
    path: str
    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_min: float
    latency_ms_max: float
    latency_samples: int


class Inference(TypedDict, total=False):
    """What the trained model costs to run (`tlbench.inference`); in no run key."""

    #: batch-1 latency in milliseconds over `latency_samples` synchronised calls.
    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_min: float
    latency_ms_max: float
    latency_samples: int
    #: images per second at `throughput_batch`: the median call's, the slowest, the fastest.
    throughput_batch: int
    throughput_images_per_s: float | None
    throughput_images_per_s_min: float | None
    throughput_images_per_s_max: float | None
    throughput_samples: int
    #: the untimed warm-up of both shapes.
    warmup_seconds: float
    #: the peak during inference (as `Cost.peak_memory_bytes`), and what inference added
    #: to what was allocated (CUDA) or resident (CPU) before it.
    peak_memory_bytes: int
    peak_memory_kind: str
    memory_added_bytes: int
    #: CPU: torch's intra-op threads.
    threads: int | None
    #: inference runs eager, also for a run that trained compiled.
    compiled: bool
    energy_source: str | None
    energy_reason: str
    energy_joules_per_1000: float | None
    #: True when an earlier run of the same model (backbone, size, classes, execution,
    #: batch) in this process was measured, and its figures are these.
    reused: bool
    #: True when the batch-1 figures are an earlier run's of the same model (at another
    #: serving batch): latency does not depend on it.
    latency_reused: bool
    params: int | None
    flops_per_image: int | None
    onnx: Onnx


class Rung(TypedDict):
    """A tuning rung's record part (`tlbench.rungs.Rung.facts`)."""

    stop_epoch: int
    of_epochs: int
    resumed_from_epoch: int
    epochs_trained: int


class RunRecord(TypedDict, total=False):
    """One line of the results file."""

    schema: int
    key: str
    status: Status
    #: why a run failed, was skipped or was interrupted; None when ok.
    reason: str | None
    #: ISO-8601 UTC, when the record was made: newer records supersede older ones.
    time: str
    #: the run's settings: backbone, weights, dataset, dataset_fingerprint, strategy,
    #: seed, image_size, hyperparameters, device, precision, memory_format, compile; the
    #: strategy `options` set to other values than their defaults, and the third-party
    #: `code` behind the backbone, dataset and strategy (`RunSpec.code`), when there are.
    config: dict[str, Any]
    providers: dict[str, str]
    accuracy: Accuracy
    cost: Cost
    data: dict[str, Any]
    environment: dict[str, Any]
    elapsed_seconds: float
    failed_epoch: int
    epochs_completed: int
    partial_curve: list[dict[str, Any]]
    #: a tuned run's search: study, sampler, space, trials, chosen settings, their
    #: validation accuracy and the search's cost in seconds (`tlbench.tune`).
    tuning: dict[str, Any]
    #: transferability scores of the training features (runs that computed features).
    scores: dict[str, Any]
    #: a successive-halving rung of a tuning trial (`tlbench.rungs`): the epoch it stopped
    #: at, of how many, the epoch it resumed from and the epochs it trained.
    rung: Rung
    #: what the trained model costs to run: latency, throughput, memory, energy, export.
    inference: Inference


def encode_correct(correct: Any) -> Correct:
    """Per-image correctness (0/1 or bool, one per evaluation image, in order) as a `Correct`."""
    import numpy as np

    flags = np.asarray(correct).reshape(-1)
    if flags.size and not np.all((flags == 0) | (flags == 1)):
        raise ValueError("per-image correctness must be 0/1 or bool")
    packed = np.packbits(flags.astype(bool))
    return {"images": int(flags.size), "bits": base64.b64encode(packed.tobytes()).decode("ascii")}


def decode_correct(value: Any, images: int | None = None) -> np.ndarray | None:
    """The 0/1 vector (uint8) a `Correct` encodes; None when `value` is not one, or holds
    another number of images than `images` (the record's evaluation split) when given."""
    if not isinstance(value, dict):
        return None
    n, bits = value.get("images"), value.get("bits")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0 or not isinstance(bits, str):
        return None
    if images is not None and n != images:
        return None
    try:
        raw = base64.b64decode(bits, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != (n + 7) // 8:
        return None
    import numpy as np

    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=n)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def problems(record: Any) -> list[str]:
    """What keeps `record` from being read as a run record; empty when nothing does.

    Checks what the results file, resume and the report rely on: the identity
    fields everywhere, and for an "ok" record the accuracy and cost figures.
    A record from a newer schema is named as such (a newer tlbench wrote it).
    """
    if not isinstance(record, dict):
        return [f"not a JSON object ({type(record).__name__})"]
    found = _identity_problems(record)
    config = record.get("config")
    if not isinstance(config, dict):
        return [*found, "no config"]
    for name in ("backbone", "dataset", "strategy"):
        if not isinstance(config.get(name), str):
            found.append(f"config.{name} missing")
    seed = config.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        found.append(f"config.seed is {seed!r}, not an integer")
    if record.get("status") == "ok":
        found += _result_problems(record)
    return found


def _identity_problems(record: dict[str, Any]) -> list[str]:
    """The schema, key and status of a record, as far as they are wrong."""
    found: list[str] = []
    schema = record.get("schema", 1)
    if not isinstance(schema, int) or isinstance(schema, bool):
        found.append(f"schema is {schema!r}, not a number")
    elif schema > SCHEMA_VERSION:
        found.append(
            f"schema {schema} is newer than this tlbench reads ({SCHEMA_VERSION}): upgrade tlbench"
        )
    if not isinstance(record.get("key"), str) or not record.get("key"):
        found.append("no key")
    status = record.get("status")
    if status not in STATUSES:
        found.append(f"status {status!r} is not one of {', '.join(STATUSES)}")
    return found


def _result_problems(record: dict[str, Any]) -> list[str]:
    """What an "ok" record lacks of the accuracy and cost the report reads."""
    found: list[str] = []
    accuracy = record.get("accuracy")
    if not isinstance(accuracy, dict):
        found.append("no accuracy")
    else:
        for name in ("final", "best"):
            if not _number(accuracy.get(name)):
                found.append(f"accuracy.{name} is {accuracy.get(name)!r}, not a number")
    if not isinstance(record.get("cost"), dict):
        found.append("no cost")
    return found


# --------------------------------------------------------------------------- constructors


def new_record(
    spec: RunSpec,
    status: str,
    *,
    providers: dict[str, str],
    environment: dict[str, Any] | None = None,
    reason: str = "",
    started: float | None = None,
    hp_used: Any = None,
    **parts: Any,
) -> RunRecord:
    """The record of `spec` with `status`; `parts` are its accuracy, cost, data and extras.

    `hp_used`: the hyperparameters the run really trained with, recorded only
    where they differ from the spec's (an out-of-memory retry's smaller batch).
    """
    config = spec.config()
    config["dataset_fingerprint"] = spec.dataset_fingerprint
    if hp_used is not None and hp_used != spec.hp:
        config["hyperparameters_used"] = {**hp_used.__dict__}
    record: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "key": spec.key,
        "status": status,
        "reason": reason or None,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"),
        "config": config,
        "providers": providers,
    }
    if spec.tuning is not None:
        record["tuning"] = spec.tuning
    if "failed_epoch" in parts:
        record["failed_epoch"] = parts.pop("failed_epoch")
    accuracy = parts.get("accuracy")
    if isinstance(accuracy, dict) and "final_correct" in accuracy:
        # The final evaluation image by image, as a compact bitset (`encode_correct`).
        accuracy = dict(accuracy)
        correct = accuracy.pop("final_correct")
        if correct is not None:
            accuracy["final_correct"] = (
                correct if isinstance(correct, dict) else encode_correct(correct)
            )
        parts["accuracy"] = accuracy
    if started is not None:
        record["elapsed_seconds"] = time.time() - started
    record.update(parts)
    if environment is not None:
        record["environment"] = environment
    return record  # type: ignore[return-value]


def run_accuracy(fit: Any, probe_fit: Any = None) -> dict[str, Any]:
    """The accuracy part of a run that trained (`fit`: a `tlbench.fitting.FitResult`)."""
    accuracy: dict[str, Any] = {
        "best": fit.best_accuracy,
        "best_epoch": fit.best_epoch,
        "final": fit.final_accuracy,
        "final_balanced": fit.curve[-1]["eval_balanced_accuracy"] if fit.curve else None,
        "curve": fit.curve,
        "final_correct": fit.final_correct,
    }
    if probe_fit is not None:
        accuracy["probe"] = {
            "final": probe_fit.final_accuracy,
            "best": probe_fit.best_accuracy,
            "epochs": len(probe_fit.curve),
        }
    return accuracy


def run_cost(
    fit: Any, probe_fit: Any, *, seconds: Mapping[str, float], measured: dict[str, Any]
) -> dict[str, Any]:
    """The cost part of a run that trained.

    `seconds`: the stopwatch's sections ("data_prep", "features"); `measured`:
    memory, parameters, FLOPs, caches and execution settings, as they are.
    LP-FT's adaptation cost is both stages, the probe and then the fine-tune.
    `wall_seconds` is everything the run took, its one-off costs (warm-up,
    uploads) included; the compared training time (`train_seconds`) leaves
    them out.
    """
    cost: dict[str, Any] = {
        "data_prep_seconds": seconds.get("data_prep", 0.0),
        "feature_seconds": seconds.get("features", 0.0),
        **fit.cost(),
        **measured,
    }
    if probe_fit is not None:
        cost["probe_train_seconds"] = probe_fit.train_seconds
        cost["train_seconds"] = probe_fit.train_seconds + fit.train_seconds
        cost["eval_seconds"] = probe_fit.eval_seconds + fit.eval_seconds
    fits = [f for f in (probe_fit, fit) if f is not None]
    cost["wall_seconds"] = (
        cost["data_prep_seconds"]
        + cost["feature_seconds"]
        + cost["train_seconds"]
        + cost["eval_seconds"]
        + sum(f.warmup_seconds + f.upload_seconds for f in fits)
    )
    return cost


def run_data(splits: DatasetSplits, train: Any, evalset: Any, store_size: int) -> dict[str, Any]:
    """The data part: the classes, the images trained on and evaluated, what was skipped."""
    skipped = train.skipped + evalset.skipped
    return {
        "num_classes": len(splits.classes),
        "classes": splits.classes,
        "train_images": len(train),
        "eval_images": len(evalset),
        "eval_split": splits.eval_split,
        "skipped_images": len(skipped),
        "skipped_files": skipped[:50],
        "store_size": store_size,
        **splits.info,
    }


# --------------------------------------------------------------------------- flat views


def _value(value: Any) -> float | int | None:
    """A number as it is (bools are not numbers), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def flat_record(record: RunRecord | dict[str, Any]) -> dict[str, Any]:
    """One record as flat columns with units in their names (one `to_pandas` row).

    Accuracies are fractions in [0, 1] (`top1_final`), times seconds
    (`train_seconds`), memory megabytes of 10^6 bytes (`peak_memory_mb`),
    throughput images per second (`train_images_per_s`); hyperparameters keep
    their own names (`lr`, `epochs`). A field the record lacks is None.
    """
    config = dict(record.get("config") or {})
    hp = config.pop("hyperparameters", None) or {}
    accuracy = record.get("accuracy") or {}
    cost = record.get("cost") or {}
    inference = record.get("inference") or {}
    onnx = inference.get("onnx") or {}
    data = record.get("data") or {}
    env = record.get("environment") or {}
    curve = accuracy.get("curve") or record.get("partial_curve") or []
    peak = _value(cost.get("peak_memory_bytes"))
    row: dict[str, Any] = {
        "key": record.get("key"),
        "status": record.get("status"),
        "reason": record.get("reason"),
        "time": record.get("time"),
        "backbone": config.get("backbone"),
        "weights": config.get("weights"),
        "dataset": config.get("dataset"),
        "strategy": config.get("strategy"),
        "seed": config.get("seed"),
        "budget": config.get("budget"),
        "image_size": config.get("image_size"),
        "device": config.get("device"),
        "precision": config.get("precision"),
        "memory_format": config.get("memory_format"),
        "compile": config.get("compile"),
        **hp,
        "top1_final": _value(accuracy.get("final")),
        "top1_best": _value(accuracy.get("best")),
        "best_epoch": _value(accuracy.get("best_epoch")),
        "balanced_top1_final": _value(accuracy.get("final_balanced")),
        "epochs_completed": record.get("epochs_completed", len(curve) if curve else None),
        "wall_seconds": _value(cost.get("wall_seconds")),
        "data_prep_seconds": _value(cost.get("data_prep_seconds")),
        "feature_seconds": _value(cost.get("feature_seconds")),
        "train_seconds": _value(cost.get("train_seconds")),
        "eval_seconds": _value(cost.get("eval_seconds")),
        "train_images_per_s": _value(cost.get("train_images_per_s")),
        "compute_images_per_s": _value(cost.get("compute_images_per_s")),
        "eval_images_per_s": _value(cost.get("eval_images_per_s")),
        "data_stall_fraction": _value(cost.get("data_stall_fraction")),
        "peak_memory_mb": None if peak is None else peak / 1e6,
        "trainable_params": _value(cost.get("trainable_params")),
        "total_params": _value(cost.get("total_params")),
        "forward_flops_per_image": _value(cost.get("forward_flops_per_image")),
        "feature_cache": cost.get("feature_cache"),
        "train_energy_j": _value(cost.get("energy_joules")),
        "latency_ms_p50": _value(inference.get("latency_ms_p50")),
        "latency_ms_p90": _value(inference.get("latency_ms_p90")),
        "inference_images_per_s": _value(inference.get("throughput_images_per_s")),
        "inference_batch": _value(inference.get("throughput_batch")),
        "inference_j_per_1000": _value(inference.get("energy_joules_per_1000")),
        "onnx_status": onnx.get("status"),
        "onnx_top1": _value(onnx.get("top1")),
        "num_classes": data.get("num_classes"),
        "train_images": data.get("train_images"),
        "eval_images": data.get("eval_images"),
        "device_name": env.get("device_name"),
        "tlbench_version": env.get("tlbench"),
        "torch_version": env.get("torch"),
    }
    return row
