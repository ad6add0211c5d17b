"""tlbench-hf: Hugging Face datasets as tlbench datasets, `hf:<name>[:<config>][?<options>]`.

`<name>` is either

- a local folder: one written by `DatasetDict.save_to_disk` (or `Dataset.save_to_disk`),
  read with `datasets.load_from_disk`; or a local copy of a Hub repo (parquet files,
  an imagefolder tree, ...), read with `datasets.load_dataset(<folder>)`; or
- a Hub id (`beans`, `user/name`), read with `datasets.load_dataset(<id>, <config>)`
  through the Hugging Face cache (`HF_HOME`); offline, only what is already cached.

Columns: the image column is the one with the `datasets.Image` feature and the label
column the one with the `ClassLabel` feature; when a dataset has several, name them:
`hf:<name>?image=img&label=fine_label` (quote it in a shell). Splits: `train`, and for
evaluation the first of `validation`, `valid`, `val`, `test` whose rows are labelled
(the imagefolder order); `?train=<split>&eval=<split>` picks others. Without an
evaluation split, a stratified, seeded `test_fraction` of each class is held out with
the very rule `imagefolder:` uses (`--test-fraction`, split seed).

Rows labelled -1 (unlabelled) are left out of training. Images are decoded by
tlbench's own reader (EXIF orientation, alpha on white), as for image folders.

Registering imports neither torch nor `datasets`; both load when a dataset does.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from tlbench import Dataset, DatasetError, DatasetRequest, DatasetSplits, hookimpl

if TYPE_CHECKING:
    import datasets
    from PIL import Image

__version__ = "0.1.0"

#: evaluation split names, in order of preference (imagefolder's, with HF's spelling first).
EVAL_SPLITS = ("validation", "valid", "val", "test")
#: options after '?': which column holds the image / label, which split trains / evaluates.
OPTIONS = ("image", "label", "train", "eval")
# Bump when the split rule or the fingerprint's inputs change.
_VERSION = "hf-v1"
# A Hub id: `name` or `owner/name` (letters, digits, '-', '_', '.').
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


@dataclass(frozen=True)
class HfArgument:
    """`<name>[:<config>][?key=value&...]`, parsed."""

    name: str
    config: str | None
    options: dict[str, str]
    local: Path | None  # the folder, when `name` is one

    @classmethod
    def parse(cls, argument: str | None) -> HfArgument:
        if not argument:
            raise DatasetError(
                "hf needs a dataset: hf:<hub id or folder>[:<config>] "
                "(e.g. hf:beans, hf:./my_dataset, hf:cifar100?label=fine_label)"
            )
        spec, _, query = argument.partition("?")
        options: dict[str, str] = {}
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
        except ValueError:
            raise DatasetError(
                f"hf:{argument}: options after '?' are key=value pairs joined by '&' "
                f"(e.g. ?image=img&label=fine_label)"
            ) from None
        for key, value in pairs:
            if key not in OPTIONS:
                raise DatasetError(
                    f"hf:{argument}: unknown option {key!r}; the options are "
                    f"{', '.join(OPTIONS)} (e.g. ?image=img&label=fine_label)"
                )
            if not value:
                raise DatasetError(f"hf:{argument}: option {key!r} needs a value ({key}=...)")
            options[key] = value
        # A folder may contain ':'; a Hub id never does, so the last ':' starts the config.
        candidates = [(spec, None)]
        head, colon, config = spec.rpartition(":")
        if colon and head:
            candidates.append((head, config or None))
        for name, cfg in candidates:
            path = Path(name).expanduser()
            if path.is_dir():
                return cls(name, cfg, options, path.resolve())
        name, cfg = candidates[-1]
        if name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name:
            raise DatasetError(
                f"hf:{argument}: the folder {Path(spec).expanduser()} does not exist. Pass a "
                f"folder written by save_to_disk or holding a dataset repo, or a Hub id."
            )
        if not _HUB_ID.match(name):
            raise DatasetError(
                f"hf:{argument}: {name!r} is neither a folder nor a Hugging Face Hub id "
                f"(owner/name). Pass a folder written by save_to_disk or holding a dataset "
                f"repo, or a Hub id."
            )
        return cls(name, cfg, options, None)


# --------------------------------------------------------------------------- images


class HfImages:
    """One split of a Hugging Face dataset: an `ImageSource` over some of its rows."""

    def __init__(
        self, table: datasets.Dataset, column: str, rows: list[int], labels: list[int], where: str
    ):
        # `table` holds only the image column, undecoded: tlbench decodes it as it does files.
        self.table = table
        self.column = column
        self.rows = rows
        self.labels = labels
        self.where = where

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, index: int) -> Image.Image:
        from tlbench.images import open_rgb

        cell = self.table[self.rows[index]][self.column]
        if cell.get("bytes"):
            return open_rgb(io.BytesIO(cell["bytes"]))
        if cell.get("path"):
            return open_rgb(cell["path"])
        raise OSError(f"{self.describe(index)} holds no image")

    def describe(self, index: int) -> str:
        return f"{self.where}[{self.rows[index]}]"

    def __repr__(self) -> str:
        return f"HfImages({self.where}, {len(self)} images)"


# --------------------------------------------------------------------------- loading


def _import_datasets():
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - the distribution depends on it
        raise DatasetError(
            "hf: the `datasets` library is not installed: pip install datasets "
            "(or pip install tlbench-hf, which depends on it)"
        ) from exc
    return datasets


def _open(arg: HfArgument, request: DatasetRequest) -> dict[str, datasets.Dataset]:
    """The dataset's splits by name."""
    datasets = _import_datasets()
    shown = f"hf:{arg.name}" + (f":{arg.config}" if arg.config else "")
    if arg.local is not None:
        saved = (arg.local / "dataset_dict.json").is_file() or (arg.local / "state.json").is_file()
        try:
            if saved:
                if arg.config:
                    raise DatasetError(
                        f"{shown}: {arg.local} was written by save_to_disk and has no "
                        f"configs; drop ':{arg.config}'"
                    )
                loaded = datasets.load_from_disk(str(arg.local))
            else:
                loaded = datasets.load_dataset(str(arg.local), arg.config)
        except DatasetError:
            raise
        except Exception as exc:
            raise DatasetError(f"{shown}: cannot read {arg.local} as a dataset: {exc}") from exc
    else:
        offline = bool(datasets.config.HF_HUB_OFFLINE) or not request.download
        how = (
            f"On a machine with network, save it to a folder and pass the folder: "
            f"python -c \"import datasets; datasets.load_dataset('{arg.name}'"
            + (f", '{arg.config}'" if arg.config else "")
            + ").save_to_disk('<folder>')\" then --datasets hf:<folder>; or run once online "
            "so it is in the Hugging Face cache, which HF_HUB_OFFLINE=1 then reuses."
        )
        if not request.download:
            raise DatasetError(f"{shown}: downloads are off, so a Hub id cannot be loaded. {how}")
        try:
            loaded = datasets.load_dataset(arg.name, arg.config)
        except (ConnectionError, FileNotFoundError) as exc:
            state = "offline mode is on (HF_HUB_OFFLINE)" if offline else "the Hub is unreachable"
            raise DatasetError(
                f"{shown}: not in the local Hugging Face cache and {state} ({exc}). {how}"
            ) from exc
        except Exception as exc:
            raise DatasetError(f"{shown}: cannot load it from the Hub: {exc}") from exc
    if isinstance(loaded, datasets.DatasetDict):
        return dict(loaded)
    if isinstance(loaded, datasets.Dataset):
        return {str(loaded.split) if loaded.split else "train": loaded}
    raise DatasetError(f"{shown}: expected a dataset with splits, got {type(loaded).__name__}")


def _column(table: datasets.Dataset, kind: str, wanted: str | None, shown: str) -> str:
    """The image (kind "image") or label (kind "label") column of `table`."""
    datasets = _import_datasets()
    feature_type = datasets.Image if kind == "image" else datasets.ClassLabel
    features = table.features
    if wanted is not None:
        if wanted not in features:
            raise DatasetError(
                f"{shown}: no column {wanted!r}; the columns are {', '.join(features)}"
            )
        if not isinstance(features[wanted], feature_type):
            hint = (
                f" Turn it into one with ds.class_encode_column({wanted!r}) and save_to_disk."
                if kind == "label"
                else ""
            )
            raise DatasetError(
                f"{shown}: column {wanted!r} is {features[wanted]!r}, not a "
                f"{feature_type.__name__}.{hint}"
            )
        return wanted
    found = [name for name, f in features.items() if isinstance(f, feature_type)]
    if len(found) == 1:
        return found[0]
    described = ", ".join(f"{n} ({type(f).__name__})" for n, f in features.items())
    if not found:
        raise DatasetError(
            f"{shown}: no {feature_type.__name__} column to use as the {kind} "
            f"(columns: {described}). Name one with ?{kind}=<column>."
        )
    raise DatasetError(
        f"{shown}: several {feature_type.__name__} columns ({', '.join(found)}); pick the "
        f"{kind} with ?{kind}=<column>"
    )


def _labels(table: datasets.Dataset, column: str) -> list[int]:
    return [int(y) for y in table[column]]


def load_hf(request: DatasetRequest) -> DatasetSplits:
    """Load `hf:<name>[:<config>][?options]` (see the module docstring) into train and eval splits."""
    arg = HfArgument.parse(request.argument)
    shown = f"hf:{request.argument}"
    splits = _open(arg, request)

    train_name = arg.options.get("train", "train")
    if train_name not in splits:
        if "train" not in arg.options and len(splits) == 1:
            train_name = next(iter(splits))
        else:
            raise DatasetError(
                f"{shown}: no split {train_name!r}; it has {', '.join(splits)}. "
                f"Pick the training split with ?train=<split>."
            )
    train_table = splits[train_name]
    image_col = _column(train_table, "image", arg.options.get("image"), shown)
    label_col = _column(train_table, "label", arg.options.get("label"), shown)
    classes = [str(c) for c in train_table.features[label_col].names]

    eval_name = _eval_split(splits, train_name, label_col, arg.options.get("eval"), shown)
    train_labels = _labels(train_table, label_col)
    if eval_name is not None:
        eval_table = splits[eval_name]
        for col in (image_col, label_col):
            if col not in eval_table.features:
                raise DatasetError(f"{shown}: split {eval_name!r} has no column {col!r}")
        eval_names = getattr(eval_table.features[label_col], "names", None)
        if eval_names is None or [str(c) for c in eval_names] != classes:
            raise DatasetError(
                f"{shown}: splits {train_name!r} and {eval_name!r} have different class names"
            )
        eval_labels = _labels(eval_table, label_col)
        train_rows = [i for i, y in enumerate(train_labels) if y >= 0]
        eval_rows = list(range(len(eval_labels)))
        rule = f"splits {train_name} / {eval_name}"
    else:
        eval_table = train_table
        train_rows, eval_rows = _hold_out(train_labels, classes, request, shown)
        eval_labels = train_labels
        eval_name = "val"
        rule = (
            f"stratified {request.test_fraction:g} of {train_name} held out per class, "
            f"split_seed={request.split_seed}"
        )
    unseen = sorted(set(range(len(classes))) - {train_labels[i] for i in train_rows})
    if unseen:
        raise DatasetError(
            f"{shown}: classes without training images: "
            f"{', '.join(classes[i] for i in unseen[:5])}"
            + (f" and {len(unseen) - 5} more" if len(unseen) > 5 else "")
        )

    def source(table: datasets.Dataset, split: str, rows: list[int], labels: list[int]):
        datasets = _import_datasets()
        images = table.select_columns([image_col])
        images = images.cast_column(image_col, datasets.Image(decode=False))
        return HfImages(images, image_col, rows, [labels[i] for i in rows], f"{shown}[{split}]")

    train_source = source(train_table, train_name, train_rows, train_labels)
    held_out = eval_table is train_table
    eval_source = source(eval_table, train_name if held_out else eval_name, eval_rows, eval_labels)
    unlabelled = sum(1 for y in train_labels if y < 0)
    info: dict[str, Any] = {
        "source": str(arg.local) if arg.local is not None else f"hub:{arg.name}",
        "config": arg.config,
        "image_column": image_col,
        "label_column": label_col,
        "train_split": train_name,
        "split": rule,
    }
    if arg.local is not None:
        info["root"] = str(arg.local)
    if unlabelled:
        info["unlabelled_rows_left_out"] = unlabelled
    return DatasetSplits(
        classes=classes,
        train=train_source,
        eval=eval_source,
        eval_split=eval_name,
        fingerprint=_fingerprint(arg, rule, image_col, label_col, splits, train_name, eval_name),
        info=info,
    )


def _eval_split(
    splits: dict[str, datasets.Dataset],
    train_name: str,
    label_col: str,
    wanted: str | None,
    shown: str,
) -> str | None:
    """The evaluation split: the one asked for, else the first labelled of EVAL_SPLITS, else None."""
    if wanted is not None:
        if wanted not in splits:
            raise DatasetError(f"{shown}: no split {wanted!r}; it has {', '.join(splits)}")
        if wanted == train_name:
            raise DatasetError(f"{shown}: the evaluation split cannot be the training split")
        if (
            label_col in splits[wanted].features
            and min(_labels(splits[wanted], label_col), default=0) < 0
        ):
            raise DatasetError(
                f"{shown}: split {wanted!r} has unlabelled rows (label -1); it cannot be "
                "evaluated on. Drop ?eval= to hold out part of the training split instead."
            )
        return wanted
    for name in EVAL_SPLITS:
        table = splits.get(name)
        if table is None or name == train_name or label_col not in table.features:
            continue
        labels = _labels(table, label_col)
        # Many Hub datasets ship a test split without labels (-1): not an evaluation split.
        if labels and min(labels) >= 0:
            return name
    return None


def _hold_out(
    labels: list[int], classes: list[str], request: DatasetRequest, shown: str
) -> tuple[list[int], list[int]]:
    """(train rows, eval rows): imagefolder's stratified, seeded rule, per class name."""
    # The same helper imagefolder uses, so both kinds hold out alike.
    from tlbench.builtin.imagefolder import _held_out

    fraction = request.test_fraction
    if not 0.0 < fraction < 1.0:
        raise DatasetError(
            f"{shown}: has no evaluation split, so a fraction of each class is held out, but "
            f"test_fraction={fraction} is not between 0 and 1. Pass e.g. --test-fraction 0.2."
        )
    by_class: dict[int, list[int]] = {}
    for row, y in enumerate(labels):
        if y >= 0:
            by_class.setdefault(y, []).append(row)
    train: list[int] = []
    held: list[int] = []
    for y, rows in sorted(by_class.items()):
        out = set(_held_out(len(rows), fraction, f"{request.split_seed}/{classes[y]}"))
        for i, row in enumerate(rows):
            (held if i in out else train).append(row)
    if not held:
        raise DatasetError(
            f"{shown}: every class has a single image, so none can be held out for "
            "evaluation. Add images or give the dataset a validation or test split."
        )
    return sorted(train), sorted(held)


def _fingerprint(
    arg: HfArgument,
    rule: str,
    image_col: str,
    label_col: str,
    splits: dict[str, datasets.Dataset],
    train_name: str,
    eval_name: str,
) -> str:
    """The datasets' own fingerprints, plus size and mtime of the arrow files behind them."""
    h = hashlib.sha256(
        f"{_VERSION}|{arg.name}|{arg.config}|{image_col}|{label_col}|{rule}".encode()
    )
    for name in dict.fromkeys((train_name, eval_name)):
        table = splits.get(name)
        if table is None:
            continue
        h.update(f"\n[{name}]{table._fingerprint}|{table.num_rows}".encode())
        for cache_file in table.cache_files:
            path = cache_file.get("filename", "")
            try:
                stat = os.stat(path)
            except OSError:
                continue
            h.update(f"\n{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


HF = Dataset(
    name="hf",
    load=load_hf,
    description="a Hugging Face dataset: a Hub id or a folder (save_to_disk, or a repo copy)",
    takes_argument=True,
    argument_help="<hub id or folder>[:<config>][?image=<col>&label=<col>]",
)


@hookimpl
def tlbench_register_datasets(register: Callable[[Dataset], None]) -> None:
    register(HF)
