"""Reliability, round three (issue 26): nothing deletes or trusts what tlbench did not write,
nothing outside tlbench stalls a grid, and the report stays fast on big results files.

Each test is named after what it protects; each failed before its fix.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from tlbench.cache import ArrayStore
from tlbench.data import DecodeCache
from tlbench.testing import ColourSquares

# --------------------------------------------------------------------------- cache: deleting


def _tlbench_cache(root: Path) -> Path:
    """A cache with one decoded and one feature entry, both written by tlbench."""
    DecodeCache(root).get(ColourSquares(8, seed=1), fingerprint="fp", split="train", size=16)
    ArrayStore(root / "features").save(
        "f1", np.zeros((8, 4), np.float32), {"kind": "features", "backbone": "tiny"}
    )
    return root


def _project(tmp_path: Path) -> dict[Path, bytes]:
    """A project's own arrays and JSON files (no tlbench sidecar marker), and their bytes."""
    project = tmp_path / "project" / "features"
    project.mkdir(parents=True)
    files = {
        project / "embeddings.npy": b"\x93NUMPY my embeddings",
        project / "embeddings.json": json.dumps({"shape": [2, 2], "dtype": "float32"}).encode(),
        project / "settings.json": b'{"lr": 0.1}',
        project / "run.lock": b"",
    }
    for path, data in files.items():
        path.write_bytes(data)
    return files


def _intact(files: dict[Path, bytes]) -> None:
    for path, data in files.items():
        assert path.exists(), f"{path} was removed"
        assert path.read_bytes() == data


@pytest.mark.parametrize("action", [["clear", "--yes"], ["prune", "--older-than", "0s"]])
@pytest.mark.parametrize("kind", ["features", "decoded"])
def test_cache_clear_never_follows_a_linked_entry_folder_out_of_the_cache(
    run_cli, tmp_path, action, kind
):
    root = tmp_path / "cache"
    (root / kind).mkdir(parents=True)
    files = _project(tmp_path)
    (root / kind).rmdir()
    (root / kind).symlink_to(tmp_path / "project" / "features")
    result = run_cli("cache", *action, "--cache-dir", root)
    assert result.code == 0, result
    _intact(files)


@pytest.mark.parametrize("action", [["clear", "--yes"], ["prune", "--older-than", "0s"]])
def test_cache_clear_removes_only_entries_whose_sidecar_tlbench_wrote(run_cli, tmp_path, action):
    root = _tlbench_cache(tmp_path / "cache")
    # A --cache-dir pointed at a project: its features/ holds the project's own files.
    theirs = {}
    for name, data in {
        "embeddings.npy": b"\x93NUMPY mine",
        "embeddings.json": json.dumps({"shape": [2, 2], "dtype": "float32"}).encode(),
        "labels.json": b"[1, 2]",
        "orphan.npy": b"no sidecar at all",
        "old.npy.tmp": b"not a name tlbench writes",
    }.items():
        (root / "features" / name).write_bytes(data)
        theirs[root / "features" / name] = data
    old = time.time() - 3 * 86400
    for path in theirs:
        os.utime(path, (old, old))
    # A link named like an entry, to a file outside: neither the link nor its target goes.
    outside = tmp_path / "outside.json"
    outside.write_text(
        json.dumps({"shape": [1], "dtype": "uint8", "format": "tlbench-cache-entry/1"})
    )
    (root / "features" / "linked.json").symlink_to(outside)
    (root / "features" / "linked.npy").symlink_to(outside)

    result = run_cli("cache", *action, "--cache-dir", root)
    assert result.code == 0, result
    assert "removed 2 entries" in result.out
    _intact(theirs)
    assert (root / "features" / "linked.json").is_symlink() and outside.exists()
    left = {p.name for p in (root / "features").iterdir()} | {
        p.name for p in (root / "decoded").iterdir()
    }
    assert left == {p.name for p in theirs} | {"linked.json", "linked.npy"}


def test_cache_prune_older_than_zero_is_a_criterion(run_cli, tmp_path):
    root = _tlbench_cache(tmp_path / "cache")
    result = run_cli("cache", "prune", "--older-than", "0s", "--cache-dir", root)
    assert result.code == 0, result
    assert "say what to prune" not in result.err
    assert "removed 2 entries" in result.out
