"""The same command with the same seed, run twice on a CPU, gives the same curves.

Two separate `python -m tlbench.cli run` processes on a real image folder,
with augmentation on: the second reads the decoded images from the disk
cache the first wrote, so the cache is covered too. (tests/test_runner.py
checks the same in-process on the tiny plugin.)
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from imagetree import make_tree, read_records


@pytest.mark.slow  # two CLI processes, each importing torch and training
def test_same_command_twice_gives_identical_accuracy_and_loss_curves(tmp_path):
    root = make_tree(tmp_path / "data", train=10, val=4, size=40)
    out = tmp_path / "results.jsonl"
    command = [
        sys.executable, "-m", "tlbench.cli", "run", "--quiet",
        "--datasets", f"imagefolder:{root}", "--backbones", "small_cnn",
        "--strategies", "scratch", "--seeds", "3", "--epochs", "3", "--batch-size", "8",
        "--image-size", "32", "--augment", "--device", "cpu",
        "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    env = {
        **os.environ,
        "TLBENCH_LOAD_PLUGINS": "",
        "TLBENCH_BLOCK_PLUGINS": "torchvision_backbones,torchvision_datasets",
        "OMP_NUM_THREADS": "1",  # a shared CPU; results do not depend on it (same in both)
    }
    for extra in ([], ["--force"]):
        done = subprocess.run(command + extra, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
    first, second = read_records(out)
    assert first["key"] == second["key"]
    assert (first["cost"]["decode_cache"], second["cost"]["decode_cache"]) == ("none", "disk")

    def curve(record: dict) -> list[tuple]:
        return [
            (c["train_loss"], c["eval_loss"], c["eval_accuracy"], c["eval_balanced_accuracy"])
            for c in record["accuracy"]["curve"]
        ]

    assert len(curve(first)) == 3
    assert curve(first) == curve(second)
    assert first["accuracy"]["final"] == second["accuracy"]["final"]
