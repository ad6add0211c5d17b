"""Events are small frozen dataclasses with one name from emitter to hook (issue 23).

Each observer hook has one event kind whose fields are the hook's arguments;
an event pickles (an executor sends it across processes as it is); and an
executor written against the older `events(hook, kwargs)` shape still
delivers to the observers exactly what the builtin executors deliver.
"""

from __future__ import annotations

import dataclasses
import inspect
import pickle

import pytest

import tlbench
from tlbench import events, hookspecs, testing
from tlbench.plugin_types import ExecutorKind
from tlbench.plugins import OBSERVER_HOOKS
from tlbench.runner import Runner


def test_every_observer_hook_has_one_event_whose_fields_are_its_arguments():
    assert set(events.KINDS) == set(OBSERVER_HOOKS)
    for hook, kind in events.KINDS.items():
        arguments = list(inspect.signature(getattr(hookspecs, hook)).parameters)
        assert [f.name for f in dataclasses.fields(kind)] == arguments, hook


def test_an_event_is_frozen_and_pickles_as_it_is():
    spec = "a RunSpec"  # any picklable value: the event carries it as it is
    event = events.RunPhase(spec, "decode", 32, 720)  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.phase = "train"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(event)) == event
    assert events.arguments(event) == {"run": spec, "phase": "decode", "done": 32, "total": 720}


def test_the_old_call_shape_means_the_same_event():
    event = events.EpochEnded(None, 2, {"eval_accuracy": 0.5})  # type: ignore[arg-type]
    heard: list[tuple[str, dict]] = []
    events.as_legacy(lambda hook, kwargs: heard.append((hook, kwargs)))(event)
    assert heard == [("epoch_ended", {"run": None, "epoch": 2, "metrics": {"eval_accuracy": 0.5}})]
    assert events.from_legacy(*heard[0]) == event
    assert events.from_legacy("tlbench_epoch_ended", heard[0][1]) == event


class LegacyExecutor:
    """A third-party executor of the older shape: its trials report to its own
    `(hook, kwargs)` function, whose calls it replays to the driver's `events` after each run
    (as one that ships them from a worker process would)."""

    def __init__(self, options):
        self.options = options

    def run(self, specs, workspace, events):
        for spec in specs:
            shipped: list[tuple[str, dict]] = []
            record = tlbench.run_trial(
                spec,
                workspace,
                plugins=self.options.plugins.plugin_set,
                device="cpu",
                events=lambda hook, kwargs, into=shipped: into.append((hook, kwargs)),
            )
            for hook, kwargs in shipped:
                events(hook, kwargs)
            yield record

    def close(self):
        pass


class LegacyPlugin:
    @tlbench.hookimpl
    def tlbench_register_executors(self, register):
        register(ExecutorKind("legacy", "the older events(hook, kwargs) shape", LegacyExecutor))


class Recorder:
    def __init__(self):
        self.heard: list[tuple] = []

    @tlbench.hookimpl
    def tlbench_run_started(self, run):
        self.heard.append(("start", run.strategy))

    @tlbench.hookimpl
    def tlbench_run_phase(self, run, phase, done, total):
        if done is None:
            self.heard.append(("phase", phase))

    @tlbench.hookimpl
    def tlbench_epoch_ended(self, run, epoch, metrics):
        self.heard.append(("epoch", epoch, metrics["epochs"]))


@pytest.mark.parametrize("strategy", ["linear", "scratch"])
def test_an_executor_of_the_older_shape_delivers_what_the_inline_one_does(
    tiny_config, tmp_path, strategy
):
    heard = {}
    for executor in ("inline", "legacy"):
        recorder = Recorder()
        tiny_config.strategies = [strategy]
        tiny_config.executor = executor
        tiny_config.out = str(tmp_path / executor / "runs.jsonl")
        tiny_config.cache_dir = str(tmp_path / executor / "cache")  # each extracts its features
        plugins = tlbench.Plugins(
            entry_points=False,
            extra=[("tiny", testing.TINY_PLUGIN), ("legacy", LegacyPlugin()), ("rec", recorder)],
        )
        (record,) = Runner(tiny_config, plugins).run()
        assert record["status"] == "ok"
        heard[executor] = recorder.heard
    assert heard["legacy"] == heard["inline"]
    assert ("epoch", 2, 2) in heard["inline"]
    assert ("phase", "train") in heard["inline"]
