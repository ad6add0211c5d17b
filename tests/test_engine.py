"""The shared training loop and its pieces, on tiny models and tiny images.

What a user would notice: the harness's step does exactly what a bare PyTorch
step does; the warm-up runs before the clock and leaves no trace; the step loop never
reads a value back to the host; augmentation and evaluation crop what they
claim to; cost figures are computed from the measured steps. No speed
assertions here: those live in benchmarks/.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from tlbench import image_fit
from tlbench.data import ImageTensors, center_crop, random_resized_crop_flip
from tlbench.engine import (
    BatchLoader,
    Execution,
    FeatureHead,
    FitResult,
    ImageClassifier,
    TrainStep,
    evaluate_logits,
    extract_features,
    make_optimizer,
    train_head_on_features,
    train_images,
)
from tlbench.plugin_types import Hyperparameters, Preprocessing

CPU = torch.device("cpu")
EX = Execution(CPU)


def tiny_net(width: int = 8) -> nn.Module:
    """Two convolutions with BatchNorm: enough to exercise a real training step."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )  # fmt: skip


def _classifier(seed: int = 0) -> ImageClassifier:
    torch.manual_seed(seed)
    return ImageClassifier(tiny_net(), nn.Linear(16, 3), Preprocessing(resize=18, crop=16))


def _decoded(n: int, size: int = 18, seed: int = 0) -> ImageTensors:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return ImageTensors(images, torch.arange(n) % 3)


class HostReads(TorchDispatchMode):
    """Counts ops that hand a tensor's value to the host: on a GPU each one is a sync."""

    READS = ("_local_scalar_dense", "nonzero", "masked_select", "_unique2", "equal")

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.__name__.split(".")[0] in self.READS:
            self.count += 1
        return func(*args, **(kwargs or {}))


# --------------------------------------------------------------------------- the step


@pytest.mark.parametrize(
    ("hp", "expected"),
    [
        (Hyperparameters(optimizer="sgd", momentum=0.9), (0.9, False)),  # as the tutorials
        (Hyperparameters(optimizer="sgd", momentum=0.9, nesterov=True), (0.9, True)),
        (Hyperparameters(optimizer="sgd", momentum=0.0, nesterov=True), (0.0, False)),
    ],
)
def test_sgd_momentum_is_plain_unless_nesterov_is_asked_for(hp, expected):
    optimizer = make_optimizer([{"params": list(nn.Linear(2, 2).parameters())}], hp)
    assert isinstance(optimizer, torch.optim.SGD)
    assert {(g["momentum"], g["nesterov"]) for g in optimizer.param_groups} == {expected}


def test_train_step_is_the_bare_pytorch_step():
    torch.manual_seed(0)
    harness_model = nn.Sequential(tiny_net(), nn.Linear(16, 3))
    bare_model = copy.deepcopy(harness_model)
    hp = Hyperparameters(optimizer="sgd", lr=0.1)
    step = TrainStep(
        harness_model,
        make_optimizer([{"params": list(harness_model.parameters())}], hp),
        nn.CrossEntropyLoss(),
        EX,
    )
    bare_opt = make_optimizer([{"params": list(bare_model.parameters())}], hp)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x, y = torch.rand(8, 3, 16, 16, generator=g), torch.randint(0, 3, (8,), generator=g)
        loss = step(x, y)
        bare_opt.zero_grad(set_to_none=True)
        bare_loss = F.cross_entropy(bare_model(x), y)
        bare_loss.backward()
        bare_opt.step()
        assert torch.equal(loss, bare_loss.detach())
        assert not loss.requires_grad
    for a, b in zip(harness_model.parameters(), bare_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_train_step_runs_the_forward_in_bf16_when_asked():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    dtypes = []
    model[1].register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.rand(4, 3, 4, 4), torch.tensor([0, 1, 2, 0])
    TrainStep(model, opt, nn.CrossEntropyLoss(), Execution(CPU, precision="bf16"))(x, y)
    TrainStep(model, opt, nn.CrossEntropyLoss(), EX)(x, y)
    assert dtypes == [torch.bfloat16, torch.float32]


def test_channels_last_execution_converts_model_and_input():
    ex = Execution(CPU, channels_last=True)
    model = ex.prepare(nn.Conv2d(3, 4, 3))
    assert model.weight.is_contiguous(memory_format=torch.channels_last)
    assert ex.to_input(torch.rand(2, 3, 8, 8)).is_contiguous(memory_format=torch.channels_last)
    assert ex.to_dict()["memory_format"] == "channels_last"


# --------------------------------------------------------------------------- data phase


def test_batch_loader_without_augmentation_gives_the_centre_crop():
    data = _decoded(10)
    loader = BatchLoader(data, 16, EX, augment=False, seed=0)
    idx = torch.tensor([7, 2, 5])
    x, y = loader(idx)
    assert torch.equal(x, center_crop(data.images[idx], 16))
    assert torch.equal(y, data.labels[idx])
    assert x.dtype == torch.float32 and x.shape == (3, 3, 16, 16)


def test_batch_loader_augments_reproducibly_per_seed():
    data = _decoded(10)
    idx = torch.arange(10)
    a1, _ = BatchLoader(data, 16, EX, augment=True, seed=0)(idx)
    a2, _ = BatchLoader(data, 16, EX, augment=True, seed=0)(idx)
    b, _ = BatchLoader(data, 16, EX, augment=True, seed=1)(idx)
    assert torch.equal(a1, a2)
    assert not torch.equal(a1, b)
    assert a1.shape == (10, 3, 16, 16) and a1.min() >= 0 and a1.max() <= 1


def test_full_frame_crop_is_the_image_or_its_mirror():
    images = _decoded(16, size=12).images
    g = torch.Generator().manual_seed(0)
    out = random_resized_crop_flip(images, 12, g, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    same = (out - images.float() / 255).abs().amax(dim=(1, 2, 3)) < 1e-5
    mirrored = (out - images.flip(-1).float() / 255).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert bool((same | mirrored).all())
    assert 0 < int(mirrored.sum()) < 16  # the flip is a coin toss per image


# --------------------------------------------------------------------------- the loop


def _fit(
    n_train: int, epochs: int = 2, batch: int = 4, warmup: bool = True, ex: Execution = EX,
    **hp_changes,
) -> FitResult:  # fmt: skip
    model = _classifier()
    hp = Hyperparameters(epochs=epochs, batch_size=batch, lr=0.05, **hp_changes)
    groups = [{"params": list(model.parameters()), "lr": hp.lr}]
    return train_images(
        model, groups, _decoded(n_train), _decoded(6, seed=1),
        num_classes=3, image_size=16, hp=hp, ex=ex, seed=0, warmup=warmup,
    )  # fmt: skip


def test_every_step_is_measured_and_the_warm_up_is_timed_apart():
    fit = _fit(n_train=22, epochs=2, batch=4)  # 6 steps per epoch: 5 of 4 images, 1 of 2
    cost = fit.cost()
    # The warm-up met each training batch size once (4 and the last 2) and each
    # evaluation size (6 eval images in batches of 8: one batch of 6).
    assert fit.warmup_batches == {"train": [4, 2], "eval": [6]}
    assert fit.warmup_steps == 2 and fit.warmup_seconds > 0
    assert fit.measured_steps == 2 * 6
    assert fit.measured_images == 2 * 22
    assert fit.measured_seconds == pytest.approx(fit.train_seconds)
    # On a CPU the phases run one after the other: they fit inside the measured wall time.
    phases = fit.phase_seconds
    assert phases["data"] > 0 and phases["compute"] > 0
    assert phases["data"] + phases["compute"] <= fit.measured_seconds * 1.001
    assert 0 <= cost["data_stall_fraction"] <= 1
    assert cost["train_images_per_s"] <= cost["compute_images_per_s"]
    assert cost["measured_steps"] == 12 and cost["warmup_seconds"] == fit.warmup_seconds


def test_a_one_step_epoch_is_measured_in_full():
    """Issue 10: an epoch shorter than a warm-up once had its steps counted as warm-up."""
    fit = _fit(n_train=4, epochs=2, batch=4)  # one step per epoch
    cost = fit.cost()
    assert cost["measured_steps"] == 2 and fit.measured_images == 8
    assert cost["train_images_per_s"] == pytest.approx(8 / fit.train_seconds)
    assert fit.warmup_batches["train"] == [4]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_the_warm_up_leaves_no_trace_in_the_result(precision):
    """Weights, BatchNorm statistics, optimiser, schedule, scaler and RNG are all put back."""
    ex = Execution(CPU, precision, channels_last=True)
    kw = dict(n_train=22, epochs=2, batch=4, ex=ex, optimizer="adamw", warmup_epochs=1)
    warm, cold = _fit(warmup=True, **kw), _fit(warmup=False, **kw)
    assert warm.warmup_steps == 2 and cold.warmup_steps == 0 and cold.warmup_seconds == 0
    for a, b in zip(warm.curve, cold.curve, strict=True):
        for key in ("train_loss", "eval_loss", "eval_accuracy"):
            assert a[key] == b[key], key


@pytest.mark.parametrize("augment", [True, False])
def test_the_step_loop_never_reads_a_value_back_to_the_host(augment):
    """Host reads per fit do not grow with the number of steps: they sit at epoch boundaries."""

    def reads(n_train: int) -> int:
        with HostReads() as counter:
            # SGD: AdamW reads its CPU-side step counter, which is no device sync.
            _fit(n_train=n_train, epochs=2, batch=4, optimizer="sgd", augment=augment)
        return counter.count

    assert reads(8) == reads(32)  # 2 vs 8 steps per epoch


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("split_on_device", [True, False])
def test_on_cuda_the_data_and_compute_phases_never_synchronise(monkeypatch, split_on_device):
    """CUDA's sync debug mode raises on any synchronising op inside the step loop."""
    if not split_on_device:  # the split too big for the GPU: gathered on the host, pinned
        monkeypatch.setattr(image_fit, "to_device_if_fits", lambda images, device: None)
    ex = Execution(torch.device("cuda"), "bf16", channels_last=True)
    loader = BatchLoader(_decoded(64), 16, ex, augment=True, seed=0)
    model = _classifier()
    hp = Hyperparameters(epochs=1, batch_size=16)
    optimizer = make_optimizer([{"params": list(model.parameters())}], hp)
    step = TrainStep(ex.prepare(model), optimizer, nn.CrossEntropyLoss(), ex)
    perm = loader.permutation(torch.Generator().manual_seed(0))
    loss_sum = torch.zeros((), dtype=torch.float64, device=ex.device)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for s in range(4):
            x, y = loader(perm[s * 16 : (s + 1) * 16])
            loss_sum.add_(step(x, y), alpha=y.shape[0])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert loss_sum.item() > 0


def test_fitting_twice_with_the_same_seed_gives_the_same_curve():
    a, b = _fit(n_train=12), _fit(n_train=12)
    assert [c["train_loss"] for c in a.curve] == [c["train_loss"] for c in b.curve]


def test_cost_figures_follow_from_the_measured_time():
    fit = FitResult(
        measured_images=100,
        measured_seconds=10.0,
        phase_seconds={"data": 0.5, "compute": 9.0},
        eval_images=50,
        eval_seconds=2.0,
        batch_size=25,
    )
    cost = fit.cost()
    assert cost["train_images_per_s"] == pytest.approx(10.0)
    assert cost["compute_images_per_s"] == pytest.approx(100 / 9)
    assert cost["data_images_per_s"] == pytest.approx(200.0)
    # 1 s of the 10 was not compute: 0.5 s gathering data, 0.5 s of loop overhead.
    assert cost["data_stall_fraction"] == pytest.approx(0.1)
    assert cost["eval_images_per_s"] == pytest.approx(25.0)
    assert cost["batch_size"] == 25


# --------------------------------------------------------------------------- features and head


def test_extract_features_equals_the_backbone_on_the_centre_crop():
    model = _classifier()
    data = _decoded(7)
    feats = extract_features(model, data, 16, 3, EX)
    with torch.no_grad():
        expected = model.features(center_crop(data.images, 16))
    assert feats.shape == (7, 16) and feats.device.type == "cpu"
    torch.testing.assert_close(feats, expected)


def test_head_learns_separable_features_and_its_warm_up_leaves_no_trace():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    x = torch.randn(60, 5, generator=g) * 0.1 + 3.0 * F.one_hot(y, 5)[:, :5].float() + 10.0
    torch.manual_seed(0)
    head = FeatureHead(5, 3)
    hp = Hyperparameters(epochs=5, batch_size=16, lr=0.1, augment=False)
    fit = train_head_on_features(head, x, y, x, y, num_classes=3, hp=hp, ex=EX, seed=0)
    assert fit.best_accuracy == 1.0
    torch.testing.assert_close(head.mean, x.mean(0))
    # 60 features in batches of 16: 3 of 16 and one of 12, each size met once in the warm-up.
    assert fit.warmup_batches["train"] == [16, 12] and fit.warmup_steps == 2
    assert fit.measured_steps == 5 * 4 and fit.measured_images == 5 * 60
    assert fit.cost()["data_stall_fraction"] == 0.0
    torch.manual_seed(0)
    cold = train_head_on_features(
        FeatureHead(5, 3), x, y, x, y, num_classes=3, hp=hp, ex=EX, seed=0, warmup=False
    )
    assert [c["train_loss"] for c in cold.curve] == [c["train_loss"] for c in fit.curve]


def test_evaluate_logits_top1_balanced_and_loss():
    labels = torch.tensor([0, 0, 0, 1])
    logits = torch.tensor([[5.0, 0.0], [5.0, 0.0], [5.0, 0.0], [5.0, 0.0]])
    out = evaluate_logits(lambda a, b: logits[a:b], labels, 2, 3, CPU)
    assert out["accuracy"] == 0.75
    assert out["balanced_accuracy"] == 0.5  # class 0 all right, class 1 all wrong
    assert out["loss"] == pytest.approx(F.cross_entropy(logits, labels).item())
