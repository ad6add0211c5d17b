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
import math
from typing import TYPE_CHECKING, Any, Literal, TypedDict, get_args

if TYPE_CHECKING:
    import numpy as np

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


class Accuracy(TypedDict, total=False):
    """Top-1 on the held-out split, as fractions in [0, 1]."""

    best: float
    best_epoch: int
    final: float
    final_balanced: float | None
    #: one entry per epoch: epoch, train_loss, eval_accuracy, eval_balanced_accuracy,
    #: eval_loss, epoch_seconds, train_images_per_s.
    curve: list[dict[str, Any]]
    #: the final evaluation, image by image (`encode_correct`); absent in older records.
    final_correct: Correct


class Cost(TypedDict, total=False):
    """What the run cost; seconds are wall seconds, throughputs images per second."""

    wall_seconds: float
    data_prep_seconds: float
    feature_seconds: float
    train_seconds: float
    eval_seconds: float
    train_images_per_s: float
    compute_images_per_s: float | None
    data_images_per_s: float | None
    data_stall_fraction: float
    eval_images_per_s: float
    trainable_params: int
    total_params: int
    forward_flops_per_image: int | None
    mfu: float
    #: "none" (computed here), "disk", "memory" or "partial"; None: not a feature strategy.
    feature_cache: str | None
    decode_cache: bool
    batch_sizes_tried: list[int]
    checkpoint: str


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
    #: seed, image_size, hyperparameters, device, precision, memory_format, compile.
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
    config = record.get("config")
    if not isinstance(config, dict):
        return [*found, "no config"]
    for name in ("backbone", "dataset", "strategy"):
        if not isinstance(config.get(name), str):
            found.append(f"config.{name} missing")
    seed = config.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        found.append(f"config.seed is {seed!r}, not an integer")
    if status == "ok":
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
