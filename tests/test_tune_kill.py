"""A real `tlbench run --tune` killed with SIGKILL mid-search resumes without repeating a trial.

The driver is a separate process (`signalgrid.Driver`, the `holding` backbone
on the in-memory `tinyset`), killed while a trial is certainly training, part
of the way through a successive-halving search. The same command run again
must train no trial that already has a result, continue the searches from
their studies and rung states, and choose what an uninterrupted search
chooses.
"""

from __future__ import annotations

import signal
from collections import Counter

import pytest
from signalgrid import Driver, records

pytestmark = pytest.mark.slow  # three CLI grids in processes of their own

SEARCH = ("--tune", "6", "--tune-batch", "2", "--tune-pruner", "halving", "--epochs", "3")


def _trials(folder) -> list[dict]:
    return [r for r in records(folder) if r["config"].get("holdout")]


def _chosen(folder) -> dict:
    return {
        r["config"]["seed"]: r["tuning"]["chosen"]
        for r in records(folder)
        if r.get("tuning") and r["status"] == "ok"
    }


def test_a_search_killed_mid_trial_resumes_without_training_a_finished_trial_again(tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    reference.mkdir()
    killed.mkdir()
    with Driver(reference, "inline", 1, *SEARCH) as uninterrupted:
        assert uninterrupted.wait(timeout=300) == 0, uninterrupted.log()
    expected = _chosen(reference)
    assert expected and len(_trials(reference)) > 6  # some trials climbed a rung

    with Driver(killed, "inline", 1, *SEARCH) as driver:
        # Killed once three trial runs have results, while the next one is training.
        driver.wait_until(lambda: len(_trials(killed)) >= 3, "three trials to finish")
        (killed / "hold").touch()
        driver.wait_until(lambda: driver.holding(), "a trial to be training")
        finished = {r["key"] for r in _trials(killed) if r["status"] == "ok"}
        code, log = driver.stop(signal.SIGKILL, group=True)
    assert code == -signal.SIGKILL, log
    # Mid-search: some trials finished, not all, nothing chosen yet.
    assert 3 <= len(finished) < len(_trials(reference)) and not _chosen(killed)
    assert not (killed / "hold").exists()  # the driver's exit took it away

    with Driver(killed, "inline", 1, *SEARCH) as rerun:
        assert rerun.wait(timeout=300) == 0, rerun.log()
    trained = Counter(r["key"] for r in _trials(killed) if r["status"] == "ok")
    assert set(trained) == {r["key"] for r in _trials(reference)}
    assert all(n == 1 for n in trained.values()), "a finished trial was trained again"
    assert _chosen(killed) == expected
