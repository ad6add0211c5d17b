"""tlbench-example: a third-party plugin written against tlbench's public API only.

It adds

- the dataset `csv:<file.csv>`: images listed in a CSV file with the columns
  `path` and `label` (and optionally `split`, `train` or `test`/`val`);
- the strategy `bitfit`: a pretrained backbone whose biases and normalisation
  parameters train with a new head, everything else frozen (BitFit, Ben Zaken
  et al. 2022, with the normalisation layers as in its vision follow-ups);
- the strategy family `partial:<N>`: a pretrained backbone whose last N
  stages (`Backbone.stages`, as the backbone declares them) train with a new
  head (`partial:1`, `partial:2`, ...).

Every import from tlbench is a name in `tlbench.__all__`; the module imports
neither torch nor PIL until a dataset loads or a strategy trains.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tlbench import (
    FINETUNE,
    Dataset,
    DatasetError,
    DatasetRequest,
    DatasetSplits,
    Family,
    Hyperparameters,
    Strategy,
    TlbenchError,
    hookimpl,
)

if TYPE_CHECKING:
    from PIL import Image
    from torch import nn

__version__ = "0.1.0"

# --------------------------------------------------------------------------- csv:<file>

#: values of the optional `split` column that mean "evaluation".
EVAL_SPLITS = ("test", "val", "valid")


class CsvImages:
    """One split of a CSV dataset: an `ImageSource` over image files."""

    def __init__(self, paths: list[Path], labels: list[int]):
        self.paths = paths
        self.labels = labels

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Image.Image:
        from PIL import Image

        with Image.open(self.paths[index]) as image:
            return image.convert("RGB")

    def describe(self, index: int) -> str:
        return str(self.paths[index])


def _holdout(labels: list[str], fraction: float, seed: int) -> set[int]:
    """Indices held out for evaluation: `fraction` of each class, seeded, at least one if it has two."""
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    held: set[int] = set()
    for label in sorted(by_class):
        indices = by_class[label]
        # Seeded by class name too, so adding a class does not reshuffle the others.
        random.Random(f"{seed}|{label}").shuffle(indices)
        # Every class with two images is evaluated and keeps one to train on.
        n = round(len(indices) * fraction)
        n = min(max(n, 1), len(indices) - 1) if len(indices) > 1 else 0
        held.update(indices[:n])
    return held


def load_csv(request: DatasetRequest) -> DatasetSplits:
    """Read `csv:<file>`: paths relative to the CSV's folder, classes sorted by name."""
    if not request.argument:
        raise DatasetError("csv needs a file: csv:<file.csv>")
    path = Path(request.argument).expanduser()
    if not path.is_file():
        raise DatasetError(f"csv: {path} is not a file (columns: path,label[,split])")
    text = path.read_text(encoding="utf-8-sig")
    reader = csv.DictReader(text.splitlines())
    columns = set(reader.fieldnames or ())
    if not {"path", "label"} <= columns:
        raise DatasetError(f"csv: {path} needs the columns path and label (has {sorted(columns)})")
    rows = [r for r in reader if (r.get("path") or "").strip()]
    if not rows:
        raise DatasetError(f"csv: {path} lists no images")
    root = path.parent
    files = [root / r["path"].strip() for r in rows]
    labels = [r["label"].strip() for r in rows]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DatasetError(
            f"csv: {len(missing)} of {len(files)} files listed in {path} do not exist, "
            f"e.g. {', '.join(missing[:3])}"
        )
    classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}

    splits = [(r.get("split") or "").strip().lower() for r in rows] if "split" in columns else []
    if splits and any(splits):
        unknown = sorted({s for s in splits if s not in ("train", *EVAL_SPLITS)})
        if unknown:
            raise DatasetError(
                f"csv: {path}: split must be train, {', '.join(EVAL_SPLITS)} (got {unknown})"
            )
        train = [i for i, s in enumerate(splits) if s == "train"]
        held = [i for i, s in enumerate(splits) if s in EVAL_SPLITS]
        eval_split = next(s for s in splits if s in EVAL_SPLITS) if held else "test"
        rule = "split column"
    else:
        holdout = _holdout(labels, request.test_fraction, request.split_seed)
        train = [i for i in range(len(rows)) if i not in holdout]
        held = sorted(holdout)
        eval_split = "val"
        rule = f"stratified {request.test_fraction:g} held out, seed {request.split_seed}"
    if not train or not held:
        raise DatasetError(f"csv: {path}: both the train and the evaluation split need images")

    # The fingerprint keys tlbench's decode and feature caches: the CSV itself,
    # the split rule, and each file's size and modification time.
    h = hashlib.sha256(text.encode())
    h.update(rule.encode())
    for f in files:
        stat = os.stat(f)
        h.update(f"\n{f}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())

    def source(ids: list[int]) -> CsvImages:
        return CsvImages([files[i] for i in ids], [index[labels[i]] for i in ids])

    return DatasetSplits(
        classes=classes,
        train=source(train),
        eval=source(held),
        eval_split=eval_split,
        fingerprint=h.hexdigest()[:16],
        info={"csv": str(path), "split_rule": rule},
    )


CSV = Dataset(
    name="csv",
    load=load_csv,
    description="images listed in a CSV file: path,label[,split]; paths relative to the file",
    takes_argument=True,
    argument_help="<file.csv>",
)

# --------------------------------------------------------------------------- bitfit


def bitfit_groups(backbone: nn.Module, head: nn.Module, hp: Hyperparameters) -> list[dict]:
    """Biases and normalisation parameters of the backbone train, at lr * backbone_lr_mult."""
    from torch import nn

    norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    trainable = []
    for module in backbone.modules():
        is_norm = isinstance(module, norms)
        for name, p in module.named_parameters(recurse=False):
            train = is_norm or name == "bias"
            p.requires_grad_(train)
            if train:
                trainable.append(p)
    for p in head.parameters():
        p.requires_grad_(True)
    groups = [{"params": list(head.parameters()), "lr": hp.lr, "name": "head"}]
    if trainable:
        groups.append({"params": trainable, "lr": hp.lr * hp.backbone_lr_mult, "name": "bias+norm"})
    return groups


BITFIT = Strategy(
    name="bitfit",
    description="pretrained backbone: only biases and normalisation layers train, with a new head",
    pretrained=True,
    # Fine-tuning's hyperparameters, but biases and norm scales are a tiny,
    # well-conditioned set: they take the head's step size (the BitFit paper's
    # 1e-3 range), not fine-tuning's 0.1x, and get more epochs to move.
    defaults=FINETUNE.defaults.replace(epochs=10, backbone_lr_mult=1.0),
    param_groups=bitfit_groups,
)

# --------------------------------------------------------------------------- partial:<N>


def partial_groups(
    n: int, backbone: nn.Module, head: nn.Module, hp: Hyperparameters, stages: list
) -> list[dict]:
    """The last `n` of the backbone's stages train at lr * backbone_lr_mult; the rest is frozen.

    `stages` are the backbone's own (`Backbone.stages`, stem first), as tlbench hands
    them to a `param_groups` that names the keyword.
    """
    for p in backbone.parameters():
        p.requires_grad_(False)
    trainable = [p for _, params in stages[-n:] for p in params]
    for p in [*trainable, *head.parameters()]:
        p.requires_grad_(True)
    groups = [{"params": list(head.parameters()), "lr": hp.lr, "name": "head"}]
    if trainable:
        groups.append(
            {"params": trainable, "lr": hp.lr * hp.backbone_lr_mult, "name": "last stages"}
        )
    return groups


class _PartialGroups:
    """`param_groups` of `partial:<n>` (a class, not a lambda, so it has a readable repr)."""

    def __init__(self, n: int):
        self.n = n

    def __call__(
        self, backbone: nn.Module, head: nn.Module, hp: Hyperparameters, *, stages: list
    ) -> list[dict]:
        return partial_groups(self.n, backbone, head, hp, stages)

    def __repr__(self) -> str:
        return f"partial_groups(last {self.n} stages)"


def resolve_partial(argument: str) -> Strategy:
    """`partial:<N>`: fine-tune the last N stages of the backbone."""
    try:
        n = int(argument)
    except ValueError:
        raise TlbenchError(
            f"partial:<N> takes a whole number of stages (got {argument!r})"
        ) from None
    if n < 1:
        raise TlbenchError(f"partial:<N> needs N >= 1 (got {n}); `linear` trains no stage")
    return Strategy(
        name=f"partial:{n}",
        description=f"pretrained backbone: its last {n} stage(s) and a new head train",
        pretrained=True,
        # `finetune`'s hyperparameters: the pretrained stages move 10x slower than the head.
        defaults=FINETUNE.defaults,
        param_groups=_PartialGroups(n),
        # A backbone that declares no stages is skipped, with that reason.
        needs_stages=True,
    )


PARTIAL = Family(
    name="partial",
    resolve=resolve_partial,
    members=lambda: [str(n) for n in range(1, 5)],
    featured=("1", "2"),
    description="pretrained backbone: the last N stages and a new head train",
    argument_help="<N>",
)

# --------------------------------------------------------------------------- hooks


@hookimpl
def tlbench_register_datasets(register: Callable[[Dataset], None]) -> None:
    register(CSV)


@hookimpl
def tlbench_register_strategies(register: Callable) -> None:
    register(BITFIT)
    register(PARTIAL)
