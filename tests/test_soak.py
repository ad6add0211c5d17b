"""The fault-injection soak (`benchmarks/soak.py`): random kills of a 12-run grid under every
executor, reruns in between, and a final rerun that completes each grid (issue 26).

The soak itself is slow (bounded to 10 minutes); its checker is tested here
on files that break each invariant, so a soak that passes has checked something.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import soak


def _line(key: str, status: str) -> bytes:
    return json.dumps({"key": key, "status": status}).encode() + b"\n"


def test_the_soaks_checker_finds_a_torn_line_and_two_ok_records_of_one_key(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_bytes(_line("a", "ok") + _line("b", "interrupted") + _line("b", "ok"))
    assert soak.check_file(path) == (3, [])
    path.write_bytes(_line("a", "ok") + _line("a", "ok") + b'{"key": "b", "sta')
    count, problems = soak.check_file(path)
    assert count == 3
    assert any("torn" in p for p in problems) and "key a has 2 ok records" in problems
    assert soak.answers(path) == {"a": "ok"}


def test_a_target_that_ended_before_its_signal_counts_as_no_fault():
    # A worker chosen as the target can end before the signal is sent; that step injected
    # nothing, so it must not count as a fault survived (survived would exceed injected).
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    assert soak._send(ended.pid, signal.SIGTERM) is False
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert soak._send(running.pid, signal.SIGTERM) is True
        assert running.wait(timeout=10) == -signal.SIGTERM
    finally:
        running.kill()


#: seconds of faults the suite's soak injects: a short soak on every executor, so the README's
#: test command stays minutes long; the soak of record (`python benchmarks/soak.py`, 7
#: minutes of faults, results/soak.md) is the same code run longer.
SUITE_SOAK_SECONDS = 60


@pytest.mark.slow  # 1 minute of faults, then a final rerun per executor: about 2 minutes
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_random_kills_on_every_executor_lose_nothing_and_a_rerun_completes_each_grid(tmp_path):
    pytest.importorskip("ray")
    figures = soak.soak(tmp_path, seconds=SUITE_SOAK_SECONDS, seed=1)
    assert figures.problems == []
    assert figures.steps >= len(soak.EXECUTORS)  # one step with a fault on each at least
    assert figures.injected >= 1 and figures.survived == figures.injected
    assert set(figures.final_reruns) == set(soak.EXECUTORS)
    assert all(
        outcome.startswith(f"{soak.RUNS}/{soak.RUNS} ok")
        for outcome in figures.final_reruns.values()
    )
    assert figures.seconds < 600
