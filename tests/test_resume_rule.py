"""The resume rule, fast: what a rerun of the same command trains again and what it keeps.

The documented rule (README, `tlbench.runner`, `tlbench.results.answer_by_key`):
rerunning the same command skips every run whose key already has an "ok"
record; a run whose records are only "failed", "interrupted" or "skipped" is
run again; an "ok" record stays the answer for its key until a newer "ok"
replaces it, so a later failed or interrupted attempt (`--force`, Ctrl-C)
does not make a finished run train again; `--force` trains everything again.
The slow tests in test_resume.py interrupt a real process; these build the
results file by hand and take a second.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from imagetree import read_records

from tlbench import results
from tlbench.runner import Runner


@pytest.fixture
def config(tiny_config):
    """Two seeds of linear on tinyset, 1 epoch: two cheap runs with distinct keys."""
    tiny_config.strategies = ["linear"]
    tiny_config.seeds = [0, 1]
    tiny_config.hyperparameters = {"epochs": 1, "batch_size": 16}
    return tiny_config


def trained(records) -> list[tuple[int, str]]:
    """(seed, status) of the runs an invocation trained."""
    return [(r["config"]["seed"], r["status"]) for r in records]


def later(record: dict, status: str, minutes: int = 1) -> dict:
    """A copy of `record` written `minutes` after it, ending with `status`."""
    when = dt.datetime.fromisoformat(record["time"]) + dt.timedelta(minutes=minutes)
    copy = json.loads(json.dumps(record))
    copy.update(status=status, time=when.isoformat(timespec="seconds"))
    copy["reason"] = None if status == "ok" else f"{status} on purpose"
    if status != "ok":
        copy.pop("accuracy", None)
    return copy


def write(path: Path, records: list[dict]) -> None:
    path.unlink(missing_ok=True)
    for r in records:
        results.append(path, r)


def test_a_rerun_trains_nothing_that_finished(plugins, config):
    first = Runner(config, plugins).run()
    assert trained(first) == [(0, "ok"), (1, "ok")]
    assert Runner(config, plugins).run() == []
    assert len(read_records(Path(config.out))) == 2


def test_a_rerun_with_a_new_seed_trains_only_that_seed(plugins, config):
    Runner(config, plugins).run()
    config.seeds = [0, 1, 2]
    assert trained(Runner(config, plugins).run()) == [(2, "ok")]


@pytest.mark.parametrize("status", ["failed", "interrupted"])
def test_a_run_that_did_not_finish_is_trained_again(plugins, config, status):
    ok = Runner(config, plugins).run()
    out = Path(config.out)
    # The file as a crash would leave it: seed 0 ended `status`, seed 1 finished.
    write(out, [later(ok[0], status, minutes=0), ok[1]])
    assert trained(Runner(config, plugins).run()) == [(0, "ok")]
    assert Runner(config, plugins).run() == []


@pytest.mark.parametrize("status", ["failed", "interrupted", "skipped"])
def test_a_finished_run_stays_done_after_a_later_attempt_that_did_not_finish(
    plugins, config, status
):
    ok = Runner(config, plugins).run()
    out = Path(config.out)
    results.append(out, later(ok[0], status))  # e.g. a --force rerun, interrupted
    assert Runner(config, plugins).run() == [], f"a newer {status!r} record hid the ok one"


def test_a_newer_ok_record_is_the_answer(plugins, config):
    ok = Runner(config, plugins).run()
    out = Path(config.out)
    newer = later(ok[0], "ok")
    newer["accuracy"] = {**ok[0]["accuracy"], "final": 0.125}
    results.append(out, newer)
    answer = results.answer_by_key(results.read(out))
    assert answer[ok[0]["key"]]["accuracy"]["final"] == 0.125
    assert answer[ok[1]["key"]] == ok[1]


def test_force_trains_every_run_again_and_keeps_the_old_records(plugins, config):
    Runner(config, plugins).run()
    config.force = True
    assert trained(Runner(config, plugins).run()) == [(0, "ok"), (1, "ok")]
    assert len(read_records(Path(config.out))) == 4


def test_a_skipped_run_is_planned_again_but_recorded_once(plugins, config):
    config.backbones = ["tiny_random"]  # no weights: linear is skipped
    config.seeds = [0]
    (first,) = Runner(config, plugins).run()
    assert first["status"] == "skipped"
    (again,) = Runner(config, plugins).run()
    assert again["status"] == "skipped" and again["key"] == first["key"]
    assert [r["status"] for r in read_records(Path(config.out))] == ["skipped"]


def test_records_of_other_settings_do_not_count_as_done(plugins, config):
    Runner(config, plugins).run()
    config.hyperparameters = {**config.hyperparameters, "lr": 0.01}
    assert trained(Runner(config, plugins).run()) == [(0, "ok"), (1, "ok")]


def test_the_cli_resumes_the_same_command(run_cli, tmp_path):
    out = tmp_path / "runs.jsonl"
    args = [
        "run", "--backbones", "tiny", "--datasets", "tinyset", "--strategies", "linear",
        "--seeds", "0,1", "--epochs", "1", "--batch-size", "16", "--image-size", "16",
        "--out", out, "--cache-dir", tmp_path / "cache", "--device", "cpu", "--quiet",
    ]  # fmt: skip
    first = run_cli(*args)
    assert first.code == 0, first
    assert [r["status"] for r in read_records(out)] == ["ok", "ok"]
    lines = out.read_text()
    second = run_cli(*args)
    assert second.code == 0, second
    assert out.read_text() == lines  # nothing trained, nothing appended
