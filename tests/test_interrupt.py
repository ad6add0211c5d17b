"""SIGTERM in the middle of an epoch: finished records kept, the run marked, a rerun resumes.

A real `python -m tlbench.cli run` on a small image folder (the builtin
`imagefolder` dataset and `small_cnn` backbone), killed with SIGTERM while
the second of three runs is training, then run again.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from imagetree import make_tree, read_records

EPOCHS = 4


def command(tmp_path: Path, root: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "tlbench.cli", "run",
        "--datasets", f"imagefolder:{root}", "--backbones", "small_cnn",
        "--strategies", "scratch", "--seeds", "0,1,2", "--epochs", str(EPOCHS),
        "--batch-size", "8", "--image-size", "32", "--device", "cpu", "--workers", "1",
        "--out", str(tmp_path / "results.jsonl"), "--cache-dir", str(tmp_path / "cache"), *extra,
    ]  # fmt: skip


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONUNBUFFERED="1",  # progress lines arrive as they are printed
        TLBENCH_LOAD_PLUGINS="",  # no installed third-party plugin
        # Not needed here, and importing torchvision takes seconds.
        TLBENCH_BLOCK_PLUGINS="torchvision_backbones,torchvision_datasets",
        # One thread: on a shared CPU, OpenMP threads spin against each other.
        OMP_NUM_THREADS="1",
        COLUMNS="200",
    )
    return env


class Lines:
    """A child's stdout, line by line, with a deadline instead of a blocking read."""

    def __init__(self, proc: subprocess.Popen[str]):
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(proc,), daemon=True).start()

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.queue.put(line.rstrip("\n"))
        self.queue.put(None)

    def wait_for(self, predicate, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.queue.get(timeout=max(0.01, deadline - time.monotonic()))
            if line is None:
                raise AssertionError("the run ended early:\n" + "\n".join(self.seen))
            self.seen.append(line)
            if predicate(line):
                return line

    def rest(self, timeout: float = 60) -> list[str]:
        deadline = time.monotonic() + timeout
        while (line := self.queue.get(timeout=max(0.01, deadline - time.monotonic()))) is not None:
            self.seen.append(line)
        return self.seen


@pytest.mark.slow  # a CLI grid in its own process, stopped mid-epoch, then run again
@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM cannot be caught on Windows")
def test_sigterm_mid_epoch_keeps_finished_records_and_a_rerun_completes_the_grid(tmp_path):
    root = make_tree(tmp_path / "data", train=30, val=4, size=40)
    out = tmp_path / "results.jsonl"
    proc = subprocess.Popen(
        command(tmp_path, root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=environment(), cwd=tmp_path,
    )  # fmt: skip
    try:
        lines = Lines(proc)
        lines.wait_for(lambda line: line.startswith("[2/3]"))
        # The first record is complete before the second run starts.
        finished = out.read_bytes()
        (first,) = read_records(out)
        assert first["status"] == "ok" and first["config"]["seed"] == 0
        # One epoch of the second run done: it is now in the middle of epoch 2.
        lines.wait_for(lambda line: f"epoch 1/{EPOCHS}" in line)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        output = "\n".join(lines.rest())
        errors = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    assert code == 143, output + errors  # 128 + SIGTERM, as a shell reports it
    assert "interrupted" in output and "run the same command again to resume" in output
    assert "Traceback" not in output + errors
    # It stopped in the middle of run 2: the epochs after the signal never ran.
    run2 = output[output.index("[2/3]") :]
    assert f"epoch {EPOCHS}/{EPOCHS}" not in run2

    # The finished record is byte for byte intact; the current run is recorded as interrupted.
    assert out.read_bytes().startswith(finished)
    records = read_records(out)
    assert [(r["config"]["seed"], r["status"]) for r in records] == [(0, "ok"), (1, "interrupted")]
    assert records[1]["reason"] == "interrupted (SIGTERM)"
    # The epochs it did finish are in the record, as they were reported.
    done = records[1]["epochs_completed"]
    assert 1 <= done < EPOCHS and [c["epoch"] for c in records[1]["partial_curve"]] == [
        *range(1, done + 1)
    ]

    # The same command again: run 1 is not redone, runs 2 and 3 are, the grid is complete.
    rerun = subprocess.run(
        command(tmp_path, root), capture_output=True, text=True, env=environment(), cwd=tmp_path,
        timeout=300,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "3 runs — 2 to train, 1 already done" in rerun.stdout
    assert out.read_bytes().startswith(finished)
    records = read_records(out)
    assert [(r["config"]["seed"], r["status"]) for r in records] == [
        (0, "ok"), (1, "interrupted"), (1, "ok"), (2, "ok")
    ]  # fmt: skip
    for r in records[2:]:
        assert len(r["accuracy"]["curve"]) == EPOCHS
