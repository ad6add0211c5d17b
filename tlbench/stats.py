"""How sure a table is: confidence intervals, paired comparisons, ties and ranking quality.

Pure numpy and scipy (no torch), so reports and exports can use it anywhere.

- `t_interval`: Student-t 95% interval of the mean accuracy over seeds (two or more).
- `bootstrap_interval`: percentile-bootstrap interval over the evaluation images of a
  single run, from its per-image correctness.
- `paired_t` / `paired_bootstrap` / `compare`: the difference between two rows, paired
  by seed (two or more common seeds) or by image (single-seed rows).
- `compare_to_best` / `tied_with_best`: the rows that cannot be told apart from the best.
- `weighted_tau` / `regret`: how well a transferability score ranks backbones against
  the accuracies fine-tuning reached, and what picking by it costs.

Every interval is two-sided at `confidence` (0.95 unless told). A single run's
interval is its bootstrap computed exactly (no draws); the paired bootstraps are
seeded (default seed 0), so a table prints the same bounds every time it is made.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "CONFIDENCE",
    "Comparison",
    "Interval",
    "Row",
    "accuracy_interval",
    "bootstrap_interval",
    "compare",
    "compare_to_best",
    "paired_bootstrap",
    "paired_t",
    "regret",
    "t_interval",
    "tied_with_best",
    "weighted_tau",
]

CONFIDENCE = 0.95
#: resamples of every bootstrap. The Monte-Carlo error of a 2.5% percentile from
#: 10,000 resamples is about 0.15 percentile points (sqrt(q(1-q)/B)), far below the
#: width of any interval a table shows; a run of 1,000 eval images takes ~1 ms.
BOOTSTRAP_RESAMPLES = 10_000


@dataclass(frozen=True)
class Interval:
    """A point estimate with its two-sided confidence interval.

    `n` is what the interval is over: seeds (method "t", "paired-t") or evaluation
    images (method "bootstrap", "paired-bootstrap").
    """

    estimate: float
    lower: float
    upper: float
    n: int
    method: str
    confidence: float = CONFIDENCE

    def contains(self, value: float) -> bool:
        return self.lower <= value <= self.upper

    @property
    def half_width(self) -> float:
        return (self.upper - self.lower) / 2

    def to_dict(self) -> dict[str, float | int | str]:
        return {
            "estimate": self.estimate,
            "lower": self.lower,
            "upper": self.upper,
            "n": self.n,
            "method": self.method,
            "confidence": self.confidence,
        }


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")


def _finite_1d(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} must be finite, got {array.tolist()}")
    return array


def _correctness(values: Sequence[int] | np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-d array of 0/1, got shape {array.shape}")
    if not np.all((array == 0) | (array == 1)):
        raise ValueError(f"{what} must hold only 0 and 1 (per-image correctness)")
    return array.astype(bool)


# --------------------------------------------------------------------------- intervals


def t_interval(
    values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE, *, method: str = "t"
) -> Interval | None:
    """Student-t interval of the mean of `values` (one per seed); None for fewer than two.

    mean ± t_{(1+c)/2, n-1} · s / sqrt(n), s the sample standard deviation (ddof=1).
    Identical values give a zero-width interval (scipy would give NaN bounds).
    """
    _check_confidence(confidence)
    x = _finite_1d(values, "values")
    n = x.size
    if n < 2:
        return None
    mean = float(x.mean())
    sem = float(x.std(ddof=1)) / math.sqrt(n)
    from scipy import stats as _st  # here: importing scipy.stats costs a second at start-up

    half = float(_st.t.ppf((1 + confidence) / 2, n - 1)) * sem
    return Interval(mean, mean - half, mean + half, n, method, confidence)


def bootstrap_interval(
    correct: Sequence[int] | np.ndarray,
    confidence: float = CONFIDENCE,
    *,
    resamples: int | None = None,
    seed: int = 0,
) -> Interval:
    """Percentile-bootstrap interval of one run's accuracy over its evaluation images.

    `correct[i]` is 1 when image i was classified correctly. The bootstrap
    resamples the evaluation images with replacement; the bounds are the
    (1-c)/2 and (1+c)/2 quantiles of the resampled accuracies. For 0/1 data
    the number of correct images in a resample of n is exactly
    Binomial(n, accuracy), so those quantiles are computed exactly (the
    bootstrap with infinitely many resamples: no Monte-Carlo error, and
    microseconds instead of a millisecond per interval). `resamples=B` draws
    B resamples instead, seeded by `seed`, as a finite bootstrap does.
    """
    _check_confidence(confidence)
    c = _correctness(correct, "correct")
    n = c.size
    accuracy = float(c.mean())
    qs = ((1 - confidence) / 2, (1 + confidence) / 2)
    if resamples is None:
        lower, upper = (_binomial_quantile(q, n, accuracy) / n for q in qs)
    else:
        rng = np.random.default_rng(seed)
        resampled = rng.binomial(n, accuracy, size=resamples) / n
        lower, upper = np.quantile(resampled, qs)
    return Interval(accuracy, float(lower), float(upper), n, "bootstrap", confidence)


def _binomial_quantile(q: float, n: int, p: float) -> int:
    """The smallest k with P(Binomial(n, p) <= k) >= q (scipy's binom.ppf, without its
    millisecond of argument handling per call)."""
    from scipy.special import bdtr, bdtrik

    if p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    k = min(n, max(0, math.ceil(float(bdtrik(q, n, p)))))
    while k > 0 and float(bdtr(k - 1, n, p)) >= q:  # bdtrik is a root: step down past it
        k -= 1
    while k < n and float(bdtr(k, n, p)) < q:
        k += 1
    return k


def accuracy_interval(
    accuracies: Sequence[float],
    correct: Sequence[int] | np.ndarray | None = None,
    confidence: float = CONFIDENCE,
    *,
    resamples: int | None = None,
    seed: int = 0,
) -> Interval | None:
    """The interval a table row shows: t over seeds with two or more, else a bootstrap
    over the single run's evaluation images (`correct`), else None."""
    if len(accuracies) >= 2:
        return t_interval(accuracies, confidence)
    if correct is not None:
        return bootstrap_interval(correct, confidence, resamples=resamples, seed=seed)
    return None


# --------------------------------------------------------------------------- comparisons


def paired_t(
    a: Mapping[int, float], b: Mapping[int, float], confidence: float = CONFIDENCE
) -> Interval | None:
    """t-interval of the mean of a[s] - b[s] over the seeds s both rows ran; None under two."""
    common = sorted(set(a) & set(b))
    return t_interval([a[s] - b[s] for s in common], confidence, method="paired-t")


def paired_bootstrap(
    correct_a: Sequence[int] | np.ndarray,
    correct_b: Sequence[int] | np.ndarray,
    confidence: float = CONFIDENCE,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> Interval:
    """Percentile-bootstrap interval of accuracy(a) - accuracy(b) on the same evaluation images.

    Images are resampled in pairs, so what both runs got right or wrong cancels. A
    resample of n pairs falls into the four outcomes (both right, only a, only b,
    neither) as Multinomial(n, observed frequencies), which is how it is drawn; the
    difference of a resample is (only a - only b) / n.

    Chosen over McNemar's exact test because it gives an interval of the difference,
    read with the same rule as the multi-seed case (tied when it contains 0).
    """
    _check_confidence(confidence)
    a = _correctness(correct_a, "correct_a")
    b = _correctness(correct_b, "correct_b")
    if a.size != b.size:
        raise ValueError(
            f"paired bootstrap needs the same evaluation images: {a.size} vs {b.size} results"
        )
    n = a.size
    counts = np.array(
        [np.sum(a & b), np.sum(a & ~b), np.sum(~a & b), np.sum(~a & ~b)], dtype=np.float64
    )
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, counts / n, size=resamples)
    resampled = (draws[:, 1] - draws[:, 2]) / n
    lower, upper = np.quantile(resampled, [(1 - confidence) / 2, (1 + confidence) / 2])
    estimate = float(counts[1] - counts[2]) / n
    return Interval(estimate, float(lower), float(upper), n, "paired-bootstrap", confidence)


@dataclass(frozen=True)
class Row:
    """One table row to compare: its accuracy per seed and, optionally, per-image correctness.

    `key` is whatever identifies the row for the caller (a (backbone, strategy) pair).
    `correct[seed]` is that run's 0/1 correctness on the evaluation images, in the
    evaluation split's order; it is needed only to compare single-seed rows.
    """

    key: Hashable
    accuracy: Mapping[int, float]
    correct: Mapping[int, Sequence[int] | np.ndarray] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        if not self.accuracy:
            raise ValueError(f"row {self.key!r} has no accuracies")
        return float(np.mean(list(self.accuracy.values())))


@dataclass(frozen=True)
class Comparison:
    """A row against the best one.

    `difference` is the interval of best - row (None when no paired comparison can be
    made: `tied` is then None too and `reason` says why). `tied` is True when the
    interval contains 0: the row cannot be told apart from the best.
    """

    key: Hashable
    difference: Interval | None
    tied: bool | None
    method: Literal["best", "paired-t", "paired-bootstrap", "none"]
    reason: str = ""


def compare(
    best: Row,
    other: Row,
    confidence: float = CONFIDENCE,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> Comparison:
    """Compare `other` with `best`, paired.

    - two or more seeds in common: paired t-interval over the common seeds of the
      per-seed differences;
    - otherwise, when each row has per-image correctness for one run (the common seed
      if there is one, else each row's only seed): paired bootstrap over the images;
    - otherwise no comparison (`tied` is None).
    """
    common = sorted(set(best.accuracy) & set(other.accuracy))
    if len(common) >= 2:
        diff = paired_t(best.accuracy, other.accuracy, confidence)
        assert diff is not None
        return Comparison(other.key, diff, diff.contains(0.0), "paired-t")
    if common:
        seed_a = seed_b = common[0]
    elif len(best.accuracy) == 1 and len(other.accuracy) == 1:
        (seed_a,), (seed_b,) = best.accuracy, other.accuracy
    else:
        return Comparison(
            other.key,
            None,
            None,
            "none",
            f"no seed in common ({sorted(best.accuracy)} vs {sorted(other.accuracy)})",
        )
    if seed_a in best.correct and seed_b in other.correct:
        a, b = best.correct[seed_a], other.correct[seed_b]
        if len(a) != len(b):
            return Comparison(
                other.key,
                None,
                None,
                "none",
                f"different evaluation sets ({len(a)} vs {len(b)} images)",
            )
        diff = paired_bootstrap(a, b, confidence, resamples=resamples, seed=seed)
        return Comparison(other.key, diff, diff.contains(0.0), "paired-bootstrap")
    return Comparison(
        other.key, None, None, "none", "one common run and no per-image results to pair"
    )


def compare_to_best(
    rows: Sequence[Row],
    confidence: float = CONFIDENCE,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> dict[Hashable, Comparison]:
    """Every row compared with the best one (highest mean accuracy; the first on a tie)."""
    if not rows:
        return {}
    keys = [r.key for r in rows]
    if len(set(keys)) != len(keys):
        raise ValueError(f"row keys must be unique, got {keys}")
    best = max(rows, key=lambda r: r.mean)  # max keeps the first of equals
    out: dict[Hashable, Comparison] = {}
    for row in rows:
        if row is best:
            out[row.key] = Comparison(row.key, None, True, "best")
        else:
            out[row.key] = compare(best, row, confidence, resamples=resamples, seed=seed)
    return out


def tied_with_best(
    rows: Sequence[Row],
    confidence: float = CONFIDENCE,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> set[Hashable]:
    """Keys of the best row and of every row that cannot be told apart from it.

    A row that cannot be compared (see `compare`) is not in the set; `compare_to_best`
    says which those are and why.
    """
    comparisons = compare_to_best(rows, confidence, resamples=resamples, seed=seed)
    return {key for key, c in comparisons.items() if c.tied}


# --------------------------------------------------------------------------- ranking quality


def weighted_tau(
    score: Sequence[float] | np.ndarray,
    accuracy: Sequence[float] | np.ndarray,
    *,
    weigh_by: Literal["both", "accuracy", "score"] = "both",
) -> float:
    """Weighted Kendall tau (Vigna 2015) between a score and the accuracies it should predict.

    Disagreements near the top count more: a pair's weight is the sum of the hyperbolic
    weights 1/(r+1) of its two elements, r their rank (0 = largest). `weigh_by` says
    whose ranks set the weights:

    - "both" (default): scipy.stats.weightedtau(score, accuracy) with its defaults,
      the mean of the tau weighted by the ranks of the score and of the accuracy. This
      is the call the LogME papers (You et al. 2021, 2022) and TLlib's ranking
      evaluation make, so figures compare with theirs (TLlib reports ~0.67 for LogME).
    - "accuracy": weights from the true ranking only (the best fine-tuned models matter
      most, whatever the score thinks);
    - "score": weights from the score's ranking (the models it would pick matter most).

    NaN when fewer than two items or either input is constant.
    """
    s = _finite_1d(score, "score")
    a = _finite_1d(accuracy, "accuracy")
    if s.size != a.size:
        raise ValueError(f"score and accuracy differ in length: {s.size} vs {a.size}")
    if s.size < 2:
        return math.nan
    if weigh_by == "both":
        rank: bool | np.ndarray = True
    elif weigh_by in ("accuracy", "score"):
        key = a if weigh_by == "accuracy" else s
        other = s if weigh_by == "accuracy" else a
        # Decreasing lexicographic order (key, then the other), as scipy's rank=None does.
        order = np.lexsort((-other, -key))
        rank = np.empty(s.size, dtype=np.intp)
        rank[order] = np.arange(s.size)
    else:
        raise ValueError(f"weigh_by must be 'both', 'accuracy' or 'score', got {weigh_by!r}")
    if rank is True:
        return (_weighted_tau(s, a) + _weighted_tau(a, s)) / 2
    return _weighted_tau(s, a, rank)


def _weighted_tau(x: np.ndarray, y: np.ndarray, rank: np.ndarray | None = None) -> float:
    """scipy.stats.weightedtau(x, y, rank=rank) with its hyperbolic additive weights, pair by
    pair (equal to 1e-15 on 20,000 random inputs, ties included), without importing
    scipy.stats (half a second of every report that checks a ranking).

    An element of rank r weighs 1/(r+1), a pair the sum of its two; rank None is the
    decreasing lexicographic order by (x, y). With tot the weight of all pairs, u of those
    tied in x, v tied in y, t tied in both and d of the discordant ones, the tau is
    (tot - (u + v - t) - 2 d) / sqrt((tot - u)(tot - v)); NaN when x or y is constant.
    """
    n = x.size
    if np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    if rank is None:
        order = np.lexsort((y, x))
        rank = np.empty(n, dtype=np.intp)
        rank[order[::-1]] = np.arange(n)
    weight = 1.0 / (np.asarray(rank, dtype=np.float64) + 1.0)
    i, j = np.triu_indices(n, 1)
    pair = weight[i] + weight[j]
    tied_x, tied_y = x[i] == x[j], y[i] == y[j]
    tot, u, v = float(pair.sum()), float(pair[tied_x].sum()), float(pair[tied_y].sum())
    t = float(pair[tied_x & tied_y].sum())
    d = float(pair[(x[i] - x[j]) * (y[i] - y[j]) < 0].sum())
    tau = ((tot - (v + u - t)) - 2.0 * d) / math.sqrt(tot - u) / math.sqrt(tot - v)
    return min(1.0, max(-1.0, tau))


def regret(
    score: Sequence[float] | np.ndarray,
    accuracy: Sequence[float] | np.ndarray,
    k: int = 1,
) -> float:
    """Best accuracy minus the best accuracy among the `k` items the score ranks highest.

    k=1 is the cost of picking by the score alone; k>1 is the cost of a two-stage
    selection that fine-tunes the top k and keeps the best of them. Ties in the score
    are broken against the pick (lower accuracy first), so the regret is never flattered
    by the order the items were listed in.
    """
    s = _finite_1d(score, "score")
    a = _finite_1d(accuracy, "accuracy")
    if s.size != a.size:
        raise ValueError(f"score and accuracy differ in length: {s.size} vs {a.size}")
    if s.size == 0:
        raise ValueError("regret needs at least one item")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    order = np.lexsort((a, -s))  # score descending, then accuracy ascending
    picked = order[:k]
    return float(a.max() - a[picked].max())
