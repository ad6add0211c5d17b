"""Executors: the same grid gives the same results per run key wherever it runs.

The `process` and `devices` executors run trials in spawned worker processes
that load the driver's plugins from their import paths (the tiny plugin is
`tlbench.testing:TINY_PLUGIN`); `ray` runs them as tasks of a real local Ray
instance. Bit-identical where the CPU thread count is the same as inline
(`process`); within float noise where the executor splits the threads
(`devices` with two CPU workers, `ray` with one CPU per task).
"""

from __future__ import annotations

import math
import os
import warnings

import pytest
import torch

import tlbench
from tlbench import results, testing
from tlbench.config import RunConfig
from tlbench.executors.pool import _cpu_threads
from tlbench.plugin_types import ExecutorKind
from tlbench.runner import Runner
from tlbench.trial import run_trial

#: accuracy curves compared across thread counts: the same images must be right or wrong.
ACCURACY_TOLERANCE = 1e-9
#: losses summed in another order by another thread count.
LOSS_RELATIVE_TOLERANCE = 1e-3


def _keyed(records):
    return {r["key"]: r for r in records}


def _plugins(*extra):
    return tlbench.Plugins(entry_points=False, extra=[("tiny", testing.TINY_PLUGIN), *extra])


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


def _by_key(records):
    return {r["key"]: r for r in records if r["status"] != "skipped"}


def _curves(record):
    return [
        (e["eval_accuracy"], e["train_loss"], e["eval_loss"]) for e in record["accuracy"]["curve"]
    ]


def _inline_with_threads(tmp, threads: int) -> dict:
    """The grid inline, torch on `threads` CPU threads (a sum's order depends on them)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _by_key(Runner(_config(tmp), _plugins()).run())
    finally:
        torch.set_num_threads(before)


def _one_worker_threads() -> int:
    """The threads the process executor's one CPU worker trains with: the pool sets none
    for a single worker, so it has torch's default in a new process, which is
    `OMP_NUM_THREADS` where that is set (mutation runs set it to 1), else every core."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else _cpu_threads(["cpu"])


@pytest.fixture(scope="module")
def inline_records(tmp_path_factory):
    """The grid inline with the threads the process executor's one CPU worker gets.

    Whatever this test process was given (pytest-xdist gives each worker its share).
    """
    return _inline_with_threads(tmp_path_factory.mktemp("inline"), _one_worker_threads())


@pytest.fixture(scope="module")
def inline_one_thread_records(tmp_path_factory):
    """The grid inline with one CPU thread: what each of two CPU workers gets."""
    return _inline_with_threads(tmp_path_factory.mktemp("inline1"), 1)


def _assert_same(records, inline, *, exact: bool) -> None:
    assert records.keys() == inline.keys()  # the run key does not depend on the executor
    for key, record in records.items():
        assert record["status"] == "ok", record["reason"]
        mine, theirs = _curves(record), _curves(inline[key])
        if exact:
            assert mine == theirs, record["config"]
            continue
        for (acc, loss, eval_loss), (acc0, loss0, eval_loss0) in zip(mine, theirs, strict=True):
            assert abs(acc - acc0) <= ACCURACY_TOLERANCE
            assert math.isclose(loss, loss0, rel_tol=LOSS_RELATIVE_TOLERANCE)
            assert math.isclose(eval_loss, eval_loss0, rel_tol=LOSS_RELATIVE_TOLERANCE)


def test_inline_grid_trains_three_runs_and_skips_the_one_without_weights(inline_records, tmp_path):
    # tiny_random has no pretrained weights: its linear run is skipped, three train.
    assert len(inline_records) == 3
    assert {
        (r["config"]["backbone"], r["config"]["strategy"]) for r in inline_records.values()
    } == {("tiny", "scratch"), ("tiny", "linear"), ("tiny_random", "scratch")}


def test_process_executor_gives_bit_identical_results(inline_records, tmp_path):
    records = Runner(_config(tmp_path, executor="process"), _plugins()).run()
    _assert_same(_by_key(records), inline_records, exact=True)
    assert _keyed(results.read(tmp_path / "results.jsonl")) == _keyed(
        records
    )  # the file: in the order runs ended


def test_devices_executor_with_two_cpu_workers_matches_within_float_noise(
    inline_records, inline_one_thread_records, tmp_path
):
    config = _config(tmp_path, executor="devices", devices=["cpu", "cpu"])
    records = Runner(config, _plugins()).run()
    _assert_same(_by_key(records), inline_records, exact=False)
    # The only difference is the thread count: at inline's one thread, bit-identical.
    _assert_same(_by_key(records), inline_one_thread_records, exact=True)
    # Each worker had half the threads: recorded with the run.
    assert {r["environment"]["cpu_threads"] for r in records if r["status"] == "ok"} == {1}


def test_a_grid_started_inline_resumes_with_another_executor(tmp_path):
    config = _config(tmp_path)
    config.strategies = ["scratch"]
    Runner(config, _plugins()).run()
    config.strategies = ["scratch", "linear"]
    config.executor = "process"
    again = Runner(config, _plugins())
    plans = again.plan()
    assert sorted(p.status for p in plans) == ["done", "done", "pending", "skipped"]
    records = again.run(plans)
    assert [r["config"]["strategy"] for r in records if r["status"] == "ok"] == ["linear"]


def test_a_run_that_kills_its_interpreter_fails_alone_and_the_grid_goes_on(tmp_path):
    from executor_plugins import CRASHING

    config = _config(
        tmp_path, executor="process", backbones=["crash", "tiny"], strategies=["scratch"]
    )
    records = Runner(config, _plugins(("crashing", CRASHING))).run()
    by_backbone = {r["config"]["backbone"]: r for r in records}
    assert by_backbone["tiny"]["status"] == "ok"
    crashed = by_backbone["crash"]
    assert crashed["status"] == "failed"
    # Retried once on a fresh worker, then recorded with both exit statuses.
    assert "exit status 3, then exit status 3" in crashed["reason"]
    assert "retried once" in crashed["reason"]
    assert _keyed(results.read(tmp_path / "results.jsonl")) == _keyed(
        records
    )  # the file: in the order runs ended


def test_a_devices_worker_killed_mid_run_is_retried_and_nothing_is_lost(tmp_path, monkeypatch):
    from executor_plugins import KILL_ONCE

    # Workers fork from a server started by the first grid; the variable below is set
    # after it started, and must still reach them (each worker takes the driver's environment).
    warm = tmp_path / "warm"
    Runner(_config(warm, executor="process", seeds=[0]), _plugins()).run()
    mark = tmp_path / "killed"
    monkeypatch.setenv("TLBENCH_TEST_KILL_MARK", str(mark))
    config = _config(
        tmp_path, executor="devices", devices=["cpu", "cpu"],
        backbones=["tiny_kill", "tiny"], strategies=["scratch"], seeds=[0, 1],
    )  # fmt: skip
    records = Runner(config, _plugins(("kill", KILL_ONCE))).run()
    assert mark.exists()  # a worker was killed with SIGKILL mid-run
    assert len(records) == 4
    assert all(r["status"] == "ok" for r in records), [r["reason"] for r in records]
    assert sorted((r["config"]["backbone"], r["config"]["seed"]) for r in records) == [
        ("tiny", 0),
        ("tiny", 1),
        ("tiny_kill", 0),
        ("tiny_kill", 1),
    ]
    assert _keyed(results.read(tmp_path / "results.jsonl")) == _keyed(
        records
    )  # the file: in the order runs ended


def test_a_worker_killed_before_it_is_ready_is_replaced_and_the_grid_completes(
    tmp_path, monkeypatch
):
    from executor_plugins import KILL_AT_START_ONCE

    mark = tmp_path / "killed"
    monkeypatch.setenv("TLBENCH_TEST_KILL_START_MARK", str(mark))
    config = _config(
        tmp_path, executor="process", backbones=["tiny"], strategies=["scratch"], seeds=[0, 1]
    )
    records = Runner(config, _plugins(("kill_at_start", KILL_AT_START_ONCE))).run()
    assert mark.exists()  # a worker died by SIGKILL while it loaded its plugins
    assert sorted((r["config"]["backbone"], r["config"]["seed"], r["status"]) for r in records) == [
        ("tiny", 0, "ok"),
        ("tiny", 1, "ok"),
    ]


@pytest.mark.parametrize("executor", ["process", "devices"])
def test_a_worker_that_cannot_start_ends_the_grid_with_an_error_not_a_loop(tmp_path, executor):
    from executor_plugins import EXIT_AT_START

    config = _config(
        tmp_path, executor=executor, devices=["cpu"], backbones=["tiny"], strategies=["scratch"]
    )
    runner = Runner(config, _plugins(("exit_at_start", EXIT_AT_START)))
    with pytest.raises(tlbench.TlbenchError, match="exit status 3 before it was ready"):
        runner.run()
    assert (
        not (tmp_path / "results.jsonl").exists() or results.read(tmp_path / "results.jsonl") == []
    )


def test_plugins_registered_in_process_cannot_travel_and_say_so(tmp_path):
    class Local:
        @tlbench.hookimpl
        def tlbench_register_backbones(self, register):
            register(testing.tiny_backbone("local"))

    config = _config(tmp_path, executor="process", backbones=["local"], strategies=["scratch"])
    runner = Runner(config, _plugins(("local", Local())))
    runner.plan()
    with pytest.raises(tlbench.TlbenchError, match=r"'local' .*cannot be loaded in a worker"):
        runner.run()


def test_an_unknown_executor_is_named_with_the_close_matches(tmp_path):
    config = _config(tmp_path, executor="proces")
    with pytest.raises(tlbench.UnknownNameError, match="process"):
        Runner(config, _plugins()).run()


def test_executors_are_listed_as_a_plugin_kind():
    plugins = _plugins()
    assert {"inline", "process", "devices", "ray"} <= set(plugins.executors.names())
    assert plugins.provider("executor", "ray") == "executors"


def test_duplicates_in_a_grid_are_trained_once_with_a_note(tmp_path):
    config = _config(tmp_path, backbones=["tiny", "tiny"], strategies=["scratch"], seeds=[0, 0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = Runner(config, _plugins()).run()
    assert len(records) == 1
    assert any("dropped 3 duplicate run(s)" in str(w.message) for w in caught)


class ReversePlugin:
    """A third-party executor: runs the specs last first, in this process, through run_trial."""

    @tlbench.hookimpl
    def tlbench_register_executors(self, register):
        register(ExecutorKind("reverse", "last spec first, in this process", ReverseExecutor))


class ReverseExecutor:
    def __init__(self, options):
        self.options = options

    def run(self, specs, workspace, events):
        for spec in reversed(specs):
            yield run_trial(
                spec,
                workspace,
                plugins=self.options.plugins.plugin_set,
                device="cpu",
                events=events,
            )

    def close(self):
        pass


def test_a_plugin_registers_its_own_executor_and_the_grid_runs_on_it(tmp_path):
    config = _config(
        tmp_path, executor="reverse", backbones=["tiny"], strategies=["scratch", "linear"]
    )
    heard = []

    class Listening:
        @tlbench.hookimpl
        def tlbench_epoch_ended(self, run, epoch, metrics):
            heard.append((run.strategy, epoch))

    plugins = _plugins(("reverse", ReversePlugin()), ("listening", Listening()))
    assert plugins.provider("executor", "reverse") == "reverse"
    records = Runner(config, plugins).run()
    # Returned in the plan's order; the results file shows the order it ran them in.
    assert [r["config"]["strategy"] for r in records] == ["scratch", "linear"]
    ran = [r["config"]["strategy"] for r in results.read(tmp_path / "results.jsonl")]
    assert ran == ["linear", "scratch"]
    assert all(r["status"] == "ok" for r in records)
    assert _keyed(results.read(tmp_path / "results.jsonl")) == _keyed(
        records
    )  # the file: in the order runs ended
    assert heard[:2] == [("linear", 1), ("linear", 2)]  # events reached the driver's observers
