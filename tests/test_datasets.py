"""The builtin dataset plugins: imagefolder, the torchvision datasets and synthetic."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlbench.builtin import imagefolder, synthetic, torchvision_datasets
from tlbench.builtin.imagefolder import load_imagefolder
from tlbench.builtin.synthetic import CLASSES, Clutter, SyntheticConfig, make_synthetic
from tlbench.builtin.torchvision_datasets import SPECS, load_torchvision
from tlbench.errors import DatasetError
from tlbench.plugin_types import DatasetRequest, DatasetSplits, ImageSource
from tlbench.plugins import Plugins

FLOWERS12 = Path(__file__).resolve().parents[2] / "shared" / "data" / "flowers12"


# --------------------------------------------------------------------------- helpers


def _image(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, 255 - value, 7)).save(path)
    return path


def _tree(root: Path, spec: dict[str, int]) -> Path:
    """`{"train/cat": 3, "val/cat": 1}` -> that many 8x8 PNGs in each folder."""
    for folder, count in spec.items():
        for i in range(count):
            _image(root / folder / f"img{i:03d}.png", value=i * 10 % 256)
    return root


def _request(argument: str | Path | None, tmp_path: Path, **kw) -> DatasetRequest:
    return DatasetRequest(
        argument=None if argument is None else str(argument), data_dir=tmp_path / "data", **kw
    )


def _check_source(source: ImageSource, n_classes: int) -> None:
    assert isinstance(source, ImageSource)
    assert len(source) == len(source.labels) > 0
    assert all(0 <= label < n_classes for label in source.labels)
    image = source.load(len(source) - 1)
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    assert isinstance(source.describe(0), str) and source.describe(0)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail every URL open (as offline), recording the URLs tried."""
    tried: list[str] = []

    def refuse(request, *args, **kwargs):
        tried.append(getattr(request, "full_url", str(request)))
        raise urllib.error.URLError("network is unreachable (blocked by the test)")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return tried


# --------------------------------------------------------------------------- registration


def test_plugins_register_the_datasets() -> None:
    plugins = Plugins(
        builtins=False,
        entry_points=False,
        extra=[
            ("imagefolder", imagefolder),
            ("torchvision_datasets", torchvision_datasets),
            ("synthetic", synthetic),
        ],
    )
    assert not plugins.failures
    expected = {"imagefolder", "synthetic"} | {s.name for s in SPECS}
    assert set(plugins.datasets.names()) == expected
    assert {s.name for s in SPECS} >= {
        "cifar10",
        "cifar100",
        "flowers102",
        "oxford_pets",
        "dtd",
        "food101",
        "stl10",
    }
    folder, argument = plugins.dataset("imagefolder:~/pics")
    assert folder.takes_argument and folder.argument_help == "<path>" and argument == "~/pics"
    assert plugins.datasets.get("synthetic").native_size == 64
    assert not plugins.datasets.get("synthetic").takes_argument
    assert plugins.datasets.get("cifar10").native_size == 32
    for dataset in plugins.datasets:
        assert dataset.description and "\n" not in dataset.description


# --------------------------------------------------------------------------- imagefolder


def test_imagefolder_train_val_tree(tmp_path: Path) -> None:
    root = _tree(tmp_path / "ants_bees", {"train/bees": 3, "train/ants": 2, "val/ants": 1})
    _image(root / "val/bees/deep/nested/x.JPG")  # recursive, extension case-insensitive
    (root / "train/ants/notes.txt").write_text("not an image")
    _image(root / "train/ants/.hidden.png")
    _image(root / "train/.thumbs/t.png")  # hidden folders are not classes
    (root / "README.md").write_text("top-level files are ignored")

    splits = load_imagefolder(_request(root, tmp_path))
    assert splits.classes == ["ants", "bees"]
    assert splits.eval_split == "val"
    assert splits.train.labels == [0, 0, 1, 1, 1]
    assert splits.eval.labels == [0, 1]
    assert splits.train.describe(0) == str(root.resolve() / "train/ants/img000.png")
    assert splits.eval.describe(1).endswith("x.JPG")
    assert splits.train.load(2).mode == "RGB"
    assert splits.info["eval_dir"] == "val"
    _check_source(splits.train, 2)
    _check_source(splits.eval, 2)


@pytest.mark.parametrize(
    ("present", "chosen"),
    [(("val", "valid", "test"), "val"), (("valid", "test"), "valid"), (("test",), "test")],
)
def test_imagefolder_prefers_val_then_valid_then_test(
    tmp_path: Path, present: tuple[str, ...], chosen: str
) -> None:
    root = _tree(tmp_path / "d", {"train/a": 1, **{f"{d}/a": 2 for d in present}})
    splits = load_imagefolder(_request(root, tmp_path))
    assert splits.eval_split == chosen
    assert all(f"/{chosen}/" in splits.eval.describe(i) for i in range(len(splits.eval)))


def test_imagefolder_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    _tree(tmp_path / "pics", {"train/a": 1, "test/a": 1})
    assert len(load_imagefolder(_request("~/pics", tmp_path)).train) == 1


def test_imagefolder_fraction_split_is_stratified_and_seeded(tmp_path: Path) -> None:
    root = _tree(tmp_path / "flat", {"a": 10, "b": 5, "c": 2, "d": 1})
    splits = load_imagefolder(_request(root, tmp_path, test_fraction=0.2, split_seed=0))
    assert splits.classes == ["a", "b", "c", "d"]
    held = Counter(splits.eval.labels)
    kept = Counter(splits.train.labels)
    # round(n * 0.2), at least one held out when a class has two or more, one always kept.
    assert held == {0: 2, 1: 1, 2: 1}
    assert kept == {0: 8, 1: 4, 2: 1, 3: 1}
    train_files = {splits.train.describe(i) for i in range(len(splits.train))}
    eval_files = {splits.eval.describe(i) for i in range(len(splits.eval))}
    assert not train_files & eval_files
    assert len(train_files | eval_files) == 18

    again = load_imagefolder(_request(root, tmp_path, test_fraction=0.2, split_seed=0))
    assert [again.eval.describe(i) for i in range(len(again.eval))] == sorted(
        eval_files, key=[splits.eval.describe(i) for i in range(len(splits.eval))].index
    )
    assert again.fingerprint == splits.fingerprint
    other = load_imagefolder(_request(root, tmp_path, test_fraction=0.2, split_seed=1))
    assert {other.eval.describe(i) for i in range(len(other.eval))} != eval_files
    assert other.fingerprint != splits.fingerprint
    more = load_imagefolder(_request(root, tmp_path, test_fraction=0.5, split_seed=0))
    assert len(more.eval) == 5 + 2 + 1 and more.fingerprint != splits.fingerprint


def test_imagefolder_with_only_train_splits_it(tmp_path: Path) -> None:
    root = _tree(tmp_path / "d", {"train/a": 4, "train/b": 4})
    splits = load_imagefolder(_request(root, tmp_path, test_fraction=0.25))
    assert splits.classes == ["a", "b"]
    assert (len(splits.train), len(splits.eval)) == (6, 2)


def test_imagefolder_does_not_decode_when_loading(tmp_path: Path) -> None:
    root = _tree(tmp_path / "d", {"train/a": 1, "val/a": 1})
    (root / "train/a/broken.jpg").write_bytes(b"not a jpeg at all")
    splits = load_imagefolder(_request(root, tmp_path))
    assert len(splits.train) == 2  # listed: the decode cache, not the plugin, finds it broken
    broken = next(i for i in range(2) if splits.train.describe(i).endswith("broken.jpg"))
    with pytest.raises(OSError):
        splits.train.load(broken)


def test_imagefolder_fingerprint_follows_the_files(tmp_path: Path) -> None:
    root = _tree(tmp_path / "d", {"train/a": 2, "train/b": 2, "val/a": 1, "val/b": 1})

    def fingerprint() -> str:
        return load_imagefolder(_request(root, tmp_path)).fingerprint

    first = fingerprint()
    assert fingerprint() == first
    (root / "train/a/notes.txt").write_text("ignored")
    assert fingerprint() == first

    _image(root / "train/a/new.png")
    added = fingerprint()
    assert added != first

    target = root / "train/a/img000.png"
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    touched = fingerprint()
    assert touched != added

    target.rename(root / "train/a/renamed.png")
    assert fingerprint() != touched

    (root / "train/a/renamed.png").rename(root / "train/b/renamed.png")  # relabelled
    assert fingerprint() not in {first, added, touched}


def test_imagefolder_fingerprint_survives_moving_the_folder(tmp_path: Path) -> None:
    root = _tree(tmp_path / "here", {"train/a": 1, "val/a": 1})
    before = load_imagefolder(_request(root, tmp_path)).fingerprint
    root.rename(tmp_path / "there")
    assert load_imagefolder(_request(tmp_path / "there", tmp_path)).fingerprint == before


def test_imagefolder_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nope does not exist.*train/ and val/"):
        load_imagefolder(_request(tmp_path / "nope", tmp_path))


def test_imagefolder_file_instead_of_folder(tmp_path: Path) -> None:
    path = _image(tmp_path / "one.png")
    with pytest.raises(DatasetError, match=r"one.png is not a directory"):
        load_imagefolder(_request(path, tmp_path))


def test_imagefolder_without_class_folders(tmp_path: Path) -> None:
    _image(tmp_path / "loose" / "a.png")
    _image(tmp_path / "loose" / "b.png")
    with pytest.raises(DatasetError, match=r"no class folders.*holds 2 images directly"):
        load_imagefolder(_request(tmp_path / "loose", tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty has no class folders"):
        load_imagefolder(_request(tmp_path / "empty", tmp_path))


def test_imagefolder_class_folder_without_images(tmp_path: Path) -> None:
    root = _tree(tmp_path / "d", {"train/cat": 2, "val/cat": 1, "val/dog": 1})
    (root / "train/dog").mkdir()
    (root / "train/dog/readme.txt").write_text("no images here")
    with pytest.raises(DatasetError, match=r"class folder .*train/dog has no images"):
        load_imagefolder(_request(root, tmp_path))


def test_imagefolder_train_and_eval_classes_differ(tmp_path: Path) -> None:
    root = _tree(
        tmp_path / "d",
        {"train/cat": 1, "train/dog": 1, "train/owl": 1, "test/cat": 1, "test/emu": 1},
    )
    with pytest.raises(DatasetError) as info:
        load_imagefolder(_request(root, tmp_path))
    message = str(info.value)
    assert "only in train/: dog, owl" in message
    assert "only in test/: emu" in message
    assert str(root.resolve()) in message


def test_imagefolder_rejects_a_fraction_outside_0_1(tmp_path: Path) -> None:
    root = _tree(tmp_path / "flat", {"a": 3})
    with pytest.raises(DatasetError, match=r"test_fraction=0\.0 is not between 0 and 1"):
        load_imagefolder(_request(root, tmp_path, test_fraction=0.0))


def test_imagefolder_reads_flowers12() -> None:
    if not FLOWERS12.is_dir():
        pytest.skip(f"{FLOWERS12} not present")
    splits = load_imagefolder(DatasetRequest(str(FLOWERS12), data_dir=Path("unused")))
    assert len(splits.classes) == 12 and "sunflower" in splits.classes
    assert (len(splits.train), len(splits.eval)) == (720, 240)
    assert splits.eval_split == "test"
    assert Counter(splits.eval.labels) == {k: 20 for k in range(12)}
    assert splits.train.load(0).size == (224, 224)


# --------------------------------------------------------------------------- torchvision

CIFAR_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _fake_cifar10(folder: Path, monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    """A tiny CIFAR-10 in torchvision's exact on-disk layout; returns the train images.

    torchvision checks every file's md5 against the real archive's; the test
    points those checksums at the fake files, so the real loading code runs.
    """
    from torchvision.datasets import CIFAR10

    rng = np.random.default_rng(0)
    base = folder / "cifar-10-batches-py"
    base.mkdir(parents=True)
    batches = {f"data_batch_{k}": 2 for k in range(1, 6)} | {"test_batch": 3}
    train_images = []
    for k, (name, count) in enumerate(batches.items()):
        data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        labels = [(2 * k + j) % 10 for j in range(count)]
        with open(base / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": data, "labels": labels}, f)
        if name != "test_batch":
            train_images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR_NAMES, "num_vis": 3072}, f)
    monkeypatch.setattr(
        CIFAR10,
        "train_list",
        [[f"data_batch_{k}", _md5(base / f"data_batch_{k}")] for k in range(1, 6)],
    )
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", _md5(base / "test_batch")]])
    monkeypatch.setattr(
        CIFAR10,
        "meta",
        {"filename": "batches.meta", "key": "label_names", "md5": _md5(base / "batches.meta")},
    )
    return np.concatenate(train_images)


def _spec(name: str):
    return next(s for s in SPECS if s.name == name)


@pytest.mark.parametrize("download", [False, True])
def test_cifar10_loads_through_torchvision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: list[str], download: bool
) -> None:
    images = _fake_cifar10(tmp_path / "data" / "cifar10", monkeypatch)
    splits = load_torchvision(_spec("cifar10"), _request(None, tmp_path, download=download))
    assert no_network == []  # present and intact: nothing fetched
    assert splits.classes == CIFAR_NAMES
    assert (len(splits.train), len(splits.eval)) == (10, 3)
    assert splits.train.labels == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert splits.eval.labels == [0, 1, 2]
    assert splits.eval_split == "test"
    np.testing.assert_array_equal(np.asarray(splits.train.load(7)), images[7])
    assert splits.train.describe(7) == "cifar10[train][7]"
    assert splits.eval.describe(2) == "cifar10[test][2]"
    assert splits.info["root"] == str(tmp_path / "data" / "cifar10")
    _check_source(splits.train, 10)
    _check_source(splits.eval, 10)


def test_cifar10_fingerprint_follows_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: list[str]
) -> None:
    _fake_cifar10(tmp_path / "data" / "cifar10", monkeypatch)
    request = _request(None, tmp_path, download=False)
    first = load_torchvision(_spec("cifar10"), request).fingerprint
    assert load_torchvision(_spec("cifar10"), request).fingerprint == first
    batch = tmp_path / "data/cifar10/cifar-10-batches-py/test_batch"
    os.utime(batch, ns=(batch.stat().st_atime_ns, batch.stat().st_mtime_ns + 10**9))
    assert load_torchvision(_spec("cifar10"), request).fingerprint != first


def test_cifar10_copy_directly_under_data_dir_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: list[str]
) -> None:
    # torchvision's own examples use root=<data_dir>: a copy there is found.
    _fake_cifar10(tmp_path / "data", monkeypatch)
    splits = load_torchvision(_spec("cifar10"), _request(None, tmp_path, download=True))
    assert len(splits.train) == 10 and splits.info["root"] == str(tmp_path / "data")
    assert no_network == []


def test_cifar10_downloads_through_torchvision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real download code: fetch the archive (served by the test), check its md5, unpack."""
    from torchvision.datasets import CIFAR10

    _fake_cifar10(tmp_path / "staging", monkeypatch)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        tar.add(tmp_path / "staging" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    payload = archive.getvalue()
    monkeypatch.setattr(CIFAR10, "tgz_md5", hashlib.md5(payload).hexdigest())
    served: list[str] = []

    class Response(io.BytesIO):
        def __init__(self, url: str):
            super().__init__(payload)
            self.url, self.length = url, len(payload)

    def urlopen(request, *args, **kwargs):
        served.append(request.full_url)
        return Response(request.full_url)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    splits = load_torchvision(_spec("cifar10"), _request(None, tmp_path, download=True))
    assert CIFAR10.url in served
    assert (tmp_path / "data/cifar10/cifar-10-python.tar.gz").is_file()
    assert (len(splits.train), len(splits.eval)) == (10, 3)


def test_offline_download_failure_is_a_clear_error(tmp_path: Path, no_network: list[str]) -> None:
    with pytest.raises(DatasetError) as info:
        load_torchvision(_spec("cifar10"), _request(None, tmp_path, download=True))
    message = str(info.value)
    assert no_network, "the download should have been attempted"
    assert "download failed" in message and "URLError" in message
    assert str(tmp_path / "data" / "cifar10" / "cifar-10-batches-py") in message
    assert f"unpack it into {tmp_path / 'data' / 'cifar10'}," in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
    assert "--data-dir" in message and "imagefolder:<path>" in message


def test_missing_dataset_without_download_is_a_clear_error(
    tmp_path: Path, no_network: list[str]
) -> None:
    with pytest.raises(DatasetError, match=r"not found in .*stl10_binary.*--data-dir"):
        load_torchvision(_spec("stl10"), _request(None, tmp_path, download=False))
    assert no_network == []


def test_damaged_copy_without_download_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: list[str]
) -> None:
    _fake_cifar10(tmp_path / "data" / "cifar10", monkeypatch)
    (tmp_path / "data/cifar10/cifar-10-batches-py/data_batch_3").write_bytes(b"cut short")
    with pytest.raises(DatasetError, match=r"cannot read it.*Delete it"):
        load_torchvision(_spec("cifar10"), _request(None, tmp_path, download=False))


def test_file_based_dataset_joins_train_and_val(tmp_path: Path, no_network: list[str]) -> None:
    """DTD in torchvision's layout: train+val train, test evaluates, images stay files."""
    data = tmp_path / "data" / "dtd" / "dtd" / "dtd"
    listing = {"train": ["banded", "dotted"], "val": ["dotted", "banded"], "test": ["banded"]}
    (data / "labels").mkdir(parents=True)
    for split, classes in listing.items():
        lines = []
        for k, cls in enumerate(classes):
            _image(data / "images" / cls / f"{cls}_{split}{k}.jpg", value=k)
            lines.append(f"{cls}/{cls}_{split}{k}.jpg")
        (data / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")

    splits = load_torchvision(_spec("dtd"), _request(None, tmp_path, download=True))
    assert splits.classes == ["banded", "dotted"]
    assert splits.train.labels == [0, 1, 1, 0]
    assert splits.eval.labels == [0]
    assert splits.train.describe(1).endswith("images/dotted/dotted_train1.jpg")
    assert splits.info["train_split"] == "train+val"
    _check_source(splits.train, 2)


def test_missing_optional_reader_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: list[str]
) -> None:
    """Flowers102's labels are .mat files: without scipy the error says what to install."""
    import sys

    from torchvision.datasets import Flowers102

    base = tmp_path / "data" / "flowers102" / "flowers-102"
    (base / "jpg").mkdir(parents=True)
    files = {}
    for key in ("label", "setid"):
        name = Flowers102._file_dict[key][0]
        (base / name).write_bytes(key.encode())
        files[key] = (name, _md5(base / name))
    monkeypatch.setattr(Flowers102, "_file_dict", {**Flowers102._file_dict, **files})
    for module in ("scipy", "scipy.io"):  # as if scipy were not installed
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(DatasetError, match=r"flowers102: .*needs scipy.*pip install scipy"):
        load_torchvision(_spec("flowers102"), _request(None, tmp_path, download=False))


# --------------------------------------------------------------------------- synthetic


def test_synthetic_shape_and_labels() -> None:
    splits = make_synthetic()
    assert isinstance(splits, DatasetSplits)
    assert splits.classes == list(CLASSES) and len(CLASSES) == 10
    assert (len(splits.train), len(splits.eval)) == (600, 200)
    assert Counter(splits.train.labels) == {k: 60 for k in range(10)}
    assert Counter(splits.eval.labels) == {k: 20 for k in range(10)}
    image = splits.train.load(0)
    assert image.mode == "RGB" and image.size == (64, 64)
    assert splits.train.describe(3) == "synthetic[train][3]"
    _check_source(splits.eval, 10)


def test_synthetic_is_deterministic_and_random_access() -> None:
    first = make_synthetic()
    later = np.asarray(first.train.load(37))
    fresh = make_synthetic()
    assert np.array_equal(np.asarray(fresh.train.load(37)), later)
    assert np.array_equal(np.asarray(first.train.load(37)), later)
    assert not np.array_equal(np.asarray(first.eval.load(37)), later)  # splits never coincide
    assert not np.array_equal(np.asarray(first.train.load(38)), later)
    with pytest.raises(IndexError):
        first.eval.load(200)


def test_synthetic_images_are_not_noise_or_flat() -> None:
    # Without clutter each image is one solid shape on a smooth background:
    # a big, sharp-edged region whose colour differs from the rest.
    plain = Clutter(
        lines_behind=(0, 0),
        lines_front=(0, 0),
        distractors=(0, 0),
        outline=0.0,
        texture=0.0,
        detail=(0.0, 0.0),
        grain=(0.0, 0.0),
        blur=0.0,
    )
    splits = make_synthetic(SyntheticConfig(train_per_class=1, eval_per_class=1, clutter=plain))
    for i in range(10):
        pixels = np.asarray(splits.train.load(i)).astype(int)
        _, counts = np.unique(pixels.reshape(-1, 3), axis=0, return_counts=True)
        assert counts.max() > 0.05 * 64 * 64, CLASSES[i]  # the solid shape
        assert pixels.std() > 10


def test_synthetic_fingerprint_changes_with_the_generator() -> None:
    base = make_synthetic().fingerprint
    assert make_synthetic().fingerprint == base
    assert make_synthetic(SyntheticConfig(size=32)).fingerprint != base
    assert make_synthetic(SyntheticConfig(seed=1)).fingerprint != base
    assert make_synthetic(SyntheticConfig(clutter=Clutter(blur=0.0))).fingerprint != base
    smaller = make_synthetic(SyntheticConfig(size=32))
    assert smaller.train.load(0).size == (32, 32)
