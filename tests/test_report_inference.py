"""The report and the plot use inference cost (issue 27): latency and throughput columns,
`--pareto-by latency|energy`, and accuracy against latency in the plot."""

from __future__ import annotations

import json

import pytest
from test_report import PNG, record

from tlbench import report, tables


def _timed(backbone, strategy, acc, seconds, ms, *, joules=None, onnx=None):
    r = record(backbone, strategy, acc, seconds)
    r["inference"] = {
        "latency_ms_p50": ms,
        "latency_ms_p90": ms * 1.2,
        "throughput_images_per_s": 1000 / ms,
        "throughput_batch": 32,
        "energy_joules_per_1000": None if joules is None else joules / 100,
    }
    if onnx:
        r["inference"]["onnx"] = {"status": onnx}
    r["cost"]["energy_joules"] = joules
    return r


# big: most accurate, slow to answer; small: fast to answer, cheap to train; mid: beaten on
# latency by small and on accuracy by big, yet the cheapest to train.
TIMED = [
    _timed("big", "finetune", 0.95, 100.0, 40.0, joules=900.0),
    _timed("small", "finetune", 0.85, 50.0, 2.0, joules=300.0),
    _timed("mid", "linear", 0.80, 5.0, 9.0, joules=50.0, onnx="parity failed"),
    record("old", "linear", 0.99, 1.0),  # no inference measured
]


def _pareto(pareto_by: str) -> set[str]:
    rows = report.summarize(TIMED, pareto_by=pareto_by)
    return {r.backbone for r in rows if r.pareto}


def test_the_pareto_mark_weighs_the_cost_it_is_asked_for():
    assert _pareto("train") == {"old"}  # most accurate and cheapest to train
    # Latency: "old" was never measured, so it cannot be shown to be fast.
    assert _pareto("latency") == {"big", "small"}
    assert _pareto("energy") == {"big", "small", "mid"}
    with pytest.raises(ValueError, match="pareto_by"):
        report.summarize(TIMED, pareto_by="vibes")


def test_rows_carry_latency_throughput_and_the_export_status():
    rows = {r.backbone: r for r in report.summarize(TIMED)}
    assert rows["small"].latency_ms == 2.0 and rows["small"].latency_p90_ms == pytest.approx(2.4)
    assert rows["small"].inference_images_per_s == 500 and rows["small"].inference_batch == 32
    assert rows["big"].train_energy_j == 900.0
    assert rows["mid"].export == "parity failed" and rows["old"].latency_ms is None
    cells = dict(zip(tables.columns(), tables.row_cells(rows["mid"]), strict=True))
    assert cells["latency ms"] == "9.00" and cells["infer img/s"] == "111"
    assert cells["train J"] == "50" and cells["J/1k img"] == "0.5"
    header, _ = tables.section_cells([rows["old"]])  # measured nothing: no such columns
    assert not set(tables.WHEN_PRESENT) & set(header)
    assert "onnx: parity failed" in cells["note"]


def test_report_pareto_by_latency_on_the_command_line(run_cli, tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in TIMED))
    result = run_cli("report", path, "--pareto-by", "latency", "--format", "markdown")
    assert result.code == 0, result
    assert "latency ms" in result.out and "infer img/s" in result.out
    assert "faster to answer one image" in result.out
    lines = [line.strip().strip("|") for line in result.out.splitlines() if line.startswith("|")]
    header, *body = ([c.strip() for c in line.split("|")] for line in lines)
    marks = {cells[0]: cells[header.index("pareto")] for cells in body if cells[0] != ":---"}
    assert {name for name, mark in marks.items() if mark == "*"} == {"big", "small"}
    with pytest.raises(SystemExit) as refused:  # argparse: the choices, exit 2
        run_cli("report", path, "--pareto-by", "size")
    assert refused.value.code == 2


def test_the_plot_has_a_panel_of_accuracy_against_latency(tmp_path):
    pytest.importorskip("matplotlib")
    from tlbench.plot import LATENCY_AXIS, TRAIN_AXIS, frontier, plot_comparison

    rows = report.summarize(TIMED)
    assert frontier(rows, LATENCY_AXIS) == [(2.0, 0.85), (40.0, 0.95)]
    assert frontier(rows, TRAIN_AXIS) == [(1.0, 0.99)]
    path = plot_comparison(rows, TIMED, tmp_path / "latency.png")
    assert path.read_bytes().startswith(PNG)


def test_the_html_page_and_table_say_which_cost_the_pareto_marks_weighed(run_cli, tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in TIMED))
    page = tmp_path / "page.html"
    result = run_cli("report", path, "--pareto-by", "latency", "--html", page, "--format", "html")
    assert result.code == 0, result
    for text in (page.read_text(encoding="utf-8"), result.out):
        assert "faster to answer one image" in text and "cheaper to train" not in text
