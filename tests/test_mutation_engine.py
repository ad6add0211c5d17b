"""The learning-rate schedule at its edges and the optimiser's kernels, in the cases the
mutation run (results/mutation.md) found unchecked.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tlbench.api import Hyperparameters
from tlbench.engine import make_optimizer, make_schedule


def factors(hp: Hyperparameters, steps_per_epoch: int, steps: list[int]) -> list[float]:
    optimizer = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=1.0)
    schedule = make_schedule(optimizer, hp, steps_per_epoch)
    return [schedule.lr_lambdas[0](s) for s in steps]


def test_a_run_of_one_step_trains_at_the_full_rate_whatever_warm_up_was_asked():
    # 1 epoch x 1 step: half the training is 0 steps, so there is no warm-up.
    hp = Hyperparameters(epochs=1, warmup_epochs=1, schedule="cosine")
    assert factors(hp, 1, [0]) == [1.0]


def test_the_warm_up_of_an_odd_number_of_steps_is_capped_at_the_lower_half():
    # 5 steps: the warm-up gets 5 // 2 = 2 of them (1/3, 2/3), step 2 is at the full rate.
    hp = Hyperparameters(epochs=1, warmup_epochs=10, schedule="constant")
    assert factors(hp, 5, [0, 1, 2, 4]) == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0])


def test_a_step_size_of_one_epoch_decays_after_every_epoch():
    hp = Hyperparameters(epochs=3, schedule="step", step_size=1, gamma=0.5)
    assert factors(hp, 2, [0, 1, 2, 3, 4, 5]) == pytest.approx([1, 1, 0.5, 0.5, 0.25, 0.25])


def params() -> list[dict]:
    return [{"params": list(nn.Linear(3, 2).parameters())}]


def test_nesterov_without_momentum_is_plain_sgd_rather_than_an_error():
    # torch refuses nesterov=True with momentum 0; the flag then has nothing to act on.
    hp = Hyperparameters(optimizer="sgd", momentum=0.0, nesterov=True, lr=0.1)
    optimizer = make_optimizer(params(), hp)
    assert (optimizer.defaults["momentum"], optimizer.defaults["nesterov"]) == (0.0, False)


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_the_fused_kernels_are_asked_for_on_cuda_only(name):
    hp = Hyperparameters(optimizer=name, lr=0.1, momentum=0.9)
    assert make_optimizer(params(), hp).defaults.get("fused") is None
    assert make_optimizer(params(), hp, torch.device("cpu")).defaults.get("fused") is None
    # The choice follows the run's device (this CPU build of torch has fused CPU kernels too).
    assert make_optimizer(params(), hp, torch.device("cuda", 1)).defaults.get("fused") is True


def test_a_parameter_the_fused_kernel_refuses_falls_back_to_the_foreach_kernel(monkeypatch):
    class Picky(torch.optim.AdamW):
        def __init__(self, params, **kwargs):
            if kwargs.get("fused"):
                raise RuntimeError("`fused=True` requires all the params to be CUDA tensors")
            super().__init__(params, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", Picky)
    optimizer = make_optimizer(params(), Hyperparameters(lr=0.1), torch.device("cuda"))
    assert type(optimizer) is Picky
    assert optimizer.defaults["foreach"] is True and not optimizer.defaults.get("fused")
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 2
