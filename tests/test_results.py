"""The results file survives power loss, interruptions and foreign lines.

Each record is one `write` of one whole line followed by `fsync`; a torn
last line (what a power loss leaves) is skipped with a warning and the next
append starts on a fresh line; a Ctrl-C or SIGTERM arriving during an append
is delivered after the record is complete.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from pathlib import Path

import pytest
from imagetree import assert_clean_error, learning

from tlbench import results
from tlbench.errors import ResultsError
from tlbench.runner import Runner


def record(n: int, **extra) -> dict:
    return {"key": f"k{n}", "status": "ok", "config": {"seed": n}, **extra}


def test_torn_last_line_is_skipped_with_a_warning_and_appends_continue(tmp_path):
    path = tmp_path / "runs.jsonl"
    results.append(path, record(1))
    results.append(path, record(2))
    whole = path.read_bytes()
    # Power loss in the middle of the third record's write.
    path.write_bytes(whole + json.dumps(record(3)).encode()[:17])
    with pytest.warns(RuntimeWarning, match=r"runs.jsonl:3: skipping a torn"):
        assert results.read(path) == [record(1), record(2)]
    results.append(path, record(4))
    with pytest.warns(RuntimeWarning, match="torn"):
        assert results.read(path) == [record(1), record(2), record(4)]
    # The finished records are byte for byte what they were; the new one is on its own line.
    assert path.read_bytes().startswith(whole)
    assert path.read_text().endswith(json.dumps(record(4), separators=(",", ":")) + "\n")


def test_each_record_is_one_write_then_fsync(tmp_path, monkeypatch):
    calls: list[tuple[str, object]] = []
    real_write, real_fsync = os.write, os.fsync

    def write(fd, data):
        calls.append(("write", bytes(data)))
        return real_write(fd, data)

    def fsync(fd):
        calls.append(("fsync", fd))
        return real_fsync(fd)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "runs.jsonl"
    results.append(path, record(1))
    results.append(path, record(2))
    writes = [c for c in calls if c[0] == "write"]
    assert [json.loads(data) for _, data in writes] == [record(1), record(2)]
    assert all(data.endswith(b"\n") and data.count(b"\n") == 1 for _, data in writes)
    # Each write is followed by an fsync before the next record starts.
    kinds = [kind for kind, _ in calls]
    assert kinds.index("fsync") > kinds.index("write")
    assert kinds[kinds.index("write", 1) - 1] == "fsync"


def test_interrupt_during_an_append_lands_after_the_record(tmp_path, monkeypatch):
    path = tmp_path / "runs.jsonl"
    real_fsync = os.fsync

    def fsync_then_sigterm(fd):
        signal.raise_signal(signal.SIGTERM)  # arrives between the write and the fsync
        return real_fsync(fd)

    def as_interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, as_interrupt)
    try:
        monkeypatch.setattr(os, "fsync", fsync_then_sigterm)
        with pytest.raises(KeyboardInterrupt):
            results.append(path, record(1))
        assert signal.getsignal(signal.SIGTERM) is as_interrupt  # the handler is back
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert results.read(path) == [record(1)]


def test_lines_that_are_not_records_are_skipped_with_a_warning(tmp_path):
    path = tmp_path / "runs.jsonl"
    results.append(path, record(1))
    with path.open("a") as f:
        f.write('[1, 2]\n{"key": "x"}\n"text"\n\n')
    results.append(path, record(2))
    with pytest.warns(RuntimeWarning, match="not a tlbench record") as caught:
        assert results.read(path) == [record(1), record(2)]
    assert len(caught) == 3


def test_non_finite_numbers_are_written_as_valid_json(tmp_path):
    path = tmp_path / "runs.jsonl"
    results.append(path, record(1, loss=float("nan"), curve=[float("inf"), 1.5]))

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    (line,) = path.read_text().splitlines()
    assert json.loads(line, parse_constant=refuse)["curve"] == [None, 1.5]


def test_a_record_holding_a_line_separator_stays_one_record(tmp_path):
    path = tmp_path / "runs.jsonl"
    results.append(path, record(1, reason="a\u2028b\x1cc", path="dir\\file"))
    assert results.read(path)[0]["reason"] == "a\u2028b\x1cc"


def _append_many(path: str, start: int) -> None:
    for n in range(start, start + 60):
        results.append(path, record(n, padding="x" * 3000))


def test_concurrent_appenders_never_interleave(tmp_path):
    path = str(tmp_path / "runs.jsonl")
    # fork (where there is one) starts in milliseconds; spawn re-imports torch in each child.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    workers = [ctx.Process(target=_append_many, args=(path, s)) for s in (0, 1000)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    keys = [json.loads(line)["key"] for line in Path(path).read_text().splitlines()]
    assert sorted(keys) == sorted(f"k{n}" for s in (0, 1000) for n in range(s, s + 60))


def test_unwritable_results_file_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    with pytest.raises(ResultsError, match=r"cannot write results file .*--out"):
        results.append(blocker / "runs.jsonl", record(1))


def test_rerun_after_a_torn_record_redoes_only_that_run(plugins, tiny_config):
    tiny_config.strategies = ["scratch", "linear"]
    first = Runner(tiny_config, plugins).run()
    path = Path(tiny_config.out)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + lines[1][: len(lines[1]) // 2])  # power loss mid-record
    with pytest.warns(RuntimeWarning, match="torn"):
        again = Runner(tiny_config, plugins)
        plans = again.plan()
        assert [p.status for p in plans] == ["done", "pending"]
        redone = again.run(plans)
    assert [r["config"]["strategy"] for r in redone] == ["linear"]
    assert learning(redone[0]) == learning(first[1])
    with pytest.warns(RuntimeWarning, match="torn"):
        assert [r["status"] for r in results.read(path)] == ["ok", "ok"]


def test_report_of_a_torn_file_warns_and_shows_the_rest(run_cli, plugins, tiny_config):
    tiny_config.strategies = ["linear"]
    Runner(tiny_config, plugins).run()
    with open(tiny_config.out, "ab") as f:
        f.write(b'{"key": "k2", "sta')
    result = run_cli("report", tiny_config.out, "--format", "csv")
    assert result.code == 0, result
    assert "tiny" in result.out and "linear" in result.out
    assert "skipping a torn or invalid line" in result.err
    assert "Traceback" not in result.err


def test_report_of_a_missing_file_is_a_clean_error(run_cli, tmp_path):
    assert_clean_error(run_cli("report", str(tmp_path / "nope.jsonl")), "not found", "nope.jsonl")


@pytest.mark.parametrize("where", ["under a file", "a folder"])
def test_check_writable_fails_before_any_training(tmp_path, where):
    blocker = tmp_path / "blocker"
    if where == "under a file":
        blocker.write_text("")
        path = blocker / "runs.jsonl"
    else:
        path = blocker
        path.mkdir()
    with pytest.raises(ResultsError, match=rf"cannot write results file {path}.*--out"):
        results.check_writable(path)


def test_check_writable_accepts_new_and_existing_files(tmp_path):
    path = tmp_path / "new" / "runs.jsonl"
    results.check_writable(path)
    assert not path.exists()  # nothing created but the folder
    results.append(path, record(1))
    results.check_writable(path)
    assert results.read(path) == [record(1)]
