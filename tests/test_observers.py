"""Observer hooks go through pluggy: ordering, wrappers, errors and blocking mean what pluggy says.

The console is one of these observers, registered for the grid like any
other, so what a third-party tracker hears is what the live view hears.
"""

from __future__ import annotations

import warnings

import pluggy
import pytest

import tlbench
from tlbench import testing
from tlbench.runner import Runner

hookimpl = tlbench.hookimpl


def _plugins(*extra):
    return tlbench.Plugins(entry_points=False, extra=[("tiny", testing.TINY_PLUGIN), *extra])


def test_a_tryfirst_observer_runs_before_a_plain_one(tiny_config):
    calls: list[str] = []

    class Plain:
        @hookimpl
        def tlbench_run_finished(self, run, record):
            calls.append("plain")

    class First:
        @hookimpl(tryfirst=True)
        def tlbench_run_finished(self, run, record):
            calls.append("first")

    # Registered first, so pluggy's default (last registered, first called) would put it last.
    tiny_config.strategies = ["scratch"]
    Runner(tiny_config, _plugins(("first", First()), ("plain", Plain()))).run()
    assert calls == ["first", "plain"]


def test_a_wrapper_sees_the_observers_and_their_results(tiny_config):
    seen: list[object] = []

    class Answering:
        @hookimpl
        def tlbench_run_finished(self, run, record):
            return record["status"]

    class Wrapper:
        @hookimpl(wrapper=True)
        def tlbench_run_finished(self, run, record):
            seen.append(("before", record["key"] == run.key))
            result = yield
            seen.append(("after", result))
            return result

    tiny_config.strategies = ["scratch"]
    Runner(tiny_config, _plugins(("answering", Answering()), ("wrapper", Wrapper()))).run()
    assert seen == [("before", True), ("after", ["ok"])]


def test_a_raising_observer_is_reported_once_and_stops_neither_the_others_nor_the_grid(tiny_config):
    heard: list[int] = []

    class Broken:
        @hookimpl(tryfirst=True)
        def tlbench_epoch_ended(self, run, epoch, metrics):
            raise RuntimeError("tracker down")

    class Listening:
        @hookimpl
        def tlbench_epoch_ended(self, run, epoch, metrics):
            heard.append(epoch)

    tiny_config.strategies = ["scratch", "finetune"]  # 2 runs x 2 epochs: 4 calls of the broken one
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = Runner(
            tiny_config, _plugins(("broken", Broken()), ("listening", Listening()))
        ).run()
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert heard == [1, 2, 1, 2]
    reports = [str(w.message) for w in caught if "tracker down" in str(w.message)]
    assert reports == [
        "tlbench plugin 'broken' raised in tlbench_epoch_ended: RuntimeError: tracker down"
    ]


def test_observers_hear_the_whole_grid_in_order(tiny_config):
    events: list[str] = []

    class Recorder:
        @hookimpl
        def tlbench_grid_started(self, plan):
            events.append(f"grid {len(plan)}")

        @hookimpl
        def tlbench_run_started(self, run):
            events.append(f"start {run.strategy}")

        @hookimpl
        def tlbench_run_phase(self, run, phase, done, total):
            if done is None:
                events.append(f"phase {phase}")

        @hookimpl
        def tlbench_epoch_ended(self, run, epoch, metrics):
            events.append(f"epoch {epoch}/{metrics['epochs']}")

        @hookimpl
        def tlbench_run_finished(self, run, record):
            events.append(f"done {record['status']}")

        @hookimpl
        def tlbench_grid_finished(self, records):
            events.append(f"grid done {len(records)}")

    tiny_config.strategies = ["scratch"]
    Runner(tiny_config, _plugins(("recorder", Recorder()))).run()
    assert events == [
        "grid 1",
        "start scratch",
        "phase decode train",
        "phase decode test",
        "phase build",
        "phase train",
        "phase train warm-up",  # every batch shape once, before the clock starts
        "phase train",
        "phase eval",
        "epoch 1/2",
        "phase train",
        "phase eval",
        "epoch 2/2",
        "phase inference",  # the trained model's latency and throughput, after training
        "done ok",
        "grid done 1",
    ]


def test_blocking_uses_pluggys_own_blocklist(monkeypatch):
    monkeypatch.setenv("TLBENCH_BLOCK_PLUGINS", "small_cnn")
    plugins = tlbench.Plugins(entry_points=False)
    assert plugins.pm.is_blocked("small_cnn")
    assert plugins.info["small_cnn"].status == "blocked"
    assert "small_cnn" not in plugins.backbones


def test_hookspecs_import_only_the_api():
    import ast
    import inspect

    from tlbench import hookspecs

    tree = ast.parse(inspect.getsource(hookspecs))
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    } | {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    assert {m for m in imported if m.startswith("tlbench")} <= {
        "tlbench.plugin_types",
        "tlbench.record",
    }
    assert "torch" not in imported


def test_a_run_spec_is_plain_picklable_and_torch_free(tiny_config):
    import pickle

    from tlbench.plugin_types import RunSpec

    (plan, *_) = Runner(tiny_config, _plugins()).plan()
    spec = pickle.loads(pickle.dumps(plan.spec))
    assert isinstance(spec, RunSpec) and spec == plan.spec and spec.key == plan.spec.key
    assert spec.execution["device"] == "cpu"  # the device type; an index is the executor's choice


def test_pluggy_is_the_one_that_calls_observers():
    # The facade calls pm.hook; a monitor added to pluggy sees every observer call.
    plugins = _plugins()
    seen: list[str] = []
    plugins.pm.add_hookcall_monitoring(
        lambda name, impls, kwargs: seen.append(name), lambda *a: None
    )
    plugins.grid_finished([])
    assert seen == ["tlbench_grid_finished"]
    assert isinstance(plugins.pm, pluggy.PluginManager)


@pytest.mark.parametrize("hook", ["tlbench_run_phase", "tlbench_grid_started"])
def test_new_observer_hooks_are_specified(hook):
    from tlbench import hookspecs

    assert getattr(hookspecs, hook).__doc__
