"""The tables' column choice and cell escaping in the cases the mutation run found unchecked.

Each test states the right answer for a few columns or cells; results/mutation.md
lists the mutants they were written for.
"""

from __future__ import annotations

import csv
import html
import io
import json

import pytest

from tlbench import tables
from tlbench.ranking import RankingCheck
from tlbench.report import Row

KNOWN = (
    "px, top-1 %, n, best ep, train s, img/s, peak MB, latency ms, infer img/s, train J, "
    "J/1k img, trainable / total, vs scratch, pareto, tie, note"
)


@pytest.fixture
def no_extra_columns(monkeypatch):
    monkeypatch.setattr(tables, "EXTRA_COLUMNS", {})


def flops(row) -> str:
    return "1"


def test_an_added_column_keeps_its_name_cell_and_alignment_right_unless_asked(no_extra_columns):
    tables.add_column("flops", flops)
    assert tables.EXTRA_COLUMNS["flops"] == tables.ExtraColumn("flops", flops, False, "right")
    tables.add_column("flops", flops, default=True, align="left")  # added again: replaced
    assert tables.EXTRA_COLUMNS["flops"] == tables.ExtraColumn("flops", flops, True, "left")
    with pytest.raises(ValueError) as raised:
        tables.add_column("top-1 %", flops)
    assert str(raised.value) == "column 'top-1 %' exists already"


def test_columns_asked_for_skip_the_names_and_keep_the_rest_in_order():
    assert tables.check_columns(["backbone", " tie ", "strategy", "n"]) == ["tie", "n"]


@pytest.mark.parametrize(
    ("wanted", "message"),
    [
        ("top1", f"unknown column 'top1' (did you mean 'top-1 %'?); choose from {KNOWN}"),
        ("zzzz", f"unknown column 'zzzz'; choose from {KNOWN}"),
    ],
)
def test_an_unknown_column_names_the_close_match_if_any_and_every_choice(wanted, message):
    with pytest.raises(ValueError) as raised:
        tables.check_columns([wanted])
    assert str(raised.value) == message


def test_a_name_with_line_breaks_is_one_line_and_markdown_cells_are_escaped():
    assert tables._safe("a\nb|<c>", "markdown") == "a b\\|&lt;c&gt;"
    assert tables._safe("a\r\nb|<c>", "latex") == "a b|<c>"  # tabulate escapes latex itself


# --------------------------------------------------------------------------- render


def _rows() -> list[Row]:
    return [
        Row("flowers", "resnet18", "linear", "ok", n=2, accuracy=0.85, accuracy_std=0.012,
            train_seconds=0.5, reason="one seed failed: out of memory",
            seed_accuracy={1: 0.86, 0: 0.84}),
        Row("flowers", "vit_b16", "finetune", "ok", n=1, accuracy=0.9, train_seconds=12.0,
            reason="ok"),
    ]  # fmt: skip


CHECK = RankingCheck("flowers", "params", 0.5, 0.01, 2)


def test_the_plain_table_aligns_names_and_notes_left_and_figures_right_as_formatted():
    text = tables.render(_rows(), "table", group_by="none")
    heading, header, _, first, second, blank, legend = text.split("\n")[:7]
    assert (heading, blank, legend) == ("all runs", "", tables.legend())
    assert text.endswith(tables.legend() + "\n") and not text.endswith("\n\n")
    assert header.split()[:4] == ["dataset", "backbone", "strategy", "top-1"]
    # Names and notes start in one column; figures end in one, as formatted ("0.50").
    assert first.index("linear") == second.index("finetune")
    assert first.index("one seed failed") == second.index("ok")
    assert first.index("85.0 ± 1.2") + len("85.0 ± 1.2") == second.index("90.0") + len("90.0")
    assert first.index("0.50") + len("0.50") == second.index("12.0") + len("12.0")


def test_markdown_sections_are_headed_by_the_grouping_escaped_and_checks_follow_the_legend():
    text = tables.render(_rows(), "markdown", group_by="backbone", checks=[CHECK])
    assert "### backbone: resnet18\n\n| dataset " in text
    assert "### backbone: vit_b16\n\n| dataset " in text
    checks = "\n\n### ranking check: flowers: 2 backbones, against finetune\n\n| ranked by "
    assert tables.legend() + checks in text
    assert text.endswith("the backbone the ranking puts first.\n")
    piped = _rows()[:1]
    piped[0].dataset = "a|b"
    assert tables.render(piped, "markdown").startswith("### dataset: a\\|b\n\n")


def test_html_ends_with_the_legend_as_a_paragraph():
    text = tables.render(_rows(), "html")
    assert text.endswith("<p>" + html.escape(tables.legend()) + "</p>\n")


def test_json_is_indented_by_two_with_or_without_checks():
    rows = tables.render(_rows(), "json")
    assert rows.startswith('[\n  {\n    "dataset": "flowers",\n')
    assert json.loads(rows)[0]["seed_accuracy"] == {"1": 0.86, "0": 0.84}
    both = tables.render(_rows(), "json", checks=[CHECK])
    assert both.startswith('{\n  "rows": [\n    {\n      "dataset": "flowers",\n')
    assert json.loads(both)["ranking_checks"][0]["rank_by"] == "params"


def test_csv_lines_end_in_newlines_and_a_dict_cell_is_json_with_sorted_keys():
    text = tables.render(_rows(), "csv")
    assert "\r" not in text and text.count("\n") == 3
    first = next(csv.DictReader(io.StringIO(text)))
    assert first["seed_accuracy"] == '{"0": 0.84, "1": 0.86}'


def test_an_unknown_format_lists_the_formats():
    with pytest.raises(ValueError) as raised:
        tables.render(_rows(), "xml")
    assert str(raised.value) == "unknown format 'xml'; choose one of " + ", ".join(
        ["table", "markdown", "csv", "json", "html", "latex"]
    )


def test_the_default_and_the_wide_columns_of_a_section_by_dataset(no_extra_columns):
    names = ["backbone", "strategy"]
    assert tables.choose_columns(_rows()) == [
        *names, "top-1 %", "n", "train s", "vs scratch", "pareto", "tie", "note"
    ]  # fmt: skip
    assert tables.choose_columns(_rows(), wide=True) == [
        *names, "px", "top-1 %", "n", "best ep", "train s", "img/s", "peak MB", "latency ms",
        "infer img/s", "train J", "J/1k img", "trainable / total", "vs scratch", "pareto",
        "tie", "note",
    ]  # fmt: skip


def seven(row) -> str:
    return "7"


def test_a_measured_latency_joins_the_default_columns_first_among_those_shown_if_present(
    no_extra_columns,
):
    rows = _rows()
    rows[1].latency_ms = 3.2
    tables.add_column("flops", seven, default=True)
    assert tables.choose_columns(rows) == [
        "backbone", "strategy", "top-1 %", "n", "train s", "vs scratch", "latency ms", "flops",
        "pareto", "tie", "note",
    ]  # fmt: skip
    assert tables.choose_columns(rows, "none") == [
        "dataset", "backbone", "strategy", "top-1 %", "n", "train s", "vs scratch",
        "latency ms", "flops", "pareto", "tie", "note",
    ]  # fmt: skip


def test_a_rows_cells_by_column_name_are_blank_where_it_has_no_value(no_extra_columns):
    row = _rows()[0]
    assert tables.cells_of(row, ["backbone", "px", "top-1 %", "unknown"]) == [
        "resnet18",
        "",
        "85.0 ± 1.2",
        "",
    ]
    row.image_size = 224
    assert tables.cells_of(row, ["px", "dataset", "strategy"], "backbone") == [
        "224",
        "flowers",
        "linear",
    ]


def test_the_terminal_table_of_a_section_is_its_default_columns_and_their_cells(
    no_extra_columns,
):
    names, cells = tables.terminal_cells(_rows())
    assert names == ["backbone", "strategy", "top-1 %", "n", "train s", "vs scratch", "pareto",
                     "tie", "note"]  # fmt: skip
    assert cells[1] == ["vit_b16", "finetune", "90.0", "1", "12.0", "", "", "", "ok"]
    names, cells = tables.terminal_cells(_rows(), "none", ["n"])
    assert (names, cells[0]) == (["dataset", "backbone", "strategy", "n"],
                                 ["flowers", "resnet18", "linear", "2"])  # fmt: skip


@pytest.mark.parametrize(
    ("ms", "cell"),
    [(9.999, "10.00"), (10.0, "10.0"), (10.5, "10.5"), (99.94, "99.9"), (100.0, "100"),
     (100.7, "101"), (1234.5, "1,234"), (None, "")],
)  # fmt: skip
def test_milliseconds_keep_two_decimals_under_10_one_under_100_and_none_above(ms, cell):
    assert tables._milliseconds(ms) == cell


def test_a_sections_cells_by_dataset_leave_out_the_dataset_and_empty_inference_columns():
    header, cells = tables.section_cells(_rows())
    assert header[:3] == ["backbone", "strategy", "top-1 %"]
    assert "latency ms" not in header and len(cells[0]) == len(header)
