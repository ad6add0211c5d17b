"""Checkpoints: the one format `tlbench run --save-models` writes and `tlbench predict` reads.

A checkpoint is a pair of files named after the run's key, ready to go to the
Hugging Face Hub as they are:

- `<key>.safetensors`: the classifier's weights (no pickle: opening the file
  never executes code);
- `<key>.json`: the sidecar, everything else the model needs and where it came
  from (nanoGPT's habit of a checkpoint carrying its own config): the format
  name, the backbone's registered name, the head kind, the classes, the input
  size and the preprocessing, the best epoch and accuracy, the run's key and
  provenance, and the weights file's name and SHA-256, which tie the pair:
  weights from another run, or changed since, are an error, not quietly wrong
  predictions.

The older format, one `<key>.pt` (`tlbench-checkpoint-1`: the same fields and
the `state_dict` in one dict, loaded with `weights_only=True`), is still read.
`load_checkpoint` gives the same dict for both, and `build_model` rebuilds the
classifier from the backbone registered under that name (random init, no
download), the head it names and the saved weights, loaded strictly, so a
backbone that changed since shows as an error rather than as wrong predictions.

torch and safetensors are imported where used: `find_checkpoint` serves the
planner's torch-free resume check.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlbench.errors import TlbenchError, UnknownNameError
from tlbench.plugin_types import Backbone, Preprocessing, RunSpec

if TYPE_CHECKING:
    from torch import nn

#: The older format: one `torch.save` file, `<key>.pt`.
CHECKPOINT_FORMAT = "tlbench-checkpoint-1"
#: The format written now: `<key>.safetensors` + the `<key>.json` sidecar.
SAFETENSORS_FORMAT = "tlbench-checkpoint-2"
WEIGHTS_SUFFIX = ".safetensors"
SIDECAR_SUFFIX = ".json"
REQUIRED_KEYS = (
    "state_dict",
    "backbone",
    "head",
    "num_classes",
    "classes",
    "image_size",
    "preprocessing",
)
# The sidecar's own bookkeeping: which weights it describes. Not part of the loaded dict.
_PAIR_KEYS = ("weights_file", "weights_sha256")
_WRITTEN_BY = "Checkpoints are written by `tlbench run --save-models`."
_PAIR_ADVICE = (
    "A checkpoint is two files from the same run, kept together in one folder: "
    "<key>.safetensors (the weights) and <key>.json (classes, preprocessing, provenance); "
    "copy both again from the run's models folder (see the record's cost.checkpoint)."
)


def checkpoint_paths(folder: str | os.PathLike[str], key: str) -> tuple[Path, Path]:
    """The weights and sidecar `save_checkpoint` writes for run `key` in `folder`."""
    folder = Path(folder).expanduser()
    return folder / f"{key}{WEIGHTS_SUFFIX}", folder / f"{key}{SIDECAR_SUFFIX}"


def find_checkpoint(folder: str | os.PathLike[str], key: str) -> Path | None:
    """Run `key`'s checkpoint in `folder`: the weights of a complete pair, else an older
    `<key>.pt`, else None. Looks at the files only (no torch): the resume check."""
    weights, sidecar = checkpoint_paths(folder, key)
    if weights.is_file() and sidecar.is_file():
        return weights
    old = Path(folder).expanduser() / f"{key}.pt"
    return old if old.is_file() else None


def checkpoint_complete(path: str | os.PathLike[str]) -> bool:
    """Whether the checkpoint at `path` (weights, sidecar or older `.pt`) has all its files."""
    path = Path(path).expanduser()
    if path.suffix.lower() in (WEIGHTS_SUFFIX, SIDECAR_SUFFIX):
        return all(
            p.is_file()
            for p in (path.with_suffix(WEIGHTS_SUFFIX), path.with_suffix(SIDECAR_SUFFIX))
        )
    return path.is_file()


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a tlbench checkpoint; a file that is not one raises a `TlbenchError`.

    `path` is the `.safetensors` weights, their `.json` sidecar, or an older `.pt`.
    Both formats give the same dict: the `state_dict` and the sidecar's fields.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise TlbenchError(f"checkpoint {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == WEIGHTS_SUFFIX:
        checkpoint = _load_pair(path, path.with_suffix(SIDECAR_SUFFIX), path)
    elif suffix == SIDECAR_SUFFIX:
        checkpoint = _load_pair(None, path, path)
    else:
        checkpoint = _load_torch(path)
    missing = [k for k in REQUIRED_KEYS if k not in checkpoint]
    if missing:
        raise TlbenchError(f"{path}: damaged tlbench checkpoint, missing {', '.join(missing)}")
    problem = _field_problem(checkpoint)
    if problem:
        raise TlbenchError(f"{path}: damaged tlbench checkpoint, {problem}")
    return checkpoint


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:200]


def _load_torch(path: Path) -> dict[str, Any]:
    """The older single-file format, loaded with `weights_only=True` (never runs code)."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or damaged files
        raise TlbenchError(
            f"{path} is not a tlbench checkpoint (cannot be read as one: {_first_line(exc)}). "
            f"{_WRITTEN_BY}"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        found = (
            checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        )
        raise TlbenchError(
            f"{path} is not a tlbench checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT!r}). "
            f"{_WRITTEN_BY}"
        )
    return checkpoint


def _read_sidecar(sidecar: Path, weights: Path | None) -> dict[str, Any]:
    if not sidecar.is_file():
        raise TlbenchError(
            f"{weights}: the checkpoint's sidecar {sidecar.name} is missing beside it, so its "
            f"classes and preprocessing are unknown. {_PAIR_ADVICE}"
        )
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TlbenchError(
            f"{sidecar} is not a tlbench checkpoint sidecar (not readable JSON: "
            f"{_first_line(exc)}). {_PAIR_ADVICE}"
        ) from None
    found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
    if found != SAFETENSORS_FORMAT:
        raise TlbenchError(
            f"{sidecar} is not a tlbench checkpoint sidecar (format {found!r}, expected "
            f"{SAFETENSORS_FORMAT!r}). {_WRITTEN_BY}"
        )
    return meta


def _load_pair(weights: Path | None, sidecar: Path, given: Path) -> dict[str, Any]:
    """The weights and sidecar of one checkpoint, checked to belong together."""
    from safetensors import safe_open

    meta = _read_sidecar(sidecar, weights)
    name = meta.get("weights_file")
    expected = meta.get("weights_sha256")
    if not isinstance(name, str) or Path(name).name != name or not name:
        raise TlbenchError(
            f"{sidecar}: damaged tlbench checkpoint, weights_file is not a file name ({name!r})"
        )
    if not isinstance(expected, str):
        raise TlbenchError(f"{sidecar}: damaged tlbench checkpoint, weights_sha256 is missing")
    if weights is None:
        # The file the sidecar names; a pair renamed together (model.safetensors +
        # model.json) is found by its shared stem.
        named, stem = sidecar.parent / name, sidecar.with_suffix(WEIGHTS_SUFFIX)
        weights = named if named.is_file() or not stem.is_file() else stem
        if not weights.is_file():
            raise TlbenchError(
                f"{sidecar}: the checkpoint's weights {name} are missing beside it. {_PAIR_ADVICE}"
            )
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as f:
            stored = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as exc:  # safetensors raises its own error type for foreign or damaged files
        raise TlbenchError(
            f"{weights} is not a tlbench checkpoint (cannot be read as safetensors: "
            f"{_first_line(exc)}). {_WRITTEN_BY}"
        ) from None
    key, weights_key = meta.get("key"), stored.get("key")
    if weights_key is not None and key is not None and weights_key != key:
        raise TlbenchError(
            f"{weights} and {sidecar} do not belong together: the weights are run {weights_key}'s, "
            f"the sidecar describes run {key}. {_PAIR_ADVICE}"
        )
    actual = _sha256(weights)
    if actual != expected:
        raise TlbenchError(
            f"{weights} and {sidecar} do not belong together: the sidecar describes weights with "
            f"SHA-256 {expected[:16]}..., the file's is {actual[:16]}... (one of the two was "
            f"changed, damaged or comes from another run). {_PAIR_ADVICE}"
        )
    checkpoint = {k: v for k, v in meta.items() if k not in _PAIR_KEYS}
    checkpoint["state_dict"] = state
    return checkpoint


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _field_problem(c: dict[str, Any]) -> str | None:
    """What is wrong with the fields' types and values, or None: a tampered or damaged file
    must be an error message, not a traceback deep inside the model."""
    import torch

    state = c["state_dict"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        return "state_dict is not a mapping of names to tensors"
    for key in ("backbone", "head"):
        if not isinstance(c[key], str):
            return f"{key} is not a name ({c[key]!r})"
    if not _is_int(c["num_classes"]) or c["num_classes"] < 1:
        return f"num_classes is not a positive integer ({c['num_classes']!r})"
    classes = c["classes"]
    if not isinstance(classes, list) or not all(isinstance(n, str) for n in classes):
        return f"classes is not a list of class names ({classes!r:.80})"
    if len(classes) != c["num_classes"]:
        return "class names do not match num_classes"
    if not _is_int(c["image_size"]) or c["image_size"] < 1:
        return f"image_size is not a positive integer ({c['image_size']!r:.40})"
    if c["image_size"] > MAX_IMAGE_SIZE:
        return f"image_size is larger than {MAX_IMAGE_SIZE} ({c['image_size']})"
    p = c["preprocessing"]
    known = {f.name for f in dataclasses.fields(Preprocessing)}
    if not isinstance(p, dict) or not set(p) <= known:
        extra = sorted(set(p) - known) if isinstance(p, dict) else p
        return f"preprocessing has unknown fields {extra!r}"
    for key in ("mean", "std"):
        value = p.get(key, (0.0, 0.0, 0.0))
        if (
            not isinstance(value, (list, tuple))
            or len(value) != 3
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        ):
            return f"preprocessing {key} is not three numbers ({value!r})"
    return _preprocessing_problem(p, c["image_size"])


#: the largest image size a run accepts (`--image-size`), and so a checkpoint holds.
MAX_IMAGE_SIZE = 2048


def _preprocessing_problem(p: dict[str, Any], image_size: int) -> str | None:
    """What makes the saved preprocessing unusable, or None: a sidecar is not covered by the
    weights' checksum, and std 0 gives NaN predictions, a resize of 1e9 a decode of gigabytes."""
    import math

    for key in ("mean", "std"):
        value = p.get(key, (0.0, 0.0, 0.0) if key == "mean" else (1.0, 1.0, 1.0))
        if not all(math.isfinite(v) and abs(v) <= 1e3 for v in value):
            return f"preprocessing {key} holds a number that is not finite or is absurd ({value!r})"
        if key == "std" and not all(v > 0 for v in value):
            return f"preprocessing std must be > 0 (it divides every pixel), not {value!r}"
    for key in ("resize", "crop"):
        if key in p and (not _is_int(p[key]) or not 1 <= p[key] <= 2 * MAX_IMAGE_SIZE):
            return (
                f"preprocessing {key} is not an integer from 1 to {2 * MAX_IMAGE_SIZE} "
                f"({p[key]!r:.40})"
            )
    pre = Preprocessing(**{k: tuple(v) if k in ("mean", "std") else v for k, v in p.items()})
    if pre.resize_for(image_size) > 2 * MAX_IMAGE_SIZE:
        return (
            f"preprocessing resize {pre.resize} for crop {pre.crop} would decode every image at "
            f"{pre.resize_for(image_size)} px for image_size {image_size} "
            f"(at most {2 * MAX_IMAGE_SIZE})"
        )
    return None


def checkpoint_preprocessing(checkpoint: dict[str, Any]) -> Preprocessing:
    """The backbone's preprocessing as saved with the weights."""
    p = dict(checkpoint["preprocessing"])
    for key in ("mean", "std"):
        if key in p:
            p[key] = tuple(p[key])
    return Preprocessing(**p)


def build_model(checkpoint: dict[str, Any], plugins: Any) -> nn.Module:
    """The checkpoint's classifier: registered backbone (random init) + head + saved weights."""
    from torch import nn

    from tlbench.classifier import FeatureHead, ImageClassifier

    name = checkpoint["backbone"]
    try:
        backbone = plugins.backbones.get(name)
    except UnknownNameError:
        raise TlbenchError(
            f"the checkpoint needs backbone {name!r}, which no loaded plugin provides; "
            "install the plugin that trained it (see `tlbench plugins`)"
        ) from None
    n = checkpoint["num_classes"]
    kind = checkpoint["head"]
    if kind == "feature":
        head: nn.Module = FeatureHead(backbone.feature_dim, n)
    elif kind == "linear":
        head = nn.Linear(backbone.feature_dim, n)
    else:
        raise TlbenchError(f"unknown head kind {kind!r} in the checkpoint (feature or linear)")
    model = ImageClassifier(backbone.build(False), head, checkpoint_preprocessing(checkpoint))
    try:
        model.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as exc:
        raise TlbenchError(
            f"the checkpoint's weights do not fit backbone {name!r} as registered now "
            f"(did its plugin change?): {str(exc).splitlines()[0]}"
        ) from None
    return model.eval()


def save_checkpoint(
    folder: Path,
    spec: RunSpec,
    backbone: Backbone,
    model: nn.Module,
    *,
    head_only: bool,
    classes: list[str],
    epoch: int,
    accuracy: float,
) -> Path:
    """Write `model`'s weights and their sidecar; returns the weights' path.

    `model` is the whole classifier (normalisation, backbone, head) as it
    ended training: `epoch` is its last epoch and `accuracy` the top-1 the
    record reports for it. `head_only`: only its head trained (on cached
    features), which the sidecar says. Each file is written
    to a temporary name and renamed; the old sidecar goes first and the new one
    comes last, so a reader finds either no checkpoint or a whole one (and the
    sidecar's checksum makes weights it does not describe an error).
    """
    from safetensors.torch import save_file

    from tlbench.version import __version__

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Owned, contiguous copies: safetensors refuses tensors that share memory.
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    weights, sidecar = checkpoint_paths(folder, spec.key)
    meta = {
        "format": SAFETENSORS_FORMAT,
        "weights_file": weights.name,
        "weights_sha256": "",
        "backbone": backbone.name,
        "strategy": spec.strategy,
        "head": "feature" if head_only else "linear",
        "num_classes": len(classes),
        "classes": list(classes),
        "image_size": spec.image_size,
        "preprocessing": backbone.preprocessing.to_dict(),
        # The final epoch: no epoch is chosen on the test split (checkpoints written before
        # said `best_epoch` and `best_accuracy`: the best on it).
        "epoch": epoch,
        # Strict JSON (the Hub's viewers parse it): a non-finite accuracy is null.
        "accuracy": accuracy if math.isfinite(accuracy) else None,
        # Provenance, so a checkpoint found alone can be traced to its record.
        "key": spec.key,
        "dataset": spec.dataset,
        "seed": spec.seed,
        "weights": spec.weights,
        "tlbench_version": __version__,
    }
    tag = f"{os.getpid()}.tmp"
    tmp_weights = weights.with_name(f"{weights.name}.{tag}")
    tmp_sidecar = sidecar.with_name(f"{sidecar.name}.{tag}")
    try:
        # "format": "pt" is what the Hub's libraries expect of PyTorch safetensors.
        save_file(
            state,
            str(tmp_weights),
            metadata={"format": "pt", "tlbench_format": SAFETENSORS_FORMAT, "key": spec.key},
        )
        meta["weights_sha256"] = _sha256(tmp_weights)
        tmp_sidecar.write_text(json.dumps(meta, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        sidecar.unlink(missing_ok=True)
        tmp_weights.replace(weights)
        tmp_sidecar.replace(sidecar)
    finally:
        for tmp in (tmp_weights, tmp_sidecar):
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
    return weights


# --------------------------------------------------------------------------- listing


@dataclasses.dataclass
class SavedModel:
    """One saved checkpoint, as `tlbench models` lists it (from a record or a sidecar)."""

    path: str
    backbone: str
    strategy: str
    dataset: str
    seed: int | None = None
    image_size: int | None = None
    #: the run's final top-1 when a record says it, else None.
    accuracy: float | None = None
    #: the top-1 of the weights the checkpoint holds, as its sidecar says: the final
    #: epoch's (a checkpoint written before they were: the best epoch's).
    saved_accuracy: float | None = None
    key: str = ""
    #: False when the record names a checkpoint whose files are gone.
    exists: bool = True


def _from_record(record: dict[str, Any]) -> SavedModel | None:
    path = (record.get("cost") or {}).get("checkpoint")
    if not isinstance(path, str) or record.get("status") != "ok":
        return None
    config, accuracy = record.get("config") or {}, record.get("accuracy") or {}
    return SavedModel(
        path=path,
        backbone=str(config.get("backbone")),
        strategy=str(config.get("strategy")),
        dataset=str(config.get("dataset")),
        seed=config.get("seed"),
        image_size=config.get("image_size"),
        accuracy=accuracy.get("final"),
        saved_accuracy=accuracy.get("final"),
        key=str(record.get("key", "")),
        exists=checkpoint_complete(path),
    )


def _from_sidecar(sidecar: Path) -> SavedModel | None:
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != SAFETENSORS_FORMAT:
        return None  # another program's JSON in the folder
    weights = sidecar.with_suffix(WEIGHTS_SUFFIX)
    return SavedModel(
        path=str(weights),
        backbone=str(meta.get("backbone")),
        strategy=str(meta.get("strategy")),
        dataset=str(meta.get("dataset")),
        seed=meta.get("seed"),
        image_size=meta.get("image_size"),
        saved_accuracy=meta.get("accuracy", meta.get("best_accuracy")),
        key=str(meta.get("key", "")),
        exists=weights.is_file(),
    )


def list_saved_models(records: list[dict[str, Any]], folders: list[Path]) -> list[SavedModel]:
    """The checkpoints the records name (give each run's answer,
    `tlbench.results.answer_by_key`), then those found in `folders` that no record
    named. Reads JSON only: no torch."""
    found: dict[str, SavedModel] = {}
    for record in records:
        model = _from_record(record)
        if model is not None:
            found.setdefault(str(Path(model.path).expanduser().absolute()), model)
    for folder in folders:
        for sidecar in sorted(Path(folder).expanduser().glob(f"*{SIDECAR_SUFFIX}")):
            model = _from_sidecar(sidecar)
            if model is not None:
                found.setdefault(str(Path(model.path).absolute()), model)
    return list(found.values())
