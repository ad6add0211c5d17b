"""Backbone stages (issue 24, item 2): a backbone declares its stages from stem to head and
strategies train by them, instead of walking modules and guessing.

On EfficientNet-Lite0 "the last 2 blocks" used to be `conv_head` and `bn_head` only; the
last two stages are real MBConv blocks. The builtins declare stages, the timm plugin takes
timm's own `group_matcher`, and the builtin strategies on top (`laststages`, `llrd`, the
`freeze_bn` option) do what their names say.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

import tlbench
from tlbench import testing
from tlbench.builtin.strategies import FINETUNE, LAST_STAGES, LLRD
from tlbench.plugin_types import call_param_groups, stage_parameters


@pytest.fixture(scope="module")
def builtins() -> tlbench.Plugins:
    return tlbench.Plugins(entry_points=False)


@pytest.fixture(scope="module")
def lite0(builtins):
    backbone = builtins.backbones.get("efficientnet_lite0")
    return backbone, backbone.build(False)


def trained_names(module: torch.nn.Module, groups: list[dict]) -> set[str]:
    ids = {id(p) for g in groups for p in g["params"]}
    return {n for n, p in module.named_parameters() if id(p) in ids}


def groups_of(strategy, backbone, module, options=None, hp=None):
    head = torch.nn.Linear(backbone.feature_dim, 3)
    stages = stage_parameters(backbone, module)
    changed = strategy.check_options(options)
    hp = hp or strategy.defaults
    return call_param_groups(strategy, module, head, hp, stages=stages, options=changed)


def test_the_last_two_stages_of_lite0_are_real_blocks(lite0):
    backbone, module = lite0
    names = [name for name, _ in stage_parameters(backbone, module)]
    assert names == ["stem", *(f"stage{i}" for i in range(1, 8))]
    trained = trained_names(module, groups_of(LAST_STAGES, backbone, module, {"n": 2}))
    blocks = {n.split(".")[1] for n in trained if n.startswith("_blocks.")}
    # Lite0's stages 6 and 7: blocks 11-14 (four MBConv, 192 channels) and 15 (320).
    assert blocks == {"11", "12", "13", "14", "15"}
    assert {n for n in trained if not n.startswith("_blocks.")} == {
        "_conv_head.weight",
        "_bn1.weight",
        "_bn1.bias",
    }
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    head_conv = sum(
        p.numel() for n, p in module.named_parameters() if n.startswith(("_conv_head", "_bn1"))
    )
    assert trainable > 5 * head_conv


@pytest.mark.skipif(
    importlib.util.find_spec("tlbench_example") is None,
    reason="tlbench-example is not installed: pip install ./plugins/tlbench-example",
)
def test_the_example_plugins_partial_2_trains_lite0s_last_two_stages(lite0):
    backbone, module = lite0
    plugins = tlbench.Plugins(entry_points=True, builtins=False)
    partial = plugins.strategies.get("partial:2")
    assert partial.skip_reason(testing.tiny_backbone()) is None
    head = torch.nn.Linear(backbone.feature_dim, 3)
    stages = stage_parameters(backbone, module)
    groups = call_param_groups(partial, module, head, partial.defaults, stages=stages)
    trained = trained_names(module, groups)
    assert any(n.startswith("_blocks.11.") for n in trained), "a real block trains"
    assert not any(n.startswith("_blocks.10.") for n in trained)


def test_layer_wise_decay_gives_each_stage_decay_times_the_next_ones_rate(lite0):
    backbone, module = lite0
    hp = LLRD.defaults.replace(lr=1e-3)
    groups = groups_of(LLRD, backbone, module, {"decay": 0.5}, hp)
    rates = {g["name"]: g["lr"] for g in groups}
    assert rates["head"] == pytest.approx(1e-3)
    assert rates["stage7"] == pytest.approx(1e-3 * 0.5)
    assert rates["stage6"] == pytest.approx(1e-3 * 0.25)
    assert rates["stem"] == pytest.approx(1e-3 * 0.5**8)
    assert all(p.requires_grad for p in module.parameters())


def test_freeze_bn_keeps_batchnorm_scale_shift_and_statistics(builtins):
    backbone = builtins.backbones.get("small_cnn")
    module = backbone.build(False)
    groups = groups_of(FINETUNE, backbone, module, {"freeze_bn": True})
    norms = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    trained = {id(p) for g in groups for p in g["params"]}
    assert not any(id(p) in trained or p.requires_grad for m in norms for p in m.parameters())
    before = [m.running_mean.clone() for m in norms]
    module.train()
    module(torch.rand(4, 3, 32, 32) * 5)
    assert all(torch.equal(a, m.running_mean) for a, m in zip(before, norms, strict=True))
    # Without the option, BatchNorm trains as in finetune before: statistics move.
    plain = backbone.build(False)
    groups_of(FINETUNE, backbone, plain)
    plain.train()
    norm = next(m for m in plain.modules() if isinstance(m, torch.nn.BatchNorm2d))
    start = norm.running_mean.clone()
    plain(torch.rand(4, 3, 32, 32) * 5)
    assert not torch.equal(start, norm.running_mean)


def test_a_backbone_without_stages_is_skipped_by_stage_strategies_with_the_reason():
    plain = testing.tiny_backbone()
    import dataclasses

    unstaged = dataclasses.replace(plain, stages=None)
    assert LAST_STAGES.skip_reason(unstaged) == (
        "tiny_cnn declares no stages; laststages trains by stage"
    )
    assert LAST_STAGES.skip_reason(plain) is None


@pytest.mark.parametrize(
    "name", ["small_cnn", "efficientnet_lite0", "resnet18", "mobilenet_v3_small", "convnext_tiny"]
)
def test_every_builtin_backbones_stages_hold_each_parameter_once(builtins, name):
    backbone = builtins.backbones.get(name)
    module = backbone.build(False)
    stages = stage_parameters(backbone, module)
    assert len(stages) >= 4
    counted = sum(p.numel() for _, params in stages for p in params)
    assert counted == sum(p.numel() for p in module.parameters())


def test_the_builtin_stage_strategies_pass_the_contract():
    for strategy in (LAST_STAGES, LLRD):
        result = testing.check_strategy(strategy)
        assert result["loss_after"] < result["loss_before"]
    one = testing.check_strategy(LAST_STAGES, options={"n": 1})
    assert one["trainable"] < one["total"]


@pytest.mark.skipif(
    importlib.util.find_spec("tlbench_timm") is None or importlib.util.find_spec("timm") is None,
    reason="tlbench-timm and timm are not installed",
)
def test_timm_backbones_take_their_stages_from_timms_group_matcher():
    from timm.models import group_parameters

    plugins = tlbench.Plugins(entry_points=True, builtins=False)
    backbone = plugins.backbones.get("timm:resnet18@random")
    module = testing.check_backbone(backbone, image_size=32)  # stages checked too
    stages = stage_parameters(backbone, module)
    expected = group_parameters(module, module.group_matcher(coarse=True))
    assert [[id(p) for p in params] for _, params in stages] == [
        [id(module.get_parameter(n)) for n in names] for names in expected.values()
    ]
    assert [name for name, _ in stages] == ["stem", "stage1", "stage2", "stage3", "stage4"]
