"""imagefolder trees with symbolic links, hard links and odd entries never mislabel (issue 13, item 4).

A file belongs to the class folder it is under once links are resolved,
appears once, and is never in both splits; identical train and evaluation
splits are an error. Each test builds the hostile tree on disk and checks
the labels the dataset hands to training.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from imagetree import assert_clean_error, make_tree

from tlbench.builtin.imagefolder import load_imagefolder
from tlbench.errors import DatasetError
from tlbench.plugin_types import DatasetRequest


def labelled(root: Path, **request) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(path relative to root, class) of each train and eval image."""
    splits = load_imagefolder(DatasetRequest(argument=str(root), data_dir=root, **request))

    def pairs(images):
        return sorted(
            (os.path.relpath(p, root), splits.classes[label])
            for p, label in zip(images.paths, images.labels, strict=True)
        )

    return pairs(splits.train), pairs(splits.eval)


def plain(root: Path, train: int = 2, val: int = 1) -> list[tuple[str, str]]:
    """What a link-free tree of that shape gives: each file labelled by its folder."""
    return [
        (f"{split}/{c}/{i:03d}.png", c)
        for split, n in (("train", train), ("val", val))
        for c in ("cat", "dog", "fox")
        for i in range(n)
    ]


def test_a_link_back_up_the_tree_neither_loops_nor_relabels(tmp_path):
    root = make_tree(tmp_path / "ds", train=2, val=1)
    (root / "train" / "cat" / "loop").symlink_to("..")  # train/ itself: dog and fox images
    (root / "train" / "cat" / "self").symlink_to(".")
    (root / "train" / "cat" / "root").symlink_to("../../..")  # above the dataset folder
    train, held = labelled(root)
    assert train + held == sorted(plain(root))


def test_a_link_into_another_split_adds_no_test_image_to_training(tmp_path):
    root = make_tree(tmp_path / "ds", train=2, val=1)
    (root / "train" / "cat" / "up").symlink_to("../../val")
    (root / "train" / "cat" / "one.png").symlink_to("../../val/dog/000.png")
    train, held = labelled(root)
    assert not any(path.startswith("val/") for path, _ in train)
    assert not any(path.startswith("train/") for path, _ in held)
    assert train + held == sorted(plain(root))


def test_a_file_linked_into_another_class_keeps_its_own_class_once(tmp_path):
    root = make_tree(tmp_path / "ds", train=2, val=1)
    (root / "train" / "dog" / "alias.png").symlink_to("../cat/000.png")
    (root / "train" / "cat" / "again.png").symlink_to("000.png")  # the same class twice
    train, _ = labelled(root)
    assert ("train/cat/000.png", "cat") in train
    assert not any("alias" in p or "again" in p for p, _ in train)
    assert len(train) == 6


def test_identical_train_and_eval_splits_are_an_error(run_cli, tmp_path):
    root = make_tree(tmp_path / "ds", train=2, val=1)
    shutil.rmtree(root / "val")
    (root / "val").symlink_to("train")
    with pytest.raises(DatasetError, match="val/ is the same folder as train/"):
        labelled(root)
    result = run_cli("run", "--datasets", f"imagefolder:{root}", "--backbones", "tiny",
                     "--out", tmp_path / "runs.jsonl", "--cache-dir", tmp_path / "c")  # fmt: skip
    assert_clean_error(result, "evaluation would run on the training images")
    assert not (tmp_path / "runs.jsonl").exists()


def test_a_class_folder_shared_by_both_splits_is_an_error(tmp_path):
    root = make_tree(tmp_path / "ds", train=2, val=1)
    shutil.rmtree(root / "val" / "cat")
    (root / "val" / "cat").symlink_to("../train/cat")
    with pytest.raises(DatasetError, match="val/cat/ and train/cat/ are the same folder"):
        labelled(root)


def test_two_classes_in_one_folder_is_an_error(tmp_path):
    root = make_tree(tmp_path / "ds", train=2, val=1)
    shutil.rmtree(root / "train" / "dog")
    (root / "train" / "dog").symlink_to("cat")
    with pytest.raises(DatasetError, match="two labels"):
        labelled(root)


def test_a_hard_link_in_both_splits_is_an_error(tmp_path):
    root = make_tree(tmp_path / "ds", train=2, val=1)
    os.link(root / "train" / "cat" / "000.png", root / "val" / "cat" / "leak.png")
    with pytest.raises(DatasetError, match="one file is in both train/cat/ and val/cat/"):
        labelled(root)


def test_class_folders_linked_from_another_disk_belong_to_the_linking_class(tmp_path):
    store = make_tree(tmp_path / "store", train=2, val=1)
    root = tmp_path / "view"
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        for c in ("cat", "dog", "fox"):
            (root / split / c).symlink_to(store / split / c)
    train, held = labelled(root)
    assert train + held == sorted(plain(root))


def test_the_single_folder_layout_obeys_the_same_rules(tmp_path):
    root = make_tree(tmp_path / "ds", train=4, val=1)
    shutil.rmtree(root / "val")
    classes = root / "train"
    (classes / "cat" / "loop").symlink_to("..")
    train, held = labelled(classes, test_fraction=0.25)
    labels = dict(train + held)
    assert len(labels) == 12 and len(train) + len(held) == 12
    assert all(path.split("/")[0] == c for path, c in labels.items())
    (classes / "dog" / "twin.png").symlink_to("../cat/000.png")
    train2, held2 = labelled(classes, test_fraction=0.25)
    assert len(train2) + len(held2) == 12  # the alias is cat's file, counted once


def test_broken_links_link_loops_and_special_files_are_ignored(tmp_path):
    root = make_tree(tmp_path / "ds", train=2, val=1)
    cat = root / "train" / "cat"
    (cat / "broken.png").symlink_to("nowhere.png")
    (cat / "cycle").symlink_to("cycle")  # a link to itself
    os.mkfifo(cat / "pipe.png")  # would block a reader forever
    train, held = labelled(root)
    assert train + held == sorted(plain(root))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_an_unreadable_subfolder_is_a_clear_error(tmp_path):
    root = make_tree(tmp_path / "ds", train=2, val=1)
    locked = root / "train" / "cat" / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        with pytest.raises(DatasetError, match=r"cannot read .*locked"):
            labelled(root)
    finally:
        locked.chmod(0o755)


def test_a_file_removed_while_the_tree_is_read_is_left_out(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "ds", train=2, val=1)
    gone = str(root / "train" / "dog" / "001.png")
    real_scandir = os.scandir

    class Entry:
        def __init__(self, entry):
            self.entry, self.name, self.path = entry, entry.name, entry.path

        def __getattr__(self, name):
            return getattr(self.entry, name)

        def stat(self, **kwargs):
            if self.path == gone:  # listed, then deleted by a sync before it was looked at
                raise FileNotFoundError(2, "No such file or directory", self.path)
            return self.entry.stat(**kwargs)

    class Listing:
        def __init__(self, path):
            self.entries = [Entry(e) for e in real_scandir(path)]

        def __iter__(self):
            return iter(self.entries)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(os, "scandir", Listing)
    train, _ = labelled(root)
    assert ("train/dog/000.png", "dog") in train
    assert ("train/dog/001.png", "dog") not in train and len(train) == 5


def test_a_chain_of_links_is_followed_to_the_file_at_its_end(tmp_path):
    root = make_tree(tmp_path / "ds", train=2, val=1)
    (root / "train" / "fox" / "hop.png").symlink_to("../cat/000.png")
    (root / "train" / "dog" / "chain.png").symlink_to("../fox/hop.png")  # -> fox -> cat
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "extra.png").write_bytes((root / "train" / "dog" / "000.png").read_bytes())
    (outside / "alias.png").symlink_to("extra.png")
    (root / "train" / "dog" / "far.png").symlink_to(outside / "alias.png")  # out and on
    train, _ = labelled(root)
    assert ("train/dog/far.png", "dog") in train  # outside the dataset: the linking class's
    assert not any("hop" in p or "chain" in p for p, _ in train)
    assert len(train) == 7


def test_a_file_name_that_is_not_utf8_is_an_image_like_any_other(tmp_path):
    root = make_tree(tmp_path / "ds", train=2, val=1)
    odd = os.fsdecode(os.fsencode(root / "train" / "cat") + b"/\xff\xfe.png")
    shutil.copy(root / "train" / "cat" / "000.png", odd)
    splits = load_imagefolder(DatasetRequest(argument=str(root), data_dir=root))
    assert odd in splits.train.paths and len(splits.train) == 7
    first = splits.fingerprint
    os.utime(odd, ns=(0, 0))  # its bytes count in the fingerprint like any name's
    assert load_imagefolder(DatasetRequest(argument=str(root), data_dir=root)).fingerprint != first
