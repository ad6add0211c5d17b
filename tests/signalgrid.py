"""A real `tlbench run` process whose runs can be held mid-training, for the signal and soak tests.

The `holding` backbone reaches every executor's workers the way a
third-party plugin does: through a `tlbench` entry point of a distribution
on PYTHONPATH (a `.dist-info` folder written by `Driver`). While a `hold`
file exists in the test's folder, its forward pass writes
`holding-<pid>` and waits, so a test signals a run that is certainly
training, on a busy machine too, without sleeping blindly. Runs on the
`tinyset` dataset (coloured squares, in memory): no image folder to decode.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tlbench import results

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
#: the line the driver prints when it hears that a run started: `[2/2] holding / scratch / ...`.
STARTED_LINE = re.compile(r"^\[\d+/\d+\] ", re.M)

PLUGIN = '''
"""The tiny test plugin, with a backbone whose forward waits while a `hold` file exists."""
import os
import time
from pathlib import Path

import tlbench
from tlbench import testing

FOLDER = Path(os.environ["TLBENCH_TEST_HOLD_DIR"])


def _build(pretrained):
    from torch import nn

    inner = testing.tiny_backbone("tiny").build(pretrained)

    class Holding(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            hold = FOLDER / "hold"
            if hold.exists():
                (FOLDER / f"holding-{os.getpid()}").touch()
                deadline = time.monotonic() + 300  # never hang a broken test forever
                while hold.exists() and time.monotonic() < deadline:
                    time.sleep(0.05)  # a signal's handler interrupts this
            return self.inner(x)

    return Holding()


class HoldPlugin(testing.TinyPlugin):
    @tlbench.hookimpl
    def tlbench_register_backbones(self, register):
        tiny = testing.tiny_backbone("tiny")
        register(
            tlbench.Backbone(
                "holding", _build, tiny.feature_dim, tiny.preprocessing,
                weights=None, min_image_size=tiny.min_image_size,
            )
        )


plugin = HoldPlugin()
'''


def install_plugin(folder: Path) -> Path:
    """Write the `holdplug` distribution under `folder/site`; returns that folder."""
    site = folder / "site"
    info = site / "holdplug-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (site / "holdplug.py").write_text(PLUGIN)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: holdplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[tlbench]\nholdplug = holdplug:plugin\n")
    return site


def environment(folder: Path) -> dict[str, str]:
    env = dict(os.environ)
    site = install_plugin(folder)
    env.update(
        PYTHONPATH=os.pathsep.join([str(site), str(REPO), env.get("PYTHONPATH", "")]),
        PYTHONUNBUFFERED="1",
        TLBENCH_LOAD_PLUGINS="holdplug",  # nothing else that happens to be installed
        TLBENCH_BLOCK_PLUGINS="torchvision_backbones,efficientnet_lite,torchvision_datasets,timm",
        TLBENCH_TEST_HOLD_DIR=str(folder),
        OMP_NUM_THREADS="1",  # on a shared CPU, OpenMP threads spin against each other
        COLUMNS="200",
    )
    return env


def command(folder: Path, executor: str, seeds: int, *extra: str) -> list[str]:
    args = [
        sys.executable, "-m", "tlbench.cli", "run", "--plain",
        "--backbones", "holding", "--datasets", "tinyset", "--strategies", "scratch",
        "--seeds", ",".join(map(str, range(seeds))), "--epochs", "2", "--image-size", "16",
        "--batch-size", "16", "--device", "cpu",
        "--out", str(folder / "runs.jsonl"), "--cache-dir", str(folder / "cache"),
    ]  # fmt: skip
    if executor == "devices":
        args += ["--executor", "devices", "--devices", "cpu,cpu"]
    elif executor != "inline":
        args += ["--executor", executor]
    return [*args, *extra]


def _default_signals() -> None:
    # As from a terminal: a shell starts background jobs (`pytest &`, CI runners) with
    # SIGINT ignored, and Python then never turns Ctrl-C into KeyboardInterrupt.
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


class Driver:
    """One `tlbench run` in a session (a process group) of its own, output to a file."""

    def __init__(self, folder: Path, executor: str, seeds: int, *extra: str):
        self.folder = folder
        self.log_path = folder / f"log-{time.monotonic_ns()}.txt"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            command(folder, executor, seeds, *extra), cwd=folder, env=environment(folder),
            stdout=self._log, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, preexec_fn=_default_signals,
        )  # fmt: skip

    def __enter__(self) -> Driver:
        return self

    def __exit__(self, *exc: object) -> None:
        (self.folder / "hold").unlink(missing_ok=True)
        self.kill_all()

    def stop(self, signum: int, *, group: bool, timeout: float = 120) -> tuple[int, str]:
        """Send `signum`; the exit status and the output once the driver has ended."""
        self.signal(signum, group=group)
        return self.wait(timeout), self.log()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def holding(self) -> list[int]:
        """The pids of the processes whose run is held in training now."""
        return [int(p.name.split("-")[1]) for p in self.folder.glob("holding-*")]

    def announced(self) -> int:
        """How many runs the driver has said it started (its `[k/n] ...` lines)."""
        return len(STARTED_LINE.findall(self.log()))

    def wait_until(self, condition, what: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                if condition():  # what it did last (a record, say) came after the check above
                    return
                code = self.proc.returncode
                raise AssertionError(f"tlbench exited ({code}) before {what}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.log()}")
            time.sleep(0.05)

    def signal(self, signum: int, *, group: bool) -> None:
        (os.killpg if group else os.kill)(self.pid, signum)

    def wait(self, timeout: float = 120) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def kill_all(self) -> None:
        """Whatever of the driver's session is left (a test that failed half-way)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        self._log.close()


def children(pid: int) -> list[int]:
    """The pids whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def forkserver_of(pid: int) -> int | None:
    """The multiprocessing forkserver `pid` started, if it runs."""
    for child in children(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"forkserver" in cmdline:
            return child
    return None


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def records(folder: Path) -> list[dict]:
    path = folder / "runs.jsonl"
    return results.read(path) if path.exists() else []
