"""`report.summarize`, field by field, in the cases the mutation run found unchecked.

Each test builds the few records it needs (`test_report_values.rec`) and states
the row the report must make of them; results/mutation.md lists the mutants
they were written for.
"""

from __future__ import annotations

import math
import statistics
import time

import pytest
from test_per_image import rec as per_image_rec
from test_per_image import ties, vector
from test_report_values import rec

from tlbench import report


def one_row(records: list[dict]) -> report.Row:
    rows = report.summarize(records)
    assert len(rows) == 1, [r.label for r in rows]
    return rows[0]


def by_label(records: list[dict]) -> dict[str, report.Row]:
    return {r.label: r for r in report.summarize(records)}


# --------------------------------------------------------------------------- the row's figures


def test_a_row_holds_each_figure_of_its_seeds():
    # Three seeds: accuracies .6, .7, .8; best .65 at epoch 2, None (not recorded), .85 at 4;
    # 100 and 300 img/s and one record without a throughput; 200, 400 and 600 MB.
    a = rec("r18", "linear", 0, 0.6, best=0.65, best_epoch=2, images_per_s=100.0, peak=200 * 10**6)
    b = rec("r18", "linear", 1, 0.7, images_per_s=300.0, peak=400 * 10**6)
    b["accuracy"]["best"] = None
    b["accuracy"]["best_epoch"] = None
    c = rec("r18", "linear", 2, 0.8, best=0.85, best_epoch=4, images_per_s=0.0, peak=600 * 10**6)
    del c["cost"]["train_images_per_s"]
    with pytest.warns(RuntimeWarning, match="accuracy.best is None"):
        row = one_row([a, b, c])
    assert row.n == 3
    assert row.seeds == [0, 1, 2]
    assert row.seed_accuracy == {0: 0.6, 1: 0.7, 2: 0.8}
    assert row.accuracy == pytest.approx(0.7)
    assert row.accuracy_std == pytest.approx(0.1)
    assert row.best_accuracy == pytest.approx(0.75)  # the seeds that recorded one
    assert row.best_epoch == 3.0
    assert row.images_per_s == 200.0  # the mean of the throughputs recorded
    assert row.peak_memory_mb == 400.0  # MB of 10^6 bytes, exactly
    assert row.ci_method == "t"
    half = statistics.stdev([0.6, 0.7, 0.8]) / math.sqrt(3) * 4.302652729911275  # t(0.975, 2)
    assert row.ci_low == pytest.approx(0.7 - half)
    assert row.ci_high == pytest.approx(0.7 + half)


def test_two_seeds_have_a_standard_deviation_and_an_interval_clipped_to_one():
    row = one_row([rec("r18", "linear", 0, 0.96), rec("r18", "linear", 1, 1.0)])
    assert row.accuracy_std == pytest.approx(0.04 / math.sqrt(2))
    assert row.ci_method == "t"
    assert row.ci_high == 1.0  # 0.98 + 12.7 * 0.02 would be 1.23
    assert row.ci_low == pytest.approx(0.98 - 12.706204736174694 * 0.02)


def test_one_seed_has_no_deviation_and_no_interval_without_its_image_count():
    row = one_row([rec("r18", "linear", 0, 0.5)])
    assert row.accuracy_std is None
    assert (row.ci_low, row.ci_high, row.ci_method) == (None, None, "")


def test_one_seed_with_its_image_count_gets_a_bootstrap_interval():
    record = rec("r18", "linear", 0, 0.5)
    record["data"] = {"eval_images": 40}
    row = one_row([record])
    assert row.ci_method == "bootstrap"
    assert 0.3 < row.ci_low < 0.5 < row.ci_high < 0.7


@pytest.mark.parametrize(("cache", "cached"), [("none", False), (None, False), ("memory", True)])
def test_features_read_from_a_cache_are_marked(cache, cached):
    assert one_row([rec("r18", "linear", 0, 0.5, cache=cache)]).features_cached is cached


def test_images_per_class_is_the_budgets_else_the_training_splits_over_the_classes():
    a = rec("r18", "linear", 0, 0.5)
    a["data"] = {"train_images": 60, "num_classes": 3}
    b = rec("r18", "linear", 1, 0.5)
    b["data"] = {"train_images": 60, "budget_images": 30, "num_classes": 3}
    c = rec("r18", "linear", 2, 0.5)  # no data facts: not counted
    assert one_row([a, b, c]).images_per_class == 15.0  # (20 + 10) / 2


def test_the_data_a_row_ran_on_is_its_fingerprints_first_twelve_characters():
    record = rec("r18", "linear", 0, 0.5)
    record["config"]["dataset_fingerprint"] = "0123456789abcdef"
    assert one_row([record]).data == "0123456789ab"
    unknown = rec("r18", "linear", 0, 0.5)
    del unknown["config"]["dataset_fingerprint"]
    assert one_row([unknown]).data == ""


def test_each_dataset_shows_by_its_short_name():
    a = rec("r18", "linear", 0, 0.5, dataset="imagefolder:/data/flowers12")
    b = rec("r18", "linear", 0, 0.5, dataset="imagefolder:/data/pets")
    assert sorted(r.dataset_name for r in report.summarize([a, b])) == [
        "imagefolder:flowers12",
        "imagefolder:pets",
    ]


# --------------------------------------------------------------------------- notes and failures


def test_a_failed_seed_and_a_later_failed_rerun_are_both_noted():
    ok0 = rec("r18", "linear", 0, 0.5)
    failed1 = rec("r18", "linear", 1, None, status="failed", reason="out of memory")
    rerun0 = rec("r18", "linear", 0, None, status="failed", reason="loss became nan")
    ok0["time"], failed1["time"], rerun0["time"] = (
        "2026-01-01T00:00:00",
        "2026-01-01T00:01:00",
        "2026-01-01T00:02:00",
    )
    row = one_row([ok0, failed1, rerun0])
    assert row.status == "ok"
    assert row.reason == (
        "1 of 2 seeds failed: out of memory; "
        "1 later rerun(s) failed: loss became nan; the finished result is shown"
    )


def test_a_later_rerun_without_a_reason_is_noted_without_one():
    ok0 = rec("r18", "linear", 0, 0.5)
    rerun0 = rec("r18", "linear", 0, None, status="interrupted")
    ok0["time"], rerun0["time"] = "2026-01-01T00:00:00", "2026-01-01T00:02:00"
    assert one_row([ok0, rerun0]).reason == (
        "1 later rerun(s) interrupted; the finished result is shown"
    )


def test_a_row_whose_every_seed_failed_shows_the_last_status_and_reason():
    row = one_row([rec("r18", "linear", 0, None, status="failed", reason="loss became nan")])
    assert (row.status, row.reason, row.accuracy) == ("failed", "loss became nan", None)
    no_reason = one_row([rec("r18", "linear", 0, None, status="skipped")])
    assert (no_reason.status, no_reason.reason) == ("skipped", "")
    no_status = rec("r18", "linear", 0, None, status="failed")
    del no_status["status"]
    with pytest.warns(RuntimeWarning):
        assert one_row([no_status]).status == "?"


# --------------------------------------------------------------------------- grouping


def test_seeds_whose_configs_list_the_same_settings_in_another_order_are_one_row():
    a = rec("r18", "linear", 0, 0.5)
    b = rec("r18", "linear", 1, 0.7)
    b["config"] = dict(reversed(list(b["config"].items())))  # written by another version
    b["config"]["hyperparameters"] = {"lr": 0.001, "epochs": 3}
    row = one_row([a, b])
    assert row.n == 2
    assert row.accuracy == pytest.approx(0.6)


def test_a_record_without_a_seed_is_a_row_of_its_own_config():
    record = rec("r18", "linear", 0, 0.5)
    del record["config"]["seed"]
    with pytest.warns(RuntimeWarning, match="config.seed is None"):
        row = one_row([record, rec("r18", "linear", 1, 0.7)])
    assert (row.n, row.seeds) == (
        2,
        [1],
    )  # averaged with its config's seeds, but no seed of its own
    assert row.accuracy == pytest.approx(0.6)


def test_an_old_record_without_a_fingerprint_joins_the_new_records_of_the_same_data():
    # Records written before `config.dataset_fingerprint` existed are matched by their data
    # facts to a newer record with the same facts, so both seeds make one row.
    facts = {"root": "/data/flowers", "classes": ["a", "b"], "train_images": 60, "eval_images": 40}
    old = rec("r18", "linear", 0, 0.5)
    del old["config"]["dataset_fingerprint"]
    new = rec("r18", "linear", 1, 0.7)
    old["data"], new["data"] = dict(facts), dict(facts)
    row = one_row([old, new])
    assert (row.n, row.data, row.older_data) == (2, "fp-flowers", False)


def test_a_seed_that_failed_before_reading_the_data_joins_the_newest_datas_row():
    # Seed 1 failed before the dataset was read: no fingerprint, no data facts.
    ok = rec("r18", "linear", 0, 0.5)
    failed = rec("r18", "linear", 1, None, status="failed", reason="no such backbone weights")
    del failed["config"]["dataset_fingerprint"]
    row = one_row([ok, failed])
    assert row.reason == "1 of 2 seeds failed: no such backbone weights"
    assert not row.older_data


def test_a_later_record_of_unknown_data_does_not_make_the_newest_data_older():
    ok = rec("r18", "linear", 0, 0.5)
    ok["time"] = "2026-01-01T00:00:00"
    failed = rec("r18", "finetune", 0, None, status="failed", reason="no such weights")
    failed["time"] = "2026-01-02T00:00:00"
    del failed["config"]["dataset_fingerprint"]
    rows = by_label([ok, failed])
    assert not rows["r18 / linear"].older_data
    assert not rows["r18 / finetune"].older_data
    assert rows["r18 / linear"].section == "flowers"


@pytest.fixture
def new_york(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_when_a_row_last_ran_is_said_in_utc_whatever_the_local_time_zone(new_york):
    record = rec("r18", "linear", 0, 0.5)
    record["time"] = "2026-01-01T12:00:00+01:00"
    assert one_row([record]).last_run == "2026-01-01T11:00:00+00:00"
    assert one_row([rec("r18", "linear", 0, 0.5)]).last_run == ""  # no time recorded


# --------------------------------------------------------------------------- budgets


def budget_rec(seed: int, acc: float, budget: str | None, epochs: int) -> dict:
    record = rec("r18", "linear", seed, acc)
    record["config"]["budget"] = budget
    record["config"]["hyperparameters"]["epochs"] = epochs
    record["key"] = f"{budget}/{epochs}/{seed}"
    return record


def test_budget_rows_carry_their_budget_and_a_series_without_it():
    records = [
        budget_rec(0, 0.4, "shots=1", 3),
        budget_rec(0, 0.6, "shots=5", 3),
        budget_rec(0, 0.5, "shots=1", 9),
        budget_rec(0, 0.9, None, 9),
    ]
    rows = {(r.budget, r.series): r for r in report.summarize(records)}
    assert set(rows) == {
        ("shots=1", "epochs=3"),
        ("shots=5", "epochs=3"),
        ("shots=1", "epochs=9"),
        (None, "epochs=9"),
    }
    assert rows["shots=5", "epochs=3"].variant == "budget=5-shot, epochs=3"
    assert rows[None, "epochs=9"].variant == "budget=all, epochs=9"


def test_a_budget_that_is_not_a_budget_string_reads_as_the_whole_split():
    # A hand-edited record: `budget` is `shots=K` or `fraction=F`, never a bare number.
    record = budget_rec(0, 0.5, "shots=5", 3)
    record["config"]["budget"] = 5
    assert one_row([record]).budget is None


# --------------------------------------------------------------------------- ties


def test_single_seed_rows_are_paired_over_their_images():
    # 200 images: the best gets 150 right; "close" differs on 2 of them, "far" on 60.
    best, close, far = vector(range(150)), vector(range(2, 150)), vector(range(60, 150))
    assert ties(
        [per_image_rec("best", best), per_image_rec("close", close), per_image_rec("far", far)]
    ) == {
        "best": True,
        "close": True,
        "far": False,
    }


# --------------------------------------------------------------------------- gain and Pareto


def test_a_row_without_a_result_does_not_stop_the_marks_of_the_rows_after_it():
    rows = [
        report.Row("d", "r18", "finetune", "failed"),
        report.Row("d", "r18", "scratch", "ok", accuracy=0.5, train_seconds=10.0),
        report.Row("d", "r18", "linear", "ok", accuracy=0.8, train_seconds=2.0),
    ]
    report._mark_gain_and_pareto(rows, "train+search", "train")
    assert [r.pareto for r in rows] == [False, False, True]
    assert rows[2].gain_over_scratch == pytest.approx(0.3)


def test_a_row_without_a_training_time_counts_as_free():
    # As accurate, no time recorded (0 s) against 0.5 s: the untimed row dominates.
    untimed = report.Row("d", "a", "linear", "ok", accuracy=0.8, train_seconds=None)
    timed = report.Row("d", "b", "linear", "ok", accuracy=0.8, train_seconds=0.5)
    report._mark_gain_and_pareto([untimed, timed], "train+search", "train")
    assert (untimed.pareto, timed.pareto) == (True, False)
