"""Which images a run trains and is chosen on, where it runs, the threads each pool worker
gets, and what a dead worker records: the small functions between the grid and the fit.

Written for shard 2 of the mutation run (results/mutation.md): `trial._holdout`,
`_subset` and `_execution`, and `executors.pool._cpu_threads`, `_status` and
`WorkerPool._died`, were reached only by tests that train in worker processes. Here each
is called directly, on stand-in specs and workers.
"""

from __future__ import annotations

import collections
import socket
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import tlbench
from tlbench import trial
from tlbench.budget import validation_split
from tlbench.data import ImageTensors
from tlbench.execution import Execution
from tlbench.executors import pool
from tlbench.plugin_types import ExecutorOptions

# --------------------------------------------------------------------------- trial


def test_a_run_without_a_holdout_trains_on_the_whole_split():
    train = ImageTensors(images=torch.zeros(4, 3, 2, 2), labels=torch.tensor([0, 0, 1, 1]))
    assert trial._holdout(SimpleNamespace(holdout=None), train) == (None, None)


def test_a_tuning_trial_holds_out_its_fraction_of_each_class():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    train = ImageTensors(images=torch.zeros(10, 3, 2, 2), labels=labels)
    fit, validation = trial._holdout(SimpleNamespace(holdout="validation=0.25"), train)
    # round(0.25 x 4) = 1 image of class 0, round(0.25 x 6) = 2 of class 1
    assert sorted(labels[validation].tolist()) == [0, 1, 1]
    assert sorted([*fit.tolist(), *validation.tolist()]) == list(range(10))
    expected_fit, expected_validation = validation_split(labels.numpy(), 0.25)
    assert fit.tolist() == expected_fit.tolist()
    assert validation.tolist() == expected_validation.tolist()


def _split() -> ImageTensors:
    return ImageTensors(
        images=torch.arange(4 * 3).reshape(4, 3, 1, 1).to(torch.uint8),
        labels=torch.tensor([5, 6, 7, 8]),
        skipped=["bad.jpg"],
        cache_hit="disk",
        seconds=2.5,
        skip_reasons=["truncated"],
        mapped=True,
    )


def test_a_subset_gathers_its_images_and_labels_and_keeps_what_the_split_says():
    subset = trial._subset(_split(), np.array([2, 0]))
    assert subset.images.flatten().tolist() == [6, 7, 8, 0, 1, 2]
    assert subset.labels.tolist() == [7, 5]
    assert (subset.skipped, subset.skip_reasons) == (["bad.jpg"], ["truncated"])
    assert (subset.cache_hit, subset.seconds) == ("disk", 2.5)
    assert subset.mapped is False  # gathered: process memory, not the cache's memory map


def test_the_other_subset_of_a_split_does_not_count_its_unreadable_files_again():
    subset = trial._subset(_split(), np.array([1, 3]), skipped=False)
    assert subset.labels.tolist() == [6, 8]
    assert (subset.skipped, subset.skip_reasons) == ([], [])


def _spec(**execution) -> SimpleNamespace:
    settings = {"device": "cpu", "precision": "fp32", "memory_format": "channels_last"}
    return SimpleNamespace(execution={**settings, "compile": False, **execution})


def test_a_run_executes_with_its_specs_settings():
    assert trial._execution(_spec(), None) == Execution(
        torch.device("cpu"), "fp32", channels_last=True, compile=False
    )
    found = trial._execution(
        _spec(precision="bf16", memory_format="contiguous", compile=True), None
    )
    assert found == Execution(torch.device("cpu"), "bf16", channels_last=False, compile=True)


def test_the_executors_choice_of_device_wins_over_the_specs():
    # The spec was planned for CUDA; the executor placed it on the CPU.
    assert trial._execution(_spec(device="cuda:7"), "cpu").device == torch.device("cpu")


# --------------------------------------------------------------------------- pool


@pytest.mark.parametrize(
    ("cores", "devices", "threads"),
    [
        (8, ["cpu", "cpu", "cuda:0"], 4),
        (8, ["cpu"], 8),
        (3, ["cpu", "cpu"], 1),  # 3 // 2
        (1, ["cpu", "cpu"], 1),  # never 0
        (None, ["cpu", "cpu"], 1),  # the core count unknown: taken as 1
        (None, ["cpu"], 1),
        (8, ["cuda:0", "cuda:1"], None),
    ],
)
def test_each_cpu_worker_gets_its_share_of_the_cores(monkeypatch, cores, devices, threads):
    monkeypatch.setattr(pool.os, "cpu_count", lambda: cores)
    assert pool._cpu_threads(devices) == threads


@pytest.mark.parametrize(
    ("code", "said"),
    [
        (None, "no exit status (its forkserver had died)"),
        (-9, "signal SIGKILL"),
        (-15, "signal SIGTERM"),
        (-200, "signal 200"),
        (0, "exit status 0"),
        (3, "exit status 3"),
    ],
)
def test_how_a_worker_ended_is_said_in_words(code, said):
    assert pool._status(code) == said


def _pool(monkeypatch) -> pool.WorkerPool:
    workers = pool.WorkerPool(ExecutorOptions(), ["cpu", "cpu"], fresh=False)
    workers.plugins = "the driver's plugins"
    workers.stopped = []
    monkeypatch.setattr(
        workers, "_stop", lambda worker, kill=False: workers.stopped.append((worker.slot, kill))
    )
    monkeypatch.setattr(
        pool,
        "make_record",
        lambda spec, status, plugins, *, reason, started: {
            "key": spec.key,
            "status": status,
            "plugins": plugins,
            "reason": reason,
            "started": started,
        },
    )
    return workers


def _worker(workers, *, code, slot=1, ready=False, spec=None, orphan=False, host="node-1"):
    worker = SimpleNamespace(
        process=SimpleNamespace(exitcode=code),
        device="cpu",
        slot=slot,
        ready=ready,
        spec=spec,
        started=12.5,
        host=host,
        orphan=orphan,
    )
    workers.workers[slot] = worker
    return worker


def _died(workers, worker, queue=None, attempts=None):
    queue = collections.deque() if queue is None else queue
    attempts = collections.defaultdict(list) if attempts is None else attempts
    return list(workers._died(worker, queue, attempts))


@pytest.mark.parametrize(
    ("code", "orphan", "said"),
    [(-9, False, "signal SIGKILL"), (0, True, "no exit status (its forkserver had died)")],
)
def test_a_worker_killed_while_it_starts_is_replaced_twice_then_ends_the_grid(
    monkeypatch, code, orphan, said
):
    workers = _pool(monkeypatch)
    for deaths in (1, 2):
        assert _died(workers, _worker(workers, code=code, orphan=orphan)) == []
        assert 1 not in workers.workers and workers._unready_deaths == {1: deaths}
        assert workers.stopped == [(1, True)] * deaths  # killed, not asked to stop
    with pytest.raises(tlbench.TlbenchError) as info:
        _died(workers, _worker(workers, code=code, orphan=orphan))
    assert str(info.value) == (
        f"a tlbench worker process for cpu exited with {said} before it was ready; "
        "run with --executor inline to see the error"
    )


@pytest.mark.parametrize("code", [0, 3])
def test_a_worker_that_exits_by_itself_while_it_starts_ends_the_grid_at_once(monkeypatch, code):
    workers = _pool(monkeypatch)
    with pytest.raises(tlbench.TlbenchError) as info:
        _died(workers, _worker(workers, code=code))
    assert f"exited with exit status {code} before it was ready" in str(info.value)


def test_an_idle_worker_that_dies_costs_nothing(monkeypatch):
    workers = _pool(monkeypatch)
    queue, attempts = collections.deque(), collections.defaultdict(list)
    assert _died(workers, _worker(workers, code=3, ready=True), queue, attempts) == []
    assert not workers.workers and not workers._unready_deaths
    assert not queue and not attempts


def test_a_run_whose_worker_died_is_retried_first_then_recorded_as_failed(monkeypatch):
    workers = _pool(monkeypatch)
    spec = SimpleNamespace(key="k1")
    queue, attempts = collections.deque([SimpleNamespace(key="k2")]), collections.defaultdict(list)
    dead = _worker(workers, code=-9, ready=True, spec=spec)
    assert _died(workers, dead, queue, attempts) == []
    assert [s.key for s in queue] == ["k1", "k2"] and attempts == {"k1": ["signal SIGKILL"]}
    queue.popleft()
    dead = _worker(workers, code=1, ready=True, spec=spec)
    assert _died(workers, dead, queue, attempts) == [
        {
            "key": "k1",
            "status": "failed",
            "plugins": "the driver's plugins",
            "reason": "the worker process running it died (signal SIGKILL, then exit status 1) "
            "on node-1; it was retried once",
            "started": 12.5,
        }
    ]
    assert [s.key for s in queue] == ["k2"]
    assert workers.stopped == [(1, True), (1, True)]


def test_a_failed_run_names_this_host_when_its_worker_did_not_say(monkeypatch):
    workers = _pool(monkeypatch)
    attempts = collections.defaultdict(list, {"k1": ["signal SIGKILL"]})
    dead = _worker(
        workers, code=None, orphan=True, ready=True, spec=SimpleNamespace(key="k1"), host=""
    )
    (record,) = _died(workers, dead, attempts=attempts)
    assert record["reason"] == (
        "the worker process running it died (signal SIGKILL, then no exit status (its "
        f"forkserver had died)) on {socket.gethostname()}; it was retried once"
    )
