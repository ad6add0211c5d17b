"""A third-party executor, registered through `tlbench_register_executors`, runs a grid.

The hook's contract (tlbench.hookspecs): `register(kind)` with an
`ExecutorKind`; `--executor NAME` calls `kind.create(options)` and runs the
grid's pending specs through the returned executor, whose records the driver
appends. Here a plugin registers an executor that hands every spec to the
builtin inline executor and notes what passed through it.
"""

from __future__ import annotations

import pytest
from conftest import TinyPlugin

import tlbench
from tlbench.plugin_types import ExecutorKind
from tlbench.runner import Runner


class Noting:
    """An executor that runs through another and notes the keys of the specs it was given."""

    def __init__(self, inner, seen: list[str]):
        self.inner, self.seen = inner, seen

    def run(self, specs, workspace, events):
        self.seen.extend(spec.key for spec in specs)
        yield from self.inner.run(specs, workspace, events)

    def close(self) -> None:
        self.inner.close()


class NotingExecutorPlugin(TinyPlugin):
    def __init__(self):
        self.seen: list[str] = []
        self.created = 0

    @tlbench.hookimpl
    def tlbench_register_executors(self, register):
        def create(options):
            self.created += 1
            inline = options.plugins.executors.get("inline")
            return Noting(inline.create(options), self.seen)

        register(ExecutorKind("noting", "runs inline and notes each spec", create))


@pytest.fixture
def noting():
    plugin = NotingExecutorPlugin()
    return plugin, tlbench.Plugins(entry_points=False, extra=[("noting", plugin)])


def test_a_registered_executor_runs_the_pending_specs(noting, tiny_config):
    plugin, plugins = noting
    assert "noting" in plugins.executors.names()
    tiny_config.strategies = ["linear", "scratch"]
    tiny_config.hyperparameters = {"epochs": 1, "batch_size": 16}
    tiny_config.executor = "noting"
    records = Runner(tiny_config, plugins).run()
    assert [(r["config"]["strategy"], r["status"]) for r in records] == [
        ("linear", "ok"),
        ("scratch", "ok"),
    ]
    assert plugin.created == 1
    assert plugin.seen == [r["key"] for r in records]
    # Resumed: nothing pending, so nothing reaches the executor.
    again = Runner(tiny_config, plugins).run()
    assert [r for r in again if r["status"] != "skipped"] == []
    assert plugin.seen == [r["key"] for r in records]
