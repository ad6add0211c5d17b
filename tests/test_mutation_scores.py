"""Transferability scores, the tie set and the weighted tau, at the edges the first tests
left open.

Written for the mutants the mutation run's second shard (results/mutation.md) left
alive: what each score refuses and says, inputs of another float width computed
as float64, a source class no image predicts, and `tied_with_best` passing its
confidence, resamples and seed on to the comparison it summarises; the weighted tau
weighted by one ranking breaking that ranking's ties by the other, as scipy does.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from tlbench import stats
from tlbench import transferability as tr

RNG = np.random.default_rng(25)
FEATURES = RNG.normal(size=(12, 5))
TARGET = RNG.normal(size=12)


# --------------------------------------------------------------------------- LEEP


def test_leep_refuses_probabilities_that_are_negative_even_when_each_row_sums_to_1():
    with pytest.raises(ValueError) as info:
        tr.leep(np.array([[1.25, -0.25], [0.5, 0.5]]), np.array([0, 1]))
    assert str(info.value) == "source_probabilities must be non-negative rows that sum to 1"


def test_leep_takes_float32_softmax_rows_that_sum_to_1_within_a_millionth():
    theta = np.array([[0.8 + 5e-7, 0.2], [0.4, 0.6 - 5e-7]])
    assert tr.leep(theta, np.array([0, 1])) == pytest.approx(math.log(7 / 12), abs=1e-5)


def test_leep_names_source_probabilities_in_its_shape_and_finiteness_errors():
    with pytest.raises(ValueError) as info:
        tr.leep(np.array([0.5, 0.5]), np.array([0, 1]))
    assert str(info.value) == (
        "source_probabilities must be a non-empty (n, D) array, got shape (2,)"
    )
    with pytest.raises(ValueError) as info:
        tr.leep(np.array([[np.nan, 1.0]]), np.array([0]))
    assert str(info.value) == "source_probabilities hold NaN or infinite values"


def test_a_source_class_no_image_predicts_changes_nothing():
    theta = np.array([[0.8, 0.2], [0.4, 0.6]])
    with_unused = np.array([[0.8, 0.0, 0.2], [0.4, 0.0, 0.6]])
    with np.errstate(all="raise"):  # no 0 / 0 on the way either
        assert tr.leep(with_unused, np.array([0, 1])) == tr.leep(theta, np.array([0, 1]))
    assert tr.leep(with_unused, np.array([0, 1])) == pytest.approx(math.log(7 / 12))


# --------------------------------------------------------------------------- LogME's evidence


@pytest.mark.parametrize(("alpha", "beta"), [(0.0, 1.0), (1.0, 0.0), (-1.0, 1.0), (1.0, -2.0)])
def test_the_evidence_refuses_an_alpha_or_a_beta_that_is_not_positive(alpha, beta):
    with pytest.raises(ValueError) as info:
        tr.log_evidence(FEATURES, TARGET, alpha, beta)
    assert str(info.value) == f"alpha and beta must be positive, got {alpha}, {beta}"


def test_the_evidence_and_its_maximum_name_the_target_shape_they_need():
    for score in (
        lambda y: tr.log_evidence(FEATURES, y, 1.0, 1.0),
        lambda y: tr.maximize_evidence(FEATURES, y),
    ):
        with pytest.raises(ValueError) as info:
            score(TARGET[:5])
        assert str(info.value) == "target must have shape (12,), got (5,)"


def test_a_float32_target_is_scored_as_the_same_numbers_in_float64():
    narrow = TARGET.astype(np.float32)
    wide = narrow.astype(np.float64)
    assert tr.log_evidence(FEATURES, narrow, 0.5, 2.0) == tr.log_evidence(FEATURES, wide, 0.5, 2.0)
    assert tr.maximize_evidence(FEATURES, narrow) == tr.maximize_evidence(FEATURES, wide)


# --------------------------------------------------------------------------- H-score's shrinkage


def test_the_shrinkage_of_float32_features_is_computed_in_float64():
    # Enough images that the shrinkage is not clamped to 1 (as it is for 12 of 5 features).
    many = RNG.normal(size=(300, 8)) * np.linspace(0.5, 3.0, 8)
    centred = (many - many.mean(axis=0)).astype(np.float32)
    wide = tr.ledoit_wolf_shrinkage(centred.astype(np.float64))
    assert 0.0 < wide < 0.5
    assert tr.ledoit_wolf_shrinkage(centred) == wide


# --------------------------------------------------------------------------- ties with the best


def _single_seed_rows(draw: int) -> list[stats.Row]:
    """Two one-seed rows on 200 images, right independently at rates of 75% and 68%."""
    rng = np.random.default_rng(draw)
    best, other = (rng.random(200) < rate for rate in (0.75, 0.68))
    if best.mean() <= other.mean():
        best, other = other, best
    return [
        stats.Row("best", {0: best.mean() * 100}, {0: best.astype(int)}),
        stats.Row("other", {0: other.mean() * 100}, {0: other.astype(int)}),
    ]


def _tied(rows, confidence=stats.CONFIDENCE, **kwargs) -> set:
    comparisons = stats.compare_to_best(rows, confidence, **kwargs)
    return {key for key, c in comparisons.items() if c.tied}


def test_the_tie_set_is_the_comparisons_at_the_confidence_resamples_and_seed_asked_for():
    # Rows near the edge of the interval, where the bootstrap's seed decides the answer.
    rows = next(
        rows
        for rows in map(_single_seed_rows, range(500))
        if _tied(rows, resamples=50, seed=0) != _tied(rows, resamples=50, seed=1)
    )
    assert stats.tied_with_best(rows, resamples=50) == _tied(rows, resamples=50, seed=0)
    for seed in (0, 1):
        assert stats.tied_with_best(rows, resamples=50, seed=seed) == _tied(
            rows, resamples=50, seed=seed
        )
    edges = [
        (confidence, resamples)
        for confidence in (0.5, 0.8, 0.95, 0.99)
        for resamples in (20, 50, stats.BOOTSTRAP_RESAMPLES)
    ]
    answers = {edge: _tied(rows, edge[0], resamples=edge[1], seed=1) for edge in edges}
    assert len(set(map(frozenset, answers.values()))) > 1  # the settings matter here
    for (confidence, resamples), tied in answers.items():
        assert stats.tied_with_best(rows, confidence, resamples=resamples, seed=1) == tied
    # and at the defaults: the confidence, resamples and seed `compare_to_best` defaults to
    assert stats.tied_with_best(rows) == _tied(rows)


def test_intervals_carry_the_confidence_asked_for_and_name_bad_values():
    interval = stats.t_interval([1.0, 2.0, 4.0], 0.8)
    assert interval.confidence == 0.8
    paired = stats.paired_t({0: 3.0, 1: 5.0, 2: 9.0}, {0: 2.0, 1: 3.0, 2: 5.0}, 0.8)
    assert paired == stats.Interval(
        interval.estimate, interval.lower, interval.upper, 3, "paired-t", 0.8
    )
    with pytest.raises(ValueError) as info:
        stats.t_interval([1.0, float("nan")])
    assert str(info.value) == "values must be finite, got [1.0, nan]"


def test_every_row_is_compared_with_the_best_at_the_settings_asked_for():
    rows = next(
        rows
        for rows in map(_single_seed_rows, range(500))
        if _tied(rows, resamples=50, seed=0) != _tied(rows, resamples=50, seed=1)
    )
    best, other = rows
    assert stats.compare_to_best(rows, resamples=50) == {
        "best": stats.Comparison("best", None, True, "best"),
        "other": stats.compare(best, other, resamples=50, seed=0),
    }
    for confidence, resamples, seed in ((0.5, 20, 1), (0.8, 50, 0), (0.99, 50, 1)):
        comparisons = stats.compare_to_best(rows, confidence, resamples=resamples, seed=seed)
        assert comparisons["other"] == stats.compare(
            best, other, confidence, resamples=resamples, seed=seed
        )


def test_the_paired_bootstrap_is_reproducible_and_says_what_it_is_over():
    draw = np.random.default_rng(7)
    a, b = ((draw.random(60) < rate).astype(int) for rate in (0.7, 0.6))
    first = stats.paired_bootstrap(a, b, 0.9, resamples=30)
    assert first == stats.paired_bootstrap(a, b, 0.9, resamples=30, seed=0)  # the default
    assert first != stats.paired_bootstrap(a, b, 0.9, resamples=30, seed=1)
    assert (first.estimate, first.n, first.method, first.confidence) == (
        (a.sum() - b.sum()) / 60,
        60,
        "paired-bootstrap",
        0.9,
    )
    for args, message in (
        (([1, 2], [1, 0]), "correct_a must hold only 0 and 1 (per-image correctness)"),
        (([1, 0], [[1, 0]]), "correct_b must be a non-empty 1-d array of 0/1, got shape (1, 2)"),
    ):
        with pytest.raises(ValueError) as info:
            stats.paired_bootstrap(*args)
        assert str(info.value) == message


def test_regret_refuses_what_it_cannot_rank_with_a_message_that_says_why():
    for args, message in (
        (([1.0, float("inf")], [1.0, 2.0]), "score must be finite, got [1.0, inf]"),
        (([1.0, 2.0], [[1.0, 2.0]]), "accuracy must be one-dimensional, got shape (1, 2)"),
        (([1.0, 2.0], [1.0]), "score and accuracy differ in length: 2 vs 1"),
        (([], []), "regret needs at least one item"),
    ):
        with pytest.raises(ValueError) as info:
            stats.regret(*args)
        assert str(info.value) == message


# --------------------------------------------------------------------------- the weighted tau


def test_the_weighted_tau_refuses_what_it_cannot_rank_with_a_message_that_says_why():
    for args, message in (
        (([1.0, float("nan")], [1.0, 2.0]), "score must be finite, got [1.0, nan]"),
        (([[1.0, 2.0]], [1.0, 2.0]), "score must be one-dimensional, got shape (1, 2)"),
        (([1.0, 2.0], [1.0, float("inf")]), "accuracy must be finite, got [1.0, inf]"),
        (([1.0, 2.0], [[1.0, 2.0]]), "accuracy must be one-dimensional, got shape (1, 2)"),
        (([1.0, 2.0, 3.0], [1.0, 2.0]), "score and accuracy differ in length: 3 vs 2"),
    ):
        with pytest.raises(ValueError) as info:
            stats.weighted_tau(*args)
        assert str(info.value) == message


def test_a_tie_in_the_ranking_that_sets_the_weights_is_broken_by_the_other_ranking():
    """Weighted by accuracy, the two models tied at 0.8 are ranked by their score: the one
    the score puts first (index 2) weighs 1/2, the other 1/3. Then the discordant pair
    (0, 2) weighs 3/2 and the concordant (0, 1) 4/3, and the pair tied in accuracy 5/6:
    tau = (22/6 - 5/6 - 2 * 9/6) / sqrt(17/6 * 22/6) = -1/sqrt(374). The other tie-break
    (by position, or the lower score first) swaps the two weights and the sign."""
    expected = -1 / math.sqrt(374)
    score, accuracy = [2.0, 1.0, 3.0], [0.9, 0.8, 0.8]
    assert stats.weighted_tau(score, accuracy, weigh_by="accuracy") == pytest.approx(expected)
    # The same with the roles swapped: weighted by the score, its tie broken by accuracy.
    score, accuracy = [0.9, 0.8, 0.8], [0.5, 0.4, 0.6]
    assert stats.weighted_tau(score, accuracy, weigh_by="score") == pytest.approx(expected)


def test_weighting_by_one_ranking_is_scipys_lexicographic_rank_whatever_the_ties():
    rng = np.random.default_rng(25)
    for _ in range(200):
        n = int(rng.integers(2, 12))
        levels = int(rng.choice([2, 3, 5]))  # few levels: ties in either ranking or both
        score = rng.integers(0, levels, n) / levels
        accuracy = rng.integers(0, levels, n) / levels
        by_accuracy = float(st.weightedtau(accuracy, score, rank=None)[0])
        got = stats.weighted_tau(score, accuracy, weigh_by="accuracy")
        assert got == pytest.approx(by_accuracy, abs=1e-12, nan_ok=True), (score, accuracy)
        by_score = float(st.weightedtau(score, accuracy, rank=None)[0])
        got = stats.weighted_tau(score, accuracy, weigh_by="score")
        assert got == pytest.approx(by_score, abs=1e-12, nan_ok=True), (score, accuracy)


def test_a_covariance_already_a_multiple_of_the_identity_needs_no_shrinkage():
    # S = 0.5 I exactly: |S - mu I|_F^2 is 0, and the shrinkage toward mu I is 0, not a
    # division by that zero.
    x = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert tr.ledoit_wolf_shrinkage(x) == 0.0
