"""Every signal on every executor: SIGINT, SIGTERM and SIGHUP, to the driver alone or to its
process group, under `inline`, `process`, `devices cpu,cpu` and `ray` (less the cases
another one already makes: `_cases`).

Each case is a real `tlbench run` (`signalgrid.Driver`) whose runs hold in
training until the test signals it. Each must end with an "interrupted"
record naming the signal for every run that was training, no traceback,
an exit status of 128 + the signal, and no worker left training for nobody.
Then the cases the issue found one by one: the forkserver killed under a
running worker, and SIGTERM before the first worker is ready.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import sys
import time

import pytest
from signalgrid import Driver, alive, forkserver_of, records

from tlbench.executors.ray import STOP_GRACE_SECONDS

pytestmark = [
    pytest.mark.slow,  # a CLI grid in its own process (and Ray: a local instance starts in ~16 s)
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
]

EXECUTORS = ["inline", "process", "devices", "ray"]
SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]


def _cases() -> list:
    """Every executor x signal x target, less the cases another one already makes.

    - `inline` to its group: the group is the driver alone (it starts no process),
      so it is the same delivery as to the driver.
    - `ray` SIGINT and SIGHUP to the driver: the driver cancels its tasks whatever the
      signal (process and devices pass the very signal on, so theirs all stay); its
      handling of each signal is met by the same signal to the group, which reaches it
      too, and SIGTERM to the driver stays for Ray's own SIGTERM handler.

    Each Ray case starts a local instance (13 s of CPU on 2 cores), so the five left
    out took 34 of the suite's CPU seconds.
    """
    return [
        pytest.param(executor, signum, target, id=f"{executor}-{signum.name}-{target}")
        for executor, signum, target in itertools.product(EXECUTORS, SIGNALS, ("driver", "group"))
        if not (executor == "inline" and target == "group")
        and not (executor == "ray" and target == "driver" and signum != signal.SIGTERM)
    ]


#: a line of Ray's C++ logger: `[2026-12-06 20:23:50,609 E 8318 8461] task_manager.cc:1545: ...`.
RAY_CORE_LINE = re.compile(r"^\[[-\d]+ [\d:,]+ [EW] \d+ \d+\] \w+\.cc:\d+: .*$\n?", re.M)


def _ours(log: str, executor: str, target: str) -> str:
    """The log less Ray's own core lines, which a signal to the group may make it write.

    They are Ray's (its processes die with the group), not a traceback or an
    error of tlbench's; every other line is still checked.
    """
    return RAY_CORE_LINE.sub("", log) if (executor, target) == ("ray", "group") else log


def _gone(pids: list[int], timeout: float = 30) -> list[int]:
    """Those of `pids` still alive after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (left := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.mark.parametrize(("executor", "signum", "target"), _cases())
def test_a_signal_ends_the_grid_with_interrupted_records_naming_it(
    tmp_path, executor, signum, target
):
    if executor == "ray":
        pytest.importorskip("ray")
    # Two runs: two workers (devices, ray) hold one each; inline and process hold the first.
    training = 2 if executor in ("devices", "ray") and (os.cpu_count() or 1) >= 2 else 1
    (tmp_path / "hold").touch()
    with Driver(tmp_path, executor, seeds=2) as driver:
        # Training, and the driver has heard so: a Ray task's "started" event waits on Ray's
        # queue for the driver's next poll (0.2 s), and a signal to the group takes the
        # queue down with it; a run the driver never heard of has no record to write and
        # is trained again by the rerun (docs/bad-input.md; 2 of 17 tries without this wait).
        driver.wait_until(
            lambda: len(driver.holding()) >= training and driver.announced() >= training,
            "the runs to be training",
        )
        held = driver.holding()
        if executor != "inline":
            assert driver.pid not in held  # trained by a worker, not by the driver
        driver.signal(signum, group=target == "group")
        # Each run that was training is recorded within the grace a Ray driver gives its
        # cancelled tasks, also when the signal to the group took the local instance down
        # and no task can answer (the driver waited the grace out for them). Ray's own
        # shutdown after the records may take seconds more on a busy machine: not timed.
        driver.wait_until(
            lambda: len(records(tmp_path)) >= len(held), "the records", STOP_GRACE_SECONDS
        )
        code, log = driver.wait(), driver.log()
    assert code == 128 + signum, log
    ours = _ours(log, executor, target)
    assert "Traceback" not in ours and "Error" not in ours, log
    assert "run the same command again to resume" in log
    got = records(tmp_path)
    assert got and all(r["status"] == "interrupted" for r in got), got
    assert len(held) <= len(got) <= 2
    assert {r["reason"] for r in got} == {f"interrupted ({signum.name})"}
    assert not _gone(held), "a worker is still training for nobody"


@pytest.mark.parametrize("executor", ["process", "devices"])
def test_a_killed_forkserver_leaves_no_run_training_for_nobody_and_loses_none(tmp_path, executor):
    (tmp_path / "hold").touch()
    with Driver(tmp_path, executor, seeds=2) as driver:
        parallel = 2 if executor == "devices" else 1
        driver.wait_until(lambda: len(driver.holding()) == parallel, "the runs to be training")
        server = forkserver_of(driver.pid)
        assert server is not None
        os.kill(server, signal.SIGKILL)
        # Its worker still trains: the run is neither retried elsewhere nor failed.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            assert len(driver.holding()) == parallel and not records(tmp_path), driver.log()
            time.sleep(0.1)
        (tmp_path / "hold").unlink()
        code = driver.wait(timeout=300)
        log = driver.log()
    assert code == 0, log
    assert "Traceback" not in log and "Error" not in log, log
    got = records(tmp_path)
    assert [r["status"] for r in got] == ["ok", "ok"], got
    assert len({r["key"] for r in got}) == 2  # each run trained and recorded once


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("executor", ["process", "devices"])
def test_a_signal_before_the_first_worker_is_ready_ends_quietly(tmp_path, executor, signum):
    (tmp_path / "hold").touch()
    with Driver(tmp_path, executor, seeds=2) as driver:
        # The forkserver is up (it imports torch first): its first worker is starting.
        driver.wait_until(lambda: forkserver_of(driver.pid) is not None, "the forkserver")
        code, log = driver.stop(signum, group=True)
    assert code == 128 + signum, log
    assert "Traceback" not in log and "Error" not in log, log
    assert all(r["status"] == "interrupted" for r in records(tmp_path))
