"""One grid driver for `tlbench run`, `tlbench select`, `tlbench.run()` and `tlbench.select()`.

`Grid` builds in one place what running a grid needs: the plugins (the
config's strategy tables checked and its trackers registered, so a bad name
fails before any training), a fresh observer for each grid from the caller's
progress factory, the runner, and the grid's answers: its runs done before
and trained now, in plan order. The results file is read once per command
(`tlbench.runner.ResultsLog`), however many grids the command runs: `select`
runs two (`tlbench.select.two_stages`), and its summary reads what both
appended without reading the file again.

    with Grid(config, progress=lambda: make_progress(console)) as grid:
        outcome = grid.run()
        outcome.answers()            # one record per run of the grid, in plan order
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlbench import plugins as plugin_registry
from tlbench import results
from tlbench.config import RunConfig, check_strategy_tables
from tlbench.errors import Terminated, stop_signals_raise
from tlbench.plugin_types import PlannedRun
from tlbench.record import RunRecord
from tlbench.runner import ResultsLog, Runner


def close(observer: Any) -> None:
    """Stop an observer's display (a live view gives the terminal back); None: nothing."""
    stop = getattr(observer, "close", None)
    if stop is not None:
        stop()


@contextlib.contextmanager
def signals_as_interrupt() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP end the grid like Ctrl-C: the running runs are recorded
    as interrupted (naming the signal) and every finished run is kept
    (`tlbench.errors.stop_signals_raise`; a signal this process ignores stays ignored).
    """
    Terminated.last = None  # a signal of an earlier grid of this process is not this one's
    with stop_signals_raise():
        yield


@dataclass
class Outcome:
    """One grid, planned (and run, unless it was interrupted): where its answers are."""

    runner: Runner
    plans: list[PlannedRun]
    observer: Any = None

    @property
    def out(self) -> Path:
        return self.runner.out

    def records(self) -> list[RunRecord]:
        """Every record of this grid's runs in the results file, in file order (reruns too)."""
        keys = {p.spec.key for p in self.plans}
        return [r for r in self.runner.results.records if r.get("key") in keys]

    def answers(self) -> list[RunRecord]:
        """One record per run of this grid (`results.answer_by_key`), in plan order."""
        answers = results.answer_by_key(self.records())
        order = {p.spec.key: i for i, p in enumerate(self.plans)}
        return sorted(answers.values(), key=lambda r: order.get(r["key"], len(order)))


class Grid:
    """The driver of one command's grids; use it as a context manager (trackers are removed).

    `plugins`: the installed ones when None. `progress()` makes the observer of
    each grid (None: no display). `finalists`: strategies a later stage will
    use, checked now. `trackers_beside_results=False` puts the trackers' output
    in the current folder (a results file that is only temporary).
    """

    def __init__(
        self,
        config: RunConfig,
        plugins: Any = None,
        *,
        progress: Callable[[], Any] | None = None,
        finalists: Iterable[str] = (),
        trackers_beside_results: bool = True,
    ):
        from tlbench.trackers import register_trackers

        self.config = config
        self.plugins = plugins if plugins is not None else plugin_registry.Plugins()
        for name in finalists:
            self.plugins.strategies.get(name)  # an unknown finalist fails before stage 1
        strategies = self.plugins.strategies
        check_strategy_tables(config, strategies.names(), strategies.get)
        beside = config.out if trackers_beside_results else None
        self._trackers = register_trackers(self.plugins, config.log_to, beside)  # bad names fail
        self._progress = progress
        self.log = ResultsLog(Path(config.out).expanduser().absolute())
        #: the grid planned last: after an interruption, what it had finished.
        self.current: Outcome | None = None

    def __enter__(self) -> Grid:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for name in self._trackers:
            self.plugins.unregister(name)
        self._trackers = []

    def run(
        self,
        config: RunConfig | None = None,
        *,
        during: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    ) -> Outcome:
        """Plan, then train what is pending of `config` (default: the grid's own).

        Planning errors raise before any training; a KeyboardInterrupt while
        training propagates, with `self.current` saying what was planned.
        `during()` wraps the training (the CLI's `signals_as_interrupt`).
        """
        self.current = None
        observer = self._progress() if self._progress is not None else None
        runner = Runner(config or self.config, self.plugins, observer, log=self.log)
        plans = runner.plan()
        self.current = Outcome(runner, plans, observer)
        try:
            with during():
                runner.run(plans)
        finally:
            close(observer)
            # A tuned grid's runs are those at the settings it chose.
            self.current.plans = runner.planned or plans
        return self.current
