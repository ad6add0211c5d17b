"""tlbench.transferability: each score on cases with a known answer and against references
computed independently here (dense Gaussian likelihoods, numerical optimisation, brute force)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize
from scipy import stats as st

from tlbench import transferability as tr


def clusters(
    n_per_class: int, classes: int, dim: int, spread: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters around random unit centres: smaller spread, better separated."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(classes), n_per_class)
    features = centres[labels] + spread * rng.normal(size=(labels.size, dim))
    return features, labels


# --------------------------------------------------------------------------- LogME


def dense_log_evidence(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """y ~ N(0, F F^T / alpha + I / beta): the evidence with w integrated out, no SVD."""
    cov = f @ f.T / alpha + np.eye(f.shape[0]) / beta
    return float(st.multivariate_normal(mean=np.zeros(f.shape[0]), cov=cov).logpdf(y))


@pytest.mark.parametrize("shape", [(40, 6), (12, 30)])  # more images than dims, and fewer
def test_log_evidence_matches_the_dense_gaussian_likelihood(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    f = rng.normal(size=shape)
    y = (rng.random(shape[0]) < 0.4).astype(float)
    for alpha, beta in [(1.0, 1.0), (0.3, 7.0), (25.0, 0.2)]:
        assert tr.log_evidence(f, y, alpha, beta) == pytest.approx(
            dense_log_evidence(f, y, alpha, beta), rel=1e-9
        )


def test_evidence_maximum_matches_numerical_optimisation() -> None:
    f, labels = clusters(15, 3, 5, spread=0.6, seed=2)
    y = (labels == 1).astype(float)
    got = tr.maximize_evidence(f, y)
    assert got.converged
    result = optimize.minimize(
        lambda p: -dense_log_evidence(f, y, math.exp(p[0]), math.exp(p[1])),
        x0=[0.0, 0.0],
        method="Nelder-Mead",
        options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 5000},
    )
    assert got.log_evidence == pytest.approx(-result.fun, abs=1e-6)
    assert got.alpha == pytest.approx(math.exp(result.x[0]), rel=1e-3)
    assert got.beta == pytest.approx(math.exp(result.x[1]), rel=1e-3)
    # And the value reported is the evidence at the (alpha, beta) reported.
    assert got.log_evidence == pytest.approx(dense_log_evidence(f, y, got.alpha, got.beta))


def test_logme_is_the_mean_over_classes_of_the_evidence_per_image() -> None:
    f, labels = clusters(10, 4, 8, spread=0.5, seed=3)
    per_class = [tr.maximize_evidence(f, (labels == c).astype(float)) for c in range(4)]
    expected = np.mean([e.log_evidence for e in per_class]) / f.shape[0]
    assert tr.logme(f, labels) == pytest.approx(expected)


def test_logme_ranks_better_separated_features_higher() -> None:
    scores = [tr.logme(*clusters(20, 5, 16, spread=s, seed=4)) for s in (0.1, 0.4, 1.0)]
    assert scores == sorted(scores, reverse=True)
    # Features unrelated to the labels score below the worst clustered ones.
    rng = np.random.default_rng(4)
    noise = tr.logme(rng.normal(size=(100, 16)), np.repeat(np.arange(5), 20))
    assert noise < scores[-1]


def test_logme_invariances() -> None:
    f, labels = clusters(12, 3, 10, spread=0.7, seed=5)
    base = tr.logme(f, labels)
    q, _ = np.linalg.qr(np.random.default_rng(6).normal(size=(10, 10)))
    assert tr.logme(f @ q, labels) == pytest.approx(base, rel=1e-9)  # rotation
    assert tr.logme(f * 37.0, labels) == pytest.approx(base, rel=1e-6)  # scale
    perm = np.random.default_rng(7).permutation(labels.size)
    assert tr.logme(f[perm], labels[perm]) == pytest.approx(base, rel=1e-9)  # image order
    renamed = np.array([2, 0, 1])[labels] * 10  # class ids
    assert tr.logme(f, renamed) == pytest.approx(base, rel=1e-9)


def test_logme_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="shape"):
        tr.logme(np.ones((4, 2)), np.array([0, 1, 0]))
    with pytest.raises(ValueError, match="NaN"):
        tr.logme(np.array([[np.nan, 1.0], [0.0, 1.0]]), np.array([0, 1]))
    with pytest.raises(ValueError, match="integers"):
        tr.logme(np.ones((2, 2)), np.array([0.0, 1.0]))


# --------------------------------------------------------------------------- k-NN


def brute_force_knn(
    train: np.ndarray, labels: np.ndarray, query: np.ndarray, k: int, skip_self: bool
) -> np.ndarray:
    """One query at a time, with sorted() and Counter-style counting: an independent reference."""
    out = []
    for i, q in enumerate(query):
        d = [
            (float(np.sum((q - t) ** 2)), j)
            for j, t in enumerate(train)
            if not (skip_self and j == i)
        ]
        d.sort()
        near = [labels[j] for _, j in d[:k]]
        best = max(near.count(c) for c in set(near))
        out.append(next(c for c in near if near.count(c) == best))
    return np.array(out)


def test_knn_separable_clusters_is_perfect() -> None:
    f, labels = clusters(10, 4, 8, spread=0.01, seed=8)
    assert tr.knn_accuracy(f, labels) == 1.0
    assert tr.knn_accuracy(f, labels, metric="euclidean", k=3) == 1.0
    g, glabels = clusters(5, 4, 8, spread=0.01, seed=8)  # same centres, new draws
    assert tr.knn_accuracy(f, labels, g, glabels) == 1.0


def test_knn_random_labels_is_near_chance() -> None:
    rng = np.random.default_rng(9)
    f = rng.normal(size=(1000, 8))
    labels = rng.integers(0, 4, size=1000)
    assert tr.knn_accuracy(f, labels, k=5) == pytest.approx(0.25, abs=0.05)


def test_knn_matches_brute_force_reference() -> None:
    f, labels = clusters(15, 3, 4, spread=1.2, seed=10)
    g, glabels = clusters(7, 3, 4, spread=1.2, seed=11)
    for k in (1, 4, 7):
        loo = brute_force_knn(f, labels, f, k, skip_self=True)
        assert tr.knn_accuracy(f, labels, k=k, metric="euclidean") == pytest.approx(
            np.mean(loo == labels)
        )
        held = brute_force_knn(f, labels, g, k, skip_self=False)
        assert tr.knn_accuracy(f, labels, g, glabels, k=k, metric="euclidean") == pytest.approx(
            np.mean(held == glabels)
        )
    # Cosine = euclidean on L2-normalised features; chunking changes nothing.
    unit = f / np.linalg.norm(f, axis=1, keepdims=True)
    assert tr.knn_accuracy(f, labels, k=4, chunk=7) == pytest.approx(
        tr.knn_accuracy(unit, labels, k=4, metric="euclidean")
    )


def test_knn_leave_one_out_never_counts_the_image_itself() -> None:
    # Two classes interleaved so that every image's nearest *other* image is of the other class.
    f = np.arange(10, dtype=float)[:, None]
    labels = np.arange(10) % 2
    assert tr.knn_accuracy(f, labels, k=1, metric="euclidean") == 0.0
    assert tr.knn_accuracy(f, labels, f, labels, k=1, metric="euclidean") == 1.0


# --------------------------------------------------------------------------- H-score


def reference_h_score(f: np.ndarray, y: np.ndarray) -> float:
    """Sum of the generalised eigenvalues of (between-class, total) covariance, np.cov based."""
    cov_f = np.cov(f, rowvar=False)
    g = np.stack([f[y == c].mean(axis=0) for c in y])
    cov_g = np.cov(g, rowvar=False)
    return float(np.sum(np.linalg.eigvals(np.linalg.solve(cov_f, cov_g)).real))


def test_h_score_of_one_hot_features_is_classes_minus_one() -> None:
    labels = np.repeat(np.arange(4), 6)
    one_hot = np.eye(4)[labels]
    assert tr.h_score(one_hot, labels) == pytest.approx(3.0)
    # Any invertible linear map of them too: the score is affine invariant.
    a = np.random.default_rng(12).normal(size=(4, 4))
    assert tr.h_score(one_hot @ a + 5.0, labels) == pytest.approx(3.0)


def test_h_score_matches_reference_and_orders_separation() -> None:
    f, labels = clusters(30, 3, 5, spread=0.8, seed=13)
    assert tr.h_score(f, labels) == pytest.approx(reference_h_score(f, labels), rel=1e-8)
    scores = [tr.h_score(*clusters(30, 3, 5, spread=s, seed=13)) for s in (0.05, 0.5, 2.0)]
    assert scores == sorted(scores, reverse=True)
    assert 0 < scores[-1] < scores[0] <= 2.0 + 1e-9
    noise = np.random.default_rng(14).normal(size=(3000, 5))
    assert tr.h_score(noise, np.arange(3000) % 3) < 0.02  # ~ D (C-1) / n


def reference_ledoit_wolf(x: np.ndarray) -> float:
    """Ledoit & Wolf (2004), Lemma 3.2-3.4 written image by image with their scaled norm."""
    n, p = x.shape
    s = x.T @ x / n
    m = np.trace(s) / p
    d2 = np.sum((s - m * np.eye(p)) ** 2) / p
    b2_bar = sum(np.sum((np.outer(xk, xk) - s) ** 2) / p for xk in x) / n**2
    return min(b2_bar, d2) / d2


def dense_regularised_h_score(f: np.ndarray, y: np.ndarray) -> float:
    """Ibrahim et al.'s formula with D x D matrices: tr(((1-a) S + a mu I)^-1 (1-a) cov_g)."""
    x = f - f.mean(axis=0)
    s = x.T @ x / len(x)
    a = reference_ledoit_wolf(x)
    mu = np.trace(s) / s.shape[0]
    g = np.stack([x[y == c].mean(axis=0) for c in y])
    shrunk = (1 - a) * s + a * mu * np.eye(s.shape[0])
    return float(np.trace(np.linalg.solve(shrunk, (1 - a) * g.T @ g / len(x))))


@pytest.mark.parametrize("shape", [(30, 3, 5), (5, 3, 40)])  # (per class, classes, dims)
def test_regularised_h_score_matches_the_dense_formula(shape: tuple[int, int, int]) -> None:
    f, labels = clusters(*shape, spread=0.9, seed=16)
    assert tr.h_score(f, labels, shrinkage="ledoit-wolf") == pytest.approx(
        dense_regularised_h_score(f, labels), rel=1e-8
    )


def test_regularised_h_score_stays_below_the_maximum_when_dims_exceed_images() -> None:
    f, labels = clusters(5, 3, 40, spread=1.0, seed=15)  # 15 images, 40 dims
    centred = f - f.mean(axis=0)
    assert tr.ledoit_wolf_shrinkage(centred) == pytest.approx(reference_ledoit_wolf(centred))
    # Plain H-score saturates: 15 images in 40 dims separate any labelling.
    assert tr.h_score(f, labels) == pytest.approx(2.0, abs=1e-6)
    shrunk = tr.h_score(f, labels, shrinkage="ledoit-wolf")
    assert 0 < shrunk < 1.9
    tight = tr.h_score(*clusters(5, 3, 40, spread=0.1, seed=15), shrinkage="ledoit-wolf")
    assert tight > shrunk


# --------------------------------------------------------------------------- LEEP


def test_leep_known_answers() -> None:
    labels = np.array([0, 0, 1, 1, 1, 2])
    # Source classes that determine the labels (a relabelling): log 1 = 0.
    determined = np.eye(3)[np.array([2, 0, 1])[labels]]
    assert tr.leep(determined, labels) == pytest.approx(0.0)
    # An uninformative source: the predictor is the label prior, LEEP = sum p log p.
    uniform = np.full((6, 4), 0.25)
    prior = np.bincount(labels) / 6
    assert tr.leep(uniform, labels) == pytest.approx(float(np.sum(prior * np.log(prior))))


def test_leep_by_hand_on_two_images() -> None:
    # theta = [[.8,.2],[.4,.6]], y = [0,1]: P(y,z) = [[.4,.1],[.2,.3]], P(z) = [.6,.4],
    # P(y|z) = [[2/3,1/4],[1/3,3/4]]; image 0: .8*2/3 + .2*1/4 = 7/12, image 1: .4/3 + .6*3/4 = 7/12.
    theta = np.array([[0.8, 0.2], [0.4, 0.6]])
    assert tr.leep(theta, np.array([0, 1])) == pytest.approx(math.log(7 / 12))
    with pytest.raises(ValueError, match="sum to 1"):
        tr.leep(np.array([[0.5, 0.2]]), np.array([0]))
