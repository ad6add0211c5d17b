"""MFU from the FLOPs of what really trains (issue 22.4).

MFU assumed 3x the forward FLOPs; with part of the backbone frozen the
backward is much smaller (ResNet-50 at 224 px with its last stage trainable:
11.0 GFLOPs a training image, not 3 x 8.18 = 24.5), so MFU was overstated up
to 3x. The count is one forward and backward on the meta device, under the
run's `requires_grad` flags.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from tlbench.timing import FlopCount, mfu, training_flops

H100 = {"type": "cuda", "name": "NVIDIA H100 80GB HBM3", "multiprocessors": 132, "mig": None}


def _resnet50(trainable: str) -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet50()
    if trainable == "last stage":  # partial:1
        model.requires_grad_(False)
        model.layer4.requires_grad_(True)
        model.fc.requires_grad_(True)
    elif trainable == "head":  # linear
        model.requires_grad_(False)
        model.fc.requires_grad_(True)
    return model


@pytest.fixture(scope="module")
def counts() -> dict[str, FlopCount]:
    return {t: training_flops(_resnet50(t), 224) for t in ("all", "last stage", "head")}


def test_resnet50_forward_is_torchvisions_published_figure(counts):
    published = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["_ops"] * 1e9  # 4.09 GMACs
    assert len({c.forward for c in counts.values()}) == 1
    assert counts["all"].forward == pytest.approx(2 * published, rel=0.002)


def test_training_flops_follow_what_trains(counts):
    forward = counts["all"].forward
    # All trainable: about 3x forward (less: no input gradient for the first conv).
    assert counts["all"].train == pytest.approx(3 * forward, rel=0.02)
    assert counts["all"].train < 3 * forward
    # The last stage trainable: the measured 11.0 G, not 24.5 G.
    assert counts["last stage"].train == pytest.approx(11.0e9, rel=0.01)
    # Only the head: the forward and the head's own backward.
    assert counts["head"].train == pytest.approx(forward, rel=0.001)


def test_counting_leaves_the_model_alone():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 2))
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count = training_flops(model, 8)
    forward = 2 * (6 * 6 * 4 * 27 + 144 * 2)
    # backward: the linear's input and weight gradients, the conv's weight gradient only.
    assert count == FlopCount(forward, forward + 2 * 144 * 2 * 2 + 2 * 6 * 6 * 4 * 27)
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_mfu_uses_the_counted_training_flops_and_says_so(counts):
    partial = counts["last stage"]
    out = mfu(partial.forward, 2_000, H100, "bf16", train_flops_per_image=partial.train)
    assert out["mfu"] == partial.train * 2_000 / 989.5e12
    assert out["mfu"] < 0.5 * mfu(partial.forward, 2_000, H100, "bf16")["mfu"]  # not 3x forward
    assert out["mfu_basis"].endswith("training FLOPs counted (forward + backward of what trains)")
    assert out["train_flops_per_image"] == partial.train


def test_a_model_the_meta_device_cannot_run_has_no_count():
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x.mean((2, 3))) * float(x.max())  # a value: none on meta

    assert training_flops(DataDependent(), 4) is None
