"""Interrupt a real `tlbench run` process after its second run, rerun it, and check that
only the last two runs are trained again (Ctrl-C and SIGTERM alike).

The tiny test plugin reaches the subprocess the way a third-party plugin does:
through a `tlbench` entry point of a distribution on PYTHONPATH (a `.dist-info`
folder written by the test). Its epoch hook holds the third run in training,
while a `hold` file exists, until the signal arrives, so the interruption lands
mid-run on a busy machine too, and the test never races the grid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

from tlbench import results

TESTS = Path(__file__).resolve().parent

PLUGIN = f'''
"""The tiny test plugin, plus an epoch hook that holds the third run for the test."""
import sys
import time
from pathlib import Path

sys.path.insert(0, {str(TESTS)!r})
import tlbench
from conftest import TinyPlugin


class HoldingTinyPlugin(TinyPlugin):
    def __init__(self, folder):
        self.folder = Path(folder)

    @tlbench.hookimpl
    def tlbench_epoch_ended(self, run, epoch, metrics):
        hold, out = self.folder / "hold", self.folder / "runs.jsonl"
        finished = out.read_text().count("\\n") if out.exists() else 0
        if hold.exists() and finished >= 2:
            (self.folder / "holding").touch()
            deadline = time.monotonic() + 60  # never hang a broken test forever
            while hold.exists() and time.monotonic() < deadline:
                time.sleep(0.05)  # SIGINT / SIGTERM interrupt this


plugin = HoldingTinyPlugin(Path(__file__).parent.parent)
'''


@pytest.fixture
def work(tmp_path):
    site = tmp_path / "site"
    (site / "tinyplug-0.1.dist-info").mkdir(parents=True)
    (site / "tinyplug.py").write_text(PLUGIN)
    (site / "tinyplug-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tinyplug\nVersion: 0.1\n"
    )
    (site / "tinyplug-0.1.dist-info" / "entry_points.txt").write_text(
        "[tlbench]\ntiny = tinyplug:plugin\n"
    )
    return tmp_path


def command(work: Path) -> list[str]:
    # Four runs: scratch and finetune, seeds 0 and 1, in that order.
    return [
        sys.executable,
        "-m",
        "tlbench.cli",
        "run",
        "--backbones",
        "tiny",
        "--datasets",
        "tinyset",
        "--strategies",
        "scratch,finetune",
        "--seeds",
        "0,1",
        "--image-size",
        "16",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--device",
        "cpu",
        "--out",
        str(work / "runs.jsonl"),
        "--cache-dir",
        str(work / "cache"),
    ]


def environment(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(work / "site"), str(REPO), env.get("PYTHONPATH", "")])
    env["TLBENCH_LOAD_PLUGINS"] = "tiny"  # nothing else that happens to be installed
    # The tiny grid needs the builtin strategies only; skipping the heavy builtins is faster.
    env["TLBENCH_BLOCK_PLUGINS"] = (
        "torchvision_backbones,efficientnet_lite,torchvision_datasets,timm"
    )
    env["COLUMNS"] = "160"
    return env


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"tlbench exited ({proc.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def keys_and_status(path: Path) -> list[tuple[str, str, int, str]]:
    return [
        (r["key"], r["config"]["strategy"], r["config"]["seed"], r["status"])
        for r in results.read(path)
    ]


@pytest.mark.slow  # a CLI grid in its own process, interrupted, then run again
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_grid_keeps_finished_runs_and_resumes_the_rest(work, signum):
    out_file = work / "runs.jsonl"
    (work / "hold").touch()
    env = environment(work)
    proc = subprocess.Popen(
        command(work),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a shell starts its background jobs (`pytest &`, CI runners)
        # with SIGINT ignored, and Python then never turns Ctrl-C into KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    wait_for(lambda: len(results.read(out_file)) >= 2, proc, "the second record")
    wait_for(lambda: (work / "holding").exists(), proc, "the third run to be training")
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, stderr  # 130 for Ctrl-C, 143 for SIGTERM
    assert "interrupted" in stdout and "2 finished run(s) of this grid are kept" in stdout
    first = keys_and_status(out_file)
    assert [(s, seed, status) for _, s, seed, status in first] == [
        ("scratch", 0, "ok"),
        ("scratch", 1, "ok"),
        ("finetune", 0, "interrupted"),
    ]

    (work / "hold").unlink()
    again = subprocess.run(command(work), env=env, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stderr
    assert "grid: 4 runs — 2 to train, 2 already done" in again.stdout
    assert (
        "scratch / tinyset / seed" not in again.stdout.split("tinyset: top-1")[0]
    )  # not retrained

    final = keys_and_status(out_file)
    assert final[:3] == first  # nothing finished was rewritten or lost
    assert [(s, seed, status) for _, s, seed, status in final[3:]] == [
        ("finetune", 0, "ok"),
        ("finetune", 1, "ok"),
    ]
    latest = results.latest_by_key(results.read(out_file))
    assert len(latest) == 4 and all(r["status"] == "ok" for r in latest.values())
    ok_keys = [k for k, _, _, status in final if status == "ok"]
    assert len(ok_keys) == len(set(ok_keys)) == 4  # each run finished exactly once
