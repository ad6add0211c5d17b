"""The decode cache's `get`: what it records, times, locks and skips, in the cases the
mutation run (results/mutation.md) found unchecked. Tiny in-memory splits, one process.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from tlbench.cache import scan
from tlbench.data import DecodeCache, UnreadableImagesError
from tlbench.testing import ColourSquares


class Counted(ColourSquares):
    """ColourSquares that counts its decodes; `broken` indices cannot be read."""

    def __init__(self, n: int, seed: int, broken: tuple[int, ...] = ()):
        super().__init__(n, seed)
        self.loads = 0
        self.broken = set(broken)

    def load(self, index: int) -> Image.Image:
        self.loads += 1
        if index in self.broken:
            raise OSError(f"cannot identify image file {self.describe(index)!r}")
        return super().load(index)


def test_the_entry_says_which_dataset_split_and_size_it_holds(tmp_path: Path):
    # `tlbench cache list` shows these and `tlbench cache prune --dataset` selects by them.
    DecodeCache(tmp_path).get(
        Counted(6, 0), fingerprint="fp-a", split="train", size=8, dataset="imagefolder:/d/pets"
    )
    (entry,), _ = scan(tmp_path)
    assert entry.kind == "decoded" and entry.problem is None
    assert {k: entry.meta[k] for k in ("kind", "dataset", "fingerprint", "split", "size")} == {
        "kind": "decoded",
        "dataset": "imagefolder:/d/pets",
        "fingerprint": "fp-a",
        "split": "train",
        "size": 8,
    }


def test_a_decode_is_timed_and_a_memory_hit_costs_nothing(tmp_path: Path):
    cache = DecodeCache(tmp_path)
    source = Counted(6, 0)
    first = cache.get(source, fingerprint="fp", split="train", size=8)
    assert first.cache_hit == "none" and isinstance(first.seconds, float)
    assert 0 < first.seconds < 60  # six 8 px squares: the time they took, not a clock reading
    again = cache.get(source, fingerprint="fp", split="train", size=8)
    assert (again.cache_hit, again.seconds) == ("memory", 0.0)
    assert source.loads == 6


@pytest.mark.parametrize("cache_dir", ["disk", None])
def test_progress_is_reported_and_an_unreadable_split_is_named(tmp_path: Path, cache_dir):
    cache = DecodeCache(tmp_path if cache_dir else None)
    seen: list[tuple[int, int]] = []
    got = cache.get(
        Counted(5, 0), fingerprint="fp", split="train", size=8, progress=lambda *a: seen.append(a)
    )
    assert len(got) == 5 and seen[-1] == (5, 5)
    with pytest.raises(UnreadableImagesError, match=r"none of the 2 image\(s\) of the val split"):
        cache.get(Counted(2, 1, broken=(0, 1)), fingerprint="fp2", split="val", size=8)


def test_by_default_unreadable_images_are_skipped_with_a_warning(tmp_path: Path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = DecodeCache(tmp_path).get(
            Counted(4, 0, broken=(2,)), fingerprint="fp", split="train", size=8
        )
    assert len(got) == 3 and got.skipped == ["colour-squares[0][2]"]
    assert any("skipped 1 unreadable image(s) of the train split" in str(w.message) for w in caught)


def test_a_split_without_a_fingerprint_is_never_written_to_disk(tmp_path: Path):
    # Nothing tells two such splits apart: the second must decode its own images.
    first, second = Counted(3, 0), Counted(3, 7)
    a = DecodeCache(tmp_path).get(first, fingerprint="", split="train", size=8)
    b = DecodeCache(tmp_path).get(second, fingerprint="", split="train", size=8)
    assert scan(tmp_path)[0] == []
    assert second.loads == 3 and not torch.equal(a.images, b.images)


def _get_in_a_thread(cache: DecodeCache, source: Counted, out: list) -> threading.Thread:
    thread = threading.Thread(
        target=lambda: out.append(cache.get(source, fingerprint="fp", split="train", size=8)),
        daemon=True,
    )
    thread.start()
    return thread


def test_a_split_another_process_is_decoding_is_waited_for_and_read_not_decoded(tmp_path: Path):
    reader, writer = DecodeCache(tmp_path), DecodeCache(tmp_path)
    key = reader.key("fp", "train", 8)
    source, out = Counted(6, 0), []
    with writer.store.lock(key):  # another process holds the split's lock: it is decoding it
        thread = _get_in_a_thread(reader, source, out)
        thread.join(0.5)
        assert thread.is_alive(), "did not wait for the process decoding the split"
        meta = {
            "kind": "decoded",
            "dataset": None,
            "fingerprint": "fp",
            "split": "train",
            "size": 8,
        }
        written = writer._decode_to_disk(key, Counted(6, 0), 8, "train", None, meta)
    thread.join(30)
    (got,) = out
    assert got.cache_hit == "disk" and source.loads == 0
    assert torch.equal(got.images, written.images)


def test_a_cached_split_is_read_without_waiting_for_its_lock(tmp_path: Path):
    DecodeCache(tmp_path).get(Counted(6, 0), fingerprint="fp", split="train", size=8)
    reader = DecodeCache(tmp_path)
    source, out = Counted(6, 0), []
    with reader.store.lock(reader.key("fp", "train", 8)):
        thread = _get_in_a_thread(reader, source, out)
        thread.join(10)
        assert not thread.is_alive(), "a cached split waited for a lock"
    assert out[0].cache_hit == "disk" and source.loads == 0


def test_each_split_with_unreadable_images_warns_once(tmp_path: Path):
    cache = DecodeCache(None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for split in ("train", "test", "train"):
            cache.get(Counted(4, 0, broken=(1,)), fingerprint="fp", split=split, size=8)
    said = [str(w.message).split(",")[0] for w in caught if "unreadable" in str(w.message)]
    assert said == [
        "skipped 1 unreadable image(s) of the train split",
        "skipped 1 unreadable image(s) of the test split",
    ]


def test_a_decoded_splits_key_is_stable_across_releases_and_changes_with_the_decode_version(
    monkeypatch,
):
    # Every user's decode cache is found by this key: a release that changed it without
    # meaning to would decode every dataset again (and orphan the old entries).
    from tlbench import data

    assert data.DECODE_VERSION == 1
    assert DecodeCache(None).key("fp-a", "train", 64) == "72f8712f55cfbed1f3944a2d"
    # A new decoding (DECODE_VERSION bumped) must not read the old one's images.
    monkeypatch.setattr(data, "DECODE_VERSION", 2)
    assert DecodeCache(None).key("fp-a", "train", 64) != "72f8712f55cfbed1f3944a2d"


def test_a_strict_get_refuses_a_split_a_lenient_get_cached(tmp_path: Path):
    cache = DecodeCache(tmp_path)
    with pytest.warns(RuntimeWarning, match="skipped 1 unreadable"):
        cache.get(Counted(4, 0, broken=(2,)), fingerprint="fp", split="train", size=8)
    with pytest.raises(UnreadableImagesError, match=r"1 image\(s\) of the train split"):
        cache.get(Counted(4, 0, broken=(2,)), fingerprint="fp", split="train", size=8, strict=True)


def test_image_files_are_read_back_from_the_disk_cache_by_the_next_process_and_rekeyed_by_content(
    tmp_path,
):
    from PIL import Image

    from tlbench.data import DecodeCache
    from tlbench.images import FileImages

    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for path, colour in zip(paths, ("red", "blue"), strict=True):
        Image.new("RGB", (8, 8), colour).save(path)
    source = FileImages(paths, [0, 1])
    first = DecodeCache(tmp_path / "cache").get(source, fingerprint="f", split="train", size=8)
    # A new cache object is what the next process has: the entry comes from the disk.
    again = DecodeCache(tmp_path / "cache").get(source, fingerprint="f", split="train", size=8)
    assert (first.cache_hit, again.cache_hit) == ("none", "disk")
    assert bool((first.images == again.images).all())
    # The same names, other pixels: in the same process too, the new pixels, not the old.
    cache = DecodeCache(None)
    cache.get(source, fingerprint="f", split="train", size=8)
    Image.new("RGB", (8, 8), "green").save(paths[0])
    changed = cache.get(source, fingerprint="f", split="train", size=8)
    assert changed.cache_hit == "none"
    assert changed.images[0, 1, 0, 0] > 100  # green's channel, where red had none
