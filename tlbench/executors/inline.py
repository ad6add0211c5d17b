"""The `inline` executor: every run in this process, one after another."""

from __future__ import annotations

from collections.abc import Iterator

from tlbench.events import Notify
from tlbench.plugin_types import ExecutorOptions, RunSpec, Workspace
from tlbench.record import RunRecord
from tlbench.trial import ProcessCache, RunInterrupted


class InlineExecutor:
    """Runs trials in the driver process, with the host that planning used (datasets, caches)."""

    def __init__(self, options: ExecutorOptions):
        self.options = options

    def run(
        self,
        specs: list[RunSpec],
        workspace: Workspace,
        notify: Notify,
    ) -> Iterator[RunRecord]:
        host = self.options.host
        if host is None or host.workspace != workspace:
            host = ProcessCache(self.options.plugins, workspace)
        for spec in specs:
            try:
                record = host.run(spec, device=self.options.device, notify=notify)
            except RunInterrupted as stop:
                yield stop.record
                raise stop.original from None
            yield record

    def close(self) -> None:
        pass
