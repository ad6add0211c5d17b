"""One run, one training: a run another tlbench process is training is left to it.

A process claims each run it is about to train with an exclusive lock on
`.tlbench-claims/<key>` beside the results file; the system releases the
lock when the process ends, however it ends. The other process here is
simulated by holding that lock from a child process.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import warnings
from pathlib import Path

import pytest

import tlbench
from tlbench import results, testing
from tlbench.runner import Runner


def _plugins():
    return tlbench.Plugins(entry_points=False, extra=[("tiny", testing.TINY_PLUGIN)])


def _hold(path: str, ready, release) -> None:
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        ready.set()
        release.wait(60)


@pytest.mark.slow  # a second process holds the claim
def test_a_run_claimed_by_another_process_is_left_to_it_and_the_others_train(tiny_config):
    tiny_config.strategies = ["scratch", "finetune"]
    runner = Runner(tiny_config, _plugins())
    scratch, finetune = runner.plan()
    folder = Path(tiny_config.out).parent / ".tlbench-claims"
    folder.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    other = context.Process(target=_hold, args=(str(folder / scratch.spec.key), ready, release))
    other.start()
    try:
        assert ready.wait(60)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            records = runner.run([scratch, finetune])
    finally:
        release.set()
        other.join(30)
    assert [r["config"]["strategy"] for r in records] == ["finetune"]
    assert any("being trained by another tlbench process" in str(w.message) for w in caught)
    assert [r["config"]["strategy"] for r in results.read(tiny_config.out)] == ["finetune"]


def test_claims_are_released_when_the_grid_ends(tiny_config):
    tiny_config.strategies = ["scratch"]
    Runner(tiny_config, _plugins()).run()
    folder = Path(tiny_config.out).parent / ".tlbench-claims"
    assert list(folder.iterdir()) == []  # removed, not left locked
    tiny_config.force = True
    (again,) = Runner(tiny_config, _plugins()).run()  # claims again without waiting
    assert again["status"] == "ok"


def test_a_file_named_like_the_claims_folder_is_a_clear_error_and_leaves_nothing(
    plugins, tiny_config
):
    from pathlib import Path

    from tlbench.errors import ResultsError
    from tlbench.runner import Runner

    out = Path(tiny_config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / ".tlbench-claims").write_text("not a folder")
    tiny_config.strategies = ["linear"]
    with pytest.raises(ResultsError, match=r"cannot claim .*move a file named \.tlbench-claims"):
        Runner(tiny_config, plugins).run()
    assert (out.parent / ".tlbench-claims").read_text() == "not a folder"


def test_a_claim_that_cannot_be_written_is_not_left_behind(tmp_path, monkeypatch):
    import builtins
    import errno

    from tlbench import runner

    real_open = builtins.open

    class Full:
        def __init__(self, handle):
            self.handle = handle

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.handle, name)

    monkeypatch.setattr(builtins, "open", lambda *a, **k: Full(real_open(*a, **k)))
    with pytest.raises(OSError, match="No space"):
        runner._lock(tmp_path / "key")
    assert not (tmp_path / "key").exists()
