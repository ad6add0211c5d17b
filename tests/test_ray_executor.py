"""The Ray executor's handling of the local instance it starts, on a stand-in for Ray's
module: what `close` kills and what `ray.init` is started with. The real instance is
driven end to end by test_ray.py and test_signals.py."""

from __future__ import annotations

import os
from types import SimpleNamespace

from tlbench.executors import ray as ray_executor
from tlbench.executors.ray import LOCAL_RAY_ENVIRONMENT, RayExecutor

FLUSH = "RAY_task_events_shutdown_flush_timeout_ms"


class Node:
    def __init__(self, alive: bool):
        self.alive, self.calls = alive, []

    def remaining_processes_alive(self) -> bool:
        return self.alive

    def kill_all_processes(self, **how) -> None:
        self.calls.append(("kill", how))


def _executor(node: Node, *, started: bool) -> RayExecutor:
    ray = SimpleNamespace(
        _private=SimpleNamespace(worker=SimpleNamespace(_global_node=node)),
        is_initialized=lambda: True,
        shutdown=lambda: node.calls.append(("shutdown", {})),
    )
    executor = object.__new__(RayExecutor)
    executor.ray, executor.started_ray = ray, started
    return executor


def test_close_kills_what_is_left_of_a_dead_local_instance_before_ray_shuts_down():
    node = Node(alive=False)
    _executor(node, started=True).close()
    assert node.calls == [("kill", {"check_alive": False, "wait": True}), ("shutdown", {})]


def test_close_leaves_a_live_local_instance_to_ray_and_never_kills_a_joined_cluster():
    live = Node(alive=True)
    _executor(live, started=True).close()
    assert live.calls == [("shutdown", {})]
    joined = Node(alive=False)  # a cluster's node this driver did not start
    executor = _executor(joined, started=False)
    assert executor._local_node() is None and not executor._local_instance_died()
    executor.close()
    assert joined.calls == []


def test_the_local_instance_settings_hold_while_ray_starts_and_a_users_own_wins(monkeypatch):
    assert LOCAL_RAY_ENVIRONMENT == {FLUSH: "500"}
    monkeypatch.delenv(FLUSH, raising=False)
    with ray_executor._environment(LOCAL_RAY_ENVIRONMENT):
        assert os.environ[FLUSH] == "500"
    assert FLUSH not in os.environ  # the driver's environment as it was
    monkeypatch.setenv(FLUSH, "3000")
    with ray_executor._environment(LOCAL_RAY_ENVIRONMENT):
        assert os.environ[FLUSH] == "3000"
    assert os.environ[FLUSH] == "3000"
