"""The `--html` page's table, interval bars, scale and environment, exactly.

Written for the mutants shard 2 of the mutation run (results/mutation.md) left alive in
`tlbench.htmlreport`: the page tests read the hand-worked cells and marks, but not where
each interval bar is drawn, the section's scale, the class of every cell, or how the
environment table counts and orders what the records hold. The expected strings are
worked out by hand from the rows below.
"""

from __future__ import annotations

import pytest

from tlbench import htmlreport
from tlbench.report import Row


def _row(**fields) -> Row:
    return Row(dataset="flowers", status=fields.pop("status", "ok"), **fields)


# --------------------------------------------------------------------------- interval bars


def test_the_interval_bar_puts_the_band_and_the_mean_on_the_sections_scale():
    row = _row(backbone="b", strategy="s", accuracy=0.8, ci_low=0.7, ci_high=0.9)
    # On [0.5, 1.0] a value v sits at 200 (v - 0.5) %: 0.7 at 40, 0.9 at 80, 0.8 at 60.
    assert htmlreport._interval_bar(row, 0.5, 1.0) == (
        '<span class="ci" aria-hidden="true">'
        '<span class="band" style="left:40.00%;width:40.00%"></span>'
        '<span class="mean" style="left:calc(60.00% - 1px)"></span></span>'
    )


def test_an_interval_past_the_scale_is_clipped_to_its_ends():
    row = _row(backbone="b", strategy="s", accuracy=0.6, ci_low=0.1, ci_high=1.2)
    assert htmlreport._interval_bar(row, 0.5, 1.0) == (
        '<span class="ci" aria-hidden="true">'
        '<span class="band" style="left:0.00%;width:100.00%"></span>'
        '<span class="mean" style="left:calc(20.00% - 1px)"></span></span>'
    )


@pytest.mark.parametrize(("ci_low", "ci_high"), [(None, None), (0.7, None), (None, 0.9)])
def test_a_row_without_both_ends_of_its_interval_draws_only_its_mean(ci_low, ci_high):
    row = _row(backbone="b", strategy="s", accuracy=0.75, ci_low=ci_low, ci_high=ci_high)
    assert htmlreport._interval_bar(row, 0.5, 1.0) == (
        '<span class="ci" aria-hidden="true">'
        '<span class="mean" style="left:calc(50.00% - 1px)"></span></span>'
    )


def test_no_bar_for_a_row_without_a_result_or_on_a_scale_of_no_width():
    done = _row(backbone="b", strategy="s", accuracy=0.75, ci_low=0.7, ci_high=0.8)
    assert htmlreport._interval_bar(done, 0.75, 0.75) == ""
    assert htmlreport._interval_bar(done, 0.8, 0.7) == ""
    failed = _row(backbone="b", strategy="s", status="failed", ci_low=0.7, ci_high=0.8)
    assert htmlreport._interval_bar(failed, 0.0, 1.0) == ""


# --------------------------------------------------------------------------- the scale


def test_the_scale_spans_the_means_and_intervals_padded_by_a_twentieth():
    group = [
        _row(backbone="a", strategy="s", accuracy=0.8, ci_low=0.7, ci_high=0.9),
        _row(backbone="b", strategy="s", accuracy=0.6),
        # a failed row's interval is not drawn, so it does not stretch the scale
        _row(backbone="c", strategy="s", status="failed", ci_low=0.1, ci_high=0.95),
    ]
    # 0.6 to 0.9, padded by 0.05 x 0.3 = 0.015 each side
    assert htmlreport._scale(group) == pytest.approx((0.585, 0.915))


def test_a_narrow_scale_is_padded_by_at_least_one_point():
    group = [_row(backbone="a", strategy="s", accuracy=0.5, ci_low=0.49, ci_high=0.51)]
    assert htmlreport._scale(group) == pytest.approx((0.48, 0.52))


def test_the_scale_stays_within_0_and_1_whatever_the_intervals_say():
    # A t interval over few seeds can reach past 0 or 1; the page draws accuracies.
    group = [
        _row(backbone="a", strategy="s", accuracy=0.97, ci_low=0.9, ci_high=1.04),
        _row(backbone="b", strategy="s", accuracy=0.85, ci_low=0.7, ci_high=1.0),
    ]
    # 0.7 to 1.0 (1.04 clipped), padded by 0.05 x 0.3 = 0.015 below and clipped above
    assert htmlreport._scale(group) == pytest.approx((0.685, 1.0))
    low = [_row(backbone="a", strategy="s", accuracy=0.004, ci_low=-0.02, ci_high=0.03)]
    # 0 (-0.02 clipped) to 0.03, padded by 0.01 (the least pad) and clipped below
    assert htmlreport._scale(low) == pytest.approx((0.0, 0.04))


def test_a_section_without_results_has_the_whole_scale():
    assert htmlreport._scale([]) == (0.0, 1.0)
    failed = _row(backbone="a", strategy="s", status="failed", reason="oom")
    assert htmlreport._scale([failed]) == (0.0, 1.0)


# --------------------------------------------------------------------------- the table

HEAD = (
    '<th class="name" scope="col">backbone</th><th class="name" scope="col">strategy</th>'
    '<th class="num" scope="col">top-1 %</th><th class="num" scope="col">n</th>'
    '<th class="num" scope="col">best ep</th><th class="num" scope="col">train s</th>'
    '<th class="num" scope="col">img/s</th><th class="num" scope="col">peak MB</th>'
    '<th class="num" scope="col">trainable / total</th>'
    '<th class="num" scope="col">vs scratch</th><th class="num" scope="col">pareto</th>'
    '<th class="num" scope="col">tie</th><th class="name" scope="col">note</th>'
)
PARETO = ' title="Pareto-optimal: no other row is more accurate and cheaper"'
TIE = ' title="cannot be told apart from the best row (95%)"'


def test_the_table_of_a_section_cell_by_cell():
    group = [
        _row(
            backbone="resnet18",
            strategy="linear",
            variant="epochs=5",
            n=3,
            accuracy=0.75,
            ci_low=0.5,
            ci_high=1.0,
            train_seconds=2.5,
            pareto=True,
            tie=False,
        ),
        _row(
            backbone="vit<b>",
            strategy="finetune",
            n=1,
            accuracy=0.2,
            ci_low=0.0,
            ci_high=0.4,
            pareto=True,
            tie=True,
        ),
        _row(backbone="vit<b>", strategy="linear", status="failed", reason="out of\nmemory"),
        _row(backbone="mlp", strategy="linear", n=2, accuracy=0.5, tie=True),
        _row(backbone="mlp", strategy="scratch", n=2, accuracy=0.25),
    ]
    # The means and intervals run from 0 to 1: the scale is [0, 1], a value v at 100 v %.
    rows = [
        '<tr class="pareto"><td class="name">resnet18</td>'
        '<td class="name">linear (epochs=5)</td>'
        '<td class="num">75.0 [50.0, 100.0]<span class="ci" aria-hidden="true">'
        '<span class="band" style="left:50.00%;width:50.00%"></span>'
        '<span class="mean" style="left:calc(75.00% - 1px)"></span></span></td>'
        '<td class="num">3</td><td class="num"></td><td class="num">2.50</td>'
        '<td class="num"></td><td class="num"></td><td class="num"> / </td>'
        f'<td class="num"></td><td class="mark pareto"{PARETO}>*</td>'
        '<td class="mark tie"></td><td class="note"></td></tr>',
        '<tr class="pareto tie"><td class="name">vit&lt;b&gt;</td>'
        '<td class="name">finetune</td>'
        '<td class="num">20.0 [0.0, 40.0]<span class="ci" aria-hidden="true">'
        '<span class="band" style="left:0.00%;width:40.00%"></span>'
        '<span class="mean" style="left:calc(20.00% - 1px)"></span></span></td>'
        '<td class="num">1</td><td class="num"></td><td class="num"></td>'
        '<td class="num"></td><td class="num"></td><td class="num"> / </td>'
        f'<td class="num"></td><td class="mark pareto"{PARETO}>*</td>'
        f'<td class="mark tie"{TIE}>=</td><td class="note"></td></tr>',
        '<tr class="no-result"><td class="name">vit&lt;b&gt;</td><td class="name">linear</td>'
        + '<td class="num"></td>' * 8
        + '<td class="mark pareto"></td><td class="mark tie"></td>'
        '<td class="note">failed: out of memory</td></tr>',
        '<tr class="tie"><td class="name">mlp</td><td class="name">linear</td>'
        '<td class="num">50.0<span class="ci" aria-hidden="true">'
        '<span class="mean" style="left:calc(50.00% - 1px)"></span></span></td>'
        '<td class="num">2</td><td class="num"></td><td class="num"></td>'
        '<td class="num"></td><td class="num"></td><td class="num"> / </td>'
        '<td class="num"></td><td class="mark pareto"></td>'
        f'<td class="mark tie"{TIE}>=</td><td class="note"></td></tr>',
        '<tr><td class="name">mlp</td><td class="name">scratch</td>'
        '<td class="num">25.0<span class="ci" aria-hidden="true">'
        '<span class="mean" style="left:calc(25.00% - 1px)"></span></span></td>'
        '<td class="num">2</td><td class="num"></td><td class="num"></td>'
        '<td class="num"></td><td class="num"></td><td class="num"> / </td>'
        '<td class="num"></td><td class="mark pareto"></td>'
        '<td class="mark tie"></td><td class="note"></td></tr>',
    ]
    assert htmlreport._table('flowers "12" & co', group, "dataset", 2) == (
        '<h3 id="section-2">dataset: flowers &quot;12&quot; &amp; co</h3>\n'
        '<div class="scroll"><table class="comparison" '
        'data-section="flowers &quot;12&quot; &amp; co">'
        f"<thead><tr>{HEAD}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody></table></div>"
    )


def test_a_table_not_grouped_is_headed_by_its_title_alone():
    group = [_row(backbone="mlp", strategy="scratch", n=1, accuracy=0.5)]
    page = htmlreport._table("all runs", group, "none", 0)
    assert page.startswith('<h3 id="section-0">all runs</h3>\n')
    # ungrouped, the dataset is a name column of its own
    assert '<th class="name" scope="col">dataset</th><th class="name" scope="col">backbone' in page


# --------------------------------------------------------------------------- environment


def test_the_environment_counts_each_value_most_common_first_then_by_name():
    records = [
        {
            "environment": {
                "tlbench": "0.1.0",
                "torch": "2.1",
                "python": "",
                "device_name": "zeta",
                "plugins": {"timm": "1.0", "hf": "0.2"},
            }
        },
        {"environment": {"tlbench": "0.1.0", "torch": "2.1", "cuda": None}},
        {"environment": {"tlbench": "0.2.0", "torch": "2.0", "cuda": "12.1", "git_sha": {}}},
        {"environment": {"device_name": "alpha"}},
        {"environment": {}},
        {"status": "failed"},
        {"environment": "cpu"},
    ]
    assert htmlreport.environment_summary(records) == (
        [
            ("tlbench", [("0.1.0", 2), ("0.2.0", 1)]),
            ("torch", [("2.1", 2), ("2.0", 1)]),
            ("device", [("alpha", 1), ("zeta", 1)]),
            ("CUDA", [("12.1", 1)]),
            ("plugins", [("hf 0.2, timm 1.0", 1)]),
        ],
        3,
    )


def test_records_without_an_environment_are_counted_apart():
    assert htmlreport.environment_summary([{}, {"environment": None}]) == ([], 2)
    assert htmlreport.environment_summary([]) == ([], 0)


def test_the_environment_table_names_each_field_once_beside_its_values():
    records = [
        {"environment": {"tlbench": "0.1.0", "torch": "2.1", "platform": "Linux<6>"}},
        {"environment": {"tlbench": "0.1.0", "torch": "2.0"}},
        {},
    ]
    assert htmlreport._environment(records) == (
        '<table class="environment"><thead><tr><th>field</th><th>value</th>'
        '<th class="num">runs</th></tr></thead><tbody>\n'
        '<tr><th scope="row" rowspan="1">tlbench</th><td class="value">0.1.0</td>'
        '<td class="num">2 runs</td></tr>\n'
        '<tr><th scope="row" rowspan="2">torch</th><td class="value">2.0</td>'
        '<td class="num">1 run</td></tr>\n'
        '<tr><td class="value">2.1</td><td class="num">1 run</td></tr>\n'
        '<tr><th scope="row" rowspan="1">platform</th><td class="value">Linux&lt;6&gt;</td>'
        '<td class="num">1 run</td></tr>\n'
        '</tbody></table><p class="note-text">1 record(s) hold no environment (written '
        "before it was recorded, or a run that stopped before it started).</p>"
    )


def test_the_environment_table_of_records_that_all_hold_one_has_no_note():
    records = [{"environment": {"python": "3.11.7"}}] * 3
    assert htmlreport._environment(records) == (
        '<table class="environment"><thead><tr><th>field</th><th>value</th>'
        '<th class="num">runs</th></tr></thead><tbody>\n'
        '<tr><th scope="row" rowspan="1">Python</th><td class="value">3.11.7</td>'
        '<td class="num">3 runs</td></tr>\n</tbody></table>'
    )


def test_records_without_any_environment_say_so_instead_of_an_empty_table():
    assert htmlreport._environment([{}, {"environment": {}}]) == (
        '<p class="note-text">The records hold no environment.</p>'
    )
