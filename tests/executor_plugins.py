"""Plugins for the executor tests, importable by worker processes (spawned with this sys.path)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import tlbench
from tlbench import testing


def _crashing_build(pretrained: bool):
    os._exit(3)  # the interpreter dies as a segfault would: no exception, no record


class CrashingPlugin:
    """`crash`: a backbone whose build kills its process, every time."""

    @tlbench.hookimpl
    def tlbench_register_backbones(self, register):
        register(
            tlbench.Backbone(name="crash", build=_crashing_build, feature_dim=8, min_image_size=8)
        )


CRASHING = CrashingPlugin()


class KillOnce:
    """`tiny_kill`: the tiny backbone, whose first build in a worker kills that worker (kill -9).

    A marker file (`TLBENCH_TEST_KILL_MARK`) records that the kill happened,
    so the retry on a fresh worker trains normally.
    """

    @tlbench.hookimpl
    def tlbench_register_backbones(self, register):
        tiny = testing.tiny_backbone("tiny_kill")

        def build(pretrained: bool):
            mark = Path(os.environ["TLBENCH_TEST_KILL_MARK"])
            if not mark.exists():
                mark.write_text(str(os.getpid()))
                time.sleep(0.2)
                os.kill(os.getpid(), signal.SIGKILL)
            return tiny.build(pretrained)

        register(
            tlbench.Backbone(
                name="tiny_kill",
                build=build,
                feature_dim=tiny.feature_dim,
                preprocessing=tiny.preprocessing,
                min_image_size=tiny.min_image_size,
                weights=tiny.weights,
            )
        )


KILL_ONCE = KillOnce()


def _in_worker() -> bool:
    """Whether this process is a worker of the process pool (named by `WorkerPool._start`)."""
    import multiprocessing

    return multiprocessing.current_process().name.startswith("tlbench-worker-")


class KillAtStartOnce:
    """Kills the first worker process that loads it (kill -9), before that worker is ready.

    As a signal from outside (a user, the soak, the kernel's OOM killer) can do
    while a worker imports: `TLBENCH_TEST_KILL_START_MARK` records the kill, so
    the worker started in its place loads normally. The driver is never killed.
    """

    @tlbench.hookimpl
    def tlbench_register_backbones(self, register):
        mark = Path(os.environ["TLBENCH_TEST_KILL_START_MARK"])
        if _in_worker() and not mark.exists():
            mark.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)


KILL_AT_START_ONCE = KillAtStartOnce()


class ExitAtStart:
    """Every worker process that loads it exits (status 3) before it is ready, as a worker
    whose environment is broken does; the driver loads it normally."""

    @tlbench.hookimpl
    def tlbench_register_backbones(self, register):
        if _in_worker():
            os._exit(3)


EXIT_AT_START = ExitAtStart()
