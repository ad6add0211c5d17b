"""The learning-rate schedule at its edges and the optimiser's kernels, in the cases the
mutation run (results/mutation.md) found unchecked.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tlbench import optim
from tlbench.engine import FitResult, make_optimizer, make_schedule
from tlbench.plugin_types import Hyperparameters


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
    class Picky(optim.AdamW):
        def __init__(self, params, **kwargs):
            if kwargs.get("fused"):
                raise RuntimeError("`fused=True` requires all the params to be CUDA tensors")
            super().__init__(params, **kwargs)

    monkeypatch.setattr(optim, "AdamW", Picky)
    optimizer = make_optimizer(params(), Hyperparameters(lr=0.1), torch.device("cuda"))
    assert type(optimizer) is Picky
    assert optimizer.defaults["foreach"] is True and not optimizer.defaults.get("fused")
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 2


def test_the_cost_of_a_fit_holds_every_figure_the_record_shows():
    fit = FitResult(
        train_seconds=12.5,
        eval_seconds=2.0,
        warmup_seconds=3.0,
        upload_seconds=0.25,
        resident_data_bytes=4096,
        batch_size=25,
        warmup_steps=2,
        warmup_batches={"train": [25, 7], "eval": [25]},
        measured_steps=4,
        measured_images=100,
        measured_seconds=10.0,
        phase_seconds={"data": 0.5, "compute": 8.0},
        eval_images=50,
    )
    assert fit.cost() == {
        "train_seconds": 12.5,
        "eval_seconds": 2.0,
        "warmup_seconds": 3.0,
        "upload_seconds": 0.25,
        "resident_data_bytes": 4096,
        "batch_size": 25,
        "warmup_steps": 2,
        "warmup_batches": {"train": [25, 7], "eval": [25]},
        "measured_steps": 4,
        "train_images_per_s": 10.0,  # 100 images in 10 s
        "compute_images_per_s": 12.5,  # in the 8 s of compute
        "data_images_per_s": 200.0,  # in the 0.5 s of data
        "data_stall_fraction": pytest.approx(0.2),  # 2 of the 10 s were not compute
        "eval_images_per_s": 25.0,
    }


def test_an_unmeasured_phase_has_no_throughput_and_the_stall_stays_within_0_and_1():
    no_phases = FitResult(measured_images=10, measured_seconds=2.0).cost()
    assert no_phases["compute_images_per_s"] is None and no_phases["data_images_per_s"] is None
    assert no_phases["data_stall_fraction"] == 1.0  # no compute measured: all of it waited
    # Phase clocks that overlap the wall clock a little never give a negative stall.
    overlapping = FitResult(
        measured_images=10, measured_seconds=2.0, phase_seconds={"compute": 2.5}
    ).cost()
    assert overlapping["data_stall_fraction"] == 0.0


@pytest.mark.parametrize(
    ("images", "seconds", "eval_images", "eval_seconds"),
    [(0, 2.0, 0, 1.0), (10, 0.0, 5, 0.0)],
)
def test_no_throughput_is_claimed_without_images_or_time(
    images, seconds, eval_images, eval_seconds
):
    cost = FitResult(
        measured_images=images,
        measured_seconds=seconds,
        phase_seconds={"compute": 1.0, "data": 1.0},
        eval_images=eval_images,
        eval_seconds=eval_seconds,
    ).cost()
    assert not {"train_images_per_s", "compute_images_per_s", "data_stall_fraction"} & set(cost)
    assert "eval_images_per_s" not in cost


def test_a_fit_measured_in_under_a_second_still_has_its_throughput():
    # A linear head on cached features trains in a fraction of a second.
    cost = FitResult(
        measured_images=10,
        measured_seconds=0.5,
        phase_seconds={"compute": 0.4},
        eval_images=40,
        eval_seconds=0.25,
    ).cost()
    assert cost["train_images_per_s"] == pytest.approx(20.0)
    assert cost["compute_images_per_s"] == pytest.approx(25.0)
    assert cost["eval_images_per_s"] == pytest.approx(160.0)


def test_a_fits_cost_names_its_compiled_graphs_and_the_threads_it_was_timed_with():
    from tlbench.fitting import FitResult

    threads = ["live-display"]
    fit = FitResult(compiled_graphs=3, timed_with_threads=threads)
    cost = fit.cost()
    assert cost["compiled_graphs"] == 3
    assert cost["timed_with_threads"] == ["live-display"]
    assert cost["timed_with_threads"] is not threads  # a copy: the record cannot change the fit
    assert "compiled_graphs" not in FitResult().cost()
    assert "timed_with_threads" not in FitResult().cost()
