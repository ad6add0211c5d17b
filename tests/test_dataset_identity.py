"""One dataset, one name (issue 16.4): a folder named three ways is one dataset.

A relative path, an absolute path, a path through a symbolic link, a trailing
slash or `~` all give one canonical name and one content fingerprint, so one
run key and one cache entry; the report shows a short name.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from imagetree import make_tree

from tlbench.builtin.imagefolder import load_imagefolder
from tlbench.data import DecodeCache
from tlbench.identity import dataset_identity, short_name, short_names
from tlbench.plugin_types import DatasetRequest, DatasetSplits


def _load(argument: str, tmp_path: Path) -> DatasetSplits:
    return load_imagefolder(DatasetRequest(argument=argument, data_dir=tmp_path / "data"))


def test_relative_absolute_symlinked_and_home_paths_are_one_dataset(tmp_path, monkeypatch):
    real = make_tree(tmp_path / "datasets" / "flowers")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "link").symlink_to(real)
    monkeypatch.setenv("HOME", str(tmp_path / "datasets"))
    monkeypatch.chdir(tmp_path / "datasets")
    spellings = [
        "imagefolder:flowers",
        "imagefolder:./flowers/",
        "imagefolder:../datasets/flowers",
        f"imagefolder:{real}",
        f"imagefolder:{tmp_path / 'elsewhere' / 'link'}",
        "imagefolder:~/flowers",
    ]
    identities = {dataset_identity(s, _load(s.partition(":")[2], tmp_path)) for s in spellings}
    assert identities == {(f"imagefolder:{real.resolve()}", "imagefolder:flowers")}
    # The content fingerprint, the other half of a key, agrees too...
    fingerprints = {_load(s.partition(":")[2], tmp_path).fingerprint for s in spellings}
    assert len(fingerprints) == 1
    # ...so every spelling reads the one decoded entry the first one wrote.
    splits = [_load(s.partition(":")[2], tmp_path) for s in spellings]
    hits = [
        DecodeCache(tmp_path / "cache")
        .get(sp.train, fingerprint=sp.fingerprint, split="train", size=8)
        .cache_hit
        for sp in splits
    ]
    assert hits == ["none"] + ["disk"] * (len(spellings) - 1)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 1


def test_other_data_under_the_same_name_is_told_apart_by_its_fingerprint(tmp_path, monkeypatch):
    # `imagefolder:ds` run from two folders: one name as typed, two datasets.
    a = make_tree(tmp_path / "a" / "ds")
    b = make_tree(tmp_path / "b" / "ds", train=7)
    found = []
    for folder in (a.parent, b.parent):
        monkeypatch.chdir(folder)
        splits = _load("ds", tmp_path)
        found.append((*dataset_identity("imagefolder:ds", splits), splits.fingerprint))
    (canon_a, short_a, fp_a), (canon_b, short_b, fp_b) = found
    assert (canon_a, canon_b) == (f"imagefolder:{a.resolve()}", f"imagefolder:{b.resolve()}")
    assert short_a == short_b == "imagefolder:ds"
    assert fp_a != fp_b
    # In one table the short names keep as much of the path as tells them apart.
    assert short_names([canon_a, canon_b, "cifar10"]) == {
        canon_a: "imagefolder:a/ds",
        canon_b: "imagefolder:b/ds",
        "cifar10": "cifar10",
    }


@pytest.mark.parametrize(
    "spec", ["cifar10", "synthetic", "synthetic:hard", "timm:resnet18", "imagefolder:"]
)
def test_names_that_are_not_paths_are_their_own_identity(tmp_path, monkeypatch, spec):
    monkeypatch.chdir(tmp_path)
    assert dataset_identity(spec) == (spec, spec)
    assert short_name(spec) == spec


def test_a_plugin_that_found_a_relative_argument_elsewhere_is_named_by_that_root(tmp_path):
    data = make_tree(tmp_path / "data" / "pets")
    splits = DatasetSplits(
        classes=["a"], train=None, eval=None, fingerprint="x", info={"root": str(data)}
    )
    # "pets" is not a path from the working directory, but the plugin read data/pets.
    assert dataset_identity("mine:pets", splits) == (f"mine:{data.resolve()}", "mine:pets")
    # A root that does not end with the argument is not taken for it.
    assert dataset_identity("mine:cats", splits) == ("mine:cats", "mine:cats")


def test_short_names_of_distinct_folders_stay_short():
    names = ["imagefolder:/x/y/flowers12", "imagefolder:/x/y/pets", "csv:/data/labels.csv"]
    assert short_names(names) == {
        "imagefolder:/x/y/flowers12": "imagefolder:flowers12",
        "imagefolder:/x/y/pets": "imagefolder:pets",
        "csv:/data/labels.csv": "csv:labels.csv",
    }
    # The family tells these apart already; a path inside another's tail takes one more part.
    assert short_names(["imagefolder:/ds", "csv:/ds"]) == {
        "imagefolder:/ds": "imagefolder:ds",
        "csv:/ds": "csv:ds",
    }
    assert short_names(["imagefolder:/p/ds", "imagefolder:/q/p/ds"]) == {
        "imagefolder:/p/ds": "imagefolder:p/ds",
        "imagefolder:/q/p/ds": "imagefolder:q/p/ds",
    }
