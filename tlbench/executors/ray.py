"""The `ray` executor: each run is a Ray task, on a local Ray instance or a running cluster.

`--executor ray` alone starts a local Ray instance for the grid;
`--ray-address auto` (or `HOST:PORT`) joins the cluster that `ray start
--head` started on one node and `ray start --address HOST:PORT` joined the
others to. Each task asks for one GPU when the grid runs on CUDA, else for
one CPU (and uses that one thread), and loads the driver's plugins from their
`PluginSet` in the Ray worker. Every node must see the dataset and the cache
folder at the same paths (a shared filesystem); a task that cannot says so,
naming the path and the host.

The driver appends each record to the results file as its task finishes, so
a driver killed mid-grid loses no finished run: the same command resumes.
Events (phases, epochs) reach the driver's console through a Ray queue. A
task whose worker dies is retried once by Ray, then recorded as failed.
Ctrl-C, SIGTERM or SIGHUP cancels the queued tasks and interrupts the
running ones, each of which records its run as interrupted (naming the
signal the driver got). Ray's own SIGTERM handler, which `ray.init`
installs, is replaced by the driver's again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

from tlbench.errors import TlbenchError, interruption
from tlbench.events import EpochEnded, Event, Notify, RunStarted, ignore
from tlbench.plugin_types import ExecutorOptions, RunSpec, Workspace
from tlbench.record import RunRecord
from tlbench.trial import make_record

#: seconds between polls of the event queue while tasks run.
POLL_SECONDS = 0.2
#: seconds a cancelled task has to send its interrupted record.
STOP_GRACE_SECONDS = 20.0
#: Ray settings for the local instance the executor starts (a user's own setting wins).
#: A signal to the process group kills its processes, and `ray.shutdown` then waited
#: up to its default 5 s to flush task events (for Ray's dashboard, which is off) to a
#: GCS that was gone. A grid that ends normally shuts down as fast as before.
LOCAL_RAY_ENVIRONMENT = {"RAY_task_events_shutdown_flush_timeout_ms": "500"}


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise TlbenchError(
            "--executor ray needs Ray: pip install 'tlbench[ray]' (or pip install ray)"
        ) from None
    return ray


def _task_cpus() -> int:
    """The CPUs Ray gave this task (one, as `RayExecutor` asks): its torch's threads.

    Not every core the worker may use: Ray runs one task per CPU at once, and
    tasks that each took every core spun their threads against each other.
    """
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    return max(1, int(cpus))


def _trial_task(
    spec: RunSpec, workspace: Workspace, plugin_set: Any, device: str, queue: Any
) -> RunRecord:
    """What a Ray worker runs: one trial, its events put on the driver's queue."""
    import torch

    from tlbench.executors.placement import claim_device, device_mismatch, refused
    from tlbench.plugins import PluginSet
    from tlbench.trial import RunInterrupted, cache_for, run_trial

    if device == "cpu":
        torch.set_num_threads(_task_cpus())
    claim_device(device)
    # A node of a mixed cluster (a T4 beside the driver's H100) refuses what was
    # planned for another device model rather than train it under that model's key.
    reason = device_mismatch(spec, device)
    if reason is not None:
        return refused(spec, cache_for(plugin_set or PluginSet(), workspace).plugins, reason)

    lost = []

    def notify(event: Event) -> None:
        if queue is not None and not lost:
            try:
                queue.put(event)
            except Exception:  # the queue's actor died (its worker was killed): train on, quietly
                lost.append(event)

    try:
        return run_trial(spec, workspace, plugins=plugin_set, device=device, notify=notify)
    except RunInterrupted as stop:
        return stop.record


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """`values` in os.environ (where unset) while `ray.init` starts the processes that
    read them; the driver's environment as it was afterwards."""
    added = [name for name in values if name not in os.environ]
    os.environ.update({name: values[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


@contextlib.contextmanager
def _own_signal_handlers() -> Iterator[None]:
    """Keep this process's handlers of the stop signals across `ray.init`.

    `ray.init` installs its own SIGTERM handler (it exits at once, with no
    record of the running runs); the driver's (`grid.signals_as_interrupt`)
    is put back, so SIGTERM stops a Ray grid as it stops any other.
    """
    stops = [getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)]
    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.getsignal(s) for s in stops} if main else {}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if handler is not None and signal.getsignal(signum) is not handler:
                signal.signal(signum, handler)


class RayExecutor:
    """Runs each spec as a Ray task asking for one GPU (or one CPU)."""

    def __init__(self, options: ExecutorOptions):
        self.ray = _import_ray()
        plugins = options.plugins
        if plugins is not None and plugins.unshippable:
            raise TlbenchError(
                f"plugin(s) {', '.join(map(repr, plugins.unshippable))} were registered in this process and "
                "cannot be loaded on a Ray worker; install them as an entry-point plugin"
            )
        self.options = options
        self.plugins = plugins
        self.started_ray = False
        if not self.ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            local = {} if options.ray_address else LOCAL_RAY_ENVIRONMENT
            if options.ray_address:
                kwargs["address"] = options.ray_address
            elif options.device == "cpu":
                # A local instance: one task per core, each on its own thread.
                kwargs["num_cpus"] = os.cpu_count() or 1
            try:
                with _own_signal_handlers(), _environment(local):
                    self.ray.init(**kwargs)
            except ConnectionError as exc:
                raise TlbenchError(
                    f"cannot join the Ray cluster at {options.ray_address!r}: {exc}. "
                    "Start one with `ray start --head`, or drop --ray-address for a local instance."
                ) from None
            self.started_ray = True
        self.device = options.device
        gpu = self.device.startswith("cuda")
        self.task = self.ray.remote(
            num_gpus=1 if gpu else 0, num_cpus=0 if gpu else 1, max_retries=1
        )(_trial_task)

    def run(
        self,
        specs: list[RunSpec],
        workspace: Workspace,
        notify: Notify,
    ) -> Iterator[RunRecord]:
        from ray.util.queue import Queue

        ray = self.ray
        queue = Queue()
        plugin_set = self.plugins.plugin_set if self.plugins is not None else None
        # Ray picks the GPU (CUDA_VISIBLE_DEVICES): the task sees it as "cuda".
        device = "cuda" if self.device.startswith("cuda") else self.device
        pending = {self.task.remote(s, workspace, plugin_set, device, queue): s for s in specs}
        #: the runs that started (their epochs so far), for interrupted records.
        self._epochs: dict[str, list[dict[str, Any]]] = {}
        self._events_lost = False
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
                self._drain(queue, notify)
                for ref in done:
                    spec = pending.pop(ref)
                    yield self._result(ref, spec)
            self._drain(queue, notify)
        except KeyboardInterrupt as stop:
            # The epochs heard so far, for interrupted records. A signal to the process group
            # takes the queue's actor down with the local Ray instance: no warning then.
            with contextlib.suppress(Exception):
                if not self._events_lost:
                    self._drain_events(queue, ignore)
            yield from self._interrupt(pending, stop)
            raise
        finally:
            with contextlib.suppress(Exception):
                ray.kill(queue.actor)

    def _drain(self, queue: Any, notify: Notify) -> None:
        if self._events_lost:
            return
        try:
            self._drain_events(queue, notify)
        except self.ray.exceptions.RayError as exc:
            # The queue's actor died (its worker was killed): records still come back with
            # their tasks; progress lines and the epochs of interrupted runs stop here.
            self._events_lost = True
            warnings.warn(
                f"the Ray queue carrying progress events died ({type(exc).__name__}); the grid "
                "goes on without progress lines",
                RuntimeWarning,
                stacklevel=2,
            )

    def _drain_events(self, queue: Any, notify: Notify) -> None:
        while not queue.empty():
            event = queue.get_nowait()
            key = event.run.key
            if isinstance(event, RunStarted):
                self._epochs[key] = []
            elif isinstance(event, EpochEnded) and key in self._epochs:
                self._epochs[key].append(event.metrics)
            notify(event)

    def _result(self, ref: Any, spec: RunSpec) -> RunRecord:
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            if isinstance(cause, TlbenchError):
                raise cause from None  # a grid-level error (unreadable images under --strict)
            return make_record(spec, "failed", self.plugins, reason=f"Ray task failed: {cause}")
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as exc:
            return make_record(
                spec,
                "failed",
                self.plugins,
                reason=f"the Ray worker running it died, and again on its one retry ({type(exc).__name__})",
            )
        except ray.exceptions.RayError as exc:
            # Ray itself failed under it (its raylet was killed, an object was lost): a rerun
            # trains it again.
            return make_record(
                spec, "failed", self.plugins, reason=f"Ray could not run it: {type(exc).__name__}"
            )

    def _interrupt(
        self, pending: dict[Any, RunSpec], stop: KeyboardInterrupt
    ) -> Iterator[RunRecord]:
        """Cancel every task; yield a record for each run that had started.

        A signal to the whole process group reaches the local Ray instance
        too, which may then be gone: every call to Ray is guarded, and a
        started run whose task cannot answer is recorded from the epochs the
        driver heard of.
        """
        for ref in pending:  # queued tasks never start; running ones get a KeyboardInterrupt
            with contextlib.suppress(Exception):
                self.ray.cancel(ref)
        answers = self._answers(list(pending), time.monotonic() + STOP_GRACE_SECONDS)
        for ref, spec in pending.items():
            record = answers.get(ref)
            if record is not None and record.get("status") == "interrupted":
                # The task heard a cancel; the driver knows which signal it was.
                yield {**record, "reason": interruption(stop)}  # type: ignore[typeddict-item]
            elif record is not None:
                yield record  # it finished meanwhile
            elif spec.key in self._epochs:
                epochs = self._epochs[spec.key]
                yield make_record(
                    spec,
                    "interrupted",
                    self.plugins,
                    reason=interruption(stop),
                    epochs_completed=len(epochs),
                    partial_curve=epochs,
                )

    def _answers(self, refs: list[Any], deadline: float) -> dict[Any, RunRecord | None]:
        """What each cancelled task returned by `deadline`; none left to wait for once the
        local instance is gone (a signal to the process group took it down: its tasks can
        never answer, and the driver waited out the whole grace for them)."""
        ray, got = self.ray, {}
        while refs and time.monotonic() < deadline and not self._local_instance_died():
            try:
                ready, refs = ray.wait(refs, num_returns=len(refs), timeout=POLL_SECONDS)
            except Exception:  # Ray itself is gone: nothing more will come
                break
            for ref in ready:
                got[ref] = None
                with contextlib.suppress(Exception):
                    got[ref] = ray.get(ref, timeout=POLL_SECONDS)
        return got

    def _local_node(self) -> Any:
        """Ray's handle on the local instance this executor started (`_global_node`, not
        public API); None for a cluster it joined or a Ray without one."""
        worker = getattr(getattr(self.ray, "_private", None), "worker", None)
        return getattr(worker, "_global_node", None) if self.started_ray else None

    def _local_instance_died(self) -> bool:
        """Whether a process of the local Ray instance this executor started has died.

        Read from Ray's node (`remaining_processes_alive`): where a Ray has no such
        method, False, and the driver waits the grace out as before.
        """
        alive = getattr(self._local_node(), "remaining_processes_alive", None)
        if alive is None:
            return False
        try:
            return not alive()
        except Exception:
            return False

    def close(self) -> None:
        if not (self.started_ray and self.ray.is_initialized()):
            return
        if self._local_instance_died():
            # A signal to the group is taking the instance down: kill what is left of it at
            # once. `ray.shutdown` gives each process 1 s to exit after a SIGTERM, and those
            # that outlived the signal spent it. With the flush above: SIGHUP to the group
            # took 6.3 s from the signal to the exit, now 1.7 s (3 runs each, 2026-12-07).
            with contextlib.suppress(Exception):
                self._local_node().kill_all_processes(check_alive=False, wait=True)
        self.ray.shutdown()
