"""The `hf:<name>` dataset kind of plugins/tlbench-hf, on datasets the tests write to disk.

Needs `datasets` and the plugin (`pip install ./plugins/tlbench-hf`, which brings
`datasets`); without them these tests skip, saying so. Nothing reaches the network:
the Hugging Face caches point into tmp_path and offline mode is on.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from imagetree import CLASS_COLOURS, square_image

import tlbench
from tlbench import cli, testing
from tlbench.builtin.imagefolder import load_imagefolder
from tlbench.errors import DatasetError
from tlbench.plugin_types import DatasetRequest

datasets = pytest.importorskip(
    "datasets", reason="needs `datasets`: pip install ./plugins/tlbench-hf"
)
tlbench_hf = pytest.importorskip(
    "tlbench_hf", reason="tlbench-hf is not installed: pip install ./plugins/tlbench-hf"
)

CLASSES = list(CLASS_COLOURS)  # cat, dog, fox


@pytest.fixture(autouse=True)
def offline_hf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Hugging Face caches in tmp_path, offline: a test can never download or reuse a user's cache."""
    import huggingface_hub.constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache / "datasets")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache / "hub"))
    return cache


def _table(per_class: int, seed: int, *, labels: list[int] | None = None, **extra_columns):
    """A datasets.Dataset of coloured squares: columns img (Image) and label (ClassLabel)."""
    images, ys = [], []
    for c, colour in enumerate(CLASS_COLOURS.values()):
        for i in range(per_class):
            images.append(square_image(colour, seed * 100_000 + c * 1000 + i))
            ys.append(c)
    columns = {"img": images, "label": labels if labels is not None else ys}
    features = {"img": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)}
    for name, (feature, values) in extra_columns.items():
        columns[name] = values
        features[name] = feature
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def _load(argument: str | Path, tmp_path: Path, **kw) -> tlbench.DatasetSplits:
    request = DatasetRequest(argument=str(argument), data_dir=tmp_path / "data", **kw)
    return tlbench_hf.HF.load(request)


def _class_of(image) -> int:
    """Which class colour an image shows: the colour most of its pixels are closest to."""
    pixels = np.asarray(image).reshape(-1, 3).astype(int)
    counts = [np.sum(np.all(pixels == colour, axis=1)) for colour in CLASS_COLOURS.values()]
    return int(np.argmax(counts))


# --------------------------------------------------------------------------- registration


def test_registering_imports_neither_torch_nor_datasets() -> None:
    code = (
        "import sys, tlbench\n"
        "p = tlbench.Plugins(builtins=False)\n"
        "print(p.datasets.get('hf').argument_help)\n"
        "print('torch' in sys.modules, 'datasets' in sys.modules)\n"
    )
    env = {**__import__("os").environ, "TLBENCH_LOAD_PLUGINS": "hf"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.splitlines()
    assert out[0].startswith("<hub id or folder>")
    assert out[1] == "False False", out


def test_distribution_registers_through_the_entry_point() -> None:
    eps = importlib.metadata.entry_points(group="tlbench")
    assert any(ep.name == "hf" and ep.value == "tlbench_hf" for ep in eps)


# --------------------------------------------------------------------------- save_to_disk


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    """A DatasetDict with train (6 per class) and test (2 per class), written by save_to_disk."""
    path = tmp_path / "squares"
    datasets.DatasetDict({"train": _table(6, seed=0), "test": _table(2, seed=1)}).save_to_disk(
        str(path)
    )
    return path


def test_save_to_disk_dataset_loads_with_its_classes_splits_and_labels(
    saved: Path, tmp_path: Path
) -> None:
    splits = _load(saved, tmp_path)
    assert splits.classes == CLASSES
    assert (len(splits.train), len(splits.eval)) == (18, 6)
    assert splits.eval_split == "test"
    assert list(splits.train.labels) == [0] * 6 + [1] * 6 + [2] * 6
    assert list(splits.eval.labels) == [0, 0, 1, 1, 2, 2]
    # Every image shows its class's colour: labels and pixels line up.
    for source in (splits.train, splits.eval):
        shown = [_class_of(source.load(i)) for i in range(len(source))]
        assert shown == list(source.labels)
    assert source.load(0).mode == "RGB" and source.load(0).size == (24, 24)
    assert splits.info["image_column"] == "img" and splits.info["label_column"] == "label"
    assert splits.info["root"] == str(saved.resolve())
    # The contract every tlbench dataset plugin meets.
    testing.check_dataset(
        tlbench_hf.HF, DatasetRequest(argument=str(saved), data_dir=tmp_path, download=False)
    )


def test_validation_split_is_preferred_and_unlabelled_test_splits_are_skipped(
    tmp_path: Path,
) -> None:
    unlabelled = _table(2, seed=2, labels=[-1] * 6)
    path = tmp_path / "three"
    datasets.DatasetDict(
        {"train": _table(4, seed=0), "validation": _table(1, seed=1), "test": unlabelled}
    ).save_to_disk(str(path))
    splits = _load(path, tmp_path)
    assert splits.eval_split == "validation" and len(splits.eval) == 3

    only_unlabelled_test = tmp_path / "two"
    datasets.DatasetDict({"train": _table(4, seed=0), "test": unlabelled}).save_to_disk(
        str(only_unlabelled_test)
    )
    splits = _load(only_unlabelled_test, tmp_path, test_fraction=0.25)
    assert splits.eval_split == "val"  # held out of train, as the test split has no labels
    assert (len(splits.train), len(splits.eval)) == (9, 3)
    with pytest.raises(DatasetError, match="unlabelled rows"):
        _load(f"{only_unlabelled_test}?eval=test", tmp_path)


def test_unlabelled_training_rows_are_left_out(tmp_path: Path) -> None:
    labels = [0, 0, -1, 1, 1, -1, 2, 2, 2]
    path = tmp_path / "partly"
    datasets.DatasetDict(
        {"train": _table(3, seed=0, labels=labels), "test": _table(1, seed=1)}
    ).save_to_disk(str(path))
    splits = _load(path, tmp_path)
    assert list(splits.train.labels) == [0, 0, 1, 1, 2, 2, 2]
    assert splits.info["unlabelled_rows_left_out"] == 2


# --------------------------------------------------------------------------- held-out rule


def test_without_an_eval_split_the_imagefolder_rule_holds_out_the_same_images(
    tmp_path: Path,
) -> None:
    # The same images as an HF dataset (one split) and as an image-folder tree, in the same order.
    per_class = 9
    table = _table(per_class, seed=0)
    table.save_to_disk(str(tmp_path / "single"))  # a Dataset, not a DatasetDict
    tree = tmp_path / "tree"
    for row in range(len(table)):
        item = table[row]
        folder = tree / CLASSES[item["label"]]
        folder.mkdir(parents=True, exist_ok=True)
        item["img"].save(folder / f"{row:03d}.png")

    for fraction, seed in [(0.25, 0), (0.25, 3), (0.5, 1)]:
        hf = _load(tmp_path / "single", tmp_path, test_fraction=fraction, split_seed=seed)
        folder = load_imagefolder(
            DatasetRequest(str(tree), tmp_path, test_fraction=fraction, split_seed=seed)
        )
        assert hf.classes == folder.classes == CLASSES
        assert hf.eval_split == "val"
        held = round(per_class * fraction)
        assert sorted(hf.eval.labels) == [c for c in range(3) for _ in range(held)]
        assert len(hf.train) + len(hf.eval) == 27
        hf_eval = sorted(hf.eval.load(i).tobytes() for i in range(len(hf.eval)))
        folder_eval = sorted(folder.eval.load(i).tobytes() for i in range(len(folder.eval)))
        assert hf_eval == folder_eval  # the very same images held out
        train = {hf.train.describe(i) for i in range(len(hf.train))}
        assert not train & {hf.eval.describe(i) for i in range(len(hf.eval))}

    a = _load(tmp_path / "single", tmp_path, test_fraction=0.25, split_seed=0)
    b = _load(tmp_path / "single", tmp_path, test_fraction=0.25, split_seed=3)
    assert a.eval.rows != b.eval.rows  # the split seed moves the held-out rows
    assert a.fingerprint != b.fingerprint
    with pytest.raises(DatasetError, match=r"test_fraction=1\.5 is not between 0 and 1"):
        _load(tmp_path / "single", tmp_path, test_fraction=1.5)


# --------------------------------------------------------------------------- columns


def test_columns_are_found_or_named(tmp_path: Path) -> None:
    n = 12
    coarse = datasets.ClassLabel(names=["warm", "cool"])
    table = _table(
        4,
        seed=0,
        coarse=(coarse, [0] * 4 + [1] * 8),
        thumb=(datasets.Image(), [square_image((0, 0, 0), i, 8) for i in range(n)]),
    )
    path = tmp_path / "two_of_each"
    datasets.DatasetDict({"train": table, "test": table}).save_to_disk(str(path))
    with pytest.raises(DatasetError, match=r"several Image columns \(img, thumb\).*\?image="):
        _load(path, tmp_path)
    with pytest.raises(DatasetError, match=r"several ClassLabel columns \(label, coarse\)"):
        _load(f"{path}?image=img", tmp_path)
    splits = _load(f"{path}?image=img&label=coarse", tmp_path)
    assert splits.classes == ["warm", "cool"]
    assert list(splits.train.labels) == [0] * 4 + [1] * 8
    assert splits.train.load(0).size == (24, 24)  # img, not the 8 px thumb
    assert _load(f"{path}?image=thumb&label=coarse", tmp_path).train.load(0).size == (8, 8)
    with pytest.raises(DatasetError, match="no column 'nope'; the columns are img, label"):
        _load(f"{path}?image=nope", tmp_path)
    with pytest.raises(DatasetError, match="not a ClassLabel"):
        _load(f"{path}?image=img&label=img", tmp_path)
    with pytest.raises(DatasetError, match="unknown option 'colour'"):
        _load(f"{path}?colour=red", tmp_path)


def test_splits_can_be_named(saved: Path, tmp_path: Path) -> None:
    swapped = _load(f"{saved}?train=test&eval=train", tmp_path)
    assert (len(swapped.train), len(swapped.eval)) == (6, 18)
    assert swapped.eval_split == "train"
    with pytest.raises(DatasetError, match="no split 'dev'; it has train, test"):
        _load(f"{saved}?eval=dev", tmp_path)


# --------------------------------------------------------------------------- Hub repo layouts


def test_local_parquet_repo_layout(tmp_path: Path) -> None:
    # What `push_to_hub` writes and `git clone` of a dataset repo gives: data/<split>-*.parquet.
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    _table(5, seed=0).to_parquet(str(repo / "data" / "train-00000-of-00001.parquet"))
    _table(2, seed=1).to_parquet(str(repo / "data" / "test-00000-of-00001.parquet"))
    (repo / "README.md").write_text("# squares\n")
    splits = _load(repo, tmp_path)
    assert splits.classes == CLASSES  # the ClassLabel names travel in the parquet metadata
    assert (len(splits.train), len(splits.eval)) == (15, 6)
    assert splits.eval_split == "test"
    assert [_class_of(splits.eval.load(i)) for i in range(6)] == list(splits.eval.labels)


def test_local_imagefolder_repo_layout(tmp_path: Path) -> None:
    repo = tmp_path / "imagerepo"
    for split, per_class, seed in (("train", 4, 0), ("test", 2, 1)):
        for c, (name, colour) in enumerate(CLASS_COLOURS.items()):
            (repo / split / name).mkdir(parents=True)
            for i in range(per_class):
                square_image(colour, seed * 1000 + c * 100 + i).save(
                    repo / split / name / f"{i}.png"
                )
    splits = _load(repo, tmp_path)
    assert splits.classes == CLASSES
    assert (len(splits.train), len(splits.eval)) == (12, 6)
    assert sorted(splits.train.labels) == [0] * 4 + [1] * 4 + [2] * 4
    assert all(
        _class_of(splits.train.load(i)) == splits.train.labels[i] for i in range(len(splits.train))
    )


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_is_stable_and_follows_the_data(saved: Path, tmp_path: Path) -> None:
    first = _load(saved, tmp_path).fingerprint
    assert first and _load(saved, tmp_path).fingerprint == first
    # Same folder, one label changed and written again.
    labels = [0] * 6 + [1] * 6 + [2] * 5 + [1]
    datasets.DatasetDict(
        {"train": _table(6, seed=0, labels=labels), "test": _table(2, seed=1)}
    ).save_to_disk(str(tmp_path / "relabelled"))
    changed = _load(tmp_path / "relabelled", tmp_path).fingerprint
    assert changed != first
    # Another column choice, another dataset.
    assert _load(f"{saved}?train=test&eval=train", tmp_path).fingerprint != first

    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    target = repo / "data" / "train-00000-of-00001.parquet"
    _table(3, seed=0).to_parquet(str(target))
    before = _load(repo, tmp_path, test_fraction=0.34).fingerprint
    _table(3, seed=5).to_parquet(str(target))  # other pixels, same shape and labels
    after = _load(repo, tmp_path, test_fraction=0.34).fingerprint
    assert before != after


# --------------------------------------------------------------------------- errors


def test_a_hub_id_offline_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as error:
        _load("someone/flowers", tmp_path)
    message = str(error.value)
    assert "hf:someone/flowers" in message
    assert "HF_HUB_OFFLINE" in message
    assert "save_to_disk" in message and "--datasets hf:<folder>" in message
    with pytest.raises(DatasetError, match="downloads are off"):
        _load("someone/flowers", tmp_path, download=False)


def test_a_hub_id_without_network_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What `datasets` raises (after its retries) when huggingface.co cannot be reached.
    def unreachable(*args, **kwargs):
        raise ConnectionError(
            "Couldn't reach 'someone/flowers' on the Hub (LocalEntryNotFoundError)"
        )

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(DatasetError) as error:
        _load("someone/flowers", tmp_path)
    message = str(error.value)
    assert "not in the local Hugging Face cache and the Hub is unreachable" in message
    assert "Couldn't reach" in message and "save_to_disk('<folder>')" in message


def test_bad_arguments_are_explained(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        _load(tmp_path / "missing", tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        _load("./not/here/either", tmp_path)
    with pytest.raises(DatasetError, match="key=value"):
        _load(f"{tmp_path}?image", tmp_path)
    not_a_dataset = tmp_path / "empty"
    not_a_dataset.mkdir()
    with pytest.raises(DatasetError, match="cannot read"):
        _load(not_a_dataset, tmp_path)


# --------------------------------------------------------------------------- end to end


def test_tlbench_run_on_a_saved_dataset_end_to_end(
    saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # The installed hf plugin through its entry point, the builtins, nothing else installed.
    for var in testing.PLUGIN_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TLBENCH_LOAD_PLUGINS", "hf")
    monkeypatch.setenv("COLUMNS", "1000")
    out = tmp_path / "results.jsonl"
    code = cli.main(
        [
            "run",
            "--datasets",
            f"hf:{saved}",
            "--backbones",
            "small_cnn",
            "--strategies",
            "scratch",
            "--epochs",
            "1",
            "--image-size",
            "16",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--data-dir",
            str(tmp_path / "data"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    records = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    assert len(records) == 1
    record = records[0]
    assert record["status"] == "ok", record
    text = json.dumps(record)
    assert f"hf:{saved.resolve()}" in text  # the dataset is named by its folder
    accuracy = record["accuracy"]["final"]
    assert 0.0 <= accuracy <= 1.0
    # The record keys the run on this dataset's fingerprint (caches and resume follow the data).
    assert _load(saved, tmp_path).fingerprint in text
    # 6 evaluation images: accuracy is a multiple of 1/6.
    assert round(accuracy * 6, 6) == round(accuracy * 6)
