"""Worker processes for the `process` and `devices` executors.

A worker is a fresh process that inherits no state from the driver (safe
with CUDA): multiprocessing's "forkserver", whose server process has
imported torch and tlbench once and never ran anything, forks each worker
in a fraction of a second ("spawn", a new interpreter importing torch for
seconds, where there is no forkserver). A worker loads the driver's plugins
from their `PluginSet`, then runs the specs it is sent, one at a time, and
sends back each run's events and record over a pipe. The driver is the one
writer of the results file: it appends each record as it arrives.

- `process`: every run gets a worker of its own, which exits after it, so
  each run has a fresh allocator and CUDA context (its own peak memory) and
  a crash of the interpreter (a segfault, `os._exit`, a CUDA error) fails
  that run alone. The next run's worker is started while the current run
  trains, so its start-up (importing torch) is off the grid's clock.
- `devices`: one long-lived worker per `--devices` entry, keeping its
  decoded datasets and features between runs; a run goes to whichever
  worker is free. Workers on the CPU share its threads between them.

A worker that dies mid-run (`kill -9`, out of host memory) has its run
retried once on a fresh worker, then recorded as failed with the exit
status. Ctrl-C or SIGTERM in the driver cancels the runs not yet started and
asks the running workers to stop: each records its run as interrupted, with
the epochs it finished. A worker whose driver dies exits by itself.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from tlbench.api import ExecutorOptions, RunSpec, Workspace
from tlbench.errors import Terminated, TlbenchError
from tlbench.record import RunRecord
from tlbench.trial import make_record

#: seconds the driver waits for interrupted workers to send their records.
STOP_GRACE_SECONDS = 20.0
#: attempts per run when its worker dies (the first and one retry).
ATTEMPTS = 2


# --------------------------------------------------------------------------- the worker


def _exit_with_parent(parent: int) -> None:
    """Exit when the driver is gone: an orphan would train for nobody.

    The driver is not this process's parent under "forkserver" (the server
    is), so the driver's pid is watched itself.
    """
    while True:
        time.sleep(1.0)
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:  # the pid is someone else's now: the driver is gone
            os._exit(1)


def _terminated(signum: int, frame: Any) -> None:
    raise Terminated


def worker_main(
    conn: Connection,
    plugin_set: Any,
    workspace: Workspace,
    device: str,
    threads: int | None,
    parent: int,
    environ: dict[str, str],
) -> None:
    """A worker's life: load plugins, run specs until told to stop (None), then exit at once.

    Everything a worker makes has gone down its pipe by then, so it skips the
    interpreter's teardown (torch's takes seconds), which the driver would
    otherwise wait for between two runs of the `process` executor.
    """
    # A forked worker has the forkserver's environment, as it was when the server
    # started: the driver's, as it is now, is what a run must see.
    os.environ.clear()
    os.environ.update(environ)
    _serve(conn, plugin_set, workspace, device, threads, parent)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _serve(
    conn: Connection,
    plugin_set: Any,
    workspace: Workspace,
    device: str,
    threads: int | None,
    parent: int,
) -> None:
    signal.signal(signal.SIGTERM, _terminated)
    # Named idle: it sleeps between checks, so fits do not list it among the
    # threads that ran beside their timed epochs (`engine.IDLE_THREAD_PREFIX`).
    threading.Thread(
        target=_exit_with_parent, args=(parent,), daemon=True, name="tlbench-idle-parent-watch"
    ).start()
    try:
        import torch

        from tlbench.executors.placement import claim_device, device_mismatch, refused

        if threads:
            torch.set_num_threads(threads)
        claim_device(device)
        import tlbench.executors.preload  # noqa: F401  (a no-op where the forkserver did it)
        from tlbench.trial import RunInterrupted, TrialHost

        host = TrialHost(plugin_set, workspace)
        failed = [i.name for i in host.plugins.failures]
        conn.send(("ready", {"host": socket.gethostname(), "failed_plugins": failed}))
    except KeyboardInterrupt:
        return
    except BaseException as exc:  # nothing can run here: say why, once
        conn.send(("error", _portable(exc)))
        return

    def events(hook: str, kwargs: dict[str, Any]) -> None:
        conn.send(("event", hook, kwargs))

    while True:
        try:
            spec = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if spec is None:
            return
        reason = device_mismatch(spec, device)
        if reason is not None:
            conn.send(("record", refused(spec, host.plugins, reason)))
            continue
        try:
            record = host.run(spec, device=device, events=events)
        except RunInterrupted as stop:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # one interruption is enough
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            conn.send(("interrupted", stop.record))
            return
        except BaseException as exc:  # a grid-level error (unreadable images under --strict)
            conn.send(("error", _portable(exc)))
            return
        conn.send(("record", record))


def _portable(exc: BaseException) -> BaseException:
    """`exc` if it pickles (our errors do), else a TlbenchError with its text."""
    import pickle

    try:
        pickle.dumps(exc)
        return exc
    except Exception:
        return TlbenchError(f"{type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------- the driver's side


@dataclass
class _Worker:
    process: Any
    conn: Connection
    device: str
    slot: int
    ready: bool = False
    spec: RunSpec | None = None
    started: float = 0.0
    host: str = ""
    #: its pipe reached end-of-file: the process is gone or going.
    eof: bool = False
    #: the epochs its current run finished, for an interrupted record made by the driver.
    epochs: list[dict[str, Any]] = field(default_factory=list)


def _cpu_threads(devices: list[str]) -> int | None:
    """Each CPU worker's share of the CPU threads (None when no worker is on the CPU)."""
    on_cpu = sum(d == "cpu" for d in devices)
    if not on_cpu:
        return None
    return max(1, (os.cpu_count() or 1) // on_cpu)


#: what the forkserver imports once, so that each worker forked from it starts warm.
PRELOAD = ["tlbench.executors.preload"]


def _worker_context() -> Any:
    """Where workers come from: a forkserver with torch imported, else spawn."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


class WorkerPool:
    """Runs specs on worker processes, one per slot; `fresh` starts a new worker per run."""

    def __init__(self, options: ExecutorOptions, devices: list[str], *, fresh: bool):
        plugins = options.plugins
        if plugins is not None and plugins.unshippable:
            raise TlbenchError(
                f"plugin(s) {', '.join(map(repr, plugins.unshippable))} were registered in this process and "
                "cannot be loaded in a worker process; install them as an entry-point plugin, "
                "or use --executor inline"
            )
        self.plugins = plugins
        self.plugin_set = plugins.plugin_set if plugins is not None else None
        self.devices = devices
        self.fresh = fresh
        self.threads = _cpu_threads(devices) if len(devices) > 1 else None
        self.context = _worker_context()
        self.workers: dict[int, _Worker] = {}
        #: fresh mode: a started worker waiting for the next run, per slot.
        self.spares: dict[int, _Worker] = {}

    # ------------------------------------------------------------------ workers

    def _start(self, slot: int, workspace: Workspace) -> _Worker:
        device = self.devices[slot]
        threads = self.threads if device == "cpu" else None
        ours, theirs = self.context.Pipe()
        process = self.context.Process(
            target=worker_main,
            args=(
                theirs,
                self.plugin_set,
                workspace,
                device,
                threads,
                os.getpid(),
                dict(os.environ),
            ),
            name=f"tlbench-worker-{slot}",
            daemon=True,
        )
        process.start()
        theirs.close()
        return _Worker(process, ours, device, slot)

    def _stop(self, worker: _Worker, *, kill: bool = False) -> None:
        try:
            if kill:
                worker.process.kill()
            else:
                worker.conn.send(None)
        except (OSError, ValueError):
            pass
        worker.process.join(timeout=5)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(timeout=5)
        worker.conn.close()

    def close(self) -> None:
        for worker in [*self.workers.values(), *self.spares.values()]:
            self._stop(worker, kill=worker.spec is not None)
        self.workers.clear()
        self.spares.clear()

    # ------------------------------------------------------------------ running

    def run(
        self,
        specs: list[RunSpec],
        workspace: Workspace,
        events: Callable[[str, dict[str, Any]], None],
    ) -> Iterator[RunRecord]:
        queue: collections.deque[RunSpec] = collections.deque(specs)
        attempts: dict[str, list[str]] = collections.defaultdict(list)
        try:
            while queue or any(w.spec is not None for w in self.workers.values()):
                self._dispatch(queue, workspace)
                yield from self._collect(queue, attempts, events, workspace)
        except KeyboardInterrupt as stop:
            yield from self._interrupt(stop)
            raise
        finally:
            if self.fresh:
                self.close()

    def _dispatch(self, queue: collections.deque[RunSpec], workspace: Workspace) -> None:
        for slot in range(len(self.devices)):
            worker = self.workers.get(slot)
            if worker is None or (not worker.process.is_alive() and worker.spec is None):
                worker = self.spares.pop(slot, None) or self._start(slot, workspace)
                self.workers[slot] = worker
            if worker.spec is None and worker.ready and queue:
                spec = queue.popleft()
                worker.spec, worker.started, worker.epochs = spec, time.time(), []
                worker.conn.send(spec)
                if self.fresh and queue and slot not in self.spares:
                    # The next run's interpreter starts while this one trains.
                    self.spares[slot] = self._start(slot, workspace)

    def _collect(
        self,
        queue: collections.deque[RunSpec],
        attempts: dict[str, list[str]],
        events: Callable[[str, dict[str, Any]], None],
        workspace: Workspace,
    ) -> Iterator[RunRecord]:
        by_conn = {w.conn: w for w in self.workers.values()}
        by_sentinel = {w.process.sentinel: w for w in self.workers.values()}
        for ready in wait([*by_conn, *by_sentinel], timeout=1.0):
            worker = by_conn.get(ready) or by_sentinel.get(ready)  # type: ignore[call-overload]
            if worker is None or self.workers.get(worker.slot) is not worker:
                continue
            if ready is worker.conn:
                yield from self._read(worker, events, queue)
                if self.workers.get(worker.slot) is not worker:
                    continue  # retired after its run (the process executor)
            if worker.eof:
                worker.process.join(timeout=5)  # its pipe closed: it is exiting
            if not worker.process.is_alive() and (worker.eof or not worker.conn.poll()):
                yield from self._died(worker, queue, attempts)

    def _read(
        self, worker: _Worker, events: Callable[[str, dict[str, Any]], None], queue: Any
    ) -> Iterator[RunRecord]:
        while not worker.eof and worker.conn.poll():
            try:
                message = worker.conn.recv()
            except (EOFError, OSError):
                worker.eof = True
                return
            kind = message[0]
            if kind == "ready":
                worker.ready, worker.host = True, message[1]["host"]
            elif kind == "event":
                _, hook, kwargs = message
                if hook == "epoch_ended":
                    worker.epochs.append(kwargs["metrics"])
                events(hook, kwargs)
            elif kind == "record":
                worker.spec = None
                yield message[1]
                if self.fresh:
                    self._retire(worker)
                    return
            elif kind == "interrupted":
                worker.spec = None
                yield message[1]
            elif kind == "error":
                raise message[1]

    def _retire(self, worker: _Worker) -> None:
        self._stop(worker)
        del self.workers[worker.slot]

    def _died(
        self, worker: _Worker, queue: collections.deque[RunSpec], attempts: dict[str, list[str]]
    ) -> Iterator[RunRecord]:
        code = worker.process.exitcode
        self._stop(worker, kill=True)
        del self.workers[worker.slot]
        spec = worker.spec
        if spec is None:
            if not worker.ready:
                raise TlbenchError(
                    f"a tlbench worker process for {worker.device} exited with {_status(code)} "
                    "before it was ready; run with --executor inline to see the error"
                )
            return
        attempts[spec.key].append(_status(code))
        if len(attempts[spec.key]) < ATTEMPTS:
            queue.appendleft(spec)  # retried first, on a fresh worker
            return
        yield make_record(
            spec,
            "failed",
            self.plugins,
            reason=f"the worker process running it died ({', then '.join(attempts[spec.key])}) "
            f"on {worker.host or socket.gethostname()}; it was retried once",
            started=worker.started,
        )

    def _interrupt(self, stop: KeyboardInterrupt) -> Iterator[RunRecord]:
        """Ask the running workers to stop; yield their interrupted records (or make them)."""
        for worker in self.spares.values():
            self._stop(worker, kill=True)
        self.spares.clear()
        running = {w.slot: w for w in self.workers.values() if w.spec is not None}
        for worker in running.values():
            with contextlib.suppress(OSError):
                os.kill(worker.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while running and time.monotonic() < deadline:
            conns = {w.conn: w for w in running.values()}
            for ready in wait(list(conns), timeout=max(0.0, deadline - time.monotonic())):
                worker = conns[ready]  # type: ignore[index]
                try:
                    message = worker.conn.recv()
                except (EOFError, OSError):
                    message = ("gone",)
                if message[0] == "event" and message[1] == "epoch_ended":
                    worker.epochs.append(message[2]["metrics"])
                if message[0] in ("interrupted", "record"):
                    running.pop(worker.slot)
                    worker.spec = None
                    yield message[1]
                elif message[0] == "gone":
                    running.pop(worker.slot)
                    yield self._interrupted(worker, stop)
        for worker in running.values():
            yield self._interrupted(worker, stop)
        self.close()

    def _interrupted(self, worker: _Worker, stop: KeyboardInterrupt) -> RunRecord:
        """The record of a run whose worker did not answer the interruption in time."""
        how = "SIGTERM" if isinstance(stop, Terminated) else "Ctrl-C"
        assert worker.spec is not None
        return make_record(
            worker.spec,
            "interrupted",
            self.plugins,
            reason=f"interrupted ({how})",
            started=worker.started,
            epochs_completed=len(worker.epochs),
            partial_curve=worker.epochs,
        )


def _status(code: int | None) -> str:
    if code is None:
        return "no exit status"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit status {code}"


# --------------------------------------------------------------------------- the executors


def _visible_gpus() -> list[str]:
    import torch

    return [f"cuda:{i}" for i in range(torch.cuda.device_count())]


class ProcessExecutor(WorkerPool):
    """Each run in a fresh subprocess, one at a time, on the grid's device."""

    def __init__(self, options: ExecutorOptions):
        devices = list(options.devices) or [options.device]
        super().__init__(options, devices, fresh=True)


class DevicesExecutor(WorkerPool):
    """One long-lived worker per `--devices` entry (default: every visible GPU)."""

    def __init__(self, options: ExecutorOptions):
        devices = list(options.devices) or _visible_gpus()
        if not devices:
            raise TlbenchError(
                "--executor devices found no GPU; name the workers with --devices "
                "(e.g. --devices cpu,cpu for two CPU workers)"
            )
        super().__init__(options, devices, fresh=False)
