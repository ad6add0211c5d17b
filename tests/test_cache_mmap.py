"""Decoded splits live on disk and are read memory-mapped: a split larger than memory trains.

The proof is a subprocess whose private memory is capped (`RLIMIT_DATA`, which
counts every heap and anonymous allocation but not a read-only file map) below
the size of the split it decodes and then trains on for an epoch through the
engine's own `train_images` (batches gathered by index from the map). The same
process cannot even allocate an array the size of that split.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from PIL import Image

from tlbench.cache import MemoryLRU
from tlbench.data import DecodeCache

COLOURS = [(220, 40, 40), (40, 200, 60), (50, 70, 230)]


class Flat:
    """An in-memory ImageSource: image i is class i % 3's colour with a grey bar; `bad` fail."""

    def __init__(self, n: int, side: int = 12, bad: frozenset[int] = frozenset()):
        self.n, self.side, self.bad = n, side, bad
        self.labels = [i % 3 for i in range(n)]

    def __len__(self) -> int:
        return self.n

    def load(self, index: int) -> Image.Image:
        if index in self.bad:
            raise OSError(f"image {index} is truncated")
        image = Image.new("RGB", (self.side, self.side), COLOURS[self.labels[index]])
        image.paste((128, 128, 128), (0, index % self.side, self.side, index % self.side + 1))
        return image

    def describe(self, index: int) -> str:
        return f"flat[{index}]"


# --------------------------------------------------------------------------- larger than memory

CAPPED_TRAINING = textwrap.dedent(
    """
    import json, math, resource, sys, threading, time
    from pathlib import Path

    import numpy as np
    import torch
    from torch import nn

    sys.path.insert(0, sys.argv[2])
    from test_cache_mmap import Flat
    from tlbench.plugin_types import Hyperparameters, all_trainable
    from tlbench.data import DecodeCache
    from tlbench import engine
    from tlbench.engine import Execution, ImageClassifier, train_images
    from tlbench.testing import tiny_backbone

    torch.set_num_threads(1)
    STORE, HEADROOM = 256, 256 << 20

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

    # The cap: what this process holds after its imports, plus 256 MiB.
    baseline = status("VmData")
    cap = baseline + HEADROOM
    n = math.ceil(1.1 * cap / (3 * STORE * STORE))  # a split 10% larger than the cap itself
    resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    try:
        np.empty((n, 3, STORE, STORE), np.uint8)
        whole_fits = True
    except MemoryError:
        whole_fits = False

    peak = {"RssAnon": 0, "VmData": 0}
    stop = threading.Event()
    def sample():
        while not stop.wait(0.005):
            for k in peak:
                peak[k] = max(peak[k], status(k))
    threading.Thread(target=sample, daemon=True).start()

    cache_dir = Path(sys.argv[1])
    t0 = time.perf_counter()
    decoded = DecodeCache(cache_dir, workers=2).get(Flat(n, STORE), fingerprint="big", split="train", size=STORE)
    decode_s = time.perf_counter() - t0
    # A new process-level cache: this read is the disk cache's, memory-mapped.
    train = DecodeCache(cache_dir).get(Flat(n, STORE), fingerprint="big", split="train", size=STORE)
    evalset = DecodeCache(cache_dir).get(Flat(60, STORE), fingerprint="big", split="test", size=STORE)

    # Count the images the engine's own batch gatherer takes from the map.
    gathered = np.zeros(n, bool)
    gather = engine.BatchLoader.__call__
    def counting(loader, idx):
        if loader.images is train.images:
            gathered[idx.numpy()] = True
        return gather(loader, idx)
    engine.BatchLoader.__call__ = counting

    backbone = tiny_backbone()
    body, head = backbone.build(False), nn.Linear(backbone.feature_dim, 3)
    # No augmentation: its float copy of every full-size image would only make this slow.
    hp = Hyperparameters(epochs=1, batch_size=64, lr=1e-2, augment=False)
    model = ImageClassifier(body, head, backbone.preprocessing)
    t0 = time.perf_counter()
    fit = train_images(
        model, all_trainable(body, head, hp), train, evalset, num_classes=3, image_size=32,
        hp=hp, ex=Execution.resolve(torch.device("cpu"), channels_last=False), seed=0,
    )
    train_s = time.perf_counter() - t0
    stop.set()
    array = next((cache_dir / "decoded").glob("*.npy"))
    print(json.dumps({
        "cap": cap, "baseline": baseline, "array_bytes": array.stat().st_size, "n": n,
        "whole_fits": whole_fits, "peak_rss_anon": peak["RssAnon"], "peak_vm_data": peak["VmData"],
        "decode_hit": decoded.cache_hit, "train_hit": train.cache_hit, "mapped": train.mapped,
        "resident_bytes": train.resident_bytes, "curve": fit.curve,
        "gathered": int(gathered.sum()), "decode_s": decode_s, "train_s": train_s,
    }))
    """
)


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="RLIMIT_DATA and /proc are Linux's"
)
# slow: a child process under a memory cap decodes and trains a split larger than it (9 s).
@pytest.mark.slow
def test_split_larger_than_the_memory_cap_decodes_and_trains_from_the_map(tmp_path, request):
    here = str(request.path.parent)
    try:
        done = subprocess.run(
            [sys.executable, "-c", CAPPED_TRAINING, str(tmp_path / "cache"), here],
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        shutil.rmtree(tmp_path / "cache", ignore_errors=True)  # a gigabyte: not kept for later
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"\nsplit {out['array_bytes'] / 2**20:.0f} MiB ({out['n']} images), RLIMIT_DATA cap "
        f"{out['cap'] / 2**20:.0f} MiB (baseline {out['baseline'] / 2**20:.0f} MiB), peak RssAnon "
        f"{out['peak_rss_anon'] / 2**20:.0f} MiB, peak VmData {out['peak_vm_data'] / 2**20:.0f} MiB, "
        f"decode {out['decode_s']:.1f} s, epoch {out['train_s']:.1f} s"
    )
    assert out["array_bytes"] > out["cap"], "the split must not fit under the cap"
    assert not out["whole_fits"], "the cap did not bind: an array of the split's size was allocated"
    assert out["decode_hit"] == "none" and out["train_hit"] == "disk" and out["mapped"]
    assert out["resident_bytes"] < out["array_bytes"] / 1000  # its labels only
    assert out["peak_vm_data"] <= out["cap"]
    assert out["peak_rss_anon"] < out["array_bytes"] / 2
    # Every batch of the epoch was gathered and trained on, and it learned the colours.
    assert out["gathered"] == out["n"] - (out["n"] % 64 == 1)  # a last batch of one is dropped
    (epoch,) = out["curve"]
    assert epoch["train_loss"] < 1.0 and epoch["eval_accuracy"] > 0.9, epoch


# --------------------------------------------------------------------------- mapped reads


def test_a_disk_entry_is_a_read_only_map_read_without_a_warning(tmp_path):
    first = DecodeCache(tmp_path).get(Flat(10), fingerprint="f", split="train", size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "array is not writable" warning included
        again = DecodeCache(tmp_path).get(Flat(10), fingerprint="f", split="train", size=8)
    assert (first.cache_hit, again.cache_hit) == ("none", "disk")
    assert first.mapped and again.mapped
    assert again.resident_bytes == 10 * 8  # the labels; the images stay in the file
    # A batch is a copy gathered by index: writable, equal to the rows asked for.
    idx = torch.tensor([7, 2, 2])
    batch = again.images[idx]
    batch.zero_()
    assert torch.equal(again.images[2], first.images[2]) and again.images[2].sum() > 0
    assert again.labels.tolist() == [i % 3 for i in range(10)]


def test_unreadable_images_are_squeezed_out_of_the_file_written_to_disk(tmp_path):
    source = Flat(9, bad=frozenset({0, 4, 8}))
    with pytest.warns(RuntimeWarning, match="skipped 3 unreadable image"):
        on_disk = DecodeCache(tmp_path).get(source, fingerprint="f", split="train", size=8)
    with pytest.warns(RuntimeWarning, match="skipped 3 unreadable image"):
        in_memory = DecodeCache(None).get(source, fingerprint="f", split="train", size=8)
    assert on_disk.mapped and not in_memory.mapped
    assert on_disk.images.shape == (6, 3, 8, 8)
    assert torch.equal(on_disk.images, in_memory.images)
    assert on_disk.labels.tolist() == [1, 2, 0, 2, 0, 1]
    assert on_disk.skipped == ["flat[0]", "flat[4]", "flat[8]"]
    # Only the squeezed entry is left: no temporary file of the first pass.
    files = sorted(p.suffix for p in (tmp_path / "decoded").iterdir())
    assert files == [".json", ".lock", ".npy"], files


# --------------------------------------------------------------------------- bounded memory


def test_memory_lru_keeps_the_most_recent_within_its_bytes():
    lru: MemoryLRU[str] = MemoryLRU(limit=100)
    lru.put("a", "A", 40)
    lru.put("b", "B", 40)
    assert lru.get("a") == "A"  # now the most recent
    lru.put("c", "C", 40)  # 120 > 100: the least recent ("b") goes
    assert ("a" in lru, "b" in lru, "c" in lru) == (True, False, True)
    assert lru.nbytes == 80
    lru.put("huge", "H", 101)  # larger than the whole bound: not kept, nothing evicted
    assert "huge" not in lru and len(lru) == 2
    lru.put("a", "A2", 10)  # replacing counts the new size only
    assert lru.get("a") == "A2" and lru.nbytes == 50


def test_in_memory_splits_are_kept_only_within_the_bound(tmp_path):
    one_split = 10 * 3 * 8 * 8 + 10 * 8  # images and int64 labels
    roomy = DecodeCache(None, memory_limit=one_split)
    assert roomy.get(Flat(10), fingerprint="f", split="train", size=8).cache_hit == "none"
    assert roomy.get(Flat(10), fingerprint="f", split="train", size=8).cache_hit == "memory"
    # A second split pushes the first out.
    roomy.get(Flat(10), fingerprint="f", split="test", size=8)
    assert roomy.get(Flat(10), fingerprint="f", split="train", size=8).cache_hit == "none"

    tight = DecodeCache(None, memory_limit=one_split - 1)
    tight.get(Flat(10), fingerprint="f", split="train", size=8)
    assert tight.get(Flat(10), fingerprint="f", split="train", size=8).cache_hit == "none"
    # A mapped split holds only its labels in process memory: it stays.
    mapped = DecodeCache(tmp_path, memory_limit=one_split - 1)
    mapped.get(Flat(10), fingerprint="f", split="train", size=8)
    assert mapped.get(Flat(10), fingerprint="f", split="train", size=8).cache_hit == "memory"
