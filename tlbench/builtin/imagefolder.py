"""`imagefolder:<path>`: your own images, one subfolder per class.

Two layouts are read:

- a tree with `train/` and an evaluation folder, `val/`, `valid/`, `validation/` or `test/`
  (the first that exists, in that order), each holding the same class
  subfolders (hymenoptera_data, dogscats, flowers12);
- a single folder of class subfolders (or a tree with only `train/`): a
  stratified, seeded `val_fraction` of each class is held out for evaluation.
  Nothing is copied; the split is a list of files, the same for every run
  with the same `split_seed`.

Files are found recursively inside each class folder; hidden files and
folders and files without an image extension are ignored. Class names are
the sorted subfolder names. Nothing is decoded here: the fingerprint hashes
relative paths, sizes and modification times.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tlbench.api import Dataset, DatasetRequest, DatasetSplits
from tlbench.errors import DatasetError
from tlbench.hookspecs import hookimpl
from tlbench.images import IMG_EXTENSIONS, FileImages, is_image_file

#: evaluation folder names, in order of preference.
EVAL_DIRS = ("val", "valid", "validation", "test")

# Bump when the split rule or fingerprint inputs change, so caches keyed on
# the old rule are not reused.
_VERSION = "imagefolder-v1"


@dataclass(frozen=True)
class _File:
    path: str  # absolute, for messages and loading
    rel: str  # relative to the dataset root, for the fingerprint
    size: int
    mtime_ns: int


def load_imagefolder(request: DatasetRequest) -> DatasetSplits:
    """Read an image-folder tree (see the module docstring) into train and eval splits."""
    if not request.argument:
        raise DatasetError("imagefolder needs a folder: imagefolder:<path>")
    root = Path(request.argument).expanduser()
    if not root.exists():
        raise DatasetError(
            f"imagefolder: {root} does not exist. Pass a folder holding train/ and val/ "
            f"(or test/), or a folder with one subfolder of images per class."
        )
    if not root.is_dir():
        raise DatasetError(
            f"imagefolder: {root} is not a directory. Pass the folder that holds the "
            f"class subfolders (or train/ and val/), not a file."
        )
    root = root.resolve()
    if (root / "train").is_dir():
        eval_dir = next((d for d in EVAL_DIRS if (root / d).is_dir()), None)
        if eval_dir is not None:
            return _load_tree(root, eval_dir)
        return _load_fraction(root, root / "train", request.val_fraction, request.split_seed)
    return _load_fraction(root, root, request.val_fraction, request.split_seed)


def _load_tree(root: Path, eval_dir: str) -> DatasetSplits:
    train = _scan_classes(root / "train", root)
    held = _scan_classes(root / eval_dir, root)
    if set(train) != set(held):
        only_train = sorted(set(train) - set(held))
        only_eval = sorted(set(held) - set(train))
        parts = []
        if only_train:
            parts.append(f"only in train/: {', '.join(only_train)}")
        if only_eval:
            parts.append(f"only in {eval_dir}/: {', '.join(only_eval)}")
        raise DatasetError(
            f"imagefolder: {root}: train/ and {eval_dir}/ have different class folders "
            f"({'; '.join(parts)}). Give both the same class subfolders."
        )
    classes = sorted(train)
    train_files, train_labels = _flatten(train, classes)
    eval_files, eval_labels = _flatten(held, classes)
    fingerprint = _fingerprint(
        f"{_VERSION}|tree|eval={eval_dir}", [("train", train_files), (eval_dir, eval_files)]
    )
    return DatasetSplits(
        classes=classes,
        train=FileImages([f.path for f in train_files], train_labels),
        eval=FileImages([f.path for f in eval_files], eval_labels),
        eval_split=eval_dir,
        fingerprint=fingerprint,
        info={"root": str(root), "layout": "train/ and " + eval_dir + "/", "eval_dir": eval_dir},
    )


def _load_fraction(root: Path, class_root: Path, fraction: float, seed: int) -> DatasetSplits:
    if not 0.0 < fraction < 1.0:
        raise DatasetError(
            f"imagefolder: {class_root} has no val/, valid/, validation/ or test/ folder, so a fraction of "
            f"each class is held out for evaluation, but val_fraction={fraction} is not "
            f"between 0 and 1. Pass e.g. --val-fraction 0.2."
        )
    by_class = _scan_classes(class_root, root)
    classes = sorted(by_class)
    train_files: list[_File] = []
    train_labels: list[int] = []
    eval_files: list[_File] = []
    eval_labels: list[int] = []
    for label, name in enumerate(classes):
        files = by_class[name]
        held = set(_held_out(len(files), fraction, f"{seed}/{name}"))
        for i, f in enumerate(files):
            if i in held:
                eval_files.append(f)
                eval_labels.append(label)
            else:
                train_files.append(f)
                train_labels.append(label)
    if not eval_files:
        raise DatasetError(
            f"imagefolder: {class_root}: every class has a single image, so none can be held "
            f"out for evaluation. Add images, or give train/ and val/ folders."
        )
    fingerprint = _fingerprint(
        f"{_VERSION}|fraction={fraction!r}|seed={seed}", [("all", train_files + eval_files)]
    )
    rel = class_root.relative_to(root).as_posix()
    return DatasetSplits(
        classes=classes,
        train=FileImages([f.path for f in train_files], train_labels),
        eval=FileImages([f.path for f in eval_files], eval_labels),
        eval_split="val",
        fingerprint=fingerprint,
        info={
            "root": str(root),
            "layout": "class folders" if rel == "." else f"{rel}/ only",
            "split": f"stratified {fraction:g} held out per class, split_seed={seed}",
        },
    )


def _held_out(n: int, fraction: float, seed: str) -> list[int]:
    """Indices of a class's `n` files held out for evaluation.

    At least one image is held out from a class with two or more, so every
    class is evaluated, and at least one always stays for training; a class
    of one image trains only.
    """
    if n < 2:
        return []
    k = min(n - 1, max(1, round(n * fraction)))
    # A string seed hashes stably (sha512) across processes and Python versions.
    return random.Random(seed).sample(range(n), k)


def _scan_classes(class_root: Path, root: Path) -> dict[str, list[_File]]:
    """Class name -> its image files (sorted by path) under `class_root`."""
    try:
        entries = sorted(
            (e for e in os.scandir(class_root) if not e.name.startswith(".")),
            key=lambda e: e.name,
        )
    except OSError as exc:
        raise DatasetError(f"imagefolder: cannot read {class_root}: {exc}") from exc
    class_dirs = [e for e in entries if e.is_dir()]
    if not class_dirs:
        loose = sum(1 for e in entries if e.is_file() and is_image_file(e.name))
        hint = (
            f" It holds {loose} images directly: move them into one subfolder per class."
            if loose
            else ""
        )
        raise DatasetError(
            f"imagefolder: {class_root} has no class folders.{hint} Expected "
            f"{class_root}/<class>/<image> (or train/<class>/ and val/<class>/)."
        )
    by_class: dict[str, list[_File]] = {}
    for entry in class_dirs:
        files: list[_File] = []
        _walk(entry.path, root, files, set())
        if not files:
            raise DatasetError(
                f"imagefolder: class folder {entry.path} has no images (looked for "
                f"{', '.join(IMG_EXTENSIONS)}; hidden files are ignored). Add images or "
                f"remove the folder."
            )
        files.sort(key=lambda f: f.rel)
        by_class[entry.name] = files
    return by_class


def _walk(folder: str, root: Path, out: list[_File], seen: set[tuple[int, int]]) -> None:
    st = os.stat(folder)
    # Symlinked folders are followed (as torchvision's ImageFolder does); a
    # link back up the tree must not loop forever.
    if (st.st_dev, st.st_ino) in seen:
        return
    seen.add((st.st_dev, st.st_ino))
    with os.scandir(folder) as it:
        for entry in it:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                _walk(entry.path, root, out, seen)
            elif is_image_file(entry.name) and entry.is_file():
                stat = entry.stat()
                rel = os.path.relpath(entry.path, root).replace(os.sep, "/")
                out.append(_File(entry.path, rel, stat.st_size, stat.st_mtime_ns))


def _flatten(by_class: dict[str, list[_File]], classes: list[str]) -> tuple[list[_File], list[int]]:
    files: list[_File] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        files.extend(by_class[name])
        labels.extend([label] * len(by_class[name]))
    return files, labels


def _fingerprint(head: str, splits: list[tuple[str, list[_File]]]) -> str:
    h = hashlib.sha256(head.encode())
    for split, files in splits:
        h.update(f"\n[{split}]".encode())
        for f in sorted(files, key=lambda f: f.rel):
            h.update(f"\n{f.rel}\0{f.size}\0{f.mtime_ns}".encode())
    return h.hexdigest()[:16]


@hookimpl
def tlbench_register_datasets(register: Callable[[Dataset], None]) -> None:
    register(
        Dataset(
            name="imagefolder",
            load=load_imagefolder,
            description="your images: <path>/{train,val|valid|test}/<class>/, or <path>/<class>/ split by val_fraction",
            takes_argument=True,
            argument_help="<path>",
        )
    )
