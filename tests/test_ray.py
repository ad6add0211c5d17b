"""The `ray` executor against a real local Ray instance (installed by the README's test command).

Each run is a Ray task that loads the driver's plugins by import path
(`tlbench.testing:TINY_PLUGIN`) in a Ray worker. A driver killed with
`kill -9` mid-grid loses no finished run, and the same command completes it.
"""

from __future__ import annotations

import math
import os
import signal

import pytest

ray = pytest.importorskip("ray")

#: a local Ray instance starts in about 16 s, and the driver-kill test runs two grids.
pytestmark = pytest.mark.slow

from signalgrid import Driver, records  # noqa: E402

import tlbench  # noqa: E402
from tlbench import results, testing  # noqa: E402
from tlbench.config import RunConfig  # noqa: E402
from tlbench.runner import Runner  # noqa: E402


def _config(tmp_path, **changes) -> RunConfig:
    config = RunConfig(
        backbones=["tiny", "tiny_random"],
        datasets=["tinyset"],
        strategies=["scratch", "linear"],
        seeds=[0],
        image_size=16,
        hyperparameters={"epochs": 2, "batch_size": 16},
        out=str(tmp_path / "results.jsonl"),
        cache_dir=str(tmp_path / "cache"),
        device="cpu",
    )
    for key, value in changes.items():
        setattr(config, key, value)
    return config


def _keyed(records):
    return {r["key"]: r for r in records}


def _plugins():
    return tlbench.Plugins(entry_points=False, extra=[("tiny", testing.TINY_PLUGIN)])


def test_a_ray_grid_matches_inline_per_run_key(tmp_path):
    inline = {r["key"]: r for r in Runner(_config(tmp_path / "a"), _plugins()).run()}
    records = Runner(_config(tmp_path / "b", executor="ray"), _plugins()).run()
    assert not ray.is_initialized()  # the executor shut down the instance it started
    by_key = {r["key"]: r for r in records}
    assert by_key.keys() == inline.keys()
    for key, record in by_key.items():
        if record["status"] == "skipped":
            continue
        assert record["status"] == "ok", record["reason"]
        # One CPU per task: one thread, so losses may differ in the last bits.
        for mine, theirs in zip(
            record["accuracy"]["curve"], inline[key]["accuracy"]["curve"], strict=True
        ):
            assert mine["eval_accuracy"] == pytest.approx(theirs["eval_accuracy"], abs=1e-9)
            assert math.isclose(mine["train_loss"], theirs["train_loss"], rel_tol=1e-3)
    assert _keyed(results.read(tmp_path / "b" / "results.jsonl")) == _keyed(
        records
    )  # the file: in the order runs ended
    # Each task trains on the one CPU it asked for, not on every core beside another task.
    assert {r["environment"]["cpu_threads"] for r in records if r["status"] == "ok"} == {1}


#: runs of the grid the driver is killed in: enough that some are still to do.
SEEDS = 6


def test_a_ray_driver_killed_mid_grid_keeps_every_finished_run_and_the_rerun_completes(tmp_path):
    # signalgrid's grid: the tiny `holding` backbone on in-memory squares, so the seconds go
    # to Ray and the kill, not to training. Once a run has finished, the `hold` file holds
    # every run still training, so the driver dies with runs in flight on any machine.
    hold = tmp_path / "hold"
    with Driver(tmp_path, "ray", SEEDS) as driver:
        # Generous: a busy 2-core machine starts Ray and its workers slowly.
        driver.wait_until(lambda: records(tmp_path), "the first run to finish", timeout=900)
        hold.touch()
        os.kill(driver.pid, signal.SIGKILL)  # the driver alone, as `kill -9 PID` does
        driver.wait(timeout=30)
    # (leaving the block killed the rest of its session: the local Ray instance it started)
    finished = records(tmp_path)
    assert finished and all(r["status"] == "ok" for r in finished)
    assert len(finished) < SEEDS

    hold.unlink(missing_ok=True)
    with Driver(tmp_path, "ray", SEEDS) as rerun:
        code = rerun.wait(timeout=900)
        log = rerun.log()
    assert code == 0, log
    assert f"{SEEDS - len(finished)} to train, {len(finished)} already done" in log
    done = records(tmp_path)
    assert len(done) == SEEDS
    assert sorted(r["config"]["seed"] for r in done) == list(range(SEEDS))
    assert all(r["status"] == "ok" for r in done)
