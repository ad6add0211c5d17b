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
status. Ctrl-C, SIGTERM or SIGHUP in the driver cancels the runs not yet
started and passes the signal on to the running workers: each records its
run as interrupted (naming the signal), with the epochs it finished. A worker
heeds the first of those signals only (a signal to the process group reaches
it twice: directly, and passed on). A worker whose driver dies exits by
itself, quietly; one whose forkserver dies goes on, and the driver follows
it by its pipe.
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from tlbench.errors import Terminated, TlbenchError, interruption, signal_of
from tlbench.events import EpochEnded, Event, Notify
from tlbench.plugin_types import ExecutorOptions, RunSpec, Workspace
from tlbench.record import RunRecord
from tlbench.trial import make_record

#: seconds the driver waits for interrupted workers to send their records.
STOP_GRACE_SECONDS = 20.0
#: attempts per run when its worker dies (the first and one retry).
ATTEMPTS = 2
#: workers a slot may lose to a signal before they are ready, before the grid gives up.
START_ATTEMPTS = 3


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


#: the signals a worker turns into an interruption of its run.
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def _interrupted_once(signum: int, frame: Any) -> None:
    """The first stop signal interrupts the run; later ones (the group's, passed on) do not."""
    for stop in STOP_SIGNALS:
        signal.signal(stop, signal.SIG_IGN)
    raise Terminated(signum)


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
    # OSError, EOFError: the driver closed its end (it stopped, or was killed), so nobody
    # is left to tell; KeyboardInterrupt: a stop signal between two runs.
    with contextlib.suppress(OSError, EOFError, KeyboardInterrupt):
        _serve(conn, plugin_set, workspace, device, threads, parent)
    with contextlib.suppress(OSError):
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
    for signum in STOP_SIGNALS:
        signal.signal(signum, _interrupted_once)
    if hasattr(signal, "pthread_sigmask"):  # a spawned worker inherits the driver's mask
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    # Named idle: it sleeps between checks, so fits do not list it among the
    # threads that ran beside their timed epochs (`engine.IDLE_THREAD_PREFIX`).
    threading.Thread(
        target=_exit_with_parent, args=(parent,), daemon=True, name="tlbench-idle-parent-watch"
    ).start()
    host = _ready_host(conn, plugin_set, workspace, device, threads)
    if host is not None:
        _serve_runs(conn, host, device)


def _ready_host(
    conn: Connection, plugin_set: Any, workspace: Workspace, device: str, threads: int | None
) -> Any:
    """The worker's trial host on its device, after telling the driver it is ready; None
    (having said why, or on an interruption) when nothing can run here."""
    try:
        import torch

        from tlbench.executors.placement import claim_device

        if threads:
            torch.set_num_threads(threads)
        claim_device(device)
        import tlbench.executors.preload  # noqa: F401  (a no-op where the forkserver did it)
        from tlbench.trial import ProcessCache

        host = ProcessCache(plugin_set, workspace)
        failed = [i.name for i in host.plugins.failures]
        conn.send(("ready", {"host": socket.gethostname(), "failed_plugins": failed}))
        return host
    except KeyboardInterrupt:
        return None
    except BaseException as exc:  # nothing can run here: say why, once
        conn.send(("error", _portable(exc)))
        return None


def _serve_runs(conn: Connection, host: Any, device: str) -> None:
    """Run each spec the driver sends and send its record back, until told to stop."""
    from tlbench.executors.placement import device_mismatch, refused
    from tlbench.trial import RunInterrupted

    def notify(event: Event) -> None:
        conn.send(("event", event))

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
            record = host.run(spec, device=device, notify=notify)
        except RunInterrupted as stop:
            conn.send(("interrupted", stop.record))
            return
        except KeyboardInterrupt:  # between two runs: there is no run to record
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
    #: its forkserver died: no exit status will come; its pipe and pid say when it ends.
    orphan: bool = False

    def alive(self) -> bool:
        if self.process.is_alive():
            return True
        # The forkserver reports a worker's exit after reaping it; a pid still running
        # after a report means the report came from the forkserver's own death.
        if _pid_running(self.process.pid):
            self.orphan = True
            return True
        return False


def _pid_running(pid: int | None) -> bool:
    """Whether `pid` is a process that has not exited (a zombie has)."""
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


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


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Start processes with SIGINT blocked, so a Ctrl-C of their first moments is not theirs.

    The forkserver (or a spawned worker) is a new interpreter: a Ctrl-C to
    the process group while it imports would print its KeyboardInterrupt
    traceback. It inherits the blocked mask; the forkserver then ignores
    SIGINT (dropping what was pending) before unblocking it, and a spawned
    worker unblocks it once its handlers are in place (`_serve`). The
    driver's own Ctrl-C is only delayed: another thread of the driver, or
    this one when the mask is restored, hands it to Python's handler.
    (SIG_IGN in the driver instead would lose it: another thread would take
    the signal and drop it.)
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    # Started first, and by itself: starting it unblocks SIGINT when it is done.
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


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
        #: per slot: workers that died before they were ready (see `_died`).
        self._unready_deaths: collections.Counter[int] = collections.Counter()

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
        for attempt in range(3):
            try:
                with _sigint_blocked():
                    process.start()
                break
            except (EOFError, OSError) as exc:
                # The forkserver was killed, and is not yet reaped: multiprocessing starts
                # another once it is.
                if attempt == 2:
                    raise TlbenchError(
                        f"cannot start a tlbench worker process ({type(exc).__name__}: {exc}); "
                        "its forkserver died. Run the same command again to resume."
                    ) from None
                time.sleep(0.5)
        theirs.close()
        return _Worker(process, ours, device, slot)

    def _stop(self, worker: _Worker, *, kill: bool = False) -> None:
        try:
            if kill:
                _kill(worker)
            else:
                worker.conn.send(None)
        except (OSError, ValueError):
            pass
        worker.process.join(timeout=5)
        deadline = time.monotonic() + 5
        while worker.alive() and time.monotonic() < deadline:
            _kill(worker)  # by its pid: an orphan's Process says it has exited
            time.sleep(0.05)
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
        notify: Notify,
    ) -> Iterator[RunRecord]:
        queue: collections.deque[RunSpec] = collections.deque(specs)
        attempts: dict[str, list[str]] = collections.defaultdict(list)
        try:
            while queue or any(w.spec is not None for w in self.workers.values()):
                self._dispatch(queue, workspace)
                yield from self._collect(queue, attempts, notify, workspace)
        except KeyboardInterrupt as stop:
            yield from self._interrupt(stop)
            raise
        finally:
            if self.fresh:
                self.close()

    def _dispatch(self, queue: collections.deque[RunSpec], workspace: Workspace) -> None:
        for slot in range(len(self.devices)):
            worker = self.workers.get(slot)
            if worker is None or (worker.spec is None and not worker.alive()):
                if worker is not None:
                    self._stop(worker, kill=True)
                worker = self.spares.pop(slot, None)
                if worker is not None and not worker.alive():  # a spare killed while it waited
                    self._stop(worker, kill=True)
                    worker = None
                worker = worker or self._start(slot, workspace)
                self.workers[slot] = worker
            if worker.spec is None and worker.ready and queue:
                spec = queue.popleft()
                try:
                    worker.conn.send(spec)
                except OSError:  # it died since: `_collect` sees that; the run waits its turn
                    queue.appendleft(spec)
                    continue
                worker.spec, worker.started, worker.epochs = spec, time.time(), []
                if self.fresh and queue and slot not in self.spares:
                    # The next run's interpreter starts while this one trains.
                    self.spares[slot] = self._start(slot, workspace)

    def _collect(
        self,
        queue: collections.deque[RunSpec],
        attempts: dict[str, list[str]],
        notify: Notify,
        workspace: Workspace,
    ) -> Iterator[RunRecord]:
        by_conn = {w.conn: w for w in self.workers.values()}
        by_sentinel = {w.process.sentinel: w for w in self.workers.values() if not w.orphan}
        for ready in wait([*by_conn, *by_sentinel], timeout=1.0):
            worker = by_conn.get(ready) or by_sentinel.get(ready)  # type: ignore[call-overload]
            if worker is None or self.workers.get(worker.slot) is not worker:
                continue
            if ready is worker.conn:
                yield from self._read(worker, notify, queue)
                if self.workers.get(worker.slot) is not worker:
                    continue  # retired after its run (the process executor)
            if worker.eof:
                _exited(worker)  # its pipe closed: it is exiting
            if not worker.alive() and (worker.eof or not worker.conn.poll()):
                yield from self._died(worker, queue, attempts)

    def _read(self, worker: _Worker, notify: Notify, queue: Any) -> Iterator[RunRecord]:
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
                event = message[1]
                if isinstance(event, EpochEnded):
                    worker.epochs.append(event.metrics)
                notify(event)
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
        code = None if worker.orphan else worker.process.exitcode
        self._stop(worker, kill=True)
        del self.workers[worker.slot]
        spec = worker.spec
        if spec is None:
            if not worker.ready:
                self._unready_deaths[worker.slot] += 1
                # Killed from outside while it started (a signal, its forkserver's death):
                # `_dispatch` starts another for the slot. One that exited by itself, or
                # died every time, cannot start here.
                killed = code is None or code < 0
                if killed and self._unready_deaths[worker.slot] < START_ATTEMPTS:
                    return
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
            # The driver's signal, passed on: the worker's record names it.
            with contextlib.suppress(OSError):
                os.kill(worker.process.pid, signal_of(stop))
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
        assert worker.spec is not None
        return make_record(
            worker.spec,
            "interrupted",
            self.plugins,
            reason=interruption(stop),
            started=worker.started,
            epochs_completed=len(worker.epochs),
            partial_curve=worker.epochs,
        )


def _kill(worker: _Worker) -> None:
    if _pid_running(worker.process.pid):
        with contextlib.suppress(OSError):
            os.kill(worker.process.pid, signal.SIGKILL)


def _exited(worker: _Worker) -> None:
    """Wait (5 s at most) for a worker whose pipe closed to be gone."""
    worker.process.join(timeout=5)
    deadline = time.monotonic() + 5
    while worker.orphan and _pid_running(worker.process.pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def _status(code: int | None) -> str:
    if code is None:
        return "no exit status (its forkserver had died)"
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
