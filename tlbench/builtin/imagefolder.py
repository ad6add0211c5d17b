"""`imagefolder:<path>`: your own images, one subfolder per class.

Two layouts are read:

- a tree with `train/` and an evaluation folder, `val/`, `valid/`, `validation/` or `test/`
  (the first that exists, in that order), each holding the same class
  subfolders (hymenoptera_data, dogscats, flowers12);
- a single folder of class subfolders (or a tree with only `train/`, and no
  other folder holding images: beside class folders, `train/` is a class): a
  stratified, seeded `test_fraction` of each class is held out as the test split.
  Nothing is copied; the split is a list of files, the same for every run
  with the same `split_seed`.

Files are found recursively inside each class folder; hidden files and
folders and files without an image extension are ignored. Class names are
the sorted subfolder names. Nothing is decoded here: the fingerprint hashes
relative paths, sizes and modification times.

Symbolic links are followed, and a file belongs to the class folder it is
under once links are resolved: a link into another class or split (`up ->
../../test`) adds nothing there, a link back up the tree (`loop -> ..`)
neither loops nor relabels, and a file reached twice counts once. Links out
of the dataset folder (a class folder on another disk) belong to the class
that links them. Identical train and evaluation splits (`val -> train`), a
folder that is two classes, or one file in two classes or both splits are
errors: each would give labels or accuracies that mean nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tlbench.errors import DatasetError
from tlbench.hookspecs import hookimpl
from tlbench.plugin_types import Dataset, DatasetRequest, DatasetSplits

# tlbench.images (numpy, Pillow) is imported by the functions that read folders:
# registering the plugin stays instant.

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
    #: (device, inode): the same file reached by two links or hard links is one file.
    ident: tuple[int, int] = (0, 0)


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
        if not _other_folders_with_images(root):
            return _load_fraction(root, root / "train", request.test_fraction, request.split_seed)
        # Beside train/ are class folders: `train` is one of the classes, not a split.
    return _load_fraction(root, root, request.test_fraction, request.split_seed)


def _other_folders_with_images(root: Path) -> bool:
    """Whether `root` holds a folder besides train/ with an image in it (at any depth)."""
    from tlbench.images import is_image_file

    try:
        others = [
            e.path
            for e in os.scandir(root)
            if e.name != "train" and not e.name.startswith(".") and _is_dir(e)
        ]
    except OSError:
        return False
    while others:  # a stack, not os.walk: 3.11's recursion ends 1,000 folders deep
        try:
            with os.scandir(others.pop()) as it:
                entries = [e for e in it if not e.name.startswith(".")]
        except OSError:
            continue
        if any(is_image_file(e.name) and _is_file(e) for e in entries):
            return True
        others += [e.path for e in entries if e.is_dir(follow_symlinks=False)]
    return False


def _load_tree(root: Path, eval_dir: str) -> DatasetSplits:
    from tlbench.images import FileImages

    if os.path.realpath(root / eval_dir) == os.path.realpath(root / "train"):
        raise DatasetError(
            f"imagefolder: {root}: {eval_dir}/ is the same folder as train/ (a link), so the "
            f"evaluation would run on the training images. Give {eval_dir}/ held-out images, or "
            f"remove it to hold out a fraction of train/ (--test-fraction)."
        )
    train_dirs = _class_dirs(root / "train")
    held_dirs = _class_dirs(root / eval_dir)
    owners = _owners(root, {"train": train_dirs, eval_dir: held_dirs})
    train = _scan_classes(train_dirs, "train", root, owners)
    held = _scan_classes(held_dirs, eval_dir, root, owners)
    _check_disjoint(root, [("train", train), (eval_dir, held)])
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
            f"({'; '.join(parts)}).{_normalisation_hint(only_train, only_eval, eval_dir)} "
            "Give both the same class subfolders."
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


def _normalisation_hint(only_train: list[str], only_eval: list[str], eval_dir: str) -> str:
    """Why names that print alike differ: Unicode normalisation (`café` as one code point, NFC,
    or as `e` + a combining accent, NFD: macOS and some archive tools write the second)."""
    import unicodedata

    held = {unicodedata.normalize("NFC", n): n for n in only_eval}
    pairs = [(n, held[k]) for n in only_train if (k := unicodedata.normalize("NFC", n)) in held]
    if not pairs:
        return ""
    a, b = pairs[0]
    form = "NFC" if unicodedata.is_normalized("NFC", a) else "NFD"
    other = "NFD" if form == "NFC" else "NFC"
    return (
        f" {len(pairs)} of them look the same but are written differently: train/{a!r} is "
        f"Unicode {form} ({len(a)} code points) and {eval_dir}/{b!r} is {other} ({len(b)}), "
        "as macOS or an archive tool may write names; rename one so both are written alike "
        "(e.g. NFC)."
    )


def _load_fraction(root: Path, class_root: Path, fraction: float, seed: int) -> DatasetSplits:
    from tlbench.images import FileImages

    if not 0.0 < fraction < 1.0:
        raise DatasetError(
            f"imagefolder: {class_root} has no val/, valid/, validation/ or test/ folder, so a fraction of "
            f"each class is held out for evaluation, but test_fraction={fraction} is not "
            f"between 0 and 1. Pass e.g. --test-fraction 0.2."
        )
    dirs = _class_dirs(class_root)
    by_class = _scan_classes(dirs, "", root, _owners(root, {"": dirs}))
    _check_disjoint(root, [("", by_class)])
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


def _class_dirs(class_root: Path) -> dict[str, str]:
    """Class name -> its folder under `class_root` (sorted by name)."""
    from tlbench.images import is_image_file

    try:
        entries = sorted(
            (e for e in os.scandir(class_root) if not e.name.startswith(".")),
            key=lambda e: e.name,
        )
    except OSError as exc:
        raise DatasetError(f"imagefolder: cannot read {class_root}: {exc.strerror or exc}") from exc
    class_dirs = [e for e in entries if _is_dir(e) and not _holds_tlbench_checkpoints(e.path)]
    if not class_dirs:
        loose = sum(1 for e in entries if _is_file(e) and is_image_file(e.name))
        hint = (
            f" It holds {loose} images directly: move them into one subfolder per class."
            if loose
            else ""
        )
        raise DatasetError(
            f"imagefolder: {class_root} has no class folders.{hint} Expected "
            f"{class_root}/<class>/<image> (or train/<class>/ and val/<class>/)."
        )
    return {e.name: e.path for e in class_dirs}


def _holds_tlbench_checkpoints(path: str) -> bool:
    """Whether `path` holds checkpoints `--save-models` wrote and no image: a `models/` left in
    the dataset folder by `--out` inside it is not a class (it would fail every later run)."""
    from tlbench.images import is_image_file

    try:
        with os.scandir(path) as it:
            names = [e.name for e in it if not e.name.startswith(".")]
    except OSError:
        return False
    if not names or any(is_image_file(n) for n in names):
        return False
    for name in names:
        if name.endswith(".json") and name[:-5] + ".safetensors" in names:
            sidecar = os.path.join(path, name)
            try:
                if os.path.getsize(sidecar) > 1 << 20:
                    continue
                with open(sidecar, encoding="utf-8") as f:
                    meta = json.load(f)
            except (OSError, ValueError):
                continue
            if isinstance(meta, dict) and str(meta.get("format", "")).startswith(
                "tlbench-checkpoint-"
            ):
                return True
    return False


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a link loop (`a -> a`) or an unreadable link: not a folder
        return False


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


#: (split, class): who a folder's files belong to.
_Owner = tuple[str, str]


def _owners(root: Path, splits: dict[str, dict[str, str]]) -> dict[str, _Owner]:
    """Real path of each class folder -> (split, class); two classes in one folder is an error."""
    owners: dict[str, _Owner] = {}
    for split, dirs in splits.items():
        for name, path in dirs.items():
            real = os.path.realpath(path)
            other = owners.get(real)
            if other is not None:
                here = f"{split}/{name}" if split else name
                there = f"{other[0]}/{other[1]}" if other[0] else other[1]
                if other[0] != split:
                    why = "the evaluation would run on training images"
                else:
                    why = "its images would carry two labels"
                raise DatasetError(
                    f"imagefolder: {root}: {here}/ and {there}/ are the same folder (a link), so "
                    f"{why}. Give each class of each split its own folder."
                )
            owners[real] = (split, name)
    return owners


def _owner_of(real: str, owners: dict[str, _Owner]) -> _Owner | None:
    """The class whose folder holds the real path `real` (the deepest), or None."""
    path = real
    while True:
        owner = owners.get(path)
        if owner is not None:
            return owner
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


def _scan_classes(
    dirs: dict[str, str], split: str, root: Path, owners: dict[str, _Owner]
) -> dict[str, list[_File]]:
    """Class name -> its image files (sorted by path, each once) in the class folders `dirs`."""
    from tlbench.images import IMG_EXTENSIONS

    root_real = os.path.realpath(root)
    by_class: dict[str, list[_File]] = {}
    for name, path in dirs.items():
        files: list[_File] = []
        walk = _Walk(root, root_real, owners, (split, name), files)
        walk.folder(path, os.path.realpath(path))
        if not files:
            raise DatasetError(
                f"imagefolder: class folder {path} has no images (looked for "
                f"{', '.join(IMG_EXTENSIONS)}; hidden files are ignored; files that links "
                f"lead to count in the class folder they are in). Add images or remove the folder."
            )
        files.sort(key=lambda f: f.rel)
        unique: dict[tuple[int, int], _File] = {}
        for f in files:
            unique.setdefault(f.ident, f)  # two links to one file: the file once
        by_class[name] = sorted(unique.values(), key=lambda f: f.rel)
    return by_class


@dataclass
class _Walk:
    """One class folder's walk: follows links, never loops, never takes others' files."""

    root: Path
    root_real: str
    owners: dict[str, _Owner]
    me: _Owner
    out: list[_File]

    def __post_init__(self) -> None:
        self.seen: set[tuple[int, int]] = set()
        # Trees of links to a shared copy have thousands of links into a few folders:
        # resolving and judging each folder once keeps them as fast as plain trees.
        self._real_dirs: dict[str, str] = {}
        self._mine_dirs: dict[str, bool] = {}

    def _mine(self, real: str) -> bool:
        owner = _owner_of(real, self.owners)
        if owner is not None:
            return owner == self.me
        # Under no class folder: inside the dataset folder it is no class's (loose files, an
        # unused split); outside it, it is the linking class's (a class folder on another disk).
        inside = real == self.root_real or real.startswith(self.root_real.rstrip(os.sep) + os.sep)
        return not inside

    def _file_is_mine(self, real: str) -> bool:
        # A file's owner is its folder's: no class folder is a file.
        folder = os.path.dirname(real)
        mine = self._mine_dirs.get(folder)
        if mine is None:
            mine = self._mine_dirs[folder] = self._mine(folder)
        return mine

    def _link_target(self, path: str, real_parent: str) -> str:
        """The real path of the file link `path` (in the real folder `real_parent`)."""
        try:
            head, tail = os.path.split(os.path.join(real_parent, os.readlink(path)))
        except OSError:
            return os.path.realpath(path)
        if tail in ("", ".", ".."):
            return os.path.realpath(path)
        real_head = self._real_dirs.get(head)
        if real_head is None:
            real_head = self._real_dirs[head] = os.path.realpath(head)
        target = os.path.join(real_head, tail)
        return os.path.realpath(target) if os.path.islink(target) else target  # a chain

    def folder(self, path: str, real: str) -> None:
        """Collect the files of the folder `path` (real path `real`) and of its sub-folders.

        Depth first with a stack of its own, not recursion: a tree 1,100
        folders deep is walked, not a RecursionError.
        """
        from tlbench.images import is_image_file

        stack = [opened] if (opened := self._open(path, real)) else []
        while stack:
            entries, here = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                continue
            if entry.name.startswith("."):
                continue
            link = entry.is_symlink()
            if _is_dir(entry):
                child = os.path.realpath(entry.path) if link else os.path.join(here, entry.name)
                owner = self.owners.get(child)
                if owner is not None and owner != self.me:
                    continue  # another class's folder: its files are counted there
                if link and not self._mine(child):
                    continue
                if opened := self._open(entry.path, child):
                    stack.append(opened)
            elif is_image_file(entry.name) and _is_file(entry):
                if link and not self._file_is_mine(self._link_target(entry.path, here)):
                    continue
                try:
                    stat = entry.stat()
                except FileNotFoundError:
                    continue  # removed while the folder was read (a sync in progress)
                rel = os.path.relpath(entry.path, self.root).replace(os.sep, "/")
                self.out.append(
                    _File(
                        entry.path, rel, stat.st_size, stat.st_mtime_ns, (stat.st_dev, stat.st_ino)
                    )
                )

    def _open(self, path: str, real: str) -> tuple[Iterator[os.DirEntry], str] | None:
        """The entries of a folder not walked yet, with its real path; None if walked."""
        try:
            st = os.stat(path)
        except OSError as exc:
            raise DatasetError(f"imagefolder: cannot read {path}: {exc.strerror or exc}") from exc
        # Symlinked folders are followed (as torchvision's ImageFolder does); a
        # link back up the tree must not loop forever.
        if (st.st_dev, st.st_ino) in self.seen:
            return None
        self.seen.add((st.st_dev, st.st_ino))
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except OSError as exc:
            raise DatasetError(
                f"imagefolder: cannot read {path}: {exc.strerror or exc}. Make it readable, or "
                "move it out of the dataset folder."
            ) from exc
        return iter(entries), real


def _check_disjoint(root: Path, splits: list[tuple[str, dict[str, list[_File]]]]) -> None:
    """One file (by device and inode: links and hard links too) in one class of one split."""
    where: dict[tuple[int, int], tuple[str, str, _File]] = {}
    for split, by_class in splits:
        for name, files in by_class.items():
            for f in files:
                other = where.get(f.ident)
                if other is None:
                    where[f.ident] = (split, name, f)
                    continue
                o_split, o_name, o_file = other
                a = f"{o_split}/{o_name}" if o_split else o_name
                b = f"{split}/{name}" if split else name
                why = (
                    "the evaluation would include a training image"
                    if o_split != split
                    else "it would carry two labels"
                )
                raise DatasetError(
                    f"imagefolder: {root}: one file is in both {a}/ and {b}/ ({o_file.path} and "
                    f"{f.path} are links to it, or hard links), so {why}. Keep it in one place."
                )


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
            # surrogateescape: a file name that is not UTF-8 hashes as its own bytes.
            h.update(f"\n{f.rel}\0{f.size}\0{f.mtime_ns}".encode(errors="surrogateescape"))
    return h.hexdigest()[:16]


@hookimpl
def tlbench_register_datasets(register: Callable[[Dataset], None]) -> None:
    register(
        Dataset(
            name="imagefolder",
            load=load_imagefolder,
            description="your images: <path>/{train,val|valid|test}/<class>/, or <path>/<class>/ split by test_fraction",
            takes_argument=True,
            argument_help="<path>",
        )
    )
