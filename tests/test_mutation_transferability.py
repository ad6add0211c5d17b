"""LogME's fixed-point iteration, the k-NN vote and the H-score, at the edges the first
tests left open.

Written for the mutants shard 2 of the mutation run (results/mutation.md) left alive in
`tlbench.transferability`: every message names the argument it is about; the iteration
starts at alpha = beta = 1, stops on a relative change, caps the noise precision by the
target's norm and says when it did not converge; k is capped at the images a vote can
use; cosine similarity divides by every norm but a zero one; the H-score of square,
constant and tiny features. Every expected value is worked out by hand in the comments.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tlbench import transferability as tr

RNG = np.random.default_rng(2025)


# --------------------------------------------------------------------------- messages


@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (3,)])
def test_features_of_no_images_no_width_or_one_dimension_are_refused_by_name(shape):
    with pytest.raises(ValueError) as info:
        tr.logme(np.zeros(shape), np.zeros(3, dtype=int))
    assert str(info.value) == f"features must be a non-empty (n, D) array, got shape {shape}"


def test_labels_of_another_length_are_refused_by_name():
    with pytest.raises(ValueError) as info:
        tr.h_score(np.eye(4), np.array([0, 1, 0]))
    assert str(info.value) == "labels must have shape (4,) to match the features, got (3,)"


def test_knn_names_the_evaluation_features_and_labels_in_its_errors():
    train, labels = np.eye(3), np.array([0, 1, 1])

    def error(*args, **kwargs) -> str:
        with pytest.raises(ValueError) as info:
            tr.knn_accuracy(train, labels, *args, **kwargs)
        return str(info.value)

    assert error(np.eye(3)) == "give both eval_features and eval_labels, or neither"
    assert error(eval_labels=labels) == "give both eval_features and eval_labels, or neither"
    assert error(np.zeros(3), labels) == (
        "eval_features must be a non-empty (n, D) array, got shape (3,)"
    )
    assert error(np.eye(3)[:2], labels) == (
        "eval_labels must have shape (2,) to match the features, got (3,)"
    )
    assert error(np.eye(3)[:, :2], labels) == "feature widths differ: 3 vs 2"
    assert error(k=0) == "k must be at least 1, got 0"
    assert error(metric="manhattan") == ("metric must be 'cosine' or 'euclidean', got 'manhattan'")
    with pytest.raises(ValueError) as info:
        tr.knn_accuracy(np.ones((1, 2)), np.array([0]))
    assert str(info.value) == "leave-one-out k-NN needs at least two training images"


def test_h_score_names_the_shrinkages_it_knows():
    with pytest.raises(ValueError) as info:
        tr.h_score(np.eye(3), np.array([0, 1, 1]), shrinkage="oas")
    assert str(info.value) == "shrinkage must be 'none' or 'ledoit-wolf', got 'oas'"


def test_float32_features_are_scored_as_the_same_numbers_in_float64():
    features = RNG.normal(size=(30, 6)).astype(np.float32)
    labels = RNG.integers(0, 3, size=30)
    wide = features.astype(np.float64)
    assert tr.logme(features, labels) == tr.logme(wide, labels)
    assert tr.h_score(features, labels) == tr.h_score(wide, labels)


# --------------------------------------------------------------------------- LogME's iteration
#
# F = [[1], [1]]: F^T F has the one eigenvalue S = 2, with u = (1, 1) / sqrt 2. For
# y = (a, b), z = (a + b) / sqrt 2 and the part outside F's column is (a - b)^2 / 2. At
# (alpha, beta), with t = alpha / beta: gamma = S / (t + S), |m|^2 = S z^2 / (t + S)^2,
# |Fm - y|^2 = z^2 t^2 / (t + S)^2 + perp; the step is alpha <- gamma / |m|^2 and
# beta <- (n - gamma) / |Fm - y|^2.

ONE_COLUMN = np.array([[1.0], [1.0]])


def test_the_iteration_starts_at_alpha_and_beta_1():
    # No step taken: log p(y) with C = I + F F^T = [[2, 1], [1, 2]], det 3, y^T C^-1 y = 2/3.
    found = tr.maximize_evidence(ONE_COLUMN, np.array([1.0, 0.0]), max_iter=0)
    assert (found.alpha, found.beta, found.iterations, found.converged) == (1.0, 1.0, 0, False)
    expected = -1 / 3 - 0.5 * math.log(3) - math.log(2 * math.pi)
    assert found.log_evidence == pytest.approx(expected, rel=1e-12)


def test_one_step_of_the_iteration_from_alpha_and_beta_1():
    # y = (1, 0): z^2 = 1/2, perp = 1/2; at t = 1, gamma = 2/3, |m|^2 = 1/9, |Fm - y|^2 = 5/9,
    # so alpha = (2/3) / (1/9) = 6 and beta = (4/3) / (5/9) = 12/5.
    found = tr.maximize_evidence(ONE_COLUMN, np.array([1.0, 0.0]), max_iter=1)
    assert (found.alpha, found.beta) == pytest.approx((6.0, 2.4), rel=1e-12)
    assert (found.iterations, found.converged) == (1, False)


def test_the_iteration_stops_when_alpha_and_beta_each_change_by_less_than_tol_of_themselves():
    # y = (0.1, 0): every alpha and beta of the (1, 0) case times 100 after the first step:
    # (600, 240), then at t = 2.5, gamma = 4/9, |m|^2 = 4/8100, |Fm - y|^2 = 53/8100:
    # (900, 12600/53). The second step changes alpha by 300 = 0.5 of 600 and beta by
    # 0.0094 of 240: within tol = 0.6 of each, though far more than 0.6 in absolute terms.
    found = tr.maximize_evidence(ONE_COLUMN, np.array([0.1, 0.0]), tol=0.6, max_iter=2)
    assert (found.alpha, found.beta) == pytest.approx((900.0, 12600 / 53), rel=1e-12)
    assert (found.iterations, found.converged) == (2, True)


def test_a_target_the_features_fit_exactly_has_its_noise_precision_capped_by_its_norm():
    # y = (0.5, 0.5) = F w with w = 0.5: alpha -> 1 / w^2 = 4, and the residual goes to 0,
    # so beta stops at (n - gamma) / (1e-12 |y|^2) = (2 - 1) / (0.5e-12) = 2e12.
    found = tr.maximize_evidence(ONE_COLUMN, np.array([0.5, 0.5]))
    assert (found.alpha, found.beta) == pytest.approx((4.0, 2e12), rel=1e-9)
    assert found.converged


def test_with_tol_0_the_iteration_stops_at_an_exact_fixed_point():
    # The capped case above reaches a fixed point in floating point: no change is 0 <= 0.
    found = tr.maximize_evidence(ONE_COLUMN, np.array([0.5, 0.5]), tol=0.0)
    assert (found.alpha, found.beta) == pytest.approx((4.0, 2e12), rel=1e-9)
    assert found.converged and found.iterations < 1000


def test_a_target_the_features_do_not_explain_never_converges_and_says_so():
    # F = [[1, 0], [0, 1], [1, 1]], y = (1, 0, 0): y's variance along F^T F's eigenvectors
    # (eigenvalues 3 and 1) and outside F's columns is 1/6, 1/2 and 1/3. The evidence is
    # largest at alpha -> infinity (no weights) with 1 / beta their mean, 1/3: beta settles
    # at 3 while alpha grows without end, so the iteration runs out without converging.
    features = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    found = tr.maximize_evidence(features, np.array([1.0, 0.0, 0.0]))
    assert (found.iterations, found.converged) == (1000, False)
    assert found.beta == pytest.approx(3.0, rel=1e-5)
    assert found.alpha > 1e6


# --------------------------------------------------------------------------- k-NN


def test_leave_one_out_caps_k_at_the_other_images():
    # k = 5 with 4 images: each votes with its 3 others, its partner and the 2 of the other
    # class, which win 2 to 1: every image is classified wrong.
    features = np.array([[0.0], [1.0], [10.0], [11.0]])
    labels = np.array([0, 0, 1, 1])
    assert tr.knn_accuracy(features, labels, k=5, metric="euclidean") == 0.0


def test_train_to_eval_caps_k_at_the_training_images():
    # k = 5 with 3 training images: every query votes with all 3 (one 0, two 1s): class 1.
    features, labels = np.array([[0.0], [1.0], [10.0]]), np.array([0, 1, 1])
    queries, truth = np.array([[0.4], [10.5]]), np.array([0, 1])
    assert tr.knn_accuracy(features, labels, queries, truth, k=5, metric="euclidean") == 0.5


def _at(degrees: float, radius: float) -> list[float]:
    return [radius * math.cos(math.radians(degrees)), radius * math.sin(math.radians(degrees))]


def test_the_default_vote_is_of_the_5_nearest_by_angle_whatever_their_norms():
    # By angle from the query at 0 degrees: 1, A, A, 1, A, 1, then 1 at 170 degrees. Five
    # vote A 3 to 2; a sixth would tie them, and the nearest (class 1) would win. Norms far
    # above and below 1 would change the order were they not divided out.
    angles_and_norms = [(10, 0.5), (20, 3.0), (30, 0.2), (40, 5.0), (50, 0.8), (60, 2.0), (170, 1)]
    features = np.array([_at(degrees, norm) for degrees, norm in angles_and_norms])
    labels = np.array([1, 0, 0, 1, 0, 1, 1])
    query = np.array([_at(0, 4.0)])
    assert tr.knn_accuracy(features, labels, query, np.array([0])) == 1.0
    assert tr.knn_accuracy(features, labels, query, np.array([0]), k=6) == 0.0


def test_a_zero_feature_vector_is_at_cosine_similarity_0_from_every_image():
    # The four others point away from the query (similarity about -1): the zero vector,
    # last in the array, is the query's nearest neighbour.
    features = np.array([[-1.0, 0.1], [-1.0, -0.1], [-1.0, 0.0], [-1.0, 0.2], [0.0, 0.0]])
    labels = np.array([1, 1, 1, 1, 0])
    query = np.array([[1.0, 0.0]])
    assert tr.knn_accuracy(features, labels, query, np.array([0]), k=1) == 1.0


# --------------------------------------------------------------------------- H-score


def test_square_features_reach_the_maximum_h_score():
    # As many features as images: the centred features span every direction the class
    # means can take, so the score is its maximum, classes - 1.
    features = RNG.normal(size=(4, 4))
    assert tr.h_score(features, np.array([0, 0, 1, 2])) == pytest.approx(2.0, rel=1e-9)
    assert tr.h_score(features[:, :3], np.array([0, 1, 0, 1])) == pytest.approx(1.0, rel=1e-9)


@pytest.mark.parametrize("shrinkage", ["none", "ledoit-wolf"])
def test_constant_features_score_0(shrinkage):
    features = np.full((5, 3), 0.5)
    assert tr.h_score(features, np.array([0, 1, 0, 1, 1]), shrinkage=shrinkage) == 0.0


@pytest.mark.parametrize("shrinkage", ["none", "ledoit-wolf"])
def test_two_classes_one_feature_apart_score_the_maximum(shrinkage):
    # cov(f) = 1 (its mean eigenvalue is exactly 1), class means +1 and -1: the between-class
    # covariance is 1 as well, and Ledoit-Wolf has nothing to shrink in one dimension.
    features = np.array([[1.0], [-1.0], [1.0], [-1.0]])
    assert tr.h_score(features, np.array([0, 1, 0, 1]), shrinkage=shrinkage) == 1.0


def test_the_h_score_of_tiny_features_is_that_of_the_same_features_at_unit_scale():
    features = RNG.normal(size=(20, 3))
    labels = np.array([0, 1] * 10)
    expected = tr.h_score(features, labels)
    assert 0.0 < expected < 1.0
    assert tr.h_score(1e-9 * features, labels) == pytest.approx(expected, rel=1e-9)
