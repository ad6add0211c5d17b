"""What observers hear: one small frozen dataclass per event, one name from emitter to hook.

A trial makes an event (`RunPhase(run, "train")`) and hands it to `notify`;
an executor carries it, as it is (each event pickles), to the process that
drives the grid; there `Plugins.notify(event)` calls the pluggy hook the event
names (`RunPhase.hook == "tlbench_run_phase"`) with the event's fields as the
hook's arguments. The driver's own events (the grid started, a run finished,
the grid finished) go through the same `notify`.

Executors written against the older shape called `events(hook, kwargs)` with
a short hook name ("run_phase") and a dict; `from_legacy` (which
`Plugins.notify` applies to such a call) and `as_legacy` (for `run_trial`'s
`events=`) keep them working for one release (`docs/plugins.md`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from tlbench.plugin_types import PlannedRun, RunSpec
    from tlbench.record import RunRecord


@dataclass(frozen=True)
class GridStarted:
    """Before the first run of the invocation starts: every run of the grid, in plan order."""

    hook: ClassVar[str] = "tlbench_grid_started"
    plan: list[PlannedRun]


@dataclass(frozen=True)
class RunStarted:
    """A run is about to start, before its data is decoded."""

    hook: ClassVar[str] = "tlbench_run_started"
    run: RunSpec


@dataclass(frozen=True)
class RunPhase:
    """A run entered a phase ("decode train", "build", "features", "train", "eval", ...), or
    made progress within one (`done` of `total`; None when the phase has no count)."""

    hook: ClassVar[str] = "tlbench_run_phase"
    run: RunSpec
    phase: str
    done: int | None = None
    total: int | None = None


@dataclass(frozen=True)
class EpochEnded:
    """An epoch of `run` was trained and evaluated (`epoch` counts from 1)."""

    hook: ClassVar[str] = "tlbench_epoch_ended"
    run: RunSpec
    epoch: int
    metrics: dict[str, Any]


@dataclass(frozen=True)
class RunFinished:
    """A run ended and its record was appended to the results file."""

    hook: ClassVar[str] = "tlbench_run_finished"
    run: RunSpec
    record: RunRecord


@dataclass(frozen=True)
class GridFinished:
    """Every run of the invocation ended: its records, in order, skipped ones included."""

    hook: ClassVar[str] = "tlbench_grid_finished"
    records: list[RunRecord]


Event = GridStarted | RunStarted | RunPhase | EpochEnded | RunFinished | GridFinished

#: where a trial's events go: `Plugins.notify` in the driver, or an executor's pipe or queue.
Notify = Callable[[Event], None]

#: the old shape of that callable: `events("run_phase", {"run": ..., "phase": ...})`.
LegacyEvents = Callable[[str, dict[str, Any]], None]

#: every event kind by its hook's name.
KINDS: dict[str, type[Event]] = {
    kind.hook: kind
    for kind in (GridStarted, RunStarted, RunPhase, EpochEnded, RunFinished, GridFinished)
}


def arguments(event: Event) -> dict[str, Any]:
    """The event's fields as its hook's keyword arguments (not copied: observers see them)."""
    return {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}


def from_legacy(hook: str, kwargs: dict[str, Any]) -> Event:
    """The event an old-style `events(hook, kwargs)` call meant ("run_phase" or its hook name)."""
    name = hook if hook.startswith("tlbench_") else f"tlbench_{hook}"
    return KINDS[name](**kwargs)


def as_legacy(events: LegacyEvents) -> Notify:
    """A `notify` that calls an old-style `events(hook, kwargs)`, for a third-party executor
    that hands its own `events` to `run_trial`."""

    def notify(event: Event) -> None:
        events(event.hook.removeprefix("tlbench_"), arguments(event))

    return notify


def ignore(event: Event) -> None:
    """A `notify` that drops every event (a trial no one follows)."""
