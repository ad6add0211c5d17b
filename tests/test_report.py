"""The comparison: aggregation over seeds, gain over scratch, Pareto marks, formats, plots."""

from __future__ import annotations

import csv
import io
import json
import sys

import pytest
from conftest import TinyPlugin

import tlbench
import tlbench.plugins
from tlbench import report, results, tables
from tlbench.cli import main
from tlbench.errors import TlbenchError
from tlbench.runner import Runner

PNG = b"\x89PNG\r\n\x1a\n"


def record(
    backbone: str,
    strategy: str,
    acc: float | None,
    seconds: float = 1.0,
    *,
    seed: int = 0,
    dataset: str = "flowers",
    status: str = "ok",
    reason: str | None = None,
    epochs: int = 5,
    feature_seconds: float = 0.0,
    feature_cache: str | None = None,
    key: str | None = None,
    curve: list[float] | None = None,
) -> dict:
    """A result record with just the fields the report reads."""
    config = {
        "backbone": backbone,
        "weights": None if strategy == "scratch" else "w",
        "dataset": dataset,
        "strategy": strategy,
        "seed": seed,
        "image_size": 64,
        "device": "cpu",
        "precision": "fp32",
        "hyperparameters": {"epochs": epochs, "lr": 0.001},
    }
    r = {
        "key": key or f"{dataset}-{backbone}-{strategy}-{seed}-{epochs}",
        "status": status,
        "reason": reason,
        "config": config,
    }
    if status == "ok":
        curve = curve or [acc] * epochs
        r["accuracy"] = {
            "final": acc,
            "best": max(curve),
            "best_epoch": curve.index(max(curve)) + 1,
            "curve": [{"epoch": i + 1, "eval_accuracy": a} for i, a in enumerate(curve)],
        }
        r["cost"] = {
            "train_seconds": seconds,
            "feature_seconds": feature_seconds,
            "feature_cache": feature_cache,
            "train_images_per_s": 100.0,
            "peak_memory_bytes": 300 * 10**6,
            "trainable_params": 1000,
            "total_params": 5_000_000,
        }
    return r


def rows_by_name(rows):
    return {(r.backbone, r.strategy, r.variant): r for r in rows}


def test_seeds_are_aggregated_as_mean_std_and_n():
    rows = report.summarize(
        [
            record("resnet18", "finetune", 0.80, 10, seed=0),
            record("resnet18", "finetune", 0.90, 14, seed=1),
            record("resnet18", "finetune", 0.85, 12, seed=2),
        ]
    )
    (row,) = rows
    assert row.n == 3 and row.seeds == [0, 1, 2]
    assert row.accuracy == pytest.approx(0.85)
    assert row.accuracy_std == pytest.approx(0.05)
    assert row.train_seconds == pytest.approx(12)
    assert row.peak_memory_mb == pytest.approx(300)
    cells = dict(zip(tables.COLUMNS, tables.row_cells(row), strict=True))
    # 95% t interval: 0.85 ± t(0.975, 2) 4.3027 x 0.05 / sqrt(3) = ± 0.1242.
    assert cells["top-1 %"] == "85.0 ± 5.0 [72.6, 97.4]" and cells["n"] == "3"
    assert cells["trainable / total"] == "1.0k / 5.00M"


def test_gain_over_scratch_is_per_backbone():
    rows = rows_by_name(
        report.summarize(
            [
                record("resnet18", "scratch", 0.50),
                record("resnet18", "linear", 0.80),
                record("vit", "linear", 0.95),  # no scratch run of its own: no gain
            ]
        )
    )
    assert rows["resnet18", "linear", ""].gain_over_scratch == pytest.approx(0.30)
    assert rows["resnet18", "scratch", ""].gain_over_scratch is None
    assert rows["vit", "linear", ""].gain_over_scratch is None


def test_gain_over_scratch_compares_like_with_like():
    small = record("resnet18", "linear", 0.7, key="small")
    small["config"]["image_size"] = 32
    rows = rows_by_name(
        report.summarize(
            [record("resnet18", "scratch", 0.5), small, record("resnet18", "linear", 0.8)]
        )
    )
    assert rows["resnet18", "linear", "image_size=64"].gain_over_scratch == pytest.approx(0.3)
    assert (
        rows["resnet18", "linear", "image_size=32"].gain_over_scratch is None
    )  # no scratch run at 32 px


def test_pareto_marks_rows_no_other_row_beats_on_both_accuracy_and_cost():
    rows = rows_by_name(
        report.summarize(
            [
                record("a", "finetune", 0.90, 100),  # most accurate
                record("b", "linear", 0.80, 1),  # cheapest
                record("c", "scratch", 0.70, 50),  # beaten by b on both
                record("d", "finetune", 0.80, 5),  # as accurate as b but dearer
                record(
                    "e", "finetune", 0.90, 100, dataset="other"
                ),  # another dataset: not compared
                record("f", "linear", 0.99, 0.5, dataset="other"),
            ]
        )
    )
    assert rows["a", "finetune", ""].pareto and rows["b", "linear", ""].pareto
    assert not rows["c", "scratch", ""].pareto
    assert not rows["d", "finetune", ""].pareto
    assert rows["f", "linear", ""].pareto and not rows["e", "finetune", ""].pareto


def test_failed_and_skipped_runs_appear_with_their_reason():
    rows = rows_by_name(
        report.summarize(
            [
                record("a", "finetune", 0.9),
                record("b", "linear", None, status="skipped", reason="b has no pretrained weights"),
                record("c", "finetune", None, status="failed", reason="CUDA out of memory"),
                record("d", "finetune", 0.7, seed=0),
                record("d", "finetune", None, seed=1, status="failed", reason="loss became nan"),
            ]
        )
    )
    skipped = rows["b", "linear", ""]
    assert skipped.accuracy is None and not skipped.pareto
    assert tables.row_cells(skipped)[-1] == "skipped: b has no pretrained weights"
    assert tables.row_cells(rows["c", "finetune", ""])[-1] == "failed: CUDA out of memory"
    partial = rows["d", "finetune", ""]
    assert partial.n == 1 and partial.accuracy == pytest.approx(0.7)
    assert "1 of 2 seeds failed: loss became nan" in tables.row_cells(partial)[-1]


def test_a_rerun_supersedes_the_failed_record_of_the_same_key():
    rows = report.summarize(
        [
            record("a", "finetune", None, status="interrupted", reason="Ctrl-C", key="k"),
            record("a", "finetune", 0.8, key="k"),
        ]
    )
    assert [(r.status, r.n) for r in rows] == [("ok", 1)]


def test_runs_differing_in_more_than_the_seed_are_separate_labelled_rows():
    rows = rows_by_name(
        report.summarize(
            [
                record("a", "finetune", 0.8, epochs=5),
                record("a", "finetune", 0.9, epochs=10),
                record("a", "linear", 0.7),
            ]
        )
    )
    assert set(rows) == {
        ("a", "finetune", "epochs=5"),
        ("a", "finetune", "epochs=10"),
        ("a", "linear", ""),
    }
    assert rows["a", "finetune", "epochs=10"].n == 1
    assert tables.row_cells(rows["a", "finetune", "epochs=5"])[1] == "finetune (epochs=5)"


def test_cached_features_are_charged_their_extraction_time():
    rows = report.summarize(
        [
            record("a", "linear", 0.8, 0.5, seed=0, feature_seconds=30.0, feature_cache="none"),
            record("a", "linear", 0.8, 0.5, seed=1, feature_seconds=0.01, feature_cache="disk"),
        ]
    )
    (row,) = rows
    assert row.train_seconds == pytest.approx(30.5)  # both seeds: extraction + head
    assert row.features_cached


def test_sort_and_group():
    rows = report.summarize(
        [
            record("a", "finetune", 0.9, 100),
            record("b", "linear", 0.8, 1),
            record("c", "scratch", None, status="failed", reason="x"),
        ]
    )
    by_acc = [r.backbone for r in report.sort_rows(rows, "accuracy")]
    by_time = [r.backbone for r in report.sort_rows(rows, "time")]
    assert by_acc == ["a", "b", "c"] and by_time == ["b", "a", "c"]  # failed rows last
    assert [r.backbone for r in report.sort_rows(rows, "backbone")] == ["a", "b", "c"]
    groups = report.group_rows(rows, "strategy")
    assert set(groups) == {"finetune", "linear", "scratch"}
    assert tables.columns("strategy")[:2] == ["dataset", "backbone"]
    assert tables.row_cells(groups["linear"][0], "strategy")[:2] == ["flowers", "b"]
    assert list(report.group_rows(rows, "none")) == ["all runs"]
    with pytest.raises(ValueError, match="--sort"):
        report.sort_rows(rows, "colour")


SAMPLE = [
    record("resnet18", "scratch", 0.5, 20, seed=0, curve=[0.3, 0.4, 0.5]),
    record("resnet18", "scratch", 0.6, 22, seed=1, curve=[0.3, 0.5, 0.6]),
    record("resnet18", "linear", 0.8, 2, curve=[0.6, 0.7, 0.8]),
    record("resnet18", "finetune", 0.9, 40, curve=[0.7, 0.85, 0.9]),
    record(
        "small_cnn", "linear", None, status="skipped", reason="small_cnn has no pretrained weights"
    ),
    record("resnet18", "linear", 0.95, 3, dataset="pets & <co>"),
]


def test_json_and_csv_hold_every_field_unformatted():
    rows = report.summarize(SAMPLE)
    data = json.loads(tables.render(rows, "json"))
    assert len(data) == len(rows)
    scratch = next(d for d in data if d["strategy"] == "scratch")
    assert (
        scratch["n"] == 2
        and scratch["accuracy"] == pytest.approx(0.55)
        and scratch["seeds"] == [0, 1]
    )
    table = list(csv.DictReader(io.StringIO(tables.render(rows, "csv"))))
    assert len(table) == len(rows)
    assert set(table[0]) == set(report.Row.__dataclass_fields__)
    skipped = next(t for t in table if t["status"] == "skipped")
    assert skipped["reason"] == "small_cnn has no pretrained weights" and skipped["accuracy"] == ""


def test_markdown_html_and_latex_are_one_table_per_dataset():
    rows = report.sort_rows(report.summarize(SAMPLE))
    md = tables.render(rows, "markdown")
    assert md.count("### dataset: ") == 2
    header = next(line for line in md.splitlines() if line.startswith("| backbone"))
    # No record measured inference: its columns are left out, the others are all there.
    shown = [c for c in tables.COLUMNS if c not in tables.WHEN_PRESENT]
    assert [c.strip() for c in header.strip("|").split("|")] == shown
    alignment = next(line for line in md.splitlines() if line.startswith("|:"))
    backbone, strategy, top1 = alignment.strip("|").split("|")[:3]
    # Names left (":---"), numbers right ("---:").
    assert backbone.startswith(":") and strategy.startswith(":") and top1.endswith(":")
    assert "skipped: small_cnn has no pretrained weights" in md
    html = tables.render(rows, "html")
    assert html.count("<table>") == 2 and "pets &amp; &lt;co&gt;" in html and "<co>" not in html
    latex = tables.render(rows, "latex")
    assert latex.count(r"\toprule") == 2 and r"top-1 \%" in latex
    plain = tables.render(rows, "table")
    assert "pareto" in plain and tables.LEGEND in plain


def test_plot_draws_the_tradeoff_and_the_curves(tmp_path):
    pytest.importorskip("matplotlib")
    from tlbench.plot import frontier, mean_curve, plot_comparison

    rows = report.summarize(SAMPLE)
    flowers = [r for r in rows if r.dataset == "flowers"]
    # linear (2 s, 80%) and finetune (40 s, 90%) are the frontier; scratch is beaten by linear.
    assert frontier(flowers) == [(2.0, 0.8), (40.0, 0.9)]
    assert mean_curve(SAMPLE[:2]) == pytest.approx([0.3, 0.45, 0.55])
    path = plot_comparison(rows, SAMPLE, tmp_path / "plots" / "tradeoff.png")
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 20_000


def test_missing_matplotlib_gives_a_clear_message(tmp_path, monkeypatch):
    from tlbench.plot import plot_comparison

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + [
        "matplotlib"
    ]:
        monkeypatch.setitem(sys.modules, name, None)  # `import matplotlib` now fails
    with pytest.raises(TlbenchError, match=r"pip install 'tlbench\[plot\]'"):
        plot_comparison(report.summarize(SAMPLE), SAMPLE, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# --------------------------------------------------------------------------- the CLI on a real run


@pytest.fixture(scope="module")
def real_results(tmp_path_factory):
    """A real tiny grid: two backbones x three strategies x two seeds, one skipped."""
    from tlbench.config import RunConfig

    tmp = tmp_path_factory.mktemp("report")
    config = RunConfig(
        backbones=["tiny", "tiny_random"],
        datasets=["tinyset"],
        seeds=[0, 1],
        image_size=16,
        hyperparameters={"epochs": 1, "batch_size": 16},
        out=str(tmp / "runs.jsonl"),
        cache_dir=str(tmp / "cache"),
        device="cpu",
    )
    plugins = tlbench.Plugins(entry_points=False, extra=[("tiny", TinyPlugin())])
    Runner(config, plugins).run()
    return tmp / "runs.jsonl"


def test_report_table_of_a_real_run(real_results, capsys):
    assert main(["report", str(real_results)]) == 0
    out = capsys.readouterr().out
    assert "tinyset: top-1 against training cost" in out
    for column in ("top-1 %", "n", "train s", "vs scratch", "pareto", "tie", "note"):
        assert column in out
    assert "skipped: tiny_random has no pretrained weights; linear needs them" in out
    assert "\x1b[" not in out  # not a terminal: no colour codes
    # Every column is there with --wide.
    assert main(["report", str(real_results), "--wide"]) == 0
    out = capsys.readouterr().out
    for column in ("best ep", "img/s", "peak MB", "trainable / total", "px"):
        assert column in out


@pytest.mark.parametrize("fmt", ["markdown", "csv", "json", "html", "latex"])
def test_report_formats_of_a_real_run(real_results, capsys, fmt):
    assert main(["report", str(real_results), "--format", fmt]) == 0
    out = capsys.readouterr().out
    if fmt == "json":
        rows = json.loads(out)
        assert {(r["backbone"], r["strategy"], r["status"]) for r in rows} >= {
            ("tiny", "finetune", "ok"),
            ("tiny_random", "linear", "skipped"),
        }
        assert all(r["n"] == 2 for r in rows if r["status"] == "ok")
        assert any(r["pareto"] for r in rows)
    elif fmt == "csv":
        assert len(list(csv.DictReader(io.StringIO(out)))) == 6
    else:
        assert ("tiny\\_random" if fmt == "latex" else "tiny_random") in out and "skipped" in out
    if fmt == "html":  # the styled table of the --html page, not a bare one
        assert '<table class="comparison"' in out and '<span class="ci"' in out
        assert "<style>" in out and ".tlbench-report td.num" in out


def test_report_output_file_group_by_sort_and_plot(real_results, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    md, png = tmp_path / "r.md", tmp_path / "r.png"
    assert (
        main(
            [
                "report",
                str(real_results),
                "--format",
                "markdown",
                "--group-by",
                "strategy",
                "--sort",
                "time",
                "-o",
                str(md),
                "--plot",
                str(png),
            ]
        )
        == 0
    )
    text = md.read_text()
    assert text.count("### strategy: ") == 3 and "| dataset   | backbone" in text
    assert png.read_bytes().startswith(PNG)
    assert str(png) in capsys.readouterr().out


def test_report_merges_results_files(real_results, tmp_path, capsys):
    other = tmp_path / "other.jsonl"
    results.append(other, record("big", "linear", 0.99, 1, dataset="tinyset"))
    assert main(["report", str(real_results), str(other), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["backbone"] for r in rows} == {"tiny", "tiny_random", "big"}


def test_report_table_prints_brackets_literally(tmp_path, capsys):
    path = tmp_path / "runs.jsonl"
    results.append(
        path, record("[b]", "linear", None, status="failed", reason="[strategy.linear] bad")
    )
    assert main(["report", str(path)]) == 0
    out = capsys.readouterr().out
    assert "[b]" in out and "failed: [strategy.linear] bad" in out


def test_report_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing.jsonl")]) == 2
    assert "results file not found" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["report", str(empty)]) == 2
    assert "no records" in capsys.readouterr().err
