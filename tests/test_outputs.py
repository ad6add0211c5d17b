"""Outputs that fit (issue 24): each test reproduces one problem a new user met.

- the run's table was about 230 columns wide (hidden columns and wrapped notes at 80-120);
- rows at different image sizes ranked side by side unmarked;
- `tlbench run` wrote no page; `to_pandas().train_seconds` was not the table's "train s";
- third-party warnings printed as tlbench's `warning:`; piped `predict` output wrapped;
- csv printed `0.8500000238418579`; there was no `--dry-run`.
"""

from __future__ import annotations

import csv
import io
import json
import warnings

import pytest
from conftest import ColourSquares
from rich.console import Console

import tlbench
from tlbench import report, tables
from tlbench.commands.output import print_comparison

GRID = [
    "run", "--backbones", "tiny,tiny_random", "--datasets", "tinyset", "--strategies",
    "scratch,linear", "--image-size", "16", "--epochs", "1", "--batch-size", "16",
    "--device", "cpu", "--no-cache",
]  # fmt: skip


def record(strategy: str, size: int, acc: float, *, seed: int = 0, **cost: float) -> dict:
    return {
        "schema": 2,
        "key": f"{strategy}-{size}-{seed}",
        "status": "ok",
        "config": {
            "backbone": "b",
            "weights": "w",
            "dataset": "flowers",
            "strategy": strategy,
            "seed": seed,
            "image_size": size,
            "device": "cpu",
            "hyperparameters": {"epochs": 2},
        },
        "accuracy": {"final": acc, "best": acc, "best_epoch": 2},
        "cost": {"train_seconds": 1.0, **cost},
    }


def table(records: list[dict], **options) -> str:
    console = Console(file=io.StringIO(), width=1000)  # a log: not a terminal
    print_comparison(console, records, **options)
    return console.file.getvalue()


def test_the_default_table_of_a_run_fits_100_columns_with_notes_below(run_cli, tmp_path) -> None:
    result = run_cli(*GRID, "--out", tmp_path / "runs.jsonl")
    assert result.code == 0, result
    shown = result.out[result.out.index("tinyset: top-1") : result.out.index("top-1: final")]
    assert max(len(line) for line in shown.splitlines()) <= 100, shown
    # The skipped run's reason is a footnote: whole, on one line, below the table.
    row = next(line for line in shown.splitlines() if line.startswith("tiny_random   linear"))
    assert row.rstrip().endswith("[1]")
    assert "[1] skipped: tiny_random has no pretrained weights; linear needs them" in shown
    wide = run_cli("report", tmp_path / "runs.jsonl", "--wide").out
    assert "trainable / total" in wide and "peak MB" in wide
    assert max(len(line) for line in wide.splitlines()) > 100  # all of it, when asked


def test_columns_choose_and_an_unknown_one_is_named(run_cli, tmp_path) -> None:
    run_cli(*GRID, "--out", tmp_path / "runs.jsonl")
    out = run_cli("report", tmp_path / "runs.jsonl", "--columns", "top-1 %,peak MB").out
    header = next(line for line in out.splitlines() if line.startswith("backbone"))
    assert header.split() == ["backbone", "strategy", "top-1", "%", "peak", "MB"]
    bad = run_cli("report", tmp_path / "runs.jsonl", "--columns", "peak mb")
    assert bad.code == 2 and "did you mean 'peak MB'" in bad.err


def test_an_image_size_column_when_a_datasets_rows_differ_in_size() -> None:
    same = table([record("linear", 64, 0.8), record("scratch", 64, 0.5)])
    assert " px " not in same.splitlines()[1] + " "
    # Not variants of one cell (those are labelled): two strategies at two sizes.
    mixed = table([record("linear", 64, 0.8), record("scratch", 224, 0.9)])
    header, _, *rows = mixed.splitlines()[1:]
    assert header.split()[:3] == ["backbone", "strategy", "px"]
    assert [r.split()[1:3] for r in rows[:2]] == [["scratch", "224"], ["linear", "64"]]


def test_an_added_column_is_offered_and_shown_when_asked(monkeypatch) -> None:
    monkeypatch.setattr(tables, "EXTRA_COLUMNS", {})
    tables.add_column("flops", lambda row: "42" if row.accuracy else "")
    records = [record("linear", 64, 0.8)]
    assert "flops" not in table(records)
    assert "flops" in table(records, wide=True) and "42" in table(records, columns=["flops"])
    tables.add_column("flops", lambda row: "42", default=True)
    assert "flops" in table(records)


def test_run_writes_the_page_beside_the_results_and_says_where(run_cli, tmp_path) -> None:
    out = tmp_path / "runs.jsonl"
    result = run_cli(*GRID, "--out", out)
    page = tmp_path / "runs.html"
    assert f"page: {page}" in result.out and page.is_file()
    text = page.read_text()
    assert '<table class="comparison"' in text and "tiny_random" in text
    assert "<img" not in text and f"tlbench report {out} --html runs.html" in text  # cheap


def test_to_pandas_carries_the_tables_train_s() -> None:
    pytest.importorskip("pandas")
    # Seed 1 found its features in the cache: the table charges it what making them cost.
    made = record("linear", 64, 0.8, feature_seconds=5.0, feature_cache="none")
    hit = record("linear", 64, 0.7, seed=1, feature_seconds=0.0, feature_cache="disk")
    results = tlbench.Results([made, hit])
    df = results.to_pandas()
    assert df["train_cost_seconds"].tolist() == [6.0, 6.0]
    assert df["train_seconds"].tolist() == [1.0, 1.0]
    (row,) = results.rows()
    assert df["train_cost_seconds"].mean() == row.train_seconds


def test_csv_numbers_are_rounded_to_what_they_mean() -> None:
    rows = report.summarize([record("linear", 64, 0.8500000238418579, train_images_per_s=1.0)])
    out = tables.render(rows, "csv")
    (row,) = csv.DictReader(io.StringIO(out))
    assert row["accuracy"] == "0.85" and "0.8500000238418579" not in out
    assert json.loads(row["seed_accuracy"]) == {"0": 0.85}


def test_other_libraries_warnings_are_not_dressed_as_tlbenchs(tmp_path, monkeypatch) -> None:
    from tlbench.console import show_warning

    (tmp_path / "otherlib.py").write_text(
        "import warnings\n\ndef old():\n    warnings.warn('old() is deprecated', FutureWarning)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import otherlib

    err = Console(file=io.StringIO(), width=200)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        monkeypatch.setattr(warnings, "showwarning", show_warning(err))
        otherlib.old()
        broken = record("linear", 64, 0.5)
        del broken["accuracy"]
        report.summarize([broken])
    first, *rest = err.file.getvalue().splitlines()
    assert first.startswith(str(tmp_path / "otherlib.py")) and "FutureWarning: old()" in first
    assert not first.startswith("warning:")
    assert any(line.startswith("warning: report: 1 record(s)") for line in rest), rest


def test_piped_predict_output_never_wraps(run_cli, tmp_path, monkeypatch) -> None:
    out = tmp_path / "runs.jsonl"
    args = ["--backbones", "tiny", "--strategies", "linear", "--save-models", "--out", out]
    assert run_cli(*GRID[:1], *GRID[5:], *args, "--datasets", "tinyset").code == 0
    (checkpoint,) = (tmp_path / "models").glob("*.safetensors")
    image = tmp_path / ("a_long_folder_name_" * 6) / "red" / "photo.png"
    image.parent.mkdir(parents=True)
    ColourSquares(1, seed=5).load(0).save(image)
    monkeypatch.setenv("COLUMNS", "80")  # what rich assumes of a pipe
    result = run_cli("predict", checkpoint, image)
    assert result.code == 0, result
    assert f"{image}  (true: red)" in result.out.splitlines()


def test_dry_run_prints_the_plan_and_trains_nothing(run_cli, tmp_path) -> None:
    out = tmp_path / "runs.jsonl"
    result = run_cli(*GRID, "--out", out, "--dry-run")
    assert result.code == 0, result
    assert "plan: 4 runs — 3 to train, 0 already done, 1 skipped" in result.out
    assert "  train  tiny / linear / tinyset / seed 0 at 16 px" in result.out
    assert "  skip   tiny_random / linear / tinyset / seed 0 at 16 px: tiny_random has no " in (
        result.out
    )
    assert not out.exists() and "epoch" not in result.out
    run_cli(*GRID, "--out", out)
    again = run_cli(*GRID, "--out", out, "--seeds", "0,1", "--dry-run").out
    assert "3 to train, 3 already done, 2 skipped" in again
    assert (
        "  done   tiny / linear / tinyset / seed 0 at 16 px: already in the results file" in again
    )
    assert len(out.read_text().splitlines()) == 4  # nothing more was trained


def test_the_page_never_writes_over_a_results_file_named_html(run_cli, tmp_path) -> None:
    out = tmp_path / "runs.html"
    result = run_cli(*GRID, "--out", out)
    assert result.code == 0, result
    assert json.loads(out.read_text().splitlines()[0])["key"]  # still the records
    assert (tmp_path / "runs.html.page.html").is_file()
