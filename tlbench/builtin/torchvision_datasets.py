"""Public benchmark datasets through torchvision's own dataset classes.

Each is stored under `<data_dir>/<name>/` in torchvision's layout (e.g.
`<data_dir>/cifar10/cifar-10-batches-py/`) and downloaded there by
torchvision when missing and downloads are allowed. A copy already in
torchvision's layout directly under `<data_dir>` (where torchvision's own
examples put it) is used too.

Splits: the official training split trains and the official test split
evaluates. Flowers102 and DTD ship a separate validation split; it is added
to training (train+val), the protocol of Kornblith et al. (2019), "Do Better
ImageNet Models Transfer Better?", so results compare with the literature.

Labels are read from the dataset's annotations, never by decoding images;
file-based datasets are decoded with `tlbench.images.open_rgb`, like
`imagefolder`.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlbench.errors import DatasetError
from tlbench.hookspecs import hookimpl
from tlbench.plugin_types import Dataset, DatasetRequest, DatasetSplits, ImageSource

if TYPE_CHECKING:
    # numpy, Pillow and torchvision load with the first dataset: registering is instant.
    import numpy as np
    from PIL import Image

# Bump when the split protocol or the fingerprint inputs change.
_VERSION = "tv-v1"


@dataclass(frozen=True)
class TorchvisionSpec:
    """How one torchvision dataset class becomes a tlbench dataset."""

    name: str
    #: attribute of `torchvision.datasets`.
    cls_name: str
    #: the folder torchvision keeps under its root: found on disk, fingerprinted.
    folder: str
    url: str
    #: constructor keyword sets whose images are concatenated into each split.
    train: tuple[dict[str, Any], ...]
    eval: tuple[dict[str, Any], ...]
    eval_split: str
    description: str
    native_size: int | None = None
    #: True where torchvision unpacks its archives inside `folder` rather than next to it.
    unpacks_inside: bool = False


SPECS: tuple[TorchvisionSpec, ...] = (
    TorchvisionSpec(
        "cifar10",
        "CIFAR10",
        "cifar-10-batches-py",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        ({"train": True},),
        ({"train": False},),
        "test",
        "CIFAR-10: 10 object classes, 50,000 train / 10,000 test, 32 px (torchvision, downloads)",
        32,
    ),
    TorchvisionSpec(
        "cifar100",
        "CIFAR100",
        "cifar-100-python",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        ({"train": True},),
        ({"train": False},),
        "test",
        "CIFAR-100: 100 object classes, 50,000 train / 10,000 test, 32 px (torchvision, downloads)",
        32,
    ),
    TorchvisionSpec(
        "flowers102",
        "Flowers102",
        "flowers-102",
        "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/",
        ({"split": "train"}, {"split": "val"}),
        ({"split": "test"},),
        "test",
        "Oxford Flowers-102: 102 species, 2,040 train+val / 6,149 test (torchvision, downloads, needs scipy)",
        unpacks_inside=True,
    ),
    TorchvisionSpec(
        "oxford_pets",
        "OxfordIIITPet",
        "oxford-iiit-pet",
        "https://www.robots.ox.ac.uk/~vgg/data/pets/",
        ({"split": "trainval"},),
        ({"split": "test"},),
        "test",
        "Oxford-IIIT Pet: 37 cat and dog breeds, 3,680 trainval / 3,669 test (torchvision, downloads)",
        unpacks_inside=True,
    ),
    TorchvisionSpec(
        "dtd",
        "DTD",
        "dtd",
        "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
        ({"split": "train"}, {"split": "val"}),
        ({"split": "test"},),
        "test",
        "Describable Textures: 47 textures, 3,760 train+val / 1,880 test, partition 1 (torchvision, downloads)",
        unpacks_inside=True,
    ),
    TorchvisionSpec(
        "food101",
        "Food101",
        "food-101",
        "http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",
        ({"split": "train"},),
        ({"split": "test"},),
        "test",
        "Food-101: 101 dishes, 75,750 train / 25,250 test, 5 GB (torchvision, downloads)",
    ),
    TorchvisionSpec(
        "stl10",
        "STL10",
        "stl10_binary",
        "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
        ({"split": "train"},),
        ({"split": "test"},),
        "test",
        "STL-10: 10 object classes, 5,000 train / 8,000 test, 96 px (torchvision, downloads)",
        96,
    ),
)


class ArrayImages:
    """An `ImageSource` over an in-memory uint8 array of shape (N, H, W, 3)."""

    def __init__(self, name: str, data: np.ndarray, labels: Sequence[int]):
        if data.ndim != 4 or data.shape[-1] != 3 or len(data) != len(labels):
            raise ValueError(f"expected (N, H, W, 3) images and N labels, got {data.shape}")
        self.name = name
        self.data = data
        self.labels = [int(label) for label in labels]

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int) -> Image.Image:
        import numpy as np
        from PIL import Image

        return Image.fromarray(np.ascontiguousarray(self.data[index]))

    def describe(self, index: int) -> str:
        return f"{self.name}[{index}]"

    def __repr__(self) -> str:
        return f"ArrayImages({self.name}, {len(self)} images)"


def load_torchvision(spec: TorchvisionSpec, request: DatasetRequest) -> DatasetSplits:
    """Open `spec`'s train and eval splits, downloading them first if allowed and missing."""
    root, train_parts, eval_parts = _open(spec, request)
    classes = [str(c) for c in _classes(train_parts[0], spec)]
    train = _adapt(f"{spec.name}[train]", train_parts, classes, spec)
    held = _adapt(f"{spec.name}[{spec.eval_split}]", eval_parts, classes, spec)
    return DatasetSplits(
        classes=classes,
        train=train,
        eval=held,
        eval_split=spec.eval_split,
        fingerprint=_fingerprint(spec, root, len(train), len(held)),
        info={
            "root": str(root),
            "source": f"torchvision.datasets.{spec.cls_name}",
            "train_split": "+".join(_split_name(k) for k in spec.train),
            "eval_split": "+".join(_split_name(k) for k in spec.eval),
        },
    )


def _split_name(kwargs: dict[str, Any]) -> str:
    if "split" in kwargs:
        return str(kwargs["split"])
    return "train" if kwargs.get("train") else "test"


def _open(spec: TorchvisionSpec, request: DatasetRequest) -> tuple[Path, list[Any], list[Any]]:
    data_dir = Path(request.data_dir).expanduser()
    home = data_dir / spec.name
    try:
        import torchvision.datasets as tvd
    except ImportError as exc:  # torch is installed without its vision half
        raise DatasetError(f"{spec.name} needs torchvision: pip install torchvision") from exc
    cls = getattr(tvd, spec.cls_name)

    def build(root: Path, download: bool) -> tuple[list[Any], list[Any]]:
        make = functools.partial(cls, str(root), download=download)
        return [make(**kw) for kw in spec.train], [make(**kw) for kw in spec.eval]

    damaged: tuple[Path, BaseException] | None = None
    for root in (home, data_dir):
        if not (root / spec.folder).exists():
            continue
        try:
            return (root, *build(root, download=False))
        except ModuleNotFoundError as exc:
            raise _missing_module(spec, exc) from exc
        except Exception as exc:  # torchvision reports damage as RuntimeError, OSError, ...
            damaged = damaged or (root, exc)

    if not request.download:
        if damaged is not None:
            where, exc = damaged
            raise DatasetError(
                f"{spec.name}: found {where / spec.folder} but torchvision cannot read it "
                f"({type(exc).__name__}: {exc}). Delete it and allow downloads, or replace it "
                f"with a complete copy."
            ) from exc
        raise DatasetError(
            f"{spec.name}: not found in {home / spec.folder} and downloads are off. Allow "
            f"downloads, put a copy in torchvision's layout there (source: {spec.url}), pass "
            f"--data-dir pointing to a folder holding one, or use imagefolder:<path>."
        )
    try:
        return (home, *build(home, download=True))
    except ModuleNotFoundError as exc:
        raise _missing_module(spec, exc) from exc
    except Exception as exc:  # network, checksum and archive errors come in many types
        raise DatasetError(
            f"{spec.name}: download failed ({type(exc).__name__}: {exc}). tlbench expected "
            f"the files in {home / spec.folder}. Fetch {spec.url} on a connected machine and "
            f"unpack it into {home / spec.folder if spec.unpacks_inside else home}, pass "
            f"--data-dir pointing to a folder holding a copy, or use imagefolder:<path> for "
            f"images on disk."
        ) from exc


def _missing_module(spec: TorchvisionSpec, exc: ModuleNotFoundError) -> DatasetError:
    package = (exc.name or "").split(".")[0] or str(exc)
    return DatasetError(
        f"{spec.name}: torchvision needs {package} to read it: pip install {package}"
    )


def _classes(dataset: Any, spec: TorchvisionSpec) -> Sequence[Any]:
    classes = getattr(dataset, "classes", None)
    if classes is None:
        raise DatasetError(
            f"{spec.name}: torchvision.datasets.{spec.cls_name} gave no class names; its "
            f"class list file is missing. Delete the copy and download again."
        )
    return classes


def _adapt(name: str, parts: list[Any], classes: list[str], spec: TorchvisionSpec) -> ImageSource:
    """Wrap torchvision dataset objects as one `ImageSource` without decoding images."""
    import numpy as np

    from tlbench.images import FileImages

    labels: list[int] = []
    for ds in parts:
        labels.extend(_labels(ds, name, classes, spec))
    paths: list[str] = []
    for ds in parts:
        files = _first_attr(ds, ("_image_files", "_images"))
        if files is None:
            break
        paths.extend(os.fspath(f) for f in files)
    else:
        return FileImages(paths, labels)
    # In-memory datasets (CIFAR, STL-10) come one part per split.
    if len(parts) != 1 or not isinstance(getattr(parts[0], "data", None), np.ndarray):
        raise DatasetError(
            f"{name}: this torchvision version stores images in a way tlbench does not know; "
            f"use imagefolder:<path> or report it."
        )
    data = parts[0].data
    if data.ndim == 4 and data.shape[1] == 3 and data.shape[-1] != 3:
        data = data.transpose(0, 2, 3, 1)  # STL-10 is stored channels-first
    return ArrayImages(name, data, labels)


def _first_attr(obj: Any, names: Sequence[str]) -> Any:
    for attr in names:
        value = getattr(obj, attr, None)
        if value is not None:
            return value
    return None


def _labels(dataset: Any, name: str, classes: list[str], spec: TorchvisionSpec) -> list[int]:
    # Private attributes: torchvision has no public label list on these classes.
    raw = _first_attr(dataset, ("_labels", "targets", "labels"))
    if raw is None:
        raise DatasetError(f"{name}: cannot find the labels on {type(dataset).__name__}")
    labels = [int(x) for x in raw]
    own = [str(c) for c in _classes(dataset, spec)]
    if own == classes:
        return labels
    # DTD derives each split's class list from that split's files: map by name.
    index = {c: i for i, c in enumerate(classes)}
    missing = sorted(set(own) - set(index))
    if missing:
        raise DatasetError(
            f"{name}: classes {', '.join(missing)} are not in the training split; the copy "
            f"looks damaged. Delete it and download again."
        )
    return [index[own[label]] for label in labels]


def _fingerprint(spec: TorchvisionSpec, root: Path, n_train: int, n_eval: int) -> str:
    """Name, split rule and sizes, and the stats of the top two levels of the data folder.

    Cheap (no file reads, no per-image stats) and changes when files are
    replaced, added or removed at the levels where the archives unpack.
    """
    h = hashlib.sha256(
        f"{_VERSION}|{spec.name}|{spec.train}|{spec.eval}|{n_train}|{n_eval}".encode()
    )
    base = root / spec.folder
    for rel, st in _stats(base, depth=2):
        h.update(f"\n{rel}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _stats(folder: Path, depth: int, prefix: str = "") -> list[tuple[str, os.stat_result]]:
    out: list[tuple[str, os.stat_result]] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return out
    for entry in entries:
        rel = f"{prefix}{entry.name}"
        try:
            out.append((rel, entry.stat()))
        except OSError:
            continue
        if depth > 1 and entry.is_dir():
            out.extend(_stats(Path(entry.path), depth - 1, rel + "/"))
    return out


@hookimpl
def tlbench_register_datasets(register: Callable[[Dataset], None]) -> None:
    for spec in SPECS:
        register(
            Dataset(
                name=spec.name,
                load=functools.partial(load_torchvision, spec),
                description=spec.description,
                native_size=spec.native_size,
            )
        )
