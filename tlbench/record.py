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
"""

from __future__ import annotations

import math
from typing import Any, Literal, TypedDict, get_args

#: bumped when the record layout changes; readers accept every version up to it.
SCHEMA_VERSION = 2

Status = Literal["ok", "failed", "skipped", "interrupted"]
STATUSES: tuple[str, ...] = get_args(Status)


class Accuracy(TypedDict, total=False):
    """Top-1 on the held-out split, as fractions in [0, 1]."""

    best: float
    best_epoch: int
    final: float
    final_balanced: float | None
    #: one entry per epoch: epoch, train_loss, eval_accuracy, eval_balanced_accuracy,
    #: eval_loss, epoch_seconds, train_images_per_s.
    curve: list[dict[str, Any]]


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
