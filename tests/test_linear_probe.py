"""The linear probe on few images: features that never fired in training must not decide a test.

Pretrained CNN features end in ReLU and pooling: on a small training set many
of them are exactly zero for every training image and non-zero on some test
images. Standardised with the training statistics (std clamped to 1e-6) such
a feature is a million times larger at test time than anything the head was
trained on; any weight it carries then decides the prediction. Found on four
flowers12 photographs per class: nearest-centroid and an L-BFGS probe were
right on 11-12 of 12, tlbench's `linear` on 3 of 12 at every epoch.
"""

from __future__ import annotations

import torch

from tlbench.engine import Execution, FeatureHead, train_head_on_features
from tlbench.plugin_types import Hyperparameters

EX = Execution(torch.device("cpu"))


def _features(n_per_class: int, *, seed: int, silent_in_training: bool) -> tuple:
    """3 classes told apart by features 0-2; features 3-63 are zero unless `not silent`."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(3 * n_per_class) % 3
    x = torch.rand(len(y), 64, generator=g) * 0.5
    x[torch.arange(len(y)), y] += 3.0
    if silent_in_training:
        x[:, 3:] = 0.0
    else:
        x[:, 3:] = torch.rand(len(y), 61, generator=g) * 6.0  # ReLU6 range
    return x, y


def test_features_silent_in_training_do_not_decide_the_test_predictions():
    train_x, train_y = _features(4, seed=0, silent_in_training=True)
    test_x, test_y = _features(4, seed=1, silent_in_training=False)
    for seed in range(3):  # whatever the run's seed
        torch.manual_seed(seed)
        head = FeatureHead(64, 3)
        hp = Hyperparameters(epochs=10, batch_size=4, lr=1e-3, weight_decay=1e-3)
        fit = train_head_on_features(
            head, train_x, train_y, test_x, test_y, num_classes=3, hp=hp, ex=EX, seed=seed
        )
        assert fit.final_accuracy == 1.0, f"seed {seed}: {fit.final_accuracy:.2f} on separable data"
        assert torch.equal(head.linear.weight[:, 3:], torch.zeros(3, 61))


def test_the_head_starts_from_zero():
    head = FeatureHead(5, 2)
    assert torch.equal(head.linear.weight, torch.zeros(2, 5))
    assert torch.equal(head.linear.bias, torch.zeros(2))
