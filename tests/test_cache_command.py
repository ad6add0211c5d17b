"""`tlbench cache`: see what is cached, prune it by age, size or name, clear it.

The cache here is filled by the real writers (`DecodeCache`, `ArrayStore`
with a feature entry's sidecar); "last use" is the entry's array's
modification time, moved back in time where a test needs old entries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tlbench import cachecmd
from tlbench.cache import ArrayStore
from tlbench.data import DecodeCache
from tlbench.testing import ColourSquares

DAY = 86400
FLOWERS = "imagefolder:/data/sets/flowers12"
PETS = "imagefolder:/data/sets/pets"


def _decoded(root: Path, dataset: str, split: str, n: int, size: int = 16) -> Path:
    cache = DecodeCache(root)
    cache.get(
        ColourSquares(n, seed=len(dataset)),
        fingerprint=f"fp-{dataset}",
        split=split,
        size=size,
        dataset=dataset,
    )
    return root / "decoded" / f"{cache.key(f'fp-{dataset}', split, size)}.npy"


def _features(root: Path, key: str, dataset: str, backbone: str, n: int, dim: int) -> Path:
    ArrayStore(root / "features").save(
        key,
        np.zeros((n, dim), np.float32),
        {
            "kind": "features",
            "dataset": dataset,
            "fingerprint": f"fp-{dataset}",
            "split": "train",
            "image_size": 224,
            "size": 256,
            "backbone": backbone,
            "weights": "IMAGENET1K_V1",
            "backbone_params": 11_000_000,
        },
    )
    return root / "features" / f"{key}.npy"


def _age(path: Path, days: float) -> None:
    t = time.time() - days * DAY
    os.utime(path, (t, t))


@pytest.fixture
def cache(tmp_path):
    """Four entries of known sizes and ages, and a downloaded dataset beside them."""
    root = tmp_path / "cache"
    paths = {
        "flowers decoded": _decoded(root, FLOWERS, "train", 40),  # 40*3*16*16 = 30720 B
        "pets decoded": _decoded(root, PETS, "test", 10),  # 7680 B
        "flowers resnet": _features(root, "f1", FLOWERS, "resnet18", 40, 512),  # 81920 B
        "pets lite": _features(root, "f2", PETS, "efficientnet_lite0", 10, 1280),  # 51200 B
    }
    for name, days in [
        ("flowers decoded", 2),
        ("pets decoded", 40),
        ("flowers resnet", 45),
        ("pets lite", 10),
    ]:
        _age(paths[name], days)
    (root / "data" / "cifar10").mkdir(parents=True)
    (root / "data" / "cifar10" / "batch.bin").write_bytes(b"downloaded")
    return root


def _bytes(npy: Path) -> int:
    return npy.stat().st_size + npy.with_suffix(".json").stat().st_size


def _listing(run_cli, root: Path) -> list[dict]:
    result = run_cli("cache", "list", "--json", "--cache-dir", root)
    assert result.code == 0, result
    return json.loads(result.out)["entries"]


def _left(root: Path) -> set[tuple[str, str | None, str | None]]:
    return {(e.kind, e.meta.get("dataset"), e.meta.get("backbone")) for e in cachecmd.scan(root)[0]}


# --------------------------------------------------------------------------- list


def test_list_shows_each_entry_with_dataset_split_size_backbone_bytes_and_last_use(run_cli, cache):
    result = run_cli("cache", "--cache-dir", cache)
    assert result.code == 0, result
    lines = result.out.splitlines()
    assert lines[0].split() == [
        "KIND",
        "DATASET",
        "SPLIT",
        "SIZE",
        "BACKBONE",
        "BYTES",
        "LAST",
        "USE",
    ]
    rows = [line.split() for line in lines[1:5]]
    # Most recently used first; short dataset names; sizes in px; decimal bytes.
    assert [r[:4] for r in rows] == [
        ["decoded", "imagefolder:flowers12", "train", "16"],
        ["features", "imagefolder:pets", "train", "224"],
        ["decoded", "imagefolder:pets", "test", "16"],
        ["features", "imagefolder:flowers12", "train", "224"],
    ]
    assert rows[1][5] == "efficientnet_lite0" and rows[3][5] == "resnet18"
    assert [" ".join(r[-3:]) for r in rows] == ["2 d ago", "10 d ago", "40 d ago", "45 d ago"]
    total = sum(_bytes(p) for p in cache.rglob("*.npy"))
    assert f"4 entries, {cachecmd.human_bytes(total)} under {cache}" in result.out

    entries = _listing(run_cli, cache)
    by_split = {(e["kind"], e["dataset_name"], e["split"]): e for e in entries}
    lite = by_split[("features", "imagefolder:pets", "train")]
    assert lite["dataset"] == PETS and lite["backbone"] == "efficientnet_lite0"
    assert lite["size"] == 224 and lite["bytes"] == _bytes(cache / "features" / "f2.npy")
    assert abs(time.time() - lite["last_used"] - 10 * DAY) < 60


def test_reading_an_entry_makes_it_the_most_recently_used(run_cli, cache):
    assert ArrayStore(cache / "features").load("f1") is not None  # 45 days old until now
    entries = _listing(run_cli, cache)
    newest = max(entries, key=lambda e: e["last_used"])
    assert (newest["kind"], newest["backbone"]) == ("features", "resnet18")
    assert newest["age_seconds"] < 60


def test_the_cache_folder_comes_from_the_environment_unless_a_flag_names_one(
    run_cli, cache, tmp_path, monkeypatch
):
    monkeypatch.setenv("TLBENCH_CACHE_DIR", str(cache))
    assert len(_listing_env(run_cli)) == 4
    empty = tmp_path / "other"
    result = run_cli("cache", "--cache-dir", empty)
    assert result.code == 0 and f"nothing cached under {empty}" in result.out


def _listing_env(run_cli) -> list[dict]:
    result = run_cli("cache", "--json")
    assert result.code == 0, result
    return json.loads(result.out)["entries"]


def test_the_command_imports_neither_torch_nor_numpy(cache):
    code = (
        "import sys; from tlbench.cli import main; "
        f"rc = main(['cache', '--cache-dir', {str(cache)!r}]); "
        "assert rc == 0; "
        "heavy = sorted({'torch', 'numpy', 'torchvision'} & set(sys.modules)); "
        "assert not heavy, heavy"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "4 entries" in done.stdout


def test_a_damaged_entry_is_listed_with_what_is_wrong(run_cli, cache):
    marker = '"format": "tlbench-cache-entry/1"'
    (cache / "features" / "f2.json").write_text(f'{{"shape": "2x3", "dtype": "float32", {marker}}}')
    (cache / "features" / "f3.npy").write_bytes(b"no sidecar")
    result = run_cli("cache", "--cache-dir", cache)
    assert result.code == 0, result
    assert "[bad sidecar: sidecar field 'shape' is \"2x3\"" in result.out
    # An array without a sidecar tlbench wrote is not tlbench's: not listed, never removed.
    assert "4 entries" in result.out
    assert run_cli("cache", "clear", "--yes", "--cache-dir", cache).code == 0
    assert (cache / "features" / "f3.npy").read_bytes() == b"no sidecar"


# --------------------------------------------------------------------------- prune


def test_prune_older_than_removes_only_entries_unused_for_that_long(run_cli, cache):
    before = _left(cache)
    dry = run_cli("cache", "prune", "--older-than", "30d", "--dry-run", "--cache-dir", cache)
    assert dry.code == 0, dry
    assert dry.out.count("would remove") == 3 and _left(cache) == before

    result = run_cli("cache", "prune", "--older-than", "30d", "--cache-dir", cache)
    assert result.code == 0, result
    assert _left(cache) == before - {
        ("decoded", PETS, None),
        ("features", FLOWERS, "resnet18"),
    }
    assert "removed decoded imagefolder:pets test 16 px" in result.out
    assert "removed features imagefolder:flowers12 train 224 px resnet18" in result.out
    assert "removed 2 entries" in result.out and "2 left" in result.out
    assert (cache / "data" / "cifar10" / "batch.bin").exists()


def test_prune_larger_than_and_older_than_combine(run_cli, cache):
    # Larger than 40 kB: both feature entries; of them, unused for 30 days: resnet18 only.
    result = run_cli(
        "cache", "prune", "--larger-than", "40kB", "--older-than", "30d", "--cache-dir", cache
    )
    assert result.code == 0, result
    assert ("features", FLOWERS, "resnet18") not in _left(cache) and len(_left(cache)) == 3
    result = run_cli("cache", "prune", "--larger-than", "40kB", "--cache-dir", cache)
    assert _left(cache) == {("decoded", FLOWERS, None), ("decoded", PETS, None)}


def test_max_size_keeps_the_most_recently_used_up_to_the_total(run_cli, cache):
    sizes = {p.stem: _bytes(p) for p in cache.rglob("*.npy")}
    flowers_decoded = _bytes(
        next(p for p in (cache / "decoded").glob("*.npy") if sizes[p.stem] > 20000)
    )
    lite = sizes["f2"]
    # Room for the two most recent (flowers decoded, 2 d; pets lite, 10 d) and not the third.
    budget = flowers_decoded + lite + 1000
    result = run_cli("cache", "prune", "--max-size", str(budget), "--cache-dir", cache)
    assert result.code == 0, result
    assert _left(cache) == {("decoded", FLOWERS, None), ("features", PETS, "efficientnet_lite0")}
    left = sum(_bytes(p) for p in cache.rglob("*.npy"))
    assert left <= budget


@pytest.mark.parametrize(
    ("args", "gone"),
    [
        (
            ["--dataset", "imagefolder:pets"],
            {("decoded", PETS, None), ("features", PETS, "efficientnet_lite0")},
        ),
        (
            ["--dataset", "*flowers*"],
            {("decoded", FLOWERS, None), ("features", FLOWERS, "resnet18")},
        ),
        (["--dataset", PETS, "--older-than", "20d"], {("decoded", PETS, None)}),
        (["--backbone", "resnet*"], {("features", FLOWERS, "resnet18")}),
        (
            ["--backbone", "resnet18", "--backbone", "efficientnet_lite0"],
            {("features", FLOWERS, "resnet18"), ("features", PETS, "efficientnet_lite0")},
        ),
        (["--dataset", "cifar10"], set()),
    ],
)
def test_prune_by_dataset_or_backbone(run_cli, cache, args, gone):
    before = _left(cache)
    result = run_cli("cache", "prune", *args, "--cache-dir", cache)
    assert result.code == 0, result
    assert before - _left(cache) == gone


def test_prune_by_a_dataset_path_as_typed(run_cli, tmp_path, monkeypatch):
    folder = tmp_path / "work" / "ds"
    folder.mkdir(parents=True)
    root = tmp_path / "cache"
    _decoded(root, f"imagefolder:{folder}", "train", 4)
    _decoded(root, FLOWERS, "train", 4)
    monkeypatch.chdir(tmp_path / "work")
    result = run_cli("cache", "prune", "--dataset", "imagefolder:./ds/", "--cache-dir", root)
    assert result.code == 0, result
    assert _left(root) == {("decoded", FLOWERS, None)}


def test_prune_needs_a_criterion_and_valid_values(run_cli, cache):
    result = run_cli("cache", "prune", "--cache-dir", cache)
    assert result.code == 2 and "say what to prune" in result.err
    assert len(_left(cache)) == 4
    for flag, value in [("--older-than", "30"), ("--older-than", "3x"), ("--max-size", "lots")]:
        with pytest.raises(SystemExit) as stop:
            run_cli("cache", "prune", flag, value, "--cache-dir", cache)
        assert stop.value.code == 2


@pytest.mark.parametrize(
    ("text", "seconds"), [("30d", 30 * DAY), ("12h", 43200), ("90m", 5400), ("2w", 14 * DAY)]
)
def test_durations(text, seconds):
    assert cachecmd.parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [("1GB", 10**9), ("500MB", 5 * 10**8), ("2GiB", 2 << 30), ("100k", 10**5), ("12345", 12345)],
)
def test_sizes(text, size):
    assert cachecmd.parse_size(text) == size


# --------------------------------------------------------------------------- clear


def test_clear_removes_every_entry_without_asking_off_a_terminal(run_cli, cache):
    # A write another process is doing now is left alone; one whose writer died is removed.
    dead = subprocess.Popen(["true"])
    dead.wait()
    live_tmp = cache / "decoded" / f"x.npy.{os.getpid()}@{cachecmd_host()}.t1.tmp"
    dead_tmp = cache / "features" / f"y.npy.{dead.pid}@{cachecmd_host()}.t1.tmp"
    live_tmp.write_bytes(b"being written")
    dead_tmp.write_bytes(b"x" * 5000)
    (cache / "decoded" / "never-written.lock").touch()  # a decode that failed left its lock

    dry = run_cli("cache", "clear", "--dry-run", "--cache-dir", cache)
    said = [line for line in dry.out.splitlines() if line.startswith("would remove")]
    assert dry.code == 0 and len(said) == 6  # 4 entries, the dead writer's file, the total
    assert len(_left(cache)) == 4 and dead_tmp.exists()

    result = run_cli("cache", "clear", "--cache-dir", cache)
    assert result.code == 0, result
    assert _left(cache) == set()
    assert result.out.count("removed decoded") == 2 and result.out.count("removed features") == 2
    assert f"removed {dead_tmp.name}" in result.out
    assert "removed 4 entries and 1 temporary file(s)" in result.out and "0 left" in result.out
    assert live_tmp.exists() and not dead_tmp.exists()
    # Nothing is left of the entries, their lock files included.
    assert sorted(p.name for p in (cache / "decoded").iterdir()) == [live_tmp.name]
    assert list((cache / "features").iterdir()) == []
    assert (cache / "data" / "cifar10" / "batch.bin").read_bytes() == b"downloaded"
    # The next run decodes again, and finds no trace of the old entry.
    assert (
        DecodeCache(cache)
        .get(
            ColourSquares(40, seed=len(FLOWERS)),
            fingerprint=f"fp-{FLOWERS}",
            split="train",
            size=16,
        )
        .cache_hit
        == "none"
    )


def cachecmd_host() -> str:
    from tlbench import cache as cache_module

    return cache_module._HOST


def test_clear_asks_on_a_terminal(run_cli, cache, monkeypatch):
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    answers = iter(["n", "y"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    result = run_cli("cache", "clear", "--cache-dir", cache)
    assert result.code == 1 and "nothing removed" in result.out and len(_left(cache)) == 4
    result = run_cli("cache", "clear", "--cache-dir", cache)
    assert result.code == 0 and _left(cache) == set()


def test_clear_keeps_the_lock_of_an_entry_being_computed(run_cli, cache):
    import fcntl

    lock = sorted((cache / "decoded").glob("*.lock"))[0]
    with open(lock) as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as `ArrayStore.lock` holds it while computing
        result = run_cli("cache", "clear", "--yes", "--cache-dir", cache)
    assert result.code == 0, result
    assert _left(cache) == set()
    assert lock.exists(), "the lock of a computation in progress was removed"
    assert not [p for p in (cache / "decoded").iterdir() if p != lock]
