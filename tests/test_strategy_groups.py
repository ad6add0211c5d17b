"""The builtin strategies' parameter groups, learning rates and weight decay, by value.

The documented rules: `scratch` trains everything at `lr`; `linear` trains a
new head alone on frozen features at `lr`; `finetune` trains the head at `lr`
and the backbone at `lr * backbone_lr_mult` (0.1 by default: a 10x smaller
step on pretrained weights). Within each group, weight decay applies to
weights (matrices, kernels) and never to biases or normalisation parameters.
"Loss goes down" cannot tell these apart, so the optimiser the run really
built is inspected, and the learning-rate schedule is checked step by step.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_net
from torch import nn

import tlbench
from tlbench import optim
from tlbench.engine import make_optimizer, make_schedule
from tlbench.plugin_types import Hyperparameters, all_trainable
from tlbench.runner import Runner

# The tiny backbone's parameter shapes (see tlbench.testing.tiny_backbone) and the head's.
KERNELS = [(8, 3, 3, 3), (16, 8, 3, 3)]  # conv weights: decayed
VECTORS = [(8,), (8,), (8,), (16,)]  # conv1 bias, BatchNorm weight and bias, conv2 bias: not
HEAD_WEIGHT, HEAD_BIAS = [(3, 16)], [(3,)]


def strategies() -> dict[str, tlbench.Strategy]:
    registry = tlbench.Plugins(entry_points=False).strategies
    return {name: registry.get(name) for name in ("scratch", "linear", "finetune")}


# --------------------------------------------------------------------------- declared defaults


def test_builtin_strategies_declare_the_documented_rules():
    s = strategies()
    assert (s["scratch"].pretrained, s["scratch"].frozen_backbone) == (False, False)
    assert (s["linear"].pretrained, s["linear"].frozen_backbone) == (True, True)
    assert (s["finetune"].pretrained, s["finetune"].frozen_backbone) == (True, False)
    assert s["finetune"].defaults.backbone_lr_mult == 0.1
    assert s["scratch"].defaults.backbone_lr_mult == 1.0
    assert (s["scratch"].defaults.lr, s["scratch"].defaults.weight_decay) == (2e-3, 0.05)
    assert (s["finetune"].defaults.lr, s["finetune"].defaults.weight_decay) == (1e-3, 1e-4)
    assert (s["linear"].defaults.lr, s["linear"].defaults.weight_decay) == (1e-3, 1e-3)
    assert s["linear"].defaults.augment is False and s["finetune"].defaults.augment is True
    assert [s[n].defaults.epochs for n in ("scratch", "linear", "finetune")] == [10, 30, 5]
    assert [s[n].defaults.warmup_epochs for n in ("scratch", "linear", "finetune")] == [1, 0, 1]


# --------------------------------------------------------------------------- param_groups


@pytest.mark.parametrize(
    ("name", "lr", "backbone_lr"),
    [("scratch", 2e-3, 2e-3), ("finetune", 1e-3, 1e-4)],
)
def test_param_groups_give_the_head_lr_and_the_backbone_lr_times_its_multiplier(
    name, lr, backbone_lr
):
    strategy = strategies()[name]
    backbone, head = tiny_net(), nn.Linear(16, 3)
    backbone.requires_grad_(False)  # param_groups must turn every backbone parameter on
    groups = strategy.param_groups(backbone, head, strategy.defaults)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"head", "backbone"}
    assert by_name["head"]["lr"] == pytest.approx(lr, rel=1e-12)
    assert by_name["backbone"]["lr"] == pytest.approx(backbone_lr, rel=1e-12)
    assert [id(p) for p in by_name["head"]["params"]] == [id(p) for p in head.parameters()]
    assert [id(p) for p in by_name["backbone"]["params"]] == [id(p) for p in backbone.parameters()]
    assert all(p.requires_grad for p in backbone.parameters())


def test_a_backbone_without_parameters_gets_no_group():
    groups = all_trainable(nn.Identity(), nn.Linear(4, 2), Hyperparameters(lr=0.5))
    assert [(g["name"], g["lr"], len(g["params"])) for g in groups] == [("head", 0.5, 2)]


# --------------------------------------------------------------------------- make_optimizer


def _summary(optimizer: torch.optim.Optimizer) -> list[tuple[float, float, list[tuple]]]:
    """(lr, weight decay, parameter shapes) of each group; `initial_lr` once scheduled."""
    return sorted(
        (
            g.get("initial_lr", g["lr"]),
            g["weight_decay"],
            sorted(tuple(p.shape) for p in g["params"]),
        )
        for g in optimizer.param_groups
    )


def test_make_optimizer_decays_weights_but_not_biases_or_norms_in_every_group():
    backbone, head = tiny_net(), nn.Linear(16, 3)
    hp = Hyperparameters(lr=0.01, backbone_lr_mult=0.1, weight_decay=0.2)
    optimizer = make_optimizer(all_trainable(backbone, head, hp), hp)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert _summary(optimizer) == [
        (0.001, 0.0, sorted(VECTORS)),  # 0.01 * 0.1, exactly as Python computes it
        (0.001, 0.2, sorted(KERNELS)),
        (0.01, 0.0, HEAD_BIAS),
        (0.01, 0.2, HEAD_WEIGHT),
    ]


def test_make_optimizer_leaves_out_frozen_parameters_and_refuses_an_empty_model():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    model[0].requires_grad_(False)
    hp = Hyperparameters(lr=0.1, weight_decay=0.3)
    optimizer = make_optimizer([{"params": list(model.parameters()), "lr": 0.1}], hp)
    assert _summary(optimizer) == [(0.1, 0.0, [(2,)]), (0.1, 0.3, [(2, 3)])]
    model.requires_grad_(False)
    with pytest.raises(ValueError, match=r"^the strategy left no trainable parameter$"):
        make_optimizer([{"params": list(model.parameters())}], hp)


@pytest.mark.parametrize(
    ("hp", "kind", "momentum", "nesterov"),
    [
        (Hyperparameters(optimizer="adamw"), optim.AdamW, None, None),
        (Hyperparameters(optimizer="sgd", momentum=0.7), optim.SGD, 0.7, False),
        (Hyperparameters(optimizer="sgd", momentum=0.7, nesterov=True), optim.SGD, 0.7, True),
    ],
)
def test_make_optimizer_builds_the_asked_optimiser(hp, kind, momentum, nesterov):
    hp = hp.replace(lr=0.05)
    optimizer = make_optimizer([{"params": list(nn.Linear(2, 2).parameters())}], hp)
    assert type(optimizer) is kind  # torch.optim's, less the torch._dynamo import
    assert type(optimizer).__bases__ == (getattr(torch.optim, kind.__name__),)
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.05  # a group without its own lr gets hp.lr
    if momentum is not None:
        assert (group["momentum"], group["nesterov"]) == (momentum, nesterov)


def test_make_optimizer_refuses_an_unknown_optimiser():
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        make_optimizer(
            [{"params": list(nn.Linear(2, 2).parameters())}], Hyperparameters(optimizer="lamb")
        )


# --------------------------------------------------------------------------- make_schedule


def _factors(hp: Hyperparameters, steps_per_epoch: int, steps: list[int]) -> list[float]:
    optimizer = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=1.0)
    schedule = make_schedule(optimizer, hp, steps_per_epoch)
    return [schedule.lr_lambdas[0](s) for s in steps]


def test_cosine_schedule_warms_up_linearly_then_follows_the_cosine():
    # 4 epochs x 5 steps = 20; 1 warm-up epoch = 5 steps, then 15 cosine steps.
    hp = Hyperparameters(epochs=4, warmup_epochs=1, schedule="cosine")
    got = _factors(hp, 5, [0, 1, 4, 5, 10, 15, 20, 30])
    expected = [1 / 6, 2 / 6, 5 / 6, 1.0, 0.5 * (1 + math.cos(math.pi / 3)),
                0.5 * (1 + math.cos(2 * math.pi / 3)), 0.0, 0.0]  # fmt: skip
    assert got == pytest.approx(expected, abs=1e-12)


def test_warm_up_is_capped_at_half_the_training():
    # 10 warm-up epochs asked of a 2-epoch run: the warm-up stops at half (5 of 10 steps).
    hp = Hyperparameters(epochs=2, warmup_epochs=10, schedule="constant")
    assert _factors(hp, 5, [0, 4, 5, 9]) == pytest.approx([1 / 6, 5 / 6, 1.0, 1.0])


def test_step_schedule_decays_by_gamma_every_step_size_epochs():
    hp = Hyperparameters(epochs=6, schedule="step", step_size=2, gamma=0.1)
    # 3 steps per epoch: epochs 0-1 at 1, 2-3 at 0.1, 4-5 at 0.01.
    got = _factors(hp, 3, [0, 5, 6, 11, 12, 17])
    assert got == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01, 0.01])


def test_cosine_without_warm_up_starts_at_full_rate():
    hp = Hyperparameters(epochs=1, schedule="cosine")
    assert _factors(hp, 4, [0, 2]) == pytest.approx([1.0, 0.5])


def test_unknown_schedule_is_refused_when_it_is_used():
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        _factors(Hyperparameters(epochs=1, schedule="linear"), 2, [1])


# --------------------------------------------------------------------------- in a real run


@pytest.fixture
def optimisers(monkeypatch) -> list[torch.optim.Optimizer]:
    """Every AdamW the code under test builds, kept for inspection after the run."""
    built: list[torch.optim.Optimizer] = []

    class Recorded(optim.AdamW):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(optim, "AdamW", Recorded)
    return built


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (
            "finetune",  # head at lr, backbone at lr * 0.1
            [(0.01, 0.0, HEAD_BIAS), (0.01, 1e-4, HEAD_WEIGHT),
             (0.001, 0.0, sorted(VECTORS)), (0.001, 1e-4, sorted(KERNELS))],
        ),
        (
            "scratch",  # everything at lr
            [(0.01, 0.0, HEAD_BIAS), (0.01, 0.0, sorted(VECTORS)),
             (0.01, 0.05, HEAD_WEIGHT), (0.01, 0.05, sorted(KERNELS))],
        ),
        ("linear", [(0.01, 0.0, HEAD_BIAS), (0.01, 1e-3, HEAD_WEIGHT)]),  # the head alone
    ],
)  # fmt: skip
def test_a_run_trains_with_the_strategys_groups_rates_and_decay(
    plugins, tiny_config, optimisers, strategy, expected
):
    tiny_config.strategies = [strategy]
    tiny_config.hyperparameters = {"epochs": 1, "batch_size": 16, "lr": 0.01}
    (record,) = Runner(tiny_config, plugins).run()
    assert record["status"] == "ok", record["reason"]
    (optimizer,) = optimisers

    def order(t):
        return (round(t[0], 12), t[1], t[2])

    got = sorted(((round(lr, 12), wd, shapes) for lr, wd, shapes in _summary(optimizer)), key=order)
    assert got == sorted(expected, key=order)


def test_finetune_with_a_zero_backbone_multiplier_moves_only_the_head(plugins, tiny_config):
    """The backbone at lr * 0 keeps its pretrained weights exactly; the head at lr learns."""
    tiny_config.strategies = ["finetune"]
    tiny_config.hyperparameters = {
        "epochs": 2,
        "batch_size": 16,
        "lr": 0.05,
        "backbone_lr_mult": 0.0,
    }
    tiny_config.save_models = True
    (record,) = Runner(tiny_config, plugins).run()
    assert record["status"] == "ok", record["reason"]
    from tlbench.checkpoint import load_checkpoint

    saved = load_checkpoint(record["cost"]["checkpoint"])["state_dict"]
    pretrained = plugins.backbones.get("tiny").build(True)
    for name, value in pretrained.named_parameters():
        assert torch.equal(saved[f"backbone.{name}"], value), f"backbone {name} moved at lr 0"
    torch.manual_seed(0)  # the run's seed: the head it started from
    plugins.backbones.get("tiny").build(True)
    start = nn.Linear(16, 3)
    assert not torch.equal(saved["head.weight"], start.weight), "the head did not train"
