"""`--compile` keeps compiling for every backbone of a grid (issue 22.1).

Every backbone's `ImageClassifier.forward` is one code object: before each fit
reset dynamo, the fourth backbone of a process met dynamo's recompile limit and
trained eager while its record said `compile: true`. Dynamo's "eager" backend
captures graphs without generating code, so this runs in seconds on a CPU.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from tlbench import execution
from tlbench.data import ImageTensors
from tlbench.engine import Execution, ImageClassifier, NothingCompiled, train_images
from tlbench.plugin_types import Hyperparameters, Preprocessing

CPU = torch.device("cpu")


@pytest.fixture
def eager_compile(monkeypatch):
    monkeypatch.setattr(execution, "COMPILE_BACKEND", "eager")
    yield
    torch._dynamo.reset()


def _headless(build, head_attr: str) -> tuple[nn.Module, int]:
    torch.manual_seed(0)
    model = build()
    head = getattr(model, head_attr)
    width = next(m for m in head.modules() if isinstance(m, nn.Linear)).in_features
    setattr(model, head_attr, nn.Identity())
    return model, width


def _small_cnn() -> tuple[nn.Module, int]:
    from tlbench.builtin.small_cnn import WIDTHS
    from tlbench.builtin.small_cnn_net import SmallCNN

    torch.manual_seed(0)
    net = SmallCNN(WIDTHS)
    return net, net.num_features


def _plain(depth: int):
    """A plain convnet of `depth` convolutions: another architecture, traced in a second."""

    def build() -> tuple[nn.Module, int]:
        torch.manual_seed(0)
        layers: list[nn.Module] = [nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()]
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten()), 8

    return build


#: five architectures, three of them real. Without the reset the fifth trained eager (the
#: fourth, when two were efficientnet_b0 and resnet34, which took 12 of the test's 21 s).
BACKBONES = {
    "small_cnn": _small_cnn,
    "resnet18": lambda: _headless(torchvision.models.resnet18, "fc"),
    "mobilenet_v3_small": lambda: _headless(torchvision.models.mobilenet_v3_small, "classifier"),
    "plain1": _plain(1),
    "plain2": _plain(2),
}


def _fit(backbone: nn.Module, width: int, compile: bool = True):
    model = ImageClassifier(backbone, nn.Linear(width, 3), Preprocessing(resize=32, crop=32))
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=g)
    data = ImageTensors(images, torch.arange(8) % 3)
    hp = Hyperparameters(epochs=1, batch_size=4, lr=0.01, augment=False)
    return train_images(
        model, [{"params": list(model.parameters()), "lr": hp.lr}], data, data,
        num_classes=3, image_size=32, hp=hp, ex=Execution(CPU, compile=compile), seed=0,
    )  # fmt: skip


# slow: torch.compile traces five backbones (dynamo, eager backend; about 9 s on 2 cores).
@pytest.mark.slow
def test_five_backbones_in_one_process_each_compile(eager_compile):
    graphs = {name: _fit(*build()).compiled_graphs for name, build in BACKBONES.items()}
    assert all(count >= 1 for count in graphs.values()), graphs
    assert _fit(*BACKBONES["small_cnn"]()).cost()["compiled_graphs"] >= 1


def test_an_uncompiled_fit_records_no_graph_count():
    fit = _fit(*BACKBONES["small_cnn"](), compile=False)
    assert fit.compiled_graphs is None and "compiled_graphs" not in fit.cost()


def test_a_compiled_fit_that_captured_nothing_fails_with_the_reason(eager_compile, monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: model)  # falls back to eager
    with pytest.raises(NothingCompiled, match="captured no graph"):
        _fit(*BACKBONES["small_cnn"]())
