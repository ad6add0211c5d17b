"""Caches that cannot be written, or that hold damaged or hostile files, never stop a run.

A cache folder that cannot be created or fills the disk: one warning, then the
run goes on without it. A cache entry that is damaged, foreign or tampered
with: ignored with a warning and computed again, and never executed (arrays
are read with `allow_pickle=False`).
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from imagetree import learning, read_records
from PIL import Image

from tlbench import cache as cache_module
from tlbench.cache import ArrayStore
from tlbench.data import DecodeCache
from tlbench.runner import Runner


def tiny_args(tmp_path: Path, cache_dir: Path) -> list[str]:
    return [
        "run", "--datasets", "tinyset", "--backbones", "tiny", "--strategies", "scratch,linear",
        "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--quiet",
        "--out", str(tmp_path / "results.jsonl"), "--cache-dir", str(cache_dir),
    ]  # fmt: skip


# --------------------------------------------------------------------------- unwritable caches


def test_cache_folder_that_cannot_be_created_is_skipped_with_a_warning(run_cli, tmp_path):
    # Tests run as root, where permissions do not block writes; a folder under a
    # regular file cannot be created by anyone.
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = run_cli(*tiny_args(tmp_path, blocker / "cache"))
    assert result.code == 0, result
    assert [r["status"] for r in read_records(tmp_path / "results.jsonl")] == ["ok", "ok"]
    err = " ".join(result.err.split())
    assert "warning: cannot write the cache under" in err
    assert "going on without it" in err
    # One warning per cache (decoded images, features, scores), not one per entry.
    assert err.count("cannot write the cache") <= 3
    assert "Traceback" not in result.err


def test_disk_full_while_writing_the_cache_leaves_no_partial_files(run_cli, tmp_path, monkeypatch):
    real_save, real_allocate = np.save, cache_module._allocate

    def save_then_fill_the_disk(file, array, **kwargs):
        real_save(file, array[: max(1, len(array) // 2)], **kwargs)  # part of it lands...
        raise OSError(errno.ENOSPC, "No space left on device")  # ...then the disk is full

    def allocate_on_a_full_disk(fd, length):
        os.ftruncate(fd, length // 2)  # part of it is allocated...
        raise OSError(errno.ENOSPC, "No space left on device")

    # Features are saved whole (np.save); decoded splits are written into a
    # file allocated up front (a full disk then fails before any page is written).
    monkeypatch.setattr(np, "save", save_then_fill_the_disk)
    monkeypatch.setattr(cache_module, "_allocate", allocate_on_a_full_disk)
    cache_dir = tmp_path / "cache"
    result = run_cli(*tiny_args(tmp_path, cache_dir))
    assert result.code == 0, result
    records = read_records(tmp_path / "results.jsonl")
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert "No space left on device" in result.err
    # Only the (empty) lock files of the entries it tried to write remain.
    left = [p for p in cache_dir.rglob("*") if p.is_file()]
    assert left and all(p.suffix == ".lock" and p.stat().st_size == 0 for p in left), left

    # With space again, the next run fills the cache and gets the same result.
    monkeypatch.setattr(np, "save", real_save)
    monkeypatch.setattr(cache_module, "_allocate", real_allocate)
    result = run_cli(*tiny_args(tmp_path, cache_dir), "--force")
    assert result.code == 0 and "warning" not in result.err, result
    again = read_records(tmp_path / "results.jsonl")[2:]
    assert [learning(r) for r in again] == [learning(r) for r in records]
    assert list(cache_dir.rglob("*.npy"))


# --------------------------------------------------------------------------- damaged entries


class Payload:
    """Unpickling this creates `marker`: proof that a cache file's code was executed."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _rewrite(npy: Path, array: np.ndarray, *, allow_pickle: bool = False) -> None:
    """Replace an entry's array and make its sidecar agree, as a careful forger would."""
    with open(npy, "wb") as f:
        np.save(f, array, allow_pickle=allow_pickle)
    sidecar = npy.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta.update(shape=list(array.shape), dtype=str(array.dtype))
    sidecar.write_text(json.dumps(meta))


def _edit_sidecar(npy: Path, **changes) -> None:
    sidecar = npy.with_suffix(".json")
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), **changes}))


def _damage(kind: str, npy: Path, marker: Path) -> None:
    if kind == "pickled object array":
        _rewrite(npy, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    elif kind == "garbage bytes":
        npy.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "empty file":
        npy.write_bytes(b"")
    elif kind == "truncated":
        npy.write_bytes(npy.read_bytes()[: npy.stat().st_size // 2])
    elif kind == "npz archive":
        with open(npy, "wb") as f:
            np.savez(f, x=np.zeros(2))
    elif kind == "sidecar garbage":
        npy.with_suffix(".json").write_text("{not json")
    elif kind == "sidecar not an object":
        npy.with_suffix(".json").write_text("[1, 2]")
    elif kind == "sidecar disagrees":
        _edit_sidecar(npy, shape=[1, 2, 3])
    else:  # pragma: no cover
        raise AssertionError(kind)


STORE_DAMAGE = [
    "pickled object array", "garbage bytes", "empty file", "truncated", "npz archive",
    "sidecar garbage", "sidecar not an object", "sidecar disagrees",
]  # fmt: skip


@pytest.mark.parametrize("kind", STORE_DAMAGE)
def test_damaged_entry_is_a_miss_with_a_warning_and_never_runs_code(tmp_path, kind):
    store = ArrayStore(tmp_path / "store")
    store.save("entry", np.arange(24, dtype=np.uint8).reshape(2, 3, 2, 2), {"labels": [0, 1]})
    assert store.load("entry") is not None
    marker = tmp_path / "EXECUTED"
    _damage(kind, tmp_path / "store" / "entry.npy", marker)
    with pytest.warns(RuntimeWarning, match=r"ignoring damaged cache entry .*entry.npy"):
        assert store.load("entry") is None
    assert not marker.exists(), "loading a cache file ran code"
    # The next save replaces the damaged entry.
    store.save("entry", np.zeros((1, 3, 2, 2), np.uint8), {"labels": [0]})
    assert store.load("entry")[0].shape == (1, 3, 2, 2)


def test_store_checks_the_dtype_it_is_asked_for(tmp_path):
    store = ArrayStore(tmp_path)
    store.save("a", np.arange(6, dtype=np.float32).reshape(2, 3), {"what": "features"})
    array, meta = store.load("a", dtype="float32")
    assert array.tolist() == [[0, 1, 2], [3, 4, 5]] and meta["what"] == "features"
    with pytest.warns(RuntimeWarning, match="expected uint8"):
        assert store.load("a", dtype="uint8") is None


class Split:
    """An in-memory ImageSource of flat-colour images."""

    def __init__(self, labels: list[int]):
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int) -> Image.Image:
        return Image.new("RGB", (10, 10), (40 * self.labels[index], 0, 0))

    def describe(self, index: int) -> str:
        return f"image {index}"


@pytest.mark.parametrize(
    ("kind", "forge"),
    [
        ("other size", lambda npy: _rewrite(npy, np.zeros((4, 3, 4, 4), np.uint8))),
        ("other dtype", lambda npy: _rewrite(npy, np.zeros((4, 3, 8, 8), np.float32))),
        ("fewer images", lambda npy: _rewrite(npy, np.zeros((3, 3, 8, 8), np.uint8))),
        ("foreign labels", lambda npy: _edit_sidecar(npy, labels=[7, 7, 7, 7])),
        ("labels not numbers", lambda npy: _edit_sidecar(npy, labels=["a", "b", "c", "d"])),
        ("labels missing", lambda npy: _edit_sidecar(npy, labels=None)),
        ("skipped invented", lambda npy: _edit_sidecar(npy, skipped=["x.png"])),
    ],
)
def test_decoded_split_that_is_not_this_split_is_decoded_again(tmp_path, kind, forge):
    source = Split([0, 1, 2, 1])
    first = DecodeCache(tmp_path).get(source, fingerprint="f", split="train", size=8)
    # A copy: `first` maps the very file the forger rewrites in place.
    first_images = first.images.clone()
    (npy,) = (tmp_path / "decoded").glob("*.npy")
    forge(npy)
    with pytest.warns(RuntimeWarning, match="ignoring damaged cache entry"):
        again = DecodeCache(tmp_path).get(source, fingerprint="f", split="train", size=8)
    assert again.cache_hit == "none"
    assert torch.equal(again.images, first_images) and again.labels.tolist() == [0, 1, 2, 1]
    assert (
        DecodeCache(tmp_path).get(source, fingerprint="f", split="train", size=8).cache_hit
        == "disk"
    )


def test_hostile_and_forged_cache_files_in_a_real_run(plugins, tiny_config, tmp_path):
    """Every cached array replaced (a pickle payload, or a forged shape): the runs recompute."""
    tiny_config.strategies = ["scratch", "linear"]
    first = Runner(tiny_config, plugins).run()
    entries = sorted(Path(tiny_config.cache_dir).rglob("*.npy"))
    assert {p.parent.name for p in entries} == {"decoded", "features", "scores"}
    marker = tmp_path / "EXECUTED"
    for i, npy in enumerate(entries):
        if i % 2:
            _damage("pickled object array", npy, marker)
        else:
            array = np.load(npy)
            _rewrite(npy, np.zeros((array.shape[0] + 1, *array.shape[1:]), array.dtype))
    tiny_config.force = True
    with pytest.warns(RuntimeWarning, match="ignoring damaged cache entry"):
        again = Runner(tiny_config, plugins).run()
    assert not marker.exists(), "a cache file ran code"
    assert [r["status"] for r in again] == ["ok", "ok"], [r["reason"] for r in again]
    assert [learning(r) for r in again] == [learning(r) for r in first]
    # The damaged scores entry too: computed again (in its own time), the same scores.
    assert {**again[1]["scores"], "seconds": 0} == {**first[1]["scores"], "seconds": 0}
    assert again[0]["cost"]["decode_cache"] == "none"
    assert again[1]["cost"]["feature_cache"] == "none"


def test_forged_feature_dtype_is_recomputed(plugins, tiny_config):
    tiny_config.strategies = ["linear"]
    Runner(tiny_config, plugins).run()
    for npy in (Path(tiny_config.cache_dir) / "features").glob("*.npy"):
        _rewrite(npy, np.load(npy).astype(np.float64))
    tiny_config.force = True
    with pytest.warns(
        RuntimeWarning, match=r"dtype float64, expected float32\); computing it again"
    ):
        (again,) = Runner(tiny_config, plugins).run()
    assert again["status"] == "ok", again["reason"]


# --------------------------------------------------------------------------- sidecar types (issue 13.7)

#: what a feature entry's sidecar records of its model, as the feature store asks for it.
FACTS = {"backbone_params": int, "forward_flops_per_image": (int, float, None)}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("backbone_params", "12"),  # the field of the report: a string where a count belongs
        ("backbone_params", None),
        ("backbone_params", True),
        ("forward_flops_per_image", "many"),
        ("shape", "2x3"),
        ("shape", [2, "3"]),
        ("shape", [-2, 3]),
        ("dtype", 32),
        ("created", "yesterday"),
        ("dataset", 7),
        ("split", ["train"]),
        ("size", 1.5),
    ],
)
def test_a_wrongly_typed_sidecar_field_is_recomputed_with_a_warning(tmp_path, field, value):
    store = ArrayStore(tmp_path)
    features = np.arange(6, dtype=np.float32).reshape(2, 3)
    meta = {"backbone_params": 12, "forward_flops_per_image": 3.5e6, "split": "train", "size": 8}
    store.save("f", features, meta)
    _edit_sidecar(tmp_path / "f.npy", **{field: value})
    with pytest.warns(
        RuntimeWarning, match=rf"ignoring damaged cache entry .*sidecar field '{field}' is"
    ):
        assert store.load("f", dtype="float32", fields=FACTS) is None
    # The rerun computes it again (it does not fail), and the entry is sound afterwards.
    calls = []

    def compute():
        calls.append(1)
        return features * 2, meta

    array, got, hit = store.load_or_compute("f", compute, dtype="float32", fields=FACTS)
    assert (hit, len(calls)) == (False, 1) and array.tolist() == (features * 2).tolist()
    array, got, hit = ArrayStore(tmp_path).load_or_compute("f", compute, fields=FACTS)
    assert hit and len(calls) == 1 and got["backbone_params"] == 12


def test_a_missing_required_field_or_other_shape_is_a_miss(tmp_path):
    store = ArrayStore(tmp_path)
    store.save("f", np.zeros((4, 16), np.float32), {"backbone_params": 5})
    with pytest.warns(RuntimeWarning, match="sidecar has no 'forward_flops_per_image'"):
        assert store.load("f", fields=FACTS) is None
    with pytest.warns(RuntimeWarning, match=r"shape \(4, 16\), expected \(4, 32\)"):
        assert store.load("f", shape=(4, 32)) is None
    assert store.load("f", shape=(None, 16))[0].shape == (4, 16)


# --------------------------------------------------------------------------- two processes at once


def _compute_in_a_process(root: str, log: str, barrier, results) -> None:
    import time

    store = ArrayStore(Path(root))

    def compute():
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(1.0)  # long enough for the other process to be waiting
        return np.full((64, 1024), os.getpid() % 997, np.float32), {"split": "train"}

    barrier.wait()
    array, _, hit = store.load_or_compute("same", compute, dtype="float32")
    results.put((array[:, 0].tolist(), hit))


class SlowSplit:
    """A picklable ImageSource that logs each full decode pass and takes its time."""

    def __init__(self, log: str, n: int = 24):
        self.log, self.labels = log, [i % 3 for i in range(n)]

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int) -> Image.Image:
        import time

        if index == 0:
            with open(self.log, "a") as f:
                f.write(f"{os.getpid()}\n")
        time.sleep(0.03)
        return Image.new("RGB", (12, 12), (80 * self.labels[index], 40, 200))

    def describe(self, index: int) -> str:
        return f"slow[{index}]"


def _decode_in_a_process(root: str, log: str, barrier, results) -> None:
    barrier.wait()
    got = DecodeCache(Path(root), workers=1).get(
        SlowSplit(log), fingerprint="fp", split="train", size=8
    )
    results.put((got.images.flatten().tolist(), got.cache_hit))


@pytest.mark.slow  # two processes, one waiting on the other's lock
@pytest.mark.parametrize("work", [_compute_in_a_process, _decode_in_a_process])
def test_two_processes_asking_for_one_entry_compute_it_once(tmp_path, work):
    import multiprocessing

    # fork: the child needs nothing but what this process already imported.
    ctx = multiprocessing.get_context("fork")
    log = tmp_path / "computed.log"
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    workers = [
        ctx.Process(target=work, args=(str(tmp_path / "cache"), str(log), barrier, queue))
        for _ in range(2)
    ]
    for w in workers:
        w.start()
    try:
        results = [queue.get(timeout=120) for _ in workers]
    finally:
        for w in workers:
            w.join(30)
    assert [w.exitcode for w in workers] == [0, 0]
    assert len(log.read_text().split()) == 1, "both processes did the work"
    (a, hit_a), (b, hit_b) = results
    assert a == b, "the processes got different entries"
    # One computed it, the other waited and read it from the disk cache.
    assert sorted(map(str, (hit_a, hit_b))) in (["False", "True"], ["disk", "none"])
    entries = list((tmp_path / "cache").rglob("*.npy"))
    assert len(entries) == 1 and not list((tmp_path / "cache").rglob("*.tmp"))


# --------------------------------------------------------------------------- orphans (issue 13.8)


def _write_then_hang(root: str, ready: str) -> None:
    import time

    store = ArrayStore(Path(root))
    with store.create("big", (64, 3, 64, 64), "uint8") as pending:
        pending.array[:32] = 7
        Path(ready).write_text("")
        time.sleep(600)  # killed here, mid-write


def test_a_write_killed_with_sigkill_leaves_a_temp_file_that_the_next_store_removes(tmp_path):
    import multiprocessing
    import signal

    # fork: the child needs nothing but what this process already imported.
    ctx = multiprocessing.get_context("fork")
    root, ready = tmp_path / "features", tmp_path / "ready"
    writer = ctx.Process(target=_write_then_hang, args=(str(root), str(ready)))
    writer.start()
    try:
        for _ in range(600):
            if ready.exists() or not writer.is_alive():
                break
            writer.join(0.1)
        assert ready.exists(), "the writer never started writing"
        (tmp,) = root.glob("*.tmp")
        assert tmp.stat().st_size >= 64 * 3 * 64 * 64  # allocated in full
        # While its writer lives, the temp file is left alone.
        assert ArrayStore(root).load("other") is None and tmp.exists()
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.join(30)
    assert writer.exitcode == -signal.SIGKILL
    assert tmp.exists(), "kill -9 leaves the temporary file"
    assert ArrayStore(root).load("big") is None  # the next run's store...
    assert not tmp.exists(), "...removed the dead writer's temporary file"


def test_only_temp_files_of_dead_or_long_gone_writers_are_removed(tmp_path):
    import subprocess
    import time

    dead = subprocess.Popen(["true"])
    dead.wait()
    alive = subprocess.Popen(["sleep", "60"])
    host = cache_module._HOST
    old = time.time() - cache_module.ORPHAN_AGE_S - 60
    names = {
        f"k1.npy.{dead.pid}@{host}.t0a1b.tmp": False,  # dead writer here: removed
        f"k2.npy.{dead.pid}.tmp": False,  # older tlbench's name, dead writer: removed
        f"k3.json.{alive.pid}@{host}.t0a1b.tmp": True,  # a live writer: kept
        f"k4.npy.{os.getpid()}@{host}.t0a1b.tmp": True,  # this process's own: kept
        f"k5.npy.{dead.pid}@other-host.t0a1b.tmp": True,  # another host's, fresh: kept
        f"k6.npy.{alive.pid}@other-host.t0a1b.tmp": False,  # another host's, a day old: removed
        "k7.npy.tmp": True,  # not a name tlbench writes, fresh: kept
    }
    try:
        for name in names:
            (tmp_path / name).write_bytes(b"x" * 100)
        os.utime(tmp_path / f"k6.npy.{alive.pid}@other-host.t0a1b.tmp", (old, old))
        removed = cache_module.remove_orphans(tmp_path)
    finally:
        alive.kill()
        alive.wait()
    assert {p.name for p, _ in removed} == {n for n, kept in names.items() if not kept}
    assert {p.name for p in tmp_path.iterdir()} == {n for n, kept in names.items() if kept}
