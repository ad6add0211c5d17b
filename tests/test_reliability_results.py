"""Results and the report never mix data, never lose a finished result, never crash on odd records.

Issue 13, items 1, 2, 3, 6, 11 and 13: rows grouped by the data they ran on
(newest data first, older data apart), records from several files resolved by
time, an "ok" record answering its key until a newer "ok" replaces it, reruns
that would not give what was asked, output locations checked before any work,
records the report does not fully understand, and files that are not results.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
from imagetree import assert_clean_error, make_split, make_tree

from tlbench import outputs, report, results, tables
from tlbench.config import RunConfig
from tlbench.errors import ResultsError, TlbenchError


def rec(
    key: str,
    status: str = "ok",
    acc: float | None = 0.5,
    *,
    time: str | None = None,
    fingerprint: str | None = "fp-new",
    seed: int = 0,
    strategy: str = "linear",
    dataset: str = "imagefolder:ds",
    **extra,
) -> dict:
    """A record as the runner writes it, with the fields the report reads."""
    config = {
        "backbone": "tiny",
        "weights": "w",
        "dataset": dataset,
        "strategy": strategy,
        "seed": seed,
        "image_size": 16,
        "hyperparameters": {"epochs": 2},
        "device": "cpu",
        "precision": "fp32",
    }
    if fingerprint is not None:
        config["dataset_fingerprint"] = fingerprint
    r: dict = {"schema": 2, "key": key, "status": status, "reason": None, "config": config}
    if time is not None:
        r["time"] = time
    if status == "ok":
        r["accuracy"] = {"final": acc, "best": acc, "best_epoch": 2, "curve": []}
        r["cost"] = {"train_seconds": 1.0, "feature_seconds": 0.0}
    else:
        r["reason"] = f"{status} on purpose"
    r.update(extra)
    return r


def t(minute: int) -> str:
    return f"2026-11-30T06:{minute:02d}:00+00:00"


# --------------------------------------------------------------------------- item 2: one answer per key


def test_an_ok_record_stays_the_answer_after_an_interrupted_or_failed_rerun():
    ok = rec("k", time=t(1), acc=0.75)
    later = [rec("k", "interrupted", time=t(2)), rec("k", "failed", time=t(3))]
    answer = results.answer_by_key([ok, *later])["k"]
    assert answer is ok
    # Only a newer "ok" replaces it.
    newer = rec("k", time=t(4), acc=0.5)
    assert results.answer_by_key([ok, *later, newer])["k"] is newer
    # Without any "ok", the newest record is the answer (the report shows its reason).
    assert results.answer_by_key(later)["k"]["status"] == "failed"


def test_report_shows_the_finished_accuracy_and_mentions_the_later_interruption():
    rows = report.summarize([rec("k", time=t(1), acc=0.75), rec("k", "interrupted", time=t(2))])
    (row,) = rows
    assert row.status == "ok" and row.accuracy == pytest.approx(0.75)
    assert "1 later rerun(s) interrupted" in row.reason


# --------------------------------------------------------------------------- item 1: time, not file order


def test_records_of_several_files_resolve_by_time_not_by_file_order(tmp_path):
    new, old = tmp_path / "new.jsonl", tmp_path / "old.jsonl"
    results.append(new, rec("k", time=t(9), acc=0.9))
    results.append(old, rec("k", time=t(1), acc=0.1))
    for order in ([new, old], [old, new]):
        (row,) = report.summarize(results.read(order))
        assert row.accuracy == pytest.approx(0.9), order
        assert results.latest_by_key(results.read(order))["k"]["time"] == t(9)


def test_runs_on_different_data_are_never_averaged_as_seeds():
    # The same dataset name and settings, before and after two images were added.
    rows = report.summarize(
        [
            rec("old", time=t(1), acc=1.0, fingerprint="fp-old"),
            rec("new", time=t(2), acc=0.5, fingerprint="fp-new"),
        ]
    )
    assert len(rows) == 2
    newest = [r for r in rows if not r.older_data]
    older = [r for r in rows if r.older_data]
    assert [(r.n, r.accuracy, r.seeds) for r in newest] == [(1, 0.5, [0])]
    assert [(r.n, r.accuracy) for r in older] == [(1, 1.0)]
    # Shown apart: a section of their own, after the newest data's.
    sections = list(report.group_rows(report.sort_rows(rows)))
    assert sections == [
        "imagefolder:ds",
        "imagefolder:ds (older data fp-old, last run 2026-11-30 06:01 UTC)",
    ]


def test_old_records_without_a_fingerprint_are_grouped_by_their_data_facts():
    def legacy(key, minute, root, train_images):
        r = rec(key, time=t(minute), fingerprint=None, seed=minute)
        r["schema"] = 1
        r["data"] = {"root": root, "train_images": train_images, "eval_images": 3}
        return r

    rows = report.summarize(
        [
            legacy("a", 1, "/one/ds", 6),
            legacy("b", 2, "/two/ds", 6),  # the same relative name, another tree
            legacy("c", 3, "/two/ds", 6),
        ]
    )
    by_data = {r.older_data: r for r in rows}
    assert by_data[False].n == 2 and by_data[False].seeds == [2, 3]
    assert by_data[True].n == 1 and by_data[True].seeds == [1]


def test_report_of_a_grown_dataset_shows_the_new_data_first_and_the_old_apart(run_cli, tmp_path):
    data = make_tree(tmp_path / "ds", train=4, val=2)
    out = tmp_path / "runs.jsonl"
    args = ["run", "--datasets", f"imagefolder:{data}", "--backbones", "tiny",
            "--strategies", "linear", "--epochs", "1", "--image-size", "16",
            "--out", out, "--cache-dir", tmp_path / "cache", "--device", "cpu", "--quiet"]  # fmt: skip
    assert run_cli(*args).code == 0
    make_split(data / "train", 6, seed=7)  # two more images per class (and new pixels)
    assert run_cli(*args).code == 0
    records = results.read(out)
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert records[0]["key"] != records[1]["key"]
    result = run_cli("report", out, "--format", "json")
    assert result.code == 0, result
    rows = json.loads(result.out)
    assert [(r["n"], r["older_data"]) for r in rows] == [(1, False), (1, True)]
    assert rows[0]["run_keys"] == [records[1]["key"]]  # the newest data is the main row
    table = run_cli("report", out)
    assert "older data" in table.out and table.code == 0


# --------------------------------------------------------------------------- item 3: reruns that must do work


def test_needs_rerun_when_save_models_finds_no_checkpoint(tmp_path):
    config = RunConfig(out=str(tmp_path / "runs.jsonl"), save_models=True)
    record = rec("k")
    assert "without --save-models" in results.needs_rerun(record, config)
    ckpt = tmp_path / "models" / "k.pt"
    record["cost"]["checkpoint"] = str(ckpt)
    assert "checkpoint is missing" in results.needs_rerun(record, config)
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"weights")
    assert results.needs_rerun(record, config) is None
    # Asked into another folder: the one there is missing.
    config.models_dir = str(tmp_path / "elsewhere")
    assert str(tmp_path / "elsewhere" / "k.pt") in results.needs_rerun(record, config)
    assert results.needs_rerun(record, RunConfig(out=config.out)) is None  # not asked: done


def test_needs_rerun_when_strict_meets_a_run_that_skipped_images(tmp_path):
    record = rec("k", data={"skipped_images": 2, "skipped_files": ["ds/train/cat/bad.png"]})
    reason = results.needs_rerun(record, RunConfig(strict=True))
    assert "skipped 2 unreadable image(s), e.g. ds/train/cat/bad.png" in reason
    assert "--strict" in reason
    assert results.needs_rerun(record, RunConfig(strict=False)) is None
    clean = rec("k", data={"skipped_images": 0, "skipped_files": []})
    assert results.needs_rerun(clean, RunConfig(strict=True)) is None


# --------------------------------------------------------------------------- item 6: outputs checked first


def test_check_output_locations_names_each_bad_place(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(TlbenchError, match=rf"checkpoints {blocker} is a file.*--models-dir"):
        outputs.check_output_locations(models_dir=blocker)
    with pytest.raises(TlbenchError, match=r"cannot write checkpoints in .*--models-dir"):
        outputs.check_output_locations(models_dir=blocker / "models")
    with pytest.raises(ResultsError, match=r"--out"):
        outputs.check_output_locations(results=blocker / "runs.jsonl")
    with pytest.raises(TlbenchError, match=r"--plot"):
        outputs.check_output_locations(plot=blocker / "plot.png")
    with pytest.raises(TlbenchError, match=r"--grid .*\.txt image"):
        outputs.check_output_locations(grid=tmp_path / "grid.txt")
    found = outputs.check_output_locations(
        results=tmp_path / "r" / "runs.jsonl",
        models_dir=tmp_path / "m",
        plot=tmp_path / "p",
        grid=f"{tmp_path / 'g'}/",
    )
    assert found["plot"] == tmp_path / "p.png"
    assert found["grid"] == tmp_path / "g" / "predictions.png"
    # A check leaves no trace: no probe, and no folder (its writer makes it; an empty
    # models/ left in a dataset folder would read as a class without images).
    assert not (tmp_path / "m").exists() and not (tmp_path / "g").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tlbench-write-check")]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs a read-only /proc")
def test_check_output_locations_refuses_a_read_only_place():
    with pytest.raises(TlbenchError, match="cannot write checkpoints in /proc"):
        outputs.check_output_locations(models_dir="/proc/tlbench-models")


# --------------------------------------------------------------------------- item 13: foreign files


def test_an_existing_file_that_is_not_a_results_file_is_refused(tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text("# My notes\n\nnothing to lose\n")
    with pytest.raises(ResultsError, match=r"notes.md exists and is not a tlbench results file"):
        results.check_writable(notes)
    with pytest.raises(ResultsError, match="first line is not a run record: '# My notes'"):
        results.append(notes, rec("k"))
    assert notes.read_text() == "# My notes\n\nnothing to lose\n"
    config = tmp_path / "grid.json"
    config.write_text('{"backbones": ["a"]}\n')
    with pytest.raises(ResultsError, match="JSON but not a run record"):
        results.check_writable(config)


def test_empty_files_results_files_and_torn_first_records_are_accepted(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    results.check_writable(empty)
    torn = tmp_path / "torn.jsonl"
    torn.write_text(json.dumps(rec("k"))[:30])  # power loss during the very first append
    results.check_writable(torn)
    results.append(torn, rec("k2"))
    with pytest.warns(RuntimeWarning, match="torn"):
        assert [r["key"] for r in results.read(torn)] == ["k2"]


def test_run_refuses_out_pointing_at_notes_before_any_work(run_cli, tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text("# notes\n")
    result = run_cli("run", "--datasets", "tinyset", "--backbones", "tiny", "--strategies",
                     "linear", "--out", notes, "--cache-dir", tmp_path / "cache", "--device", "cpu")  # fmt: skip
    assert_clean_error(result, "notes.md exists and is not a tlbench results file")
    assert notes.read_text() == "# notes\n"


def test_a_foreign_file_read_as_results_gives_a_few_warnings_not_one_per_line(tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text("\n".join(f"line {i}" for i in range(40)) + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert results.read(notes) == []
    assert len(caught) == 4
    assert "37 more torn or invalid lines (40 in all; is it a results file?)" in str(
        caught[-1].message
    )


# --------------------------------------------------------------------------- item 11: odd records


def test_report_shows_or_skips_records_it_does_not_fully_understand_with_one_warning_each():
    records = [
        rec("good", acc=0.8, seed=0),
        rec("newer", acc=0.6, seed=1, schema=99),
        rec("noacc", seed=2),
        rec("nullfinal", seed=3),
        rec("strseed", acc=0.7, seed=4),
        rec("nocost", acc=0.9, seed=5),
        rec("badcost", acc=0.5, seed=6),
    ]
    del records[2]["accuracy"]
    records[3]["accuracy"]["final"] = None
    records[4]["config"]["seed"] = "4"
    del records[5]["cost"]
    records[6]["cost"]["train_seconds"] = "fast"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = report.summarize([*records, rec("noacc2", seed=7, accuracy=None)])
    messages = [str(w.message) for w in caught]
    assert len(messages) == len(set(messages))  # one warning per kind of problem
    text = "\n".join(messages)
    assert "schema 99" in text and "upgrade tlbench" in text
    assert "2 record(s)" in text and "no accuracy" in text
    assert "final" in text and "seed" in text and "no cost" in text
    assert "train_seconds" in text
    (row,) = rows
    # good, newer, strseed, nocost and badcost are shown; noacc, noacc2 and nullfinal skipped.
    assert row.n == 5 and row.seeds == [0, 1, 4, 5, 6]
    assert row.accuracy == pytest.approx((0.8 + 0.6 + 0.7 + 0.9 + 0.5) / 5)
    for fmt in tables.FORMATS:
        assert tables.render(rows, fmt)


def test_report_cli_on_odd_records_warns_and_exits_0(run_cli, tmp_path):
    path = tmp_path / "runs.jsonl"
    good, odd = rec("a", acc=0.5), rec("b", acc=0.5, seed=1)
    odd["accuracy"]["final"] = None
    path.write_text(json.dumps(good) + "\n" + json.dumps(odd) + "\n")
    result = run_cli("report", path)
    assert result.code == 0, result
    assert "warning:" in result.err and "final" in result.err
    assert result.err.count("accuracy.final") == 1  # once, though the table summarizes twice
    assert "Traceback" not in result.err
    only_odd = tmp_path / "odd.jsonl"
    only_odd.write_text(json.dumps(odd) + "\n")
    assert_clean_error(run_cli("report", only_odd), "none of the 1 record(s)")


def test_report_output_never_overwrites_a_results_file(run_cli, tmp_path):
    path = tmp_path / "runs.jsonl"
    other = tmp_path / "other.jsonl"
    results.append(path, rec("a"))
    results.append(other, rec("b"))
    before = path.read_bytes(), other.read_bytes()
    assert_clean_error(run_cli("report", path, "-o", path), "one of the results files")
    assert_clean_error(run_cli("report", path, "-o", other), "holds tlbench run records")
    assert_clean_error(run_cli("report", path, "-o", tmp_path), "is a folder")
    assert (path.read_bytes(), other.read_bytes()) == before
    assert run_cli("report", path, "-o", tmp_path / "r.md", "--format", "markdown").code == 0
    assert (tmp_path / "r.md").read_text().startswith("### dataset: imagefolder:ds")


def test_report_rows_of_one_key_read_from_two_files_count_once(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    results.append(a, rec("k", time=t(1), acc=0.4))
    results.append(b, rec("k", time=t(1), acc=0.4))  # the same file copied: one run, not two
    (row,) = report.summarize(results.read([a, b]))
    assert row.n == 1


def test_plot_of_odd_records_draws_what_it_can(tmp_path):
    pytest.importorskip("matplotlib")
    from tlbench.plot import plot_comparison

    records = [rec("a", acc=0.5), rec("b", acc=0.6, strategy="scratch")]
    records[0]["accuracy"]["curve"] = [{"eval_accuracy": 0.4}, "junk", {"eval_accuracy": 0.5}]
    records[1]["accuracy"]["curve"] = None
    rows = report.summarize(records)
    path = plot_comparison(rows, records, tmp_path / "plot")
    assert path == tmp_path / "plot.png" and path.read_bytes()[:4] == b"\x89PNG"


# --------------------------------------------------------------------------- own hostile cases


def test_a_results_file_saved_with_a_bom_is_still_a_results_file(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps(rec("k")) + "\n", encoding="utf-8-sig")  # a Windows editor
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not one torn-line warning
        assert [r["key"] for r in results.read(path)] == ["k"]
    results.check_writable(path)
    results.append(path, rec("k2"))
    assert [r["key"] for r in results.read(path)] == ["k", "k2"]


def test_a_line_nested_too_deep_for_the_json_parser_is_skipped_not_a_crash(tmp_path):
    path = tmp_path / "runs.jsonl"
    results.append(path, rec("k"))
    with path.open("a") as f:
        f.write("[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.warns(RuntimeWarning, match=r"runs.jsonl:2: skipping a torn or invalid line"):
        assert [r["key"] for r in results.read(path)] == ["k"]


def test_dollar_signs_in_names_are_drawn_not_typeset(tmp_path):
    pytest.importorskip("matplotlib")
    from tlbench.plot import plot_comparison

    # `$\frac$` is invalid mathtext: matplotlib would raise while drawing.
    records = [rec("a", dataset="imagefolder:/data/$\\frac$", acc=0.5)]
    records[0]["config"]["backbone"] = "b$\\undefinedcommand$"
    path = plot_comparison(report.summarize(records), records, tmp_path / "p.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_report_output_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "report.md"
    path.write_text("the old report\n")
    path.chmod(0o640)
    results.write_text_atomic(path, "new\n")
    assert path.read_text() == "new\n" and path.stat().st_mode & 0o777 == 0o640

    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, fd, *args, **kwargs):
            self.file = real_fdopen(fd, *args, **kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, text):
            self.file.write(text[:2])  # part of it lands, then the disk is full
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fdopen", FullDisk)
    with pytest.raises(OSError, match="No space"):
        results.write_text_atomic(path, "newer\n")
    monkeypatch.undo()
    assert path.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]  # no temporary left


def test_names_with_newlines_and_pipes_cannot_break_markdown_or_latex():
    record = rec("k", "failed", dataset="imagefolder:/d/a\n\\input{/etc/passwd}")
    record["config"]["backbone"] = "b|x<script>"
    rows = report.summarize([record])
    markdown = tables.render(rows, "markdown")
    row_lines = [line for line in markdown.splitlines() if line.startswith("| b\\|x")]
    assert len(row_lines) == 1 and "b\\|x&lt;script&gt;" in row_lines[0]
    # A row has as many unescaped cell separators as the header.
    header = next(line for line in markdown.splitlines() if line.startswith("| backbone"))
    assert row_lines[0].replace("\\|", "").count("|") == header.count("|")
    latex = tables.render(rows, "latex")
    assert not any(line.startswith("\\input") for line in latex.splitlines())


def test_out_ending_in_a_slash_is_a_folder_not_a_file_named_like_it(tmp_path):
    given = f"{tmp_path / 'runs'}/"
    with pytest.raises(ResultsError, match=r"names a folder; name the results file, e\.g\."):
        results.check_writable(given)
    with pytest.raises(ResultsError, match="names a folder"):
        outputs.check_output_locations(results=given)
    assert not (tmp_path / "runs").exists()


def test_a_pretty_printed_json_file_is_not_mistaken_for_a_torn_record(tmp_path):
    lock = tmp_path / "package-lock.json"
    lock.write_text(json.dumps({"name": "x", "lockfileVersion": 3}, indent=2) + "\n")
    with pytest.raises(ResultsError, match="not a tlbench results file"):
        results.check_writable(lock)
    minified_then_text = tmp_path / "log.jsonl"
    minified_then_text.write_text('{"event": "start", "tru\nplain text\n')
    with pytest.raises(ResultsError, match="first lines are not run records"):
        results.check_writable(minified_then_text)
    torn_then_record = tmp_path / "runs.jsonl"
    torn_then_record.write_text('{"schema":2,"key":"a","sta\n' + json.dumps(rec("b")) + "\n")
    results.check_writable(torn_then_record)


def test_a_plot_of_many_rows_names_only_the_pareto_and_best_few(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    from tlbench import plot

    records = []
    for i in range(12):
        r = rec(f"k{i}", acc=0.3 + 0.05 * i)
        r["config"]["backbone"] = f"b{i}"
        r["accuracy"]["curve"] = [{"eval_accuracy": 0.3 + 0.05 * i}]
        r["cost"]["train_seconds"] = 1.0 + i
        records.append(r)
    legends: list[list[str]] = []
    real_legend = Axes.legend

    def legend(self, *args, **kwargs):
        legends.append(self.get_legend_handles_labels()[1])
        return real_legend(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "legend", legend)
    monkeypatch.setattr(plot, "MAX_LABELS", 4)
    rows = report.summarize(records)
    plot.plot_comparison(rows, records, tmp_path / "p.png")
    curves = legends[-1]  # the learning-curve panel's legend
    # Every row is Pareto here (more accurate costs more): the four most accurate are named.
    assert sorted(curves) == ["b10 / linear", "b11 / linear", "b8 / linear", "b9 / linear"]


# --------------------------------------------------------------------------- the wiring, end to end


def _tiny_run(run_cli, tmp_path, *extra):
    data = tmp_path / "ds"
    if not data.exists():
        make_tree(data, train=4, val=2)
    return run_cli("run", "--datasets", f"imagefolder:{data}", "--backbones", "tiny",
                   "--strategies", "linear", "--epochs", "1", "--image-size", "16",
                   "--out", tmp_path / "runs.jsonl", "--cache-dir", tmp_path / "cache",
                   "--device", "cpu", "--quiet", *extra)  # fmt: skip


def test_a_plain_rerun_after_an_interrupted_force_rerun_trains_nothing(run_cli, tmp_path):
    assert _tiny_run(run_cli, tmp_path).code == 0
    out = tmp_path / "runs.jsonl"
    (ok,) = results.read(out)
    # What `--force` then Ctrl-C leaves: a newer "interrupted" record of the same key.
    later = dict(
        ok, status="interrupted", reason="interrupted (Ctrl-C)", time="2999-01-01T00:00:00+00:00"
    )
    del later["accuracy"]
    results.append(out, later)
    assert _tiny_run(run_cli, tmp_path).code == 0
    assert [r["status"] for r in results.read(out)] == ["ok", "interrupted"]  # nothing trained
    (row,) = json.loads(run_cli("report", out, "--format", "json").out)
    assert row["accuracy"] == ok["accuracy"]["final"] and "later rerun" in row["reason"]


def test_save_models_rerun_whose_checkpoint_is_missing_trains_again(run_cli, tmp_path):
    assert _tiny_run(run_cli, tmp_path, "--save-models").code == 0
    out = tmp_path / "runs.jsonl"
    (first,) = results.read(out)
    checkpoint = Path(first["cost"]["checkpoint"])
    checkpoint.unlink()
    assert _tiny_run(run_cli, tmp_path, "--save-models").code == 0
    assert [r["status"] for r in results.read(out)] == ["ok", "ok"]
    assert checkpoint.is_file()
    assert _tiny_run(run_cli, tmp_path, "--save-models").code == 0
    assert len(results.read(out)) == 2  # now done: nothing trained


def test_models_dir_that_is_a_file_fails_before_any_training(run_cli, tmp_path):
    blocker = tmp_path / "models"
    blocker.write_text("not a folder")
    result = _tiny_run(run_cli, tmp_path, "--save-models", "--models-dir", blocker)
    assert_clean_error(result, str(blocker), "--models-dir")
    assert not (tmp_path / "runs.jsonl").exists()
