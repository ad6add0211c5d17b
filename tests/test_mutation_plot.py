"""What the `--plot` figure draws, computed without drawing: the mean learning curve, the
Pareto staircase, the budget lines and the sensitivity points, exactly.

Written for shard 2 of the mutation run (results/mutation.md): the figure tests draw
whole figures from a few records and check that a file was written, so the records
each function must leave out, and the points it keeps, are pinned here one by one.
Every expected value is worked out by hand from the rows and records below.
"""

from __future__ import annotations

import math

import pytest

from tlbench import plot
from tlbench.plot import FRACTION_AXIS, LATENCY_AXIS, SHOTS_AXIS, BudgetPoint, Trial
from tlbench.report import Row


def _row(backbone: str = "b", strategy: str = "linear", **fields) -> Row:
    return Row(
        dataset="d",
        backbone=backbone,
        strategy=strategy,
        status=fields.pop("status", "ok"),
        **fields,
    )


# --------------------------------------------------------------------------- learning curves


def _curve(*accuracies, status: str = "ok") -> dict:
    points = [{"epoch": e, "eval_accuracy": a} for e, a in enumerate(accuracies, 1)]
    return {"status": status, "accuracy": {"curve": points}}


def test_the_mean_curve_averages_the_ok_runs_up_to_the_shortest():
    records = [
        _curve(0.9, 0.9, 0.9, status="failed"),  # a record the report warned about, first
        _curve(0.2, 0.4, 0.6),
        _curve(0.4, 0.6),
        _curve(0.1, None, 0.3),  # a curve with a hole is not drawn
        _curve(0.1, True),  # nor one with a flag where a number should be
        _curve(0.1, math.nan),
        _curve(),  # nor an empty one
        {"status": "ok", "accuracy": {"curve": [0.5, 0.5]}},  # nor points that are not dicts
        {"status": "ok", "accuracy": {"curve": {"1": 0.5}}},
        {"status": "ok", "accuracy": None},
        {"status": "ok"},
        _curve(0.3, 0.5, 0.7, 0.9),
    ]
    # epochs 1 and 2 over the three drawn curves: (0.2 + 0.4 + 0.3) / 3, (0.4 + 0.6 + 0.5) / 3
    assert plot.mean_curve(records) == pytest.approx([0.3, 0.5])


def test_no_curve_to_draw_gives_an_empty_mean():
    assert plot.mean_curve([]) == []
    assert plot.mean_curve([_curve(0.5, status="failed"), _curve()]) == []


@pytest.mark.parametrize(
    ("value", "finite"),
    [
        (1, True),
        (0.25, True),
        (0, True),
        (True, False),
        (False, False),
        (math.nan, False),
        (math.inf, False),
        (-math.inf, False),
        ("0.5", False),
        (None, False),
    ],
)
def test_a_plotted_value_is_a_finite_number_and_not_a_flag(value, finite):
    assert plot._finite(value) is finite


# --------------------------------------------------------------------------- the staircase


@pytest.mark.parametrize(("seconds", "x"), [(None, 1e-3), (0.0, 1e-3), (1e-4, 1e-3), (2.5, 2.5)])
def test_a_row_sits_at_its_training_seconds_and_no_nearer_0_than_a_millisecond(seconds, x):
    # on a log axis a row that took no time still needs a place
    assert plot._train_x(_row(train_seconds=seconds)) == x


def test_the_frontier_keeps_each_row_more_accurate_than_every_cheaper_one():
    rows = [
        _row("a", train_seconds=10.0, accuracy=0.5),
        _row("b", train_seconds=10.0, accuracy=0.7),  # as cheap as a and more accurate
        _row("c", train_seconds=5.0, accuracy=0.4),
        _row("d", train_seconds=20.0, accuracy=0.7),  # dearer than b and no better
        _row("e", train_seconds=30.0, accuracy=0.9),
        _row("f", train_seconds=1.0, status="failed"),
        _row("g", train_seconds=None, accuracy=0.3),  # at the axis's least, 1 ms
    ]
    assert plot.frontier(rows) == [(1e-3, 0.3), (5.0, 0.4), (10.0, 0.7), (30.0, 0.9)]


def test_the_latency_frontier_leaves_out_rows_whose_latency_was_not_measured():
    rows = [
        _row("a", latency_ms=4.0, accuracy=0.8, train_seconds=1.0),
        _row("b", latency_ms=None, accuracy=0.95, train_seconds=1.0),
        _row("c", latency_ms=2.0, accuracy=0.6, train_seconds=50.0),
        _row("d", latency_ms=3.0, accuracy=0.5),
    ]
    assert plot.frontier(rows, LATENCY_AXIS) == [(2.0, 0.6), (4.0, 0.8)]
    assert plot.frontier([]) == []


# --------------------------------------------------------------------------- budget lines


def test_budget_lines_place_each_row_at_its_images_per_class():
    rows = [
        _row(budget="fraction=0.5", accuracy=0.7, n=2, images_per_class=20.0),
        _row(budget="shots=5", accuracy=0.5, ci_low=0.4, ci_high=0.6, n=3),
        _row(budget="shots=1", accuracy=0.3, n=2, images_per_class=7.0),
        _row(budget=None, accuracy=0.8, n=1, images_per_class=40.0),
        # the whole split, its records silent on images per class: not placed
        _row(series="lr=0.1", budget=None, accuracy=0.75, n=1),
        _row("vit", "finetune", series="lr=0.1", budget="shots=5", accuracy=0.6, n=1),
        _row("vit", "finetune", budget="shots=10", status="failed", n=1),
    ]
    assert plot.budget_lines(rows) == (
        SHOTS_AXIS,
        {
            "b / linear": [
                BudgetPoint(1.0, 0.3, None, None, "shots=1", 2),
                BudgetPoint(5.0, 0.5, 0.4, 0.6, "shots=5", 3),
                BudgetPoint(20.0, 0.7, None, None, "fraction=0.5", 2),
                BudgetPoint(40.0, 0.8, None, None, None, 1),
            ],
            "vit / finetune (lr=0.1)": [BudgetPoint(5.0, 0.6, None, None, "shots=5", 1)],
        },
    )


def test_budget_lines_on_fractions_put_the_whole_split_at_1():
    rows = [
        _row(budget=None, accuracy=0.9, n=1, images_per_class=60.0),
        _row(budget="fraction=0.5", accuracy=0.8, n=1, images_per_class=30.0),
        _row(budget="fraction=0.25", accuracy=0.6, n=1, images_per_class=15.0),
    ]
    assert plot.budget_lines(rows) == (
        FRACTION_AXIS,
        {
            "b / linear": [
                BudgetPoint(0.25, 0.6, None, None, "fraction=0.25", 1),
                BudgetPoint(0.5, 0.8, None, None, "fraction=0.5", 1),
                BudgetPoint(1.0, 0.9, None, None, None, 1),
            ]
        },
    )


def test_one_row_on_shots_puts_the_whole_figure_on_the_shots_axis():
    rows = [
        _row(budget="fraction=0.5", accuracy=0.8, n=1, images_per_class=30.0),
        _row(budget="shots=4", accuracy=0.6, n=1),
    ]
    axis, lines = plot.budget_lines(rows)
    assert axis == SHOTS_AXIS
    assert [p.x for p in lines["b / linear"]] == [4.0, 30.0]


def test_no_budget_lines_when_no_row_with_a_result_has_a_budget():
    rows = [_row(budget="shots=5", status="failed"), _row(budget=None, accuracy=0.5)]
    assert plot.budget_lines(rows) is None
    assert plot.budget_lines([]) is None


# --------------------------------------------------------------------------- sensitivity


def _run(backbone, hyperparameters, *, final=0.5, holdout=True, status="ok", **config):
    return {
        "status": status,
        "config": {
            "dataset": "d",
            "backbone": backbone,
            "strategy": "linear",
            "holdout": holdout,
            "hyperparameters": hyperparameters,
            **config,
        },
        "accuracy": {"final": final},
    }


def _chosen(backbone, hyperparameters, chosen):
    record = _run(backbone, hyperparameters, holdout=False)
    record["tuning"] = {"chosen": chosen}
    return record


def test_sensitivity_has_a_point_per_searched_setting_of_each_full_length_trial():
    records = [
        {"status": "failed"},  # no config, no tuning
        _run("b", {"epochs": 3, "lr": 0.1, "weight_decay": 1e-4, "optimizer": "adam"}, final=0.6),
        _chosen(
            "b", {"epochs": 3, "lr": 0.01, "weight_decay": 0.0}, {"lr": 0.01, "weight_decay": 0}
        ),
        _chosen("b", {"epochs": 3}, None),  # a run without a choice changes nothing
        _run("b", {"epochs": 3, "lr": 0.5, "weight_decay": 0.1}, stop_epoch=1),  # a short rung
        _run("b", {"epochs": 1, "lr": 0.5, "weight_decay": 0.1}),  # another schedule
        _run("b", {"epochs": 3, "lr": 0.5, "weight_decay": 0.1}, status="failed"),
        _run("b", {"epochs": 3, "lr": 0.5, "weight_decay": 0.1}, final=None),
        _run("b", {"epochs": 3, "lr": 0.5, "weight_decay": 0.1}, final=True),
        _run("b", {"epochs": 3, "lr": 0.5, "weight_decay": 0.1}, holdout=False),  # the final run
        _run("b", {"epochs": 3, "lr": 0.001, "weight_decay": "x"}, final=0.7, stop_epoch=3),
        # backbone c's row was not tuned: its trials are not drawn
        _chosen("c", {"epochs": 3, "lr": 0.01}, {"lr": 0.01}),
        _run("c", {"epochs": 3, "lr": 0.2}, final=0.4),
        _run("b", {"epochs": 3, "lr": 1, "weight_decay": 0.5}, final=1),
    ]
    rows = [
        _row("b", accuracy=0.7, search_seconds=12.0),
        _row("c", accuracy=0.5, search_seconds=None),
    ]
    assert plot.sensitivity(records, rows) == {
        "lr": [
            Trial("b", "linear", 0.1, 0.6),
            Trial("b", "linear", 0.001, 0.7),
            Trial("b", "linear", 1.0, 1.0),
        ],
        "weight_decay": [Trial("b", "linear", 1e-4, 0.6), Trial("b", "linear", 0.5, 1.0)],
    }


def test_no_sensitivity_without_a_tuned_row():
    records = [
        _chosen("b", {"epochs": 3, "lr": 0.01}, {"lr": 0.01}),
        _run("b", {"epochs": 3, "lr": 0.1}),
    ]
    assert plot.sensitivity(records, [_row("b", accuracy=0.5)]) == {}
    assert plot.sensitivity(records[1:], [_row("b", accuracy=0.5, search_seconds=3.0)]) == {}
