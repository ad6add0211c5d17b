"""The held-out split of a folder of class folders: its bounds, what it records, its fingerprint.

Written for the mutants the mutation run (results/mutation.md) found unchecked.
Files need no decodable pixels here: nothing is decoded when a folder is listed.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from tlbench.builtin.imagefolder import load_imagefolder
from tlbench.errors import DatasetError
from tlbench.plugin_types import DatasetRequest

#: a fixed modification time (2024-01-02 03:04:05.000000006 UTC), so the fingerprint is too.
MTIME_NS = 1_704_164_645_000_000_006


def put(path: Path, size: int = 10) -> Path:
    """A file of `size` bytes with the fixed mtime (its content is never read here)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, ns=(MTIME_NS, MTIME_NS))
    return path


def flat(root: Path, per_class: dict[str, int]) -> Path:
    for name, count in per_class.items():
        for i in range(count):
            put(root / name / f"{i:02d}.png", size=10 + i)
    return root


def load(root: Path, fraction: float = 0.25, seed: int = 3):
    request = DatasetRequest(
        argument=str(root), data_dir=root.parent / "data", test_fraction=fraction, split_seed=seed
    )
    return load_imagefolder(request)


def files(source) -> list[str]:
    return [source.describe(i) for i in range(len(source))]


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5])
def test_a_fraction_that_leaves_a_side_empty_is_refused_with_the_fix(tmp_path, fraction):
    root = flat(tmp_path / "d", {"a": 4, "b": 4})
    with pytest.raises(DatasetError) as info:
        load(root, fraction)
    message = str(info.value)
    assert f"test_fraction={fraction} is not between 0 and 1" in message
    assert message.endswith("Pass e.g. --test-fraction 0.2.")


def test_a_fraction_near_one_still_trains_on_one_image_of_each_class(tmp_path):
    root = flat(tmp_path / "d", {"a": 2, "b": 3})
    splits = load(root, 0.9)
    assert Counter(splits.train.labels) == {0: 1, 1: 1}
    assert Counter(splits.eval.labels) == {0: 1, 1: 2}


def test_the_split_records_its_layout_rule_and_evaluation_split(tmp_path):
    root = flat(tmp_path / "d", {"a": 4, "b": 4})
    splits = load(root, 0.25, seed=3)
    assert splits.eval_split == "val"
    assert splits.info == {
        "root": str(root.resolve()),
        "layout": "class folders",
        "split": "stratified 0.25 held out per class, split_seed=3",
    }
    only_train = flat(tmp_path / "t" / "train", {"a": 4, "b": 4}).parent
    splits = load(only_train, 0.5, seed=0)
    assert splits.eval_split == "val"
    assert splits.info == {
        "root": str(only_train.resolve()),
        "layout": "train/ only",
        "split": "stratified 0.5 held out per class, split_seed=0",
    }


def test_every_class_of_one_image_is_refused_with_what_to_do(tmp_path):
    root = flat(tmp_path / "d", {"a": 1, "b": 1})
    with pytest.raises(DatasetError) as info:
        load(root)
    assert str(info.value) == (
        f"imagefolder: {root.resolve()}: every class has a single image, so none can be held "
        f"out for evaluation. Add images, or give train/ and val/ folders."
    )


def test_the_fingerprint_of_a_fixed_folder_never_changes(tmp_path):
    # Caches are keyed on it: a new tlbench that hashed the same files differently
    # would throw away every decode and feature cache of its users.
    # The value is sha256 of "imagefolder-v1|fraction=0.25|seed=3", "\n[all]", then
    # "\n<rel>\0<size>\0<mtime_ns>" per file sorted by path, first 16 hex digits
    # (worked out once by hand from those lines, then pinned).
    root = flat(tmp_path / "d", {"a": 3, "b": 2})
    assert load(root, 0.25, seed=3).fingerprint == "ccc54a838a6e4baa"
    # A file name that is not UTF-8 (a Latin-1 "cafe" from an old camera) hashes as its bytes.
    with open(os.fsencode(root / "a") + b"/caf\xe9.png", "wb") as f:
        f.write(b"x" * 7)
    os.utime(os.fsencode(root / "a") + b"/caf\xe9.png", ns=(MTIME_NS, MTIME_NS))
    splits = load(root, 0.25, seed=3)
    assert len(splits.train) + len(splits.eval) == 6
    assert splits.fingerprint == "e2057ee721d299a5"


def test_a_nested_folder_of_a_class_is_part_of_it(tmp_path):
    root = flat(tmp_path / "d", {"a": 2, "b": 2})
    put(root / "a" / "2024" / "summer.png")
    splits = load(root, 0.25)
    assert len(splits.train) + len(splits.eval) == 5
    assert str(root.resolve() / "a" / "2024" / "summer.png") in files(splits.train) + files(
        splits.eval
    )


def test_a_link_to_a_file_kept_in_its_own_class_folder_counts(tmp_path):
    # The picked photo links to the original kept in the class's hidden folder: the
    # hidden folder is not walked, the link is, and its target is this class's.
    root = flat(tmp_path / "d", {"a": 2, "b": 2})
    put(root / "a" / ".originals" / "best.png")
    (root / "a" / "best.png").symlink_to(Path(".originals") / "best.png")
    splits = load(root, 0.25)
    listed = files(splits.train) + files(splits.eval)
    assert len(listed) == 5 and str(root.resolve() / "a" / "best.png") in listed


def test_two_class_folders_that_are_one_folder_are_refused_naming_both(tmp_path):
    root = flat(tmp_path / "d", {"a": 2})
    (root / "b").symlink_to("a")
    with pytest.raises(DatasetError) as info:
        load(root)
    assert str(info.value) == (
        f"imagefolder: {root.resolve()}: b/ and a/ are the same folder (a link), so its images "
        f"would carry two labels. Give each class of each split its own folder."
    )


def test_one_file_in_two_classes_is_refused_naming_both(tmp_path):
    root = flat(tmp_path / "d", {"a": 2, "b": 2})
    os.link(root / "a" / "00.png", root / "b" / "same.png")
    with pytest.raises(DatasetError) as info:
        load(root)
    message = str(info.value)
    assert message.startswith(f"imagefolder: {root.resolve()}: one file is in both a/ and b/ (")
    assert message.endswith("so it would carry two labels. Keep it in one place.")
