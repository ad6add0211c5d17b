"""The report's costs, orders and cells in the cases the mutation run found unchecked.

Each test builds the few rows or records it needs and states the right answer;
results/mutation.md lists the mutants they were written for.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from test_report_values import rec

from tlbench import report, stats, tables
from tlbench.record import encode_correct
from tlbench.report import Row

# --------------------------------------------------------------------------- feature cost

#: the fields that make cached features another run's: a different value is other features.
FEATURE_FIELDS = {
    "backbone": "resnet34",
    "weights": "IMAGENET1K_V2",
    "dataset": "pets",
    "image_size": 96,
    "device": "cuda",
    "precision": "bf16",
}


@pytest.mark.parametrize(("field", "other"), FEATURE_FIELDS.items())
def test_a_cache_hit_is_charged_only_the_extraction_of_the_same_features(field, other):
    # Seed 0 computes resnet18's features (6 s) and seed 1 reads them back (0.1 s): both
    # cost 6 + 1 s. A run whose features differ in one field read its own (0.1 s), which
    # no record says the cost of: it is charged what it spent, 0.1 + 1 s.
    miss = rec("resnet18", "linear", 0, 0.8, train=1.0, features=6.0, cache="none")
    hit = rec("resnet18", "linear", 1, 0.8, train=1.0, features=0.1, cache="disk")
    elsewhere = rec("resnet18", "linear", 2, 0.7, train=1.0, features=0.1, cache="disk")
    elsewhere["config"][field] = other
    elsewhere["key"] = f"other-{field}"
    rows = {tuple(r.run_keys): r for r in report.summarize([miss, hit, elsewhere])}
    assert rows[miss["key"], hit["key"]].train_seconds == pytest.approx(7.0)
    assert rows[("other-" + field,)].train_seconds == pytest.approx(1.1)


# --------------------------------------------------------------------------- sort orders


def names(rows: list[Row]) -> list[str]:
    return [r.backbone for r in rows]


def test_rows_on_the_newest_data_sort_by_accuracy_whenever_they_were_run():
    rows = [
        Row("d", "late", "linear", "ok", accuracy=0.6, data="fp1", last_run="2026-03-01T00:00:00"),
        Row("d", "early", "linear", "ok", accuracy=0.9, data="fp1", last_run="2026-01-01T00:00:00"),
    ]
    assert names(report.sort_rows(rows)) == ["early", "late"]


def test_sections_of_older_data_come_newest_first_after_the_newest_data():
    rows = [
        Row("d", "jan", "linear", "ok", accuracy=0.9, data="aaa", older_data=True,
            last_run="2026-01-15T10:00:00"),
        Row("d", "mar", "linear", "ok", accuracy=0.5, data="bbb", older_data=True,
            last_run="2026-03-15T10:00:00"),
        Row("d", "now", "linear", "ok", accuracy=0.1, data="ccc", last_run="2026-04-01T00:00:00"),
    ]  # fmt: skip
    assert names(report.sort_rows(rows)) == ["now", "mar", "jan"]


def test_a_row_at_zero_accuracy_sorts_after_every_other_result_and_before_failures():
    rows = [
        Row("d", "zero", "linear", "ok", accuracy=0.0, train_seconds=1.0),
        Row("d", "failed", "linear", "failed"),
        Row("d", "some", "linear", "ok", accuracy=0.4, train_seconds=9.0),
    ]
    assert names(report.sort_rows(rows)) == ["some", "zero", "failed"]


@pytest.mark.parametrize(("slow", "fast"), [(3.0, 2.0), (0.4, 0.0)])
def test_equally_accurate_rows_sort_the_cheaper_first(slow, fast):
    rows = [
        Row("d", "slow", "linear", "ok", accuracy=0.5, train_seconds=slow),
        Row("d", "fast", "linear", "ok", accuracy=0.5, train_seconds=fast),
    ]
    assert names(report.sort_rows(rows)) == ["fast", "slow"]


@pytest.mark.parametrize(
    ("key", "field", "values", "expected"),
    [
        ("time", "train_seconds", [0.4, 0.0], ["b", "a"]),
        ("memory", "peak_memory_mb", [0.4, 0.0], ["b", "a"]),
        # a probe that trains nothing (nearest centroid) has 0 trainable parameters
        ("params", "trainable_params", [1, 0], ["b", "a"]),
        # no gain over scratch ranks below a gain and above a loss; unknown gains go last
        ("gain", "gain_over_scratch", [0.0, -0.05, None, 0.05], ["d", "a", "b", "c"]),
    ],
)
def test_a_zero_sorts_as_zero(key, field, values, expected):
    rows = [
        Row("d", name, "linear", "ok", accuracy=0.5, **{field: value})
        for name, value in zip("abcd", values, strict=False)
    ]
    assert names(report.sort_rows(rows, key)) == expected


def test_a_bad_sort_or_group_key_lists_the_valid_ones():
    with pytest.raises(ValueError) as info:
        report.sort_rows([], "speed")
    assert str(info.value) == (
        "--sort must be one of accuracy, time, backbone, strategy, memory, params, gain"
    )
    with pytest.raises(ValueError) as info:
        report.group_rows([], "colour")
    assert str(info.value) == "--group-by must be one of dataset, backbone, strategy, none"


# --------------------------------------------------------------------------- cells


def test_grouped_by_backbone_the_dataset_column_shows_its_short_name():
    row = Row("imagefolder:/home/me/data/flowers12", "resnet18", "linear", "ok", n=1,
              accuracy=0.5, dataset_name="imagefolder:flowers12")  # fmt: skip
    assert tables.row_cells(row, "backbone")[:3] == ["imagefolder:flowers12", "linear", "50.0"]


def test_ungrouped_the_variant_follows_the_strategy_and_the_backbone_stays():
    row = Row("d", "resnet18", "finetune", "ok", n=1, accuracy=0.5, variant="epochs=5")
    assert tables.columns("none")[:3] == ["dataset", "backbone", "strategy"]
    assert tables.row_cells(row, "none")[:3] == ["d", "resnet18", "finetune (epochs=5)"]


def test_a_row_without_a_best_epoch_shows_it_empty_and_notes_are_joined():
    row = Row("d", "b", "linear", "ok", n=1, accuracy=0.5, features_cached=True,
              reason="1 of 2 seeds failed")  # fmt: skip
    cells = dict(zip(tables.COLUMNS, tables.row_cells(row), strict=True))
    assert cells["best ep"] == ""
    assert cells["note"] == "features cached; 1 of 2 seeds failed"


def test_runs_that_computed_their_own_features_are_charged_what_each_spent():
    # --no-cache: both seeds extract (6 s and 4 s); the finetune run of the same backbone,
    # data, size, device and precision extracts nothing and is charged only its training.
    seed0 = rec("resnet18", "linear", 0, 0.8, train=1.0, features=6.0, cache="none")
    seed1 = rec("resnet18", "linear", 1, 0.8, train=1.0, features=4.0, cache="none")
    finetune = rec("resnet18", "finetune", 0, 0.9, train=30.0)
    finetune["config"]["weights"] = seed0["config"]["weights"]
    rows = {r.strategy: r for r in report.summarize([seed0, seed1, finetune])}
    assert rows["linear"].train_seconds == pytest.approx((7.0 + 5.0) / 2)
    assert rows["finetune"].train_seconds == pytest.approx(30.0)


def test_a_record_without_a_cost_is_still_reported_and_a_missing_time_adds_nothing():
    bare = rec("resnet18", "linear", 0, 0.8)
    del bare["cost"]  # a record from another tool or an older tlbench
    features_only = rec("vit", "linear", 0, 0.7)
    features_only["cost"] = {"feature_seconds": 2.0}  # a probe that does not train
    with pytest.warns(RuntimeWarning, match="no cost"):
        rows = {r.backbone: r for r in report.summarize([bare, features_only])}
    assert rows["resnet18"].accuracy == pytest.approx(0.8)
    assert rows["vit"].train_seconds == pytest.approx(2.0)


def test_an_oom_retry_or_new_data_does_not_make_a_run_a_variant_of_its_own_config():
    # Seed 1 retried at batch 16 after running out of memory: what it used is an outcome.
    seed0 = rec("resnet18", "finetune", 0, 0.8)
    seed1 = rec("resnet18", "finetune", 1, 0.9)
    seed1["config"]["hyperparameters_used"] = {"epochs": 3, "lr": 0.001, "batch_size": 16}
    (row,) = report.summarize([seed0, seed1])
    assert (row.n, row.variant) == (2, "")
    # The same config on grown data: shown apart as older data, never as a variant.
    grown = rec("resnet18", "finetune", 0, 0.85)
    grown["config"]["dataset_fingerprint"] = "fp-flowers-v2"
    grown["key"] = "flowers-v2/resnet18/finetune/0"
    grown["time"] = "2026-12-01T00:00:00+00:00"
    rows = report.summarize([seed0, grown])
    assert [r.variant for r in rows] == ["", ""]


def test_the_extraction_cost_comes_from_the_run_that_computed_the_features():
    # In time order a cache hit comes first (its features were computed by a run of
    # another results file); the miss of this file says what computing them costs.
    early_hit = rec("resnet18", "linear", 1, 0.8, train=1.0, features=0.1, cache="disk")
    early_hit["time"] = "2026-01-01T00:00:00"
    miss = rec("resnet18", "linear", 0, 0.8, train=1.0, features=6.0, cache="none")
    miss["time"] = "2026-01-02T00:00:00"
    (row,) = report.summarize([early_hit, miss])
    assert row.train_seconds == pytest.approx(7.0)


def test_a_miss_that_did_not_record_its_extraction_charges_the_hits_nothing_more():
    miss = rec("resnet18", "linear", 0, 0.8, train=1.0, cache="none")
    del miss["cost"]["feature_seconds"]
    hit = rec("resnet18", "linear", 1, 0.8, train=1.0, features=0.1, cache="disk")
    (row,) = report.summarize([miss, hit])
    assert row.train_seconds == pytest.approx((1.0 + 1.1) / 2)


def test_variants_of_data_budget_read_as_budgets():
    whole = rec("resnet18", "linear", 0, 0.8)
    shots = rec("resnet18", "linear", 0, 0.7)
    shots["config"]["budget"], shots["key"] = "shots=5", "five-shot"
    half = rec("resnet18", "linear", 0, 0.6)
    half["config"]["budget"], half["key"] = "fraction=0.5", "half"
    variants = [r.variant for r in report.summarize([whole, shots, half])]
    assert variants == ["budget=all", "budget=5-shot", "budget=50%"]


def test_a_run_that_says_what_its_features_cost_is_charged_that_from_any_cache():
    # Read from the disk cache in 0.1 s, made in 2 s (the record says so), trained in 1 s.
    hit = rec("resnet18", "linear", 0, 0.8, train=1.0, features=0.1, cache="disk")
    hit["cost"]["feature_extract_seconds"] = 2.0
    assert report.train_cost_seconds(hit) == pytest.approx(3.0)
    # A run that made them itself took at least that: the larger of the two is charged.
    hit["cost"]["feature_extract_seconds"] = 0.05
    assert report.train_cost_seconds(hit) == pytest.approx(1.1)
    # True is not a number of seconds: read as absent, the run is charged what it spent.
    hit["cost"]["feature_extract_seconds"] = True
    assert report.train_cost_seconds(hit) == pytest.approx(1.1)


def test_a_cache_hit_that_says_nothing_of_its_features_cost_is_charged_what_it_spent_alone():
    # With nothing to say what another run paid (no `extraction`), a hit costs its own load.
    hit = rec("resnet18", "linear", 1, 0.8, train=1.0, features=0.1, cache="disk")
    assert report.train_cost_seconds(hit) == pytest.approx(1.1)
    assert report.train_cost_seconds(hit, {}) == pytest.approx(1.1)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"cost": "search"}, "cost must be one of train+search, train, not 'search'"),
        ({"pareto_by": "flops"}, "pareto_by must be one of train, latency, energy, not 'flops'"),
    ],
)
def test_summarize_names_what_it_takes_when_asked_for_another_cost(given, message):
    with pytest.raises(ValueError) as raised:
        report.summarize([], **given)
    assert str(raised.value) == message


def test_the_inference_and_energy_cells_show_their_figures_and_a_failed_export_is_noted():
    row = Row("d", "b", "linear", "ok", n=1, accuracy=0.5, latency_ms=12.345,
              inference_images_per_s=1234.5, train_energy_j=98765.4,
              inference_j_per_1000=3.21, export="mismatch")  # fmt: skip
    cells = dict(zip(tables.COLUMNS, tables.row_cells(row), strict=True))
    assert (cells["latency ms"], cells["infer img/s"]) == ("12.3", "1,234")
    assert (cells["train J"], cells["J/1k img"]) == ("98,765", "3.2")
    assert cells["note"] == "onnx: mismatch"
    exported = Row("d", "b", "linear", "ok", n=1, accuracy=0.5, export="ok")
    assert tables.row_cells(exported)[-1] == ""


def test_an_interval_is_shown_only_with_both_of_its_bounds():
    half = Row("d", "b", "linear", "ok", n=2, accuracy=0.5, accuracy_std=0.01, ci_low=0.4)
    both = Row("d", "b", "linear", "ok", n=2, accuracy=0.5, accuracy_std=0.01, ci_low=0.4,
               ci_high=0.6)  # fmt: skip
    assert tables.row_cells(half)[2] == "50.0 ± 1.0"
    assert tables.row_cells(both)[2] == "50.0 ± 1.0 [40.0, 60.0]"


def test_variant_labels_name_every_setting_that_differs_and_leave_out_only_what_is_asked():
    hp = {"epochs": 5, "lr": 0.01}
    configs = {
        "a": {"hyperparameters": hp, "budget": "shots=5", "seed": 0},
        "b": {"hyperparameters": {**hp, "lr": 0.1}, "budget": None, "seed": 0},
    }
    labels, without_budget = report._variant_labels(configs, leave_out=("budget",))
    assert labels == {"a": "budget=5-shot, lr=0.01", "b": "budget=all, lr=0.1"}
    assert without_budget == {"a": "lr=0.01", "b": "lr=0.1"}
    assert report._variant_labels(configs) == (labels, labels)  # nothing left out
    # One config: nothing tells it apart, both labels are empty strings.
    assert report._variant_labels({"a": configs["a"]}, leave_out=("budget",)) == (
        {"a": ""},
        {"a": ""},
    )


def test_ties_over_common_seeds_by_hand_and_a_row_equal_to_the_best_is_tied():
    best = Row("d", "b", "linear", "ok", seed_accuracy={0: 0.80, 1: 0.82, 2: 0.84})
    # best - near = 0.01, 0.02, -0.01: mean 0.0067, sd 0.0153, t(2) 4.303: +-0.038, tied.
    near = Row("d", "c", "linear", "ok", seed_accuracy={0: 0.79, 1: 0.80, 2: 0.85})
    # best - far = 0.10, 0.11, 0.12: mean 0.11, sd 0.01: 0.11 +- 0.025 leaves out 0.
    far = Row("d", "e", "linear", "ok", seed_accuracy={0: 0.70, 1: 0.71, 2: 0.72})
    same = Row("d", "f", "linear", "ok", seed_accuracy=dict(best.seed_accuracy))
    report._tie_over_seeds(best, (0, 1, 2), [near, far, same])
    assert (near.tie, far.tie, same.tie) == (True, False, True)  # 0 <= 0 <= 0 is a tie


def test_an_infinite_accuracy_among_common_seeds_is_the_intervals_own_error():
    best = Row("d", "b", "linear", "ok", seed_accuracy={0: 0.80, 1: 0.82, 2: 0.84})
    odd = Row("d", "f", "linear", "ok", seed_accuracy={0: 0.79, 1: float("inf"), 2: 0.85})
    with pytest.raises(ValueError, match=r"values must be finite, got \[0.01.*, -inf, "):
        report._tie_over_seeds(best, (0, 1, 2), [odd])


# --------------------------------------------------------------------------- the report's own statistics


@pytest.mark.parametrize(
    ("counts", "apart"),
    [
        # (n, only the best right, only the other right): d = (a - b) / n, v = (a + b) / n - d**2.
        # d 0.8, v 0.16: Chebyshev 0.16 / 6.4 = 0.025, Bernstein exp(-6.4 / (0.32 + 1.067)) =
        # exp(-4.615) = 0.0099, under 0.01: apart on Bernstein's bound alone.
        ((10, 8, 0), True),
        # d 0.7, v 0.21: Chebyshev 0.043, Bernstein exp(-4.9 / 1.353) = 0.027: not sure.
        ((10, 7, 0), False),
        # d 0.769, v 0.331: Chebyshev 0.043, Bernstein exp(-7.692 / (0.663 + 1.026)) = 0.0105,
        # just over 0.01: not sure (with 4 |d| / 4 in the bound it would be 0.0046).
        ((13, 11, 1), False),
        # d -0.6875, v 0.340: Chebyshev 0.045, Bernstein exp(-7.5625 / (0.680 + 0.917)) =
        # 0.0088: apart (the bound reads |d|: with d itself its denominator is negative).
        ((16, 1, 12), True),
        # Every pair differs the same way: d 1, v 0, Chebyshev 0 (Bernstein exp(-3) = 0.05).
        ((4, 4, 0), True),
        ((4, 0, 4), True),
        # d 0: nothing tells them apart, however many images.
        ((10, 3, 3), False),
        ((10_000, 0, 0), False),
    ],
)
def test_surely_apart_is_the_smaller_of_chebyshevs_and_bernsteins_bounds_by_hand(counts, apart):
    assert report._surely_apart(*counts) is apart


def test_the_reports_t_interval_is_student_t_by_hand_and_keeps_the_method_it_is_given():
    # 0.80, 0.82, 0.84: mean 0.82, sd 0.02, t(0.975, 2) = 4.3027: 0.82 +- 0.0497.
    interval = report._t_interval([0.80, 0.82, 0.84], "paired-t")
    assert interval.estimate == pytest.approx(0.82, abs=1e-12)
    assert (interval.lower, interval.upper) == (
        pytest.approx(0.770317, abs=1e-6),
        pytest.approx(0.869683, abs=1e-6),
    )
    assert (interval.n, interval.method, interval.confidence) == (3, "paired-t", 0.95)
    # 0.80, 0.84: sd 0.0283, t(0.975, 1) = 12.706: 0.82 +- 0.2541 (not clipped here).
    two = report._t_interval([0.80, 0.84])
    assert (two.lower, two.upper) == (
        pytest.approx(0.565876, abs=1e-6),
        pytest.approx(1.074124, abs=1e-6),
    )
    assert (two.n, two.method) == (2, "t")
    assert report._t_interval([0.8]) is None
    with pytest.raises(ValueError, match=r"values must be one-dimensional, got shape \(2, 2\)"):
        report._t_interval([[0.8, 0.9], [0.7, 0.6]])


def test_ties_with_the_best_by_hand_over_seeds_over_images_and_without_a_pairing():
    best = stats.Row(key=-1, accuracy={0: 0.80, 1: 0.82, 2: 0.84})
    # Three common seeds: the paired t of the test above (tied; 0.11 +- 0.025 is not).
    near = stats.Row(key=1, accuracy={0: 0.79, 1: 0.80, 2: 0.85})
    far = stats.Row(key=2, accuracy={0: 0.70, 1: 0.71, 2: 0.72})
    assert (report._tied(best, near, {}), report._tied(best, far, {})) == (True, False)
    # Two common seeds pair over the seeds even where images could be paired: differences
    # 0.8 and -0.4, t(1) = 12.7, tied (seed 0's ten images alone are surely apart).
    two = stats.Row(key=-1, accuracy={0: 0.8, 1: 0.2}, correct={0: [1] * 8 + [0] * 2})
    crossed = stats.Row(key=5, accuracy={0: 0.0, 1: 0.6}, correct={0: [0] * 10})
    assert report._tied(two, crossed, {}) is True
    # One seed each, ten images: 8 right only for the best is surely apart (Bernstein 0.0099),
    # and the answer is remembered for these counts.
    one = stats.Row(key=-1, accuracy={0: 0.8}, correct={0: [1] * 8 + [0] * 2})
    wrong = stats.Row(key=1, accuracy={5: 0.0}, correct={5: [0] * 10})
    memo: dict = {}
    assert report._tied(one, wrong, memo) is False
    assert list(memo.values()) == [False]
    # One image apart (on their one common seed): the paired bootstrap's interval holds 0.
    close = stats.Row(key=2, accuracy={0: 0.7}, correct={0: [1] * 7 + [0] * 3})
    close_memo: dict = {}
    assert report._tied(one, close, close_memo) is True
    assert list(close_memo.values()) == [True]
    # Equal counts are answered from what was remembered, not compared again.
    flipped = {counts: not tied for counts, tied in close_memo.items()}
    assert report._tied(one, close, flipped) is False
    # Nothing to pair: no per-image results, or seeds that neither share nor are one each.
    assert report._tied(one, stats.Row(key=3, accuracy={5: 0.7}), {}) is None
    assert report._tied(best, stats.Row(key=4, accuracy={7: 0.7, 8: 0.7}), {}) is None


def test_the_per_image_results_read_as_a_mapping_of_rows_decoded_when_asked():
    run = rec("b", "linear", 3, 0.5)
    run["accuracy"]["final_correct"] = encode_correct([1, 0, 1, 0])
    run["data"] = {"eval_split": "val", "eval_images": 4}
    seen, unseen = Row("d", "b", "linear", "ok"), Row("d", "c", "linear", "ok")
    per_image = report._PerImage()
    per_image.add(seen, [run])
    assert id(seen) in per_image
    assert id(unseen) not in per_image and str(id(seen)) not in per_image
    split, correct = per_image[id(seen)]
    assert split == json.dumps(["val", 4])
    assert list(correct) == [3] and correct[3].tolist() == [1, 0, 1, 0]
    with pytest.raises(KeyError, match=str(id(unseen))):
        per_image[id(unseen)]
    assert per_image.get(id(unseen), "none") == "none"
    # A run without a bitset is passed over; one of another length than the record's
    # evaluation split is not this run's; a split size that is not a number checks nothing.
    plain = rec("b", "linear", 4, 0.5)
    assert report._per_image([plain]) is None
    assert report._per_image([plain, run])[1].keys() == {3}
    run["data"]["eval_images"] = 5
    assert report._per_image([run]) is None
    run["data"]["eval_images"] = "5"
    assert report._per_image([run])[1][3].tolist() == [1, 0, 1, 0]


def test_a_rows_interval_is_student_t_over_seeds_else_a_bootstrap_over_its_one_runs_images():
    two_seeds = report._interval([], [0.80, 0.84])
    assert two_seeds == report._t_interval([0.80, 0.84])  # 0.82 +- 0.2541, method "t"
    # One run, one image, right: every resample is right, the interval is [1, 1].
    one_image = report._interval([{"data": {"eval_images": 1}}], [1.0])
    assert (one_image.lower, one_image.upper, one_image.n) == (1.0, 1.0, 1)
    # No evaluation images to resample: no interval.
    assert report._interval([{"data": {"eval_images": 0}}], [1.0]) is None
    assert report._interval([{"data": {}}], [1.0]) is None


def _tuning_row(backbone, accuracy, tuned, strategy="linear", older=False):
    return Row("d", backbone, strategy, "ok", n=1, accuracy=accuracy, older_data=older,
               data="old" if older else "", search_seconds=1.0 if tuned else None)  # fmt: skip


def test_tuning_changes_rank_the_backbones_tuned_both_ways_on_the_newest_data_only():
    rows = [
        # Older data: not compared, however many backbones it has both ways.
        *(_tuning_row(b, 0.5, tuned, older=True) for b in ("x", "y") for tuned in (False, True)),
        # One backbone both ways under another strategy: nothing to rank, the next is.
        _tuning_row("a", 0.6, False, "finetune"),
        _tuning_row("a", 0.7, True, "finetune"),
        # Default b 0.90 > c 0.80 > a 0.70; tuned a 0.95 > b 0.90 > c 0.85 (t: tuned only).
        _tuning_row("a", 0.70, False),
        _tuning_row("b", 0.90, False),
        _tuning_row("c", 0.80, False),
        _tuning_row("a", 0.95, True),
        _tuning_row("b", 0.90, True),
        _tuning_row("c", 0.85, True),
        _tuning_row("t", 0.99, True),
    ]
    (change,) = report.tuning_changes(rows)
    assert (change.dataset, change.strategy) == ("d", "linear")
    assert (change.default, change.tuned) == (["b", "c", "a"], ["a", "b", "c"])
    # Pairs (a, b) and (a, c) swap, (b, c) keeps its order: tau (1 - 2) / 3. Gains 0.25, 0, 0.05.
    assert change.tau == pytest.approx(-1 / 3)
    assert change.mean_gain == pytest.approx(0.1)
    assert report.tuning_lines([change]) == [
        "d, linear: default ranks b > c > a; tuned ranks a > b > c "
        "(Kendall tau -0.33, mean gain +10.0 points)"
    ]


# --------------------------------------------------------------------------- records the report reads

#: JSON values a setting can hold: 1, 1.0 and true are three; every NaN is one; dicts are
#: equal whatever the order of their keys.
SETTING_VALUES = [1, 1.0, True, None, "1", "true", 0.0, -0.0, float("nan"), float("nan"),
                  {"a": 1, "b": 2}, {"b": 2, "a": 1}, {"a": 1}, [1, 2], [2, 1]]  # fmt: skip


def test_same_value_tells_apart_exactly_what_json_tells_apart():
    for a in SETTING_VALUES:
        for b in SETTING_VALUES:
            json_equal = json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
            assert (report._same_value(a) == report._same_value(b)) == json_equal, (a, b)
    distinct = {json.dumps(v, sort_keys=True) for v in SETTING_VALUES}
    assert len({report._same_value(v) for v in SETTING_VALUES}) == len(distinct)


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("no cost recorded", "no cost"),
        ("accuracy.final is 'x', not a number", "accuracy.final"),
        ("", ""),
    ],
)
def test_a_problems_kind_is_its_first_word_or_two_after_no(message, kind):
    assert report._kind(message) == kind


@pytest.mark.parametrize(
    ("seed", "read"),
    [(" -3 ", -3), ("12", 12), (4, 4), (None, None), (True, None), ("1.5", None),
     ("X3", None), ("abc", None)],
)  # fmt: skip
def test_a_records_names_read_as_strings_and_its_seed_as_an_integer_or_none(seed, read):
    config = {"backbone": None, "dataset": 7, "strategy": "linear", "seed": seed}
    assert report._readable_config(config) == {
        "backbone": "?",
        "dataset": "7",
        "strategy": "linear",
        "seed": read,
    }


def test_data_facts_are_one_identity_whatever_the_order_of_their_keys():
    facts = {"root": "/data/pets", "split": {"train": 0.8, "eval": 0.2}, "num_classes": 2}
    shuffled = {"num_classes": 2, "split": {"eval": 0.2, "train": 0.8}, "root": "/data/pets"}
    identity = report._data_facts({"data": facts})
    assert identity == report._data_facts({"data": shuffled})
    assert re.fullmatch("d[0-9a-f]{11}", identity)  # "d" and 11 hex digits: 12, as shown
    assert identity != report._data_facts({"data": {**facts, "num_classes": 3}})


@pytest.mark.parametrize(
    ("value", "number"),
    [(0.5, 0.5), (3, 3.0), (float("nan"), None), (float("-inf"), None), (True, None),
     ("0.5", None), (None, None), (np.float64(0.25), 0.25), (np.float64("inf"), None)],
)  # fmt: skip
def test_a_figure_is_a_finite_number_of_any_numeric_type_and_nothing_else(value, number):
    assert report._number(value) == number


def test_a_rows_peak_is_the_models_own_where_the_record_has_it_else_the_raw_peak():
    own = rec("resnet18", "linear", 0, 0.8, peak=500 * 10**6)
    own["cost"]["model_peak_memory_bytes"] = 200 * 10**6
    only_own = rec("resnet18", "linear", 0, 0.8, peak=None, dataset="pets")
    only_own["cost"]["model_peak_memory_bytes"] = 100 * 10**6
    raw = rec("resnet18", "linear", 0, 0.8, dataset="cars")
    rows = {r.dataset: r.peak_memory_mb for r in report.summarize([own, only_own, raw])}
    assert rows == {"flowers": pytest.approx(200.0), "pets": pytest.approx(100.0),
                    "cars": pytest.approx(300.0)}  # fmt: skip


@pytest.mark.parametrize(
    ("statuses", "export"),
    [(["ok"], "ok"), (["ok", "parity failed"], "parity failed"),
     (["parity failed", "not exported", "ok"], "not exported"), ([], None)],
)  # fmt: skip
def test_a_rows_export_is_the_worst_of_its_seeds(statuses, export):
    ok = [{"inference": {"onnx": {"status": s}}} for s in statuses]
    assert report._inference_figures(ok)["export"] == export


def test_old_records_take_the_fingerprint_of_newer_ones_on_the_same_data_facts():
    new = {"config": {"dataset_fingerprint": "fpA"}, "data": {"root": "/d", "num_classes": 2}}
    old = {"config": {}, "data": {"root": "/d", "num_classes": 2}}
    blank = {"config": {"dataset_fingerprint": ""}, "data": {"root": "/e"}}
    # A fingerprint that is not a string is none: it names no data for older records.
    numeric = {"config": {"dataset_fingerprint": 7}, "data": {"root": "/d", "num_classes": 2}}
    ids = report._data_identities([numeric, new, old, blank])
    assert ids[id(new)] == ids[id(old)] == ids[id(numeric)] == "fpA"
    assert ids[id(blank)] == report._data_facts(blank)


def test_figures_a_record_gets_wrong_are_blanked_and_the_warning_names_its_key():
    run = rec("resnet18", "linear", 0, 0.8)
    run["accuracy"]["best"] = "n/a"
    run["cost"]["trainable_params"] = "many"
    run["key"] = "k-odd"
    unusable = rec("resnet18", "linear", 1, 0.8)
    unusable["accuracy"]["final"] = "x"
    with pytest.warns(RuntimeWarning) as warned:
        (row,) = report.summarize([run, unusable])
    assert (row.best_accuracy, row.trainable_params, row.n) == (None, None, 1)
    messages = [str(w.message) for w in warned]
    assert any("e.g. key k-odd): shown as far as understood" in m for m in messages)
    assert any(m.endswith("skipped: no final accuracy to average") for m in messages)
    # One kind of problem, records shown and skipped: the warning says both.
    costless, both_wrong = rec("b", "linear", 0, 0.8), rec("c", "linear", 0, 0.8)
    del costless["cost"], both_wrong["cost"]
    both_wrong["accuracy"]["final"] = None
    with pytest.warns(RuntimeWarning) as warned:
        report.summarize([costless, both_wrong])
    (no_cost,) = [str(w.message) for w in warned if "(no cost" in str(w.message)]
    assert no_cost.endswith(": shown as far as understood or skipped: no final accuracy to average")
    assert report._number_or_none(np.float64(1.5)) is True


def test_a_failed_runs_reason_that_is_not_text_is_shown_as_its_text():
    failed = rec("resnet18", "linear", 0, None, status="failed", reason=None)
    failed["reason"] = {"signal": 9}
    (row,) = report.summarize([failed])
    assert (row.status, row.reason) == ("failed", "{'signal': 9}")


def test_an_infinite_accuracy_over_seeds_is_the_t_intervals_own_error():
    row = Row("d", "b", "linear", "ok")
    with pytest.raises(ValueError, match=r"values must be finite, got \[0.8, inf\]"):
        report._fill_t_intervals([(row, [0.8, float("inf")])])


def test_pareto_costs_charge_a_tuned_rows_search_and_nothing_for_an_untuned_ones():
    """Training seconds plus a tuned row's search by default; an untuned row adds nothing
    (not a second: it would fall behind a tuned row within a second of it); `cost="train"`
    leaves every search out."""
    untuned = Row("d", "a", "linear", "ok", accuracy=0.9, train_seconds=10.0)
    tuned = Row("d", "b", "linear", "ok", accuracy=0.8, train_seconds=5.0, search_seconds=4.5)
    assert report.pareto_costs([untuned, tuned]) == [10.0, 9.5]
    assert report.pareto_costs([untuned, tuned], cost="train") == [10.0, 5.0]
    assert report.pareto_costs([untuned, tuned], "train+search", "train") == [10.0, 9.5]


def test_two_common_seeds_are_paired_over_the_seeds_without_per_image_results():
    """Two seeds in common are enough for the paired t over the seeds (the images are
    not needed); with one, rows without per-image results cannot be compared (None)."""
    best = Row("d", "a", "linear", "ok", accuracy=0.905, seed_accuracy={0: 0.9, 1: 0.91})
    apart = Row("d", "b", "linear", "ok", accuracy=0.51, seed_accuracy={0: 0.5, 1: 0.52})
    alike = Row("d", "c", "linear", "ok", accuracy=0.9, seed_accuracy={0: 0.92, 1: 0.88})
    lone = Row("d", "e", "linear", "ok", accuracy=0.5, seed_accuracy={0: 0.5})
    report._mark_ties([best, apart, alike, lone])
    assert (best.tie, apart.tie, alike.tie, lone.tie) == (True, False, True, None)


def test_only_a_cache_hit_without_a_figure_for_its_features_is_charged_another_runs():
    """Another run's extraction (6 s) is charged to a cache hit whose record gives no number
    for what its own features cost (True is none), and to nothing else: a record without a
    cost is charged nothing."""
    miss = rec("resnet18", "linear", 0, 0.8, train=1.0, features=6.0, cache="none")
    extraction = {report._feature_key(miss): 6.0}
    hit = rec("resnet18", "linear", 1, 0.8, train=1.0, features=0.1, cache="disk")
    hit["cost"]["feature_extract_seconds"] = True
    assert report.train_cost_seconds(hit, extraction) == pytest.approx(6.0 + 1.0)
    bare = rec("resnet18", "linear", 2, 0.8)
    del bare["cost"]
    assert report.train_cost_seconds(bare, extraction) == 0.0


def test_a_row_without_seeded_runs_is_neither_the_best_of_its_section_nor_tied():
    """A row whose records' seeds are not integers has an accuracy but no per-seed figures:
    nothing can be paired with it, even when it is the most accurate row of its section."""
    seedless = Row("d", "a", "linear", "ok", accuracy=0.95)
    best = Row("d", "b", "linear", "ok", accuracy=0.81, seed_accuracy={0: 0.8, 1: 0.82})
    apart = Row("d", "c", "linear", "ok", accuracy=0.51, seed_accuracy={0: 0.5, 1: 0.52})
    report._mark_ties([seedless, best, apart])
    assert (seedless.tie, best.tie, apart.tie) == (None, True, False)


def test_with_a_nan_cost_every_pair_is_compared_by_the_definition():
    """A NaN cost compares false with anything, so the rows are compared pair by pair: a row
    is off the front when another is as accurate and as cheap, and better in one. The NaN
    row is as cheap as no row: none dominates it and it dominates none."""
    given = {
        "a": (0.9, 10.0),  # the most accurate
        "b": (0.9, 10.0),  # equal to a in both: neither is better in one
        "c": (0.8, math.nan),
        "d": (0.7, 4.0),  # the cheapest
        "e": (0.7, 6.0),  # d is as accurate and cheaper
        "f": (0.85, 10.0),  # a is as cheap and more accurate
    }
    group = [
        Row("d", name, "linear", "ok", accuracy=accuracy, train_seconds=seconds)
        for name, (accuracy, seconds) in given.items()
    ]
    report._mark_pareto(group, "train", "train")
    front = {r.backbone: r.pareto for r in group}
    assert front == {"a": True, "b": True, "c": True, "d": True, "e": False, "f": False}
