"""`tlbench report --plot` with data budgets: accuracy against budget, per backbone x strategy.

Hand-made records on two datasets. On flowers (12 classes, 720 training
images: 60 per class) `b` is probed at 1 and 5 shots and on the whole split
with three seeds, and fine-tuned at 5 shots and on the whole split with one
seed; pets has no budgets. The test works out each line's points (x, mean,
95% interval) from the records and compares them with `budget_lines` and with
what the figure draws.
"""

from __future__ import annotations

import math

import pytest

from tlbench import report, stats
from tlbench.plot import FRACTION_AXIS, SHOTS_AXIS, budget_lines

PNG = b"\x89PNG\r\n\x1a\n"
T_975_2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG image, from its header chunk."""
    assert data.startswith(PNG)
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def rec(strategy, seed, acc, budget=None, *, dataset="imagefolder:/data/flowers", classes=12):
    config = {
        "backbone": "b",
        "dataset": dataset,
        "dataset_fingerprint": "fp-" + dataset,
        "strategy": strategy,
        "seed": seed,
        "image_size": 32,
        "hyperparameters": {"epochs": 2},
    }
    data = {"num_classes": classes, "train_images": 60 * classes, "eval_images": 200}
    if budget is not None:
        config["budget"] = budget
        kind, _, value = budget.partition("=")
        taken = int(value) * classes if kind == "shots" else round(float(value) * 60) * classes
        data.update(budget=budget, budget_images=taken, train_images=taken)
    return {
        "schema": 2,
        "key": f"{dataset}/{strategy}/{budget}/{seed}",
        "status": "ok",
        "config": config,
        "accuracy": {
            "final": acc,
            "best": acc,
            "best_epoch": 2,
            "curve": [{"epoch": 1, "eval_accuracy": acc - 0.1}, {"epoch": 2, "eval_accuracy": acc}],
        },
        "cost": {"train_seconds": 1.0 + seed, "feature_seconds": 0.0},
        "data": data,
    }


RECORDS = [
    *(rec("linear", s, a, "shots=1") for s, a in enumerate([0.40, 0.50, 0.60])),
    *(rec("linear", s, a, "shots=5") for s, a in enumerate([0.70, 0.80, 0.75])),
    *(rec("linear", s, 0.90) for s in range(3)),
    rec("finetune", 0, 0.85, "shots=5"),
    rec("finetune", 0, 0.95),
    rec("linear", 0, 0.70, dataset="imagefolder:/data/pets", classes=3),
]


def flowers_rows():
    return [r for r in report.summarize(RECORDS) if r.dataset.endswith("flowers")]


def test_the_lines_hold_each_budgets_mean_and_interval():
    axis, lines = budget_lines(flowers_rows())
    assert axis == SHOTS_AXIS
    assert set(lines) == {"b / linear", "b / finetune"}
    linear = lines["b / linear"]
    # x: 1 and 5 shots, then the whole split at 720 / 12 = 60 images per class.
    assert [p.x for p in linear] == [1.0, 5.0, 60.0]
    assert [p.budget for p in linear] == ["shots=1", "shots=5", None]
    assert [p.n for p in linear] == [3, 3, 3]
    # means: (0.4 + 0.5 + 0.6) / 3, (0.7 + 0.8 + 0.75) / 3, 0.9
    assert [p.accuracy for p in linear] == pytest.approx([0.5, 0.75, 0.9])
    # t intervals over the 3 seeds: std 0.1 and 0.05, half width t * std / sqrt(3).
    half = [T_975_2 * 0.1 / math.sqrt(3), T_975_2 * 0.05 / math.sqrt(3), 0.0]
    assert [p.low for p in linear] == pytest.approx([0.5 - half[0], 0.75 - half[1], 0.9])
    assert [p.high for p in linear] == pytest.approx([0.5 + half[0], 0.75 + half[1], 0.9])
    finetune = lines["b / finetune"]
    assert [(p.x, p.n) for p in finetune] == [(5.0, 1), (60.0, 1)]
    assert [p.accuracy for p in finetune] == pytest.approx([0.85, 0.95])
    # One seed: the bootstrap over the 200 evaluation images (170 right at 5 shots).
    expected = stats.bootstrap_interval([1] * 170 + [0] * 30)
    assert (finetune[0].low, finetune[0].high) == pytest.approx((expected.lower, expected.upper))
    assert finetune[0].low < 0.85 < finetune[0].high


def test_a_dataset_without_budgets_has_no_budget_lines():
    pets = [r for r in report.summarize(RECORDS) if r.dataset.endswith("pets")]
    assert len(pets) == 1 and budget_lines(pets) is None


def test_fractions_are_their_own_axis_and_the_whole_split_is_one():
    records = [
        rec("linear", 0, 0.6, "fraction=0.25"),
        rec("linear", 1, 0.7, "fraction=0.25"),
        rec("linear", 0, 0.9),
    ]
    axis, lines = budget_lines(report.summarize(records))
    assert axis == FRACTION_AXIS
    (points,) = lines.values()
    assert [p.x for p in points] == [0.25, 1.0]
    assert [p.accuracy for p in points] == pytest.approx([0.65, 0.9])


def test_other_settings_that_differ_make_lines_of_their_own():
    records = [rec("linear", 0, 0.5, "shots=1"), rec("linear", 0, 0.8)]
    longer = [rec("linear", 0, 0.6, "shots=1"), rec("linear", 0, 0.85)]
    for r in longer:
        r["config"]["hyperparameters"] = {"epochs": 9}
        r["key"] += "/long"
    _, lines = budget_lines(report.summarize(records + longer))
    # One seed each: the means are the accuracies themselves.
    assert {k: [p.accuracy for p in v] for k, v in lines.items()} == {
        "b / linear (epochs=2)": [0.5, 0.8],
        "b / linear (epochs=9)": [0.6, 0.85],
    }


def test_the_table_names_budgets_as_people_write_them():
    variants = {r.variant for r in flowers_rows() if r.strategy == "linear"}
    assert variants == {"budget=1-shot", "budget=5-shot", "budget=all"}


def test_the_figure_draws_the_budget_lines_with_their_intervals(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from tlbench.plot import _draw_budgets, _styles, plot_comparison

    rows = report.summarize(RECORDS)
    path = plot_comparison(rows, RECORDS, tmp_path / "budget.png")
    # A third column of panels (7 inches at 110 dpi each) for the budgets.
    assert png_size(path.read_bytes()) == (3 * 7 * 110, 2 * round(5.2 * 110))

    flowers = flowers_rows()
    axis, lines = budget_lines(flowers)
    ax = Figure().subplots()
    _draw_budgets(ax, "flowers", axis, lines, flowers, *_styles(flowers))
    drawn = {}
    for container in ax.containers:
        line = container.lines[0]
        drawn[container.get_label()] = (list(line.get_xdata()), list(line.get_ydata()))
    assert drawn["b / linear"] == ([1.0, 5.0, 60.0], pytest.approx([50.0, 75.0, 90.0]))
    assert drawn["b / finetune"] == ([5.0, 60.0], pytest.approx([85.0, 95.0]))
    assert ax.get_xscale() == "log" and "images per class" in ax.get_xlabel()
    # The error bar of the 1-shot point spans the t interval, in percent.
    bars = ax.containers[0].lines[2][0].get_segments()
    (x0, low), (_, high) = bars[0]
    half = 100 * T_975_2 * 0.1 / math.sqrt(3)
    assert (x0, low, high) == pytest.approx((1.0, 50.0 - half, 50.0 + half))


def test_a_figure_without_budgets_keeps_its_two_panels(tmp_path):
    pytest.importorskip("matplotlib")
    from tlbench.plot import plot_comparison

    pets = [RECORDS[-1]]
    path = plot_comparison(report.summarize(pets), pets, tmp_path / "plain.png")
    assert png_size(path.read_bytes()) == (2 * 7 * 110, round(5.2 * 110))
