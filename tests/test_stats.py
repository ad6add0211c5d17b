"""tlbench.stats against scipy.stats and hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from tlbench import stats
from tlbench.stats import Row

# --------------------------------------------------------------------------- t interval


def test_t_interval_matches_scipy() -> None:
    values = [0.812, 0.774, 0.801, 0.833, 0.79]
    got = stats.t_interval(values)
    lower, upper = st.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=st.sem(values))
    assert got is not None
    assert got.n == 5 and got.method == "t"
    assert got.estimate == pytest.approx(np.mean(values))
    assert (got.lower, got.upper) == pytest.approx((lower, upper), rel=1e-12)


def test_t_interval_two_seeds_by_hand() -> None:
    # mean 0.85, s = 0.1/sqrt(2), sem = 0.05, t_{0.975, 1} = 12.7062: half-width 0.63531.
    got = stats.t_interval([0.8, 0.9])
    assert got is not None
    assert got.lower == pytest.approx(0.85 - 0.635310, abs=1e-5)
    assert got.upper == pytest.approx(0.85 + 0.635310, abs=1e-5)
    assert stats.t_interval([0.8, 0.9], confidence=0.5).half_width < got.half_width


def test_t_interval_needs_two_seeds_and_handles_identical_values() -> None:
    assert stats.t_interval([0.9]) is None
    assert stats.t_interval([]) is None
    same = stats.t_interval([0.7, 0.7, 0.7])
    assert same is not None and (same.lower, same.upper) == pytest.approx((0.7, 0.7), abs=1e-12)
    with pytest.raises(ValueError, match="finite"):
        stats.t_interval([0.7, math.nan])


# --------------------------------------------------------------------------- bootstrap


def _correct(n: int, right: int, seed: int = 0) -> np.ndarray:
    c = np.zeros(n, dtype=int)
    c[:right] = 1
    return np.random.default_rng(seed).permutation(c)


def test_bootstrap_matches_scipy_percentile_bootstrap() -> None:
    correct = _correct(200, 140)
    got = stats.bootstrap_interval(correct)
    ref = st.bootstrap(
        (correct,),
        np.mean,
        confidence_level=0.95,
        n_resamples=10_000,
        method="percentile",
        rng=np.random.default_rng(7),
    ).confidence_interval
    assert got.estimate == 0.7 and got.n == 200 and got.method == "bootstrap"
    # Two independent Monte-Carlo runs of 10k resamples: within one image (0.005) of each other.
    assert got.lower == pytest.approx(ref.low, abs=0.0051)
    assert got.upper == pytest.approx(ref.high, abs=0.0051)


def test_bootstrap_converges_to_binomial_quantiles() -> None:
    # Resampling n images with replacement from k correct gives Binomial(n, k/n) correct.
    n, k = 500, 410
    got = stats.bootstrap_interval(_correct(n, k), resamples=200_000, seed=3)
    assert got.lower == pytest.approx(st.binom.ppf(0.025, n, k / n) / n, abs=1.01 / n)
    assert got.upper == pytest.approx(st.binom.ppf(0.975, n, k / n) / n, abs=1.01 / n)


@pytest.mark.parametrize(
    "n, k", [(1, 0), (1, 1), (10, 8), (200, 140), (240, 0), (240, 240), (5000, 17), (10_000, 9123)]
)
def test_the_default_bootstrap_is_the_exact_binomial_quantiles(n, k) -> None:
    # Infinitely many resamples: the bounds are Binomial(n, k/n)'s quantiles, to the image.
    got = stats.bootstrap_interval(_correct(n, k))
    assert (got.lower * n, got.upper * n) == pytest.approx(
        (st.binom.ppf(0.025, n, k / n), st.binom.ppf(0.975, n, k / n)), abs=1e-9
    )
    assert got.method == "bootstrap" and got.estimate == k / n


def test_bootstrap_is_seeded_and_narrows_with_more_images() -> None:
    small = _correct(50, 40)
    assert stats.bootstrap_interval(small, seed=1) == stats.bootstrap_interval(small, seed=1)
    large = _correct(5000, 4000)
    assert (
        stats.bootstrap_interval(large).half_width < stats.bootstrap_interval(small).half_width / 5
    )
    assert stats.bootstrap_interval(small).contains(0.8)


def test_bootstrap_rejects_non_binary_input() -> None:
    with pytest.raises(ValueError, match="0 and 1"):
        stats.bootstrap_interval([0, 1, 2])
    with pytest.raises(ValueError, match="non-empty"):
        stats.bootstrap_interval([])


def test_accuracy_interval_picks_t_over_seeds_else_bootstrap() -> None:
    assert stats.accuracy_interval([0.8, 0.85, 0.82]).method == "t"
    single = stats.accuracy_interval([0.7], _correct(100, 70))
    assert single is not None and single.method == "bootstrap" and single.estimate == 0.7
    assert stats.accuracy_interval([0.7]) is None


# --------------------------------------------------------------------------- paired comparisons


def test_paired_t_matches_scipy_ttest_rel_over_common_seeds() -> None:
    a = {0: 0.80, 1: 0.85, 2: 0.90, 5: 0.99}
    b = {0: 0.70, 1: 0.80, 2: 0.82, 3: 0.50}
    got = stats.paired_t(a, b)
    ref = st.ttest_rel([0.80, 0.85, 0.90], [0.70, 0.80, 0.82]).confidence_interval(0.95)
    assert got is not None and got.n == 3 and got.method == "paired-t"
    assert got.estimate == pytest.approx(np.mean([0.10, 0.05, 0.08]))
    assert (got.lower, got.upper) == pytest.approx((ref.low, ref.high), rel=1e-10)
    assert stats.paired_t({0: 0.8}, {0: 0.7, 1: 0.6}) is None


def test_paired_bootstrap_matches_scipy_paired_bootstrap() -> None:
    rng = np.random.default_rng(0)
    a = (rng.random(300) < 0.8).astype(int)
    b = a.copy()
    flip = rng.choice(300, 40, replace=False)
    b[flip] = 1 - b[flip]
    got = stats.paired_bootstrap(a, b)
    ref = st.bootstrap(
        (a, b),
        lambda x, y, axis=-1: np.mean(x, axis=axis) - np.mean(y, axis=axis),
        paired=True,
        n_resamples=10_000,
        method="percentile",
        rng=np.random.default_rng(11),
    ).confidence_interval
    assert got.estimate == pytest.approx(a.mean() - b.mean())
    assert got.lower == pytest.approx(ref.low, abs=2.01 / 300)
    assert got.upper == pytest.approx(ref.high, abs=2.01 / 300)


def test_pairing_by_image_is_narrower_than_ignoring_it() -> None:
    # b is a with 6 of 400 images flipped: unpaired intervals overlap hugely, the paired one is tight.
    a = _correct(400, 300)
    b = a.copy()
    b[np.flatnonzero(a == 1)[:6]] = 0
    paired = stats.paired_bootstrap(a, b)
    assert paired.estimate == pytest.approx(6 / 400)
    assert paired.half_width < 0.015
    assert not paired.contains(0.0)  # six images lost, none gained: a real difference
    unpaired = stats.bootstrap_interval(a).half_width + stats.bootstrap_interval(b).half_width
    assert paired.half_width < unpaired / 4


def test_paired_bootstrap_needs_the_same_images() -> None:
    with pytest.raises(ValueError, match="same evaluation images"):
        stats.paired_bootstrap([1, 0, 1], [1, 0])


def test_tied_with_best_over_seeds() -> None:
    rows = [
        Row("near", {0: 0.80, 1: 0.86, 2: 0.83}),
        Row("best", {0: 0.82, 1: 0.85, 2: 0.84}),
        Row("worse", {0: 0.70, 1: 0.74, 2: 0.72}),
        Row("elsewhere", {7: 0.60, 8: 0.61}),
    ]
    comparisons = stats.compare_to_best(rows)
    assert comparisons["best"].method == "best"
    near = comparisons["near"]
    # Differences best - near: 0.02, -0.01, 0.01 -> mean 0.00667, interval spans 0.
    assert near.method == "paired-t" and near.tied
    assert near.difference.estimate == pytest.approx(0.02 / 3)
    ref = st.t.interval(0.95, 2, loc=0.02 / 3, scale=st.sem([0.02, -0.01, 0.01]))
    assert (near.difference.lower, near.difference.upper) == pytest.approx(ref)
    assert comparisons["worse"].tied is False
    assert comparisons["elsewhere"].tied is None
    assert "no seed in common" in comparisons["elsewhere"].reason
    assert stats.tied_with_best(rows) == {"best", "near"}


def test_tied_with_best_single_seed_rows_use_the_images() -> None:
    best = _correct(200, 160)
    close = best.copy()
    close[np.flatnonzero(best == 1)[:2]] = 0  # two images fewer
    far = best.copy()
    far[np.flatnonzero(best == 1)[:30]] = 0  # thirty images fewer
    rows = [
        Row("best", {0: best.mean()}, {0: best}),
        Row("close", {0: close.mean()}, {0: close}),
        Row("far", {1: far.mean()}, {1: far}),  # another seed: still paired by image
        Row("no-images", {0: 0.5}),
    ]
    comparisons = stats.compare_to_best(rows)
    assert comparisons["close"].method == "paired-bootstrap" and comparisons["close"].tied
    assert comparisons["far"].method == "paired-bootstrap" and comparisons["far"].tied is False
    assert comparisons["far"].difference.estimate == pytest.approx(30 / 200)
    assert comparisons["no-images"].tied is None
    assert stats.tied_with_best(rows) == {"best", "close"}


def test_best_is_the_highest_mean_and_keys_must_be_unique() -> None:
    rows = [Row("a", {0: 0.5, 1: 0.7}), Row("b", {0: 0.65, 1: 0.66})]
    assert stats.compare_to_best(rows)["b"].method == "best"
    with pytest.raises(ValueError, match="unique"):
        stats.compare_to_best([Row("a", {0: 0.5}), Row("a", {0: 0.6})])
    assert stats.compare_to_best([]) == {}


# --------------------------------------------------------------------------- ranking quality


def _hand_weighted_tau(x: list[float], y: list[float], rank: list[int]) -> float:
    """Vigna's additive hyperbolic weighted tau without ties, written out pair by pair."""
    num = den = 0.0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            w = 1 / (rank[i] + 1) + 1 / (rank[j] + 1)
            num += w * np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
            den += w
    return num / den


def test_weighted_tau_hand_worked() -> None:
    accuracy = [0.9, 0.8, 0.7]
    score = [1.0, 3.0, 2.0]
    # By accuracy ranks (0, 1, 2): weights 3/2 and 4/3 discordant, 5/6 concordant -> -6/11.
    assert stats.weighted_tau(score, accuracy, weigh_by="accuracy") == pytest.approx(-6 / 11)
    # By score ranks (2, 0, 1): 4/3 and 5/6 discordant, 3/2 concordant -> -2/11.
    assert stats.weighted_tau(score, accuracy, weigh_by="score") == pytest.approx(-2 / 11)
    assert stats.weighted_tau(score, accuracy) == pytest.approx(-4 / 11)
    assert _hand_weighted_tau(score, accuracy, [0, 1, 2]) == pytest.approx(-6 / 11)


def test_weighted_tau_matches_scipy_conventions() -> None:
    rng = np.random.default_rng(5)
    accuracy = rng.random(9)
    score = accuracy + rng.normal(0, 0.3, 9)
    assert stats.weighted_tau(score, accuracy) == pytest.approx(st.weightedtau(score, accuracy)[0])
    # Weighting by accuracy = scipy's lexicographic rank of (accuracy, score).
    by_acc = st.weightedtau(accuracy, score, rank=None)[0]
    assert stats.weighted_tau(score, accuracy, weigh_by="accuracy") == pytest.approx(by_acc)
    by_score = st.weightedtau(score, accuracy, rank=None)[0]
    assert stats.weighted_tau(score, accuracy, weigh_by="score") == pytest.approx(by_score)


def test_the_weighted_tau_is_scipys_with_ties_and_constant_inputs() -> None:
    """tlbench computes scipy.stats.weightedtau pair by pair (issue 26: importing scipy.stats
    cost every report half a second): the same value for rankings with ties in the score,
    in the accuracy and in both, with scipy's ranks or given ones, and NaN for a constant
    input."""
    rng = np.random.default_rng(26)
    for _ in range(400):
        n = int(rng.integers(2, 40))
        levels = int(rng.choice([2, 3, 7, 10_000]))  # few levels: many ties
        score = rng.integers(0, levels, n) / levels
        accuracy = rng.integers(0, levels, n) / levels
        expected = float(st.weightedtau(score, accuracy)[0])
        got = stats.weighted_tau(score, accuracy)
        assert got == pytest.approx(expected, abs=1e-12, nan_ok=True), (score, accuracy)
        rank = rng.permutation(n)
        expected = float(st.weightedtau(score, accuracy, rank=rank)[0])
        got = stats._weighted_tau(score, accuracy, rank)
        assert got == pytest.approx(expected, abs=1e-12, nan_ok=True), (score, accuracy, rank)


def test_weighted_tau_limits() -> None:
    acc = [0.6, 0.7, 0.8, 0.9]
    assert stats.weighted_tau([1, 2, 3, 4], acc) == pytest.approx(1.0)
    assert stats.weighted_tau([4, 3, 2, 1], acc) == pytest.approx(-1.0)
    # A swap among the top two costs more than a swap among the bottom two.
    top_swapped = stats.weighted_tau([1, 2, 4, 3], acc)
    bottom_swapped = stats.weighted_tau([2, 1, 3, 4], acc)
    assert top_swapped < bottom_swapped < 1.0
    assert math.isnan(stats.weighted_tau([1.0], [0.5]))
    with pytest.raises(ValueError, match="weigh_by"):
        stats.weighted_tau([1, 2], [1, 2], weigh_by="x")  # type: ignore[arg-type]


def test_regret() -> None:
    accuracy = [0.90, 0.80, 0.95]
    score = [3.0, 2.0, 1.0]
    assert stats.regret(score, accuracy) == pytest.approx(0.05)
    assert stats.regret(score, accuracy, k=2) == pytest.approx(0.05)
    assert stats.regret(score, accuracy, k=3) == 0.0
    assert stats.regret([1, 2, 3], accuracy) == 0.0
    # A tie in the score is broken against the pick: the worse of the two tied.
    assert stats.regret([1.0, 1.0, 0.0], [0.9, 0.8, 0.7]) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="k must"):
        stats.regret(score, accuracy, k=0)
