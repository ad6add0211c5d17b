"""The intervals and paired comparisons behind the table's +- and `=` marks, at the edges
the first tests left open.

Written for the mutants the recheck of shard 2 (results/mutation.md) left alive in
`tlbench.stats`: the binomial quantile where the distribution function meets q exactly,
the settings `accuracy_interval` and `compare` pass on, every field of each comparison
that cannot be made, and the bounds of a bootstrap interval. Expected values are worked
out by hand in the comments; where a figure is a seeded resample, the test compares two
routes to it rather than the code with itself.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as st

from tlbench import stats
from tlbench.stats import Comparison, Interval, Row


@pytest.mark.parametrize(
    ("q", "n", "p", "k"),
    [
        (0.5, 1, 0.5, 0),  # P(X <= 0) = 1/2 meets q exactly: 0, not 1
        (0.25, 2, 0.5, 0),  # P(X <= 0) = 1/4
        (0.75, 2, 0.5, 1),  # P(X <= 1) = 3/4
        (0.8, 2, 0.5, 2),
        (0.5, 10, 1.0, 10),  # every trial succeeds
        (0.5, 10, 0.0, 0),
    ],
)
def test_the_binomial_quantile_is_the_smallest_k_whose_probability_reaches_q(q, n, p, k):
    assert stats._binomial_quantile(q, n, p) == k


def test_the_binomial_quantile_is_scipys_on_a_grid():
    for n in (1, 2, 5, 17, 100):
        for p in (0.01, 0.1, 0.37, 0.5, 0.9, 0.99):
            for q in (0.001, 0.025, 0.5, 0.975, 0.999):
                assert stats._binomial_quantile(q, n, p) == int(st.binom.ppf(q, n, p))


def test_an_interval_contains_both_its_ends():
    interval = Interval(0.5, 0.4, 0.6, 3, "t")
    assert interval.contains(0.4) and interval.contains(0.6)
    assert not interval.contains(0.61)


def test_float32_accuracies_are_computed_as_the_same_numbers_in_float64():
    values = np.array([0.7, 0.8, 0.95], dtype=np.float32)
    assert stats.t_interval(values) == stats.t_interval(values.astype(np.float64))


# --------------------------------------------------------------------------- bootstrap


CORRECT = [1] * 30 + [0] * 10


def test_the_bootstrap_says_what_it_is_over_at_the_confidence_asked_for():
    interval = stats.bootstrap_interval(CORRECT, 0.9)
    assert (interval.estimate, interval.n, interval.method, interval.confidence) == (
        0.75,
        40,
        "bootstrap",
        0.9,
    )


def test_a_finite_bootstrap_is_seeded_by_0_unless_told_otherwise():
    default = stats.bootstrap_interval(CORRECT, resamples=200)
    assert default == stats.bootstrap_interval(CORRECT, resamples=200, seed=0)
    assert default == stats.bootstrap_interval(CORRECT, resamples=200)
    assert default != stats.bootstrap_interval(CORRECT, resamples=200, seed=1)


@pytest.mark.parametrize(
    ("correct", "message"),
    [
        ([2, 1], "correct must hold only 0 and 1 (per-image correctness)"),
        ([[1]], "correct must be a non-empty 1-d array of 0/1, got shape (1, 1)"),
    ],
)
def test_the_bootstrap_names_its_argument_in_its_errors(correct, message):
    with pytest.raises(ValueError) as info:
        stats.bootstrap_interval(correct)
    assert str(info.value) == message


def test_a_rows_interval_passes_on_its_confidence_resamples_and_seed():
    assert stats.accuracy_interval([0.7, 0.8, 0.95], confidence=0.9) == stats.t_interval(
        [0.7, 0.8, 0.95], 0.9
    )
    one_run = stats.accuracy_interval([0.75], CORRECT, 0.9, resamples=200, seed=3)
    assert one_run == stats.bootstrap_interval(CORRECT, 0.9, resamples=200, seed=3)
    assert one_run != stats.bootstrap_interval(CORRECT, 0.9, resamples=200, seed=0)
    assert one_run != stats.bootstrap_interval(CORRECT, 0.9, seed=3)
    assert stats.accuracy_interval([0.75], CORRECT, resamples=200) == stats.bootstrap_interval(
        CORRECT, resamples=200, seed=0
    )


def test_the_paired_bootstrap_lower_bound_is_its_2_5_percent_quantile():
    # 3 of 7 images only a gets right, 4 both: a resample's difference is X / 7 with
    # X ~ Binomial(7, 3/7). P(X = 0) = (4/7)^7 = 0.0199: below 2.5%, so the 2.5% quantile
    # is 1/7 (a 1.67% quantile would be 0).
    interval = stats.paired_bootstrap([1] * 7, [0, 0, 0, 1, 1, 1, 1])
    assert interval.lower == pytest.approx(1 / 7)


# --------------------------------------------------------------------------- compare


def test_two_seeds_in_common_are_compared_by_a_paired_t_at_the_confidence_asked_for():
    best = Row("best", {0: 0.9, 1: 0.8, 2: 0.85})
    other = Row("other", {0: 0.7, 1: 0.6, 2: 0.66})  # 0.2, 0.2 and 0.19 worse: no tie
    found = stats.compare(best, other, 0.9)
    assert found == Comparison(
        "other", stats.paired_t(best.accuracy, other.accuracy, 0.9), False, "paired-t"
    )
    assert found.difference.confidence == 0.9


def test_single_runs_are_compared_by_a_paired_bootstrap_with_the_settings_asked_for():
    a, b = [1] * 30 + [0] * 10, [1] * 25 + [0] * 15
    best, other = Row("best", {0: 0.75}, {0: a}), Row("other", {4: 0.625}, {4: b})
    found = stats.compare(best, other, 0.9, resamples=300, seed=5)
    expected = stats.paired_bootstrap(a, b, 0.9, resamples=300, seed=5)
    assert found == Comparison("other", expected, expected.contains(0.0), "paired-bootstrap")
    assert found != stats.compare(best, other, 0.9, resamples=300, seed=6)
    assert stats.compare(best, other, resamples=300) == stats.compare(
        best, other, resamples=300, seed=0
    )


def test_rows_without_a_seed_in_common_are_not_compared_and_say_why():
    best, other = Row("best", {0: 0.9, 1: 0.8}), Row("other", {2: 0.7, 3: 0.6})
    assert stats.compare(best, other) == Comparison(
        "other", None, None, "none", "no seed in common ([0, 1] vs [2, 3])"
    )


def test_single_runs_on_different_evaluation_sets_are_not_compared_and_say_why():
    best = Row("best", {0: 0.75}, {0: [1, 1, 1, 0]})
    other = Row("other", {0: 0.5}, {0: [1, 0]})
    assert stats.compare(best, other) == Comparison(
        "other", None, None, "none", "different evaluation sets (4 vs 2 images)"
    )


def test_single_runs_without_per_image_results_are_not_compared_and_say_why():
    best, other = Row("best", {0: 0.75}, {0: [1, 1, 1, 0]}), Row("other", {0: 0.5})
    assert stats.compare(best, other) == Comparison(
        "other", None, None, "none", "one common run and no per-image results to pair"
    )
