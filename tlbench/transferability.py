"""Transferability scores: how well a backbone's frozen features suit a dataset, without training.

Pure numpy (no torch): features are float arrays `(n, D)` as the feature cache holds
them, labels integer arrays `(n,)`. Every score is computed on the training split
only, as a probe would see it; higher is better for all of them.

- `logme`: LogME (You et al., ICML 2021), the mean over classes of the maximum
  log evidence per image of a Bayesian linear model from the features to the class's
  one-hot target.
- `knn_accuracy`: k-nearest-neighbour accuracy, leave-one-out on the training features
  (or train -> eval when evaluation features are given).
- `h_score`: H-score (Bao et al., ICIP 2019), tr(cov(f)^-1 cov(E[f|y])); optionally with
  the Ledoit-Wolf shrinkage of cov(f) of Ibrahim et al. (2022), which keeps it
  meaningful when the feature width is close to or above the number of images.
- `leep`: LEEP (Nguyen et al., ICML 2020). It needs the *source* head's class
  probabilities for each image (e.g. the backbone's ImageNet classifier), not the
  pooled features, so it applies only where a backbone keeps that head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "Evidence",
    "h_score",
    "knn_accuracy",
    "ledoit_wolf_shrinkage",
    "leep",
    "log_evidence",
    "logme",
    "maximize_evidence",
]


def _features(features: np.ndarray, what: str = "features") -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] == 0 or f.shape[1] == 0:
        raise ValueError(f"{what} must be a non-empty (n, D) array, got shape {f.shape}")
    if not np.all(np.isfinite(f)):
        raise ValueError(f"{what} hold NaN or infinite values")
    return f


def _labels(labels: np.ndarray, n: int, what: str = "labels") -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ValueError(f"{what} must have shape ({n},) to match the features, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{what} must be integers, got {y.dtype}")
    return y


# --------------------------------------------------------------------------- LogME


@dataclass(frozen=True)
class Evidence:
    """The maximum of the evidence for one target, and where it is."""

    alpha: float  # prior precision of the weights
    beta: float  # noise precision
    log_evidence: float  # log p(y | F, alpha, beta), not divided by n
    iterations: int
    converged: bool


def _thin_svd(x: np.ndarray, *, want_u: bool = True, want_vt: bool = True):
    """(s^2, U, Vt) of the thin SVD x = U diag(s) Vt, numerically zero s left out.

    Taken from the eigen-decomposition of the smaller Gram matrix (x x^T or x^T x):
    several times faster than an SVD for 1000 images of 1280 features, and as exact as
    the covariance matrices the scores are defined on. Directions with s^2 below
    max(n, D) * eps of the largest carry nothing but rounding and are dropped; every
    score here treats a dropped direction exactly as one the features do not span.
    """
    n, d = x.shape
    small_side = x @ x.T if n <= d else x.T @ x
    e, vectors = np.linalg.eigh(small_side)
    keep = e > e.max(initial=0.0) * max(n, d) * np.finfo(np.float64).eps
    e, vectors = e[keep], vectors[:, keep]
    s = np.sqrt(e)
    if n <= d:
        u = vectors
        vt = (u.T @ x) / s[:, None] if want_vt else None
    else:
        vt = vectors.T
        u = (x @ vectors) / s if want_u else None
    return e, u, vt


class _Spectrum:
    """The thin SVD of F, shared by every class's target."""

    def __init__(self, f: np.ndarray):
        # Directions F does not span contribute nothing to the evidence (their prior
        # and posterior terms cancel); dropping them keeps the sums exact and stable.
        self.sigma, self.u, _ = _thin_svd(f, want_vt=False)  # sigma: eigenvalues of F^T F
        self.n = f.shape[0]

    def project(self, y: np.ndarray) -> tuple[np.ndarray, float]:
        """z = U^T y, and the squared norm of the part of y outside F's column space."""
        z = self.u.T @ y
        return z, max(float(y @ y - z @ z), 0.0)

    def terms(self, z: np.ndarray, perp: float, alpha: float, beta: float):
        """gamma, |m|^2 and |F m - y|^2 at (alpha, beta); m = beta A^-1 F^T y."""
        t = alpha / beta
        shrink = self.sigma / (t + self.sigma)
        gamma = float(shrink.sum())
        m2 = float(np.sum(self.sigma * z**2 / (t + self.sigma) ** 2))
        res2 = float(np.sum((z * t / (t + self.sigma)) ** 2)) + perp
        return gamma, m2, res2

    def evidence(self, z: np.ndarray, perp: float, alpha: float, beta: float) -> float:
        _, m2, res2 = self.terms(z, perp, alpha, beta)
        # You et al. eq. (2) (Bishop 3.86): n/2 log b + D/2 log a - b/2 |Fm-y|^2
        # - a/2 |m|^2 - 1/2 log|A| - n/2 log 2pi with A = a I + b F^T F, where the D - r
        # zero eigenvalues of F^T F cancel against D/2 log a.
        return (
            self.n / 2 * math.log(beta)
            - beta / 2 * res2
            - alpha / 2 * m2
            - 0.5 * float(np.sum(np.log1p(beta * self.sigma / alpha)))
            - self.n / 2 * math.log(2 * math.pi)
        )


def log_evidence(features: np.ndarray, target: np.ndarray, alpha: float, beta: float) -> float:
    """log p(target | features, alpha, beta) of the Bayesian linear model target = F w + e,
    w ~ N(0, I/alpha), e ~ N(0, I/beta), for one real-valued target vector."""
    f = _features(features)
    y = np.asarray(target, dtype=np.float64)
    if y.shape != (f.shape[0],):
        raise ValueError(f"target must have shape ({f.shape[0]},), got {y.shape}")
    if alpha <= 0 or beta <= 0:
        raise ValueError(f"alpha and beta must be positive, got {alpha}, {beta}")
    spectrum = _Spectrum(f)
    return spectrum.evidence(*spectrum.project(y), alpha, beta)


def _maximize(spectrum: _Spectrum, y: np.ndarray, tol: float, max_iter: int) -> Evidence:
    z, perp = spectrum.project(y)
    n = spectrum.n
    alpha, beta = 1.0, 1.0  # the paper's initial values
    # Floors keep a target the features fit exactly (|Fm-y| -> 0) or not at all
    # (m -> 0) from dividing by zero; they bound beta and alpha at ~1e12 per unit of |y|^2.
    floor = 1e-12 * max(float(y @ y), 1e-300)
    converged = False
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 (reported below)
        gamma, m2, res2 = spectrum.terms(z, perp, alpha, beta)
        # Algorithm 1 of You et al.: MacKay's fixed point for the evidence maximum.
        new_alpha = gamma / max(m2, floor)
        new_beta = (n - gamma) / max(res2, floor)
        done = abs(new_alpha - alpha) <= tol * alpha and abs(new_beta - beta) <= tol * beta
        alpha, beta = new_alpha, new_beta
        if done:
            converged = True
            break
    return Evidence(alpha, beta, spectrum.evidence(z, perp, alpha, beta), iterations, converged)


def maximize_evidence(
    features: np.ndarray, target: np.ndarray, *, tol: float = 1e-7, max_iter: int = 1000
) -> Evidence:
    """Maximise `log_evidence` over alpha and beta by the paper's fixed-point iteration.

    Iterates until alpha and beta change by less than `tol` (relative) between steps;
    it usually takes a few dozen steps (the paper's code stops at 1e-3 after at most 11).
    """
    f = _features(features)
    y = np.asarray(target, dtype=np.float64)
    if y.shape != (f.shape[0],):
        raise ValueError(f"target must have shape ({f.shape[0]},), got {y.shape}")
    return _maximize(_Spectrum(f), y, tol, max_iter)


def logme(
    features: np.ndarray, labels: np.ndarray, *, tol: float = 1e-7, max_iter: int = 1000
) -> float:
    """LogME: mean over classes of max_{alpha,beta} log p(y_c | F, alpha, beta) / n.

    y_c is the one-hot column of class c; the classes are the labels present. Features
    are used as given (no centring or bias column), as in the paper. The score is
    invariant to rotating and to rescaling the features, and lies roughly in [-2, 2]
    per image; comparisons between backbones on the same data are what it is for.
    Features that fit a class exactly have unbounded evidence; the iteration caps the
    noise precision (about 1e12 per unit of |y_c|^2), so such features score high but finite.
    """
    f = _features(features)
    y = _labels(labels, f.shape[0])
    spectrum = _Spectrum(f)
    classes = np.unique(y)
    per_class = [
        _maximize(spectrum, (y == c).astype(np.float64), tol, max_iter).log_evidence
        for c in classes
    ]
    return float(np.mean(per_class)) / f.shape[0]


# --------------------------------------------------------------------------- k-NN


def knn_accuracy(
    features: np.ndarray,
    labels: np.ndarray,
    eval_features: np.ndarray | None = None,
    eval_labels: np.ndarray | None = None,
    *,
    k: int = 5,
    metric: Literal["cosine", "euclidean"] = "cosine",
    chunk: int = 1024,
) -> float:
    """Accuracy of a k-nearest-neighbour majority vote.

    Without evaluation features: leave-one-out on `features` (each image is classified
    by its k nearest *other* training images), so the score sees only the training
    split. With them: each evaluation image is classified by its k nearest training
    images. `metric="cosine"` compares L2-normalised features (the usual k-NN probe of
    self-supervised work); "euclidean" uses raw distances. A tied vote goes to the tied
    class whose member is nearest. k=5 keeps few-shot budgets (5 images per class)
    meaningful; k is capped at the number of candidate neighbours.
    """
    train = _features(features)
    y = _labels(labels, train.shape[0])
    if (eval_features is None) != (eval_labels is None):
        raise ValueError("give both eval_features and eval_labels, or neither")
    if eval_features is None:
        query, query_y, loo = train, y, True
    else:
        query = _features(eval_features, "eval_features")
        query_y = _labels(eval_labels, query.shape[0], "eval_labels")
        if query.shape[1] != train.shape[1]:
            raise ValueError(f"feature widths differ: {train.shape[1]} vs {query.shape[1]}")
        loo = False
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    k = min(k, train.shape[0] - (1 if loo else 0))
    if k < 1:
        raise ValueError("leave-one-out k-NN needs at least two training images")
    if metric == "cosine":

        def normalise(x: np.ndarray) -> np.ndarray:
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            return x / np.where(norms > 0, norms, 1.0)

        train_n, query_n = normalise(train), normalise(query)
    elif metric != "euclidean":
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")

    classes, y_index = np.unique(y, return_inverse=True)
    correct = 0
    for start in range(0, query.shape[0], chunk):
        stop = min(start + chunk, query.shape[0])
        if metric == "cosine":
            similarity = query_n[start:stop] @ train_n.T
        else:
            q = query[start:stop]
            # -|q - t|^2 up to the per-query constant |q|^2, which does not change the order.
            similarity = 2 * q @ train.T - np.sum(train**2, axis=1)[None, :]
        if loo:
            similarity[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(similarity, nearest, axis=1), axis=1, kind="stable")
        nearest = np.take_along_axis(nearest, order, axis=1)  # nearest first
        votes_for = y_index[nearest]  # (q, k) class indices
        counts = np.zeros((stop - start, classes.size), dtype=np.int64)
        np.add.at(counts, (np.arange(stop - start)[:, None], votes_for), 1)
        winners = counts == counts.max(axis=1, keepdims=True)
        # The first (nearest) neighbour whose class is among the winners decides.
        first = np.argmax(np.take_along_axis(winners, votes_for, axis=1), axis=1)
        predicted = classes[votes_for[np.arange(stop - start), first]]
        correct += int(np.sum(predicted == query_y[start:stop]))
    return correct / query.shape[0]


# --------------------------------------------------------------------------- H-score


def _shrinkage_from_spectrum(row_norms2: np.ndarray, eig: np.ndarray, dim: int) -> float:
    """Ledoit-Wolf shrinkage from the squared row norms of the centred data and the
    eigenvalues `eig` of its covariance S = X^T X / n (the zero ones may be left out)."""
    n = row_norms2.size
    mu = float(eig.sum()) / dim
    s2 = float(np.sum(eig**2))  # |S|_F^2
    d2 = s2 - mu**2 * dim  # |S - mu I|_F^2
    if d2 <= 0.0:
        return 0.0
    # (1/n^2) sum_k |x_k x_k^T - S|_F^2 = (sum_k |x_k|^4 - n |S|_F^2) / n^2,
    # since sum_k x_k^T S x_k = n |S|_F^2.
    b2_bar = (float(np.sum(row_norms2**2)) - n * s2) / n**2
    return min(max(b2_bar, 0.0), d2) / d2


def ledoit_wolf_shrinkage(centred: np.ndarray) -> float:
    """Ledoit & Wolf (2004)'s optimal shrinkage of the sample covariance of `centred` rows
    toward a multiple of the identity: min(b^2, d^2) / d^2 in their notation."""
    x = np.asarray(centred, dtype=np.float64)
    e, _, _ = _thin_svd(x, want_u=False, want_vt=False)
    return _shrinkage_from_spectrum(np.sum(x**2, axis=1), e / x.shape[0], x.shape[1])


def h_score(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    shrinkage: Literal["none", "ledoit-wolf"] = "none",
) -> float:
    """H-score (Bao et al. 2019): tr(cov(f)^+ cov(E[f|y])), between 0 and (classes - 1).

    cov(f)^+ is the Moore-Penrose pseudo-inverse, as in the authors' code. When the
    feature width approaches the number of images, cov(f) is (near) singular and every
    backbone reaches the maximum; `shrinkage="ledoit-wolf"` gives the regularised H-score
    of Ibrahim et al. (2022): tr(cov_a(f)^-1 (1 - a) cov(E[f|y])), cov_a(f) the
    Ledoit-Wolf estimate (1 - a) cov(f) + a (tr cov(f) / D) I.

    Computed from the eigen-decomposition of the smaller Gram matrix of the centred
    features, not from D x D inversions.
    """
    f = _features(features)
    y = _labels(labels, f.shape[0])
    n, dim = f.shape
    centred = f - f.mean(axis=0)
    e, _, vt = _thin_svd(centred, want_u=False)
    eig = e / n  # eigenvalues of cov(f) on the span of the features
    classes, index = np.unique(y, return_inverse=True)
    counts = np.bincount(index)
    class_means = np.zeros((classes.size, dim))
    np.add.at(class_means, index, centred)
    class_means /= counts[:, None]
    # cov(E[f|y]) = sum_c (n_c/n) m_c m_c^T, and every m_c lies in the span of the rows of
    # the centred features: only the directions of vt contribute, each as v^T cov_g v.
    between = (counts / n) @ (class_means @ vt.T) ** 2
    if shrinkage == "none":
        return float(np.sum(between / eig))
    if shrinkage != "ledoit-wolf":
        raise ValueError(f"shrinkage must be 'none' or 'ledoit-wolf', got {shrinkage!r}")
    lam = _shrinkage_from_spectrum(np.sum(centred**2, axis=1), eig, dim)
    mu = float(eig.sum()) / dim
    if mu == 0.0:
        return 0.0
    # Ibrahim et al. shrink the between-class term by the same (1 - lam), which keeps
    # the score within [0, classes - 1] like the plain one.
    return float(np.sum((1 - lam) * between / ((1 - lam) * eig + lam * mu)))


# --------------------------------------------------------------------------- LEEP


def leep(source_probabilities: np.ndarray, labels: np.ndarray) -> float:
    """LEEP (Nguyen et al. 2020): the mean log-likelihood of the target labels under the
    "expected empirical predictor" built from the source model's class probabilities.

    `source_probabilities[i, z]` is the source head's probability of source class z for
    image i (rows sum to 1). At most 0; 0 when the source classes determine the labels.
    """
    theta = _features(source_probabilities, "source_probabilities")
    if np.any(theta < 0) or not np.allclose(theta.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("source_probabilities must be non-negative rows that sum to 1")
    y = _labels(labels, theta.shape[0])
    n = theta.shape[0]
    classes, index = np.unique(y, return_inverse=True)
    joint = np.zeros((classes.size, theta.shape[1]))  # P(y, z)
    np.add.at(joint, index, theta)
    joint /= n
    marginal = joint.sum(axis=0)  # P(z)
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    likelihood = np.sum(theta * conditional[index], axis=1)  # sum_z P(y_i|z) theta_i(z)
    return float(np.mean(np.log(likelihood)))
