"""The grid driver: plan, hand the pending runs to an executor, keep every record.

Data flows one way: the plan (`tlbench.plan`) lists the runs; the executor
(`tlbench.executors`) runs each pending spec as a trial (`tlbench.trial`),
wherever it runs them; each record it yields is appended to the results file
at once (`tlbench.results`), then the observers hear of it
(`tlbench_run_finished`). Whatever dies, finished records are already on
disk, and rerunning the same command trains only what is missing.

The results file is read once (`ResultsLog`): planning, the resume rules
and the grid's answers all use what was read, grown by what this process
appends. Another process appending meanwhile is noticed by the file's size
and time, and only then is the file read again.

Each run ends in exactly one record: "ok", "failed" (with the reason; the
grid goes on), "skipped" (with the reason) or "interrupted" (Ctrl-C or
SIGTERM: the records are written, then the interruption propagates). A run
that another tlbench process is training right now (it holds the run's
claim in the results folder) is left to it, with a note.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from tlbench import results
from tlbench.config import RunConfig
from tlbench.errors import ResultsError
from tlbench.events import GridFinished, GridStarted, RunFinished
from tlbench.plan import Plan, execution_settings, make_plan, workspace_for
from tlbench.plugin_types import ExecutorOptions, PlannedRun, RunSpec
from tlbench.plugins import Plugins
from tlbench.record import RunRecord
from tlbench.trial import ProcessCache, make_record

if TYPE_CHECKING:
    from tlbench.tune import TuneSettings

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no claims, duplicates are then possible
    fcntl = None  # type: ignore[assignment]


class ResultsLog:
    """The results file as this process knows it: read once, then grown by its own appends.

    `records` are the file's records in file order. The file is read when they
    are first asked for; after that, only when its size or modification time
    is not what this process left (another tlbench process appended to it).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._records: list[RunRecord] | None = None
        self._stamp: tuple[int, int] | None = None

    def _now(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    @property
    def records(self) -> list[RunRecord]:
        if self._records is None or self._now() != self._stamp:
            stamp = self._now()  # before reading: a write during the read reads it again later
            self._records = results.read(self.path)  # type: ignore[assignment]
            self._stamp = stamp
        return self._records

    def append(self, record: RunRecord) -> None:
        """Append `record` to the file (`results.append`) and to what is known of it."""
        others = self._now() != self._stamp  # another process wrote since: read it all again
        results.append(self.path, record)
        if self._records is None or others:
            self._records = None
            return
        # As it reads back: the file holds JSON, where a diverged loss (NaN) is null.
        self._records.append(json.loads(json.dumps(results._clean(record))))
        self._stamp = self._now()


@dataclass
class Runner:
    """Runs one grid: `plan()` checks everything, `run()` trains what is pending.

    `console` is an observer plugin (the live view or the plain log of
    `tlbench.console`) registered for the grid's duration, like any other.
    `log` is the results file as read (`ResultsLog`); several grids of one
    command (the stages of `select`) share one, so the file is read once.
    """

    config: RunConfig
    plugins: Plugins
    console: object | None = None
    log: ResultsLog | None = None
    _plan: Plan | None = field(default=None, init=False, repr=False)
    _host: ProcessCache | None = field(default=None, init=False, repr=False)
    _planned_at: _dt.datetime | None = field(default=None, init=False, repr=False)
    #: the grid's runs as they will train: the plan's, with each cell's chosen settings
    #: once a tuned grid has chosen them (`run`).
    planned: list[PlannedRun] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.log is None or self.log.path != self.out:
            self.log = ResultsLog(self.out)

    @property
    def out(self) -> Path:
        return Path(self.config.out).expanduser().absolute()

    @property
    def results(self) -> ResultsLog:
        assert self.log is not None
        return self.log

    def plan(self) -> list[PlannedRun]:
        """Resolve every name and load every dataset; raise before any training."""
        self.plugins.executors.get(self.config.executor)  # an unknown name fails before any work
        self._planned_at = _dt.datetime.now(_dt.timezone.utc)
        execution = execution_settings(self.config)
        self._host = ProcessCache(self.plugins, workspace_for(self.config))
        self._plan = make_plan(
            self.config,
            self.plugins,
            self._host.dataset,
            execution,
            read=lambda: self.results.records,
        )
        for canonical, given in self._plan.datasets.items():
            self._host.adopt(canonical, self._host.dataset(given))
        return self._plan.runs

    def executor_options(self) -> ExecutorOptions:
        return ExecutorOptions(
            devices=tuple(self.config.devices),
            device=self._device(),
            ray_address=self.config.ray_address,
            plugins=self.plugins,
            host=self._host,
        )

    def _device(self) -> str:
        from tlbench.devices import resolve_device

        return str(resolve_device(self.config.device))

    def run(self, plans: list[PlannedRun] | None = None) -> list[RunRecord]:
        """Run the plan; returns this invocation's records (skipped ones included)."""
        if plans is None or self._plan is None:
            plans = self.plan() if plans is None else plans
        plan = self._plan
        assert plan is not None
        if self.console is not None:
            self.plugins.register_observer(self.console, name="console")
        try:
            settings = self.config.tune_settings()
            self.planned = plans
            if settings is not None:
                plans = self.planned = self._tuned(plans, settings)
            return self._run(plan, [p for p in plans if p.status != "done"], plans)
        finally:
            if self.console is not None:
                self.plugins.unregister("console")

    def _tuned(self, plans: list[PlannedRun], settings: TuneSettings) -> list[PlannedRun]:
        """Tune every cell (`tlbench.tune`); the plans again, with each cell's chosen settings.

        A tuned run is done when the results file holds its ok record from
        the same study with as many trials, and planning's rules would not
        run it again; otherwise it trains (again).
        """
        from tlbench import tune

        tuned = tune.search(
            plans, self.plugins.strategies.get, settings, self.out, self.run_specs, self.answers
        )
        answers = {} if self.config.force else self.answers()
        return [
            PlannedRun(p.spec, "done", "already in the results file")
            if self._tuned_done(p, answers.get(p.spec.key))
            else p
            for p in tuned
        ]

    def _tuned_done(self, p: PlannedRun, record: RunRecord | None) -> bool:
        """Done as planning judges any run (`results.needs_rerun`), and from the same search."""
        if p.spec.tuning is None or record is None or record.get("status") != "ok":
            return False
        search = record.get("tuning") or {}
        same = all(search.get(k) == p.spec.tuning[k] for k in ("study", "trials"))
        return same and not results.needs_rerun(record, self.config)

    def answers(self) -> dict[str, RunRecord]:
        """The answer of each key in the results file (`results.answer_by_key`)."""
        return results.answer_by_key(self.results.records)  # type: ignore[return-value]

    def run_specs(self, specs: list[RunSpec]) -> dict[str, RunRecord]:
        """Train those of `specs` without an ok record (tuning trials); every spec's answer."""
        assert self._plan is not None
        answers = self.answers()
        plans = []
        for spec in dict((s.key, s) for s in specs).values():
            done = (answers.get(spec.key) or {}).get("status") == "ok"
            plans.append(PlannedRun(spec, "done" if done else "pending", ""))
        todo = [p for p in plans if p.status == "pending"]
        if todo:
            self._run(self._plan, todo, plans)
        answers = self.answers()
        return {s.key: answers[s.key] for s in specs if s.key in answers}

    def _run(self, plan: Plan, todo: list[PlannedRun], plans: list[PlannedRun]) -> list[RunRecord]:
        out = plan.out
        kind = self.plugins.executors.get(self.config.executor)
        records: list[RunRecord] = []
        existing = results.latest_by_key(self.results.records)
        pending = [p for p in todo if p.status == "pending"]
        since = None if self.config.force else self._planned_at
        with _claims(out, pending, since=since, log=self.results) as (claimed, finished):
            busy = [p for p in pending if p.spec.key not in claimed | finished]
            if busy:
                warnings.warn(
                    f"{len(busy)} run(s) of this grid are being trained by another tlbench "
                    f"process right now; they are left to it (their records will appear in {out})",
                    UserWarning,
                    stacklevel=2,
                )
            # Runs another process finished while this one planned are done, not retrained.
            plans = [p for p in plans if p not in busy and p.spec.key not in finished]
            self.plugins.notify(GridStarted(plans))
            for p in todo:
                if p.status != "skipped":
                    continue
                record = make_record(p.spec, "skipped", self.plugins, reason=p.reason)
                previous = existing.get(p.spec.key)
                if previous is None or previous.get("status") != "skipped":
                    self.results.append(record)
                records.append(record)
                self.plugins.notify(RunFinished(p.spec, record))
            specs = {p.spec.key: p.spec for p in pending if p.spec.key in claimed}
            if specs:
                executor = kind.create(self.executor_options())
                try:
                    notify = self.plugins.notify  # an older `events(hook, kwargs)` call works too
                    for record in executor.run(list(specs.values()), plan.workspace, notify):
                        # The record first, the observers after: nothing finished is lost.
                        self.results.append(record)
                        records.append(record)
                        self.plugins.notify(RunFinished(specs[record["key"]], record))
                finally:
                    executor.close()
        # In the plan's order, whatever order the executor finished them in.
        order = {p.spec.key: i for i, p in enumerate(plans)}
        records.sort(key=lambda r: order.get(r["key"], len(order)))
        self.plugins.notify(GridFinished(records))
        return records


@contextlib.contextmanager
def _claims(
    out: Path, pending: list[PlannedRun], *, since: _dt.datetime | None, log: ResultsLog
) -> Iterator[tuple[set[str], set[str]]]:
    """Claim each pending run's key for this process; yields (claimed, finished) keys.

    A claim is an exclusive lock on `<results folder>/.tlbench-claims/<key>`,
    held while this grid runs and released by the system when the process
    ends, however it ends. A key another process holds is not claimed. A
    claimed key with an ok record written after `since` (planning: another
    process finished it meanwhile) is returned as finished, not claimed; an
    older ok record is one planning already judged (a run trained again).
    """
    keys = {p.spec.key for p in pending}
    if fcntl is None or not keys:
        yield keys, set()
        return
    folder = out.parent / ".tlbench-claims"
    held: dict[str, IO[Any]] = {}
    try:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for key in sorted(keys):
                handle = _lock(folder / key)
                if handle is not None:
                    held[key] = handle
        except OSError as exc:
            raise ResultsError(
                f"cannot claim this grid's runs in {folder}: {exc.strerror or exc}. tlbench "
                "keeps a small file there per running run, so that two tlbench processes never "
                f"train the same run: free some disk space, make {folder.parent} writable, or "
                f"move a file named {folder.name} out of the way (it must be a folder)"
            ) from None
        finished: set[str] = set()
        if since is not None:
            # A process that held a claim until just now may have finished the run
            # (then the file changed, and the log reads it again).
            for record in log.records:
                when = results.record_time(record)
                if record["key"] in held and record.get("status") == "ok" and when and when > since:
                    finished.add(record["key"])
        yield set(held) - finished, finished
    finally:
        for key, handle in held.items():
            with contextlib.suppress(OSError):
                os.unlink(folder / key)
            handle.close()


def _lock(path: Path) -> IO[Any] | None:
    """An open, exclusively locked `path`, or None when another process holds it."""
    while True:
        handle = open(path, "a+")  # noqa: SIM115 - held open for the whole grid
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file its last holder removed between our open and our lock
            try:
                handle.seek(0)
                handle.truncate()
                handle.write(str(os.getpid()))
                handle.flush()
            except OSError:  # a full disk: no claim is left behind
                handle.close()
                with contextlib.suppress(OSError):
                    os.unlink(path)
                raise
            return handle
        handle.close()
