"""`logreg`: the probe papers train (L-BFGS logistic regression), said in the record, tunable."""

from __future__ import annotations

import torch

from tlbench.engine import Execution, FeatureHead
from tlbench.plugin_types import Hyperparameters
from tlbench.probe import fit_logistic_probe
from tlbench.runner import Runner


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    centres = torch.tensor([[4.0, 0.0], [0.0, 4.0], [-4.0, -4.0]])
    return centres[y] * 3 + torch.randn(n, 2, generator=g), y


def test_lbfgs_fits_separable_features_and_regularisation_shrinks_the_weights():
    x, y = _blobs(90, 0)
    ex = Execution.resolve(torch.device("cpu"), "fp32", False, False)
    fits, norms = [], []
    for decay in (1e-4, 10.0):
        head = FeatureHead(2, 3)
        hp = Hyperparameters(epochs=2, lr=1.0, weight_decay=decay, optimizer="lbfgs")
        fits.append(
            fit_logistic_probe(head, x, y, *_blobs(30, 1), num_classes=3, hp=hp, ex=ex, seed=0)
        )
        norms.append(float(head.linear.weight.detach().norm()))
    assert fits[0].final_accuracy == 1.0 and len(fits[0].curve) == 2
    assert norms[1] < norms[0] / 5  # strong L2 keeps the weights small
    assert fits[0].measured_steps == 2 and fits[0].train_seconds > 0


def test_a_logreg_run_records_its_solver_and_can_be_tuned(plugins, tiny_config):
    tiny_config.strategies = ["logreg"]
    tiny_config.tune, tiny_config.tune_batch = 3, 3
    (record,) = Runner(tiny_config, plugins).run()
    assert record["status"] == "ok", record["reason"]
    assert record["config"]["hyperparameters"]["optimizer"] == "lbfgs"
    assert record["accuracy"]["final"] > 0.8
    assert set(record["tuning"]["chosen"]) == {"weight_decay"}
