"""The fit loops' records in the cases the mutation run found unchecked (issue 25).

Each test runs a tiny fit on the CPU and states what it must record: the phases it
tells, each epoch's learning rate, its timed figures under a clock that advances
1 ms a reading, the final evaluation image by image, the threads timed beside it, a
rung continued from a saved state, the data kept on the device and an out-of-memory
there, a compiled fit's graphs. results/mutation.md lists the mutants they were written
for.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import FakeClock, tiny_net
from torch import nn

from tlbench import head_fit, image_fit
from tlbench.classifier import FeatureHead, ImageClassifier
from tlbench.data import ImageTensors, center_crop
from tlbench.execution import Execution, NothingCompiled
from tlbench.memory import DataOnDeviceOOM
from tlbench.plugin_types import Hyperparameters, Preprocessing
from tlbench.rungs import Rung

EX = Execution(torch.device("cpu"))
#: the rate halves every epoch: epoch 1 trains at 0.1, epoch 2 at 0.05.
#: (no augmentation: an end-to-end fit then sees its images as they are.)
HALVING = Hyperparameters(
    epochs=2, batch_size=4, lr=0.1, schedule="step", step_size=1, gamma=0.5, augment=False
)


def _features() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(10, 4, generator=g), torch.arange(10) % 2


def fit_head(
    hp: Hyperparameters = HALVING, ex: Execution = EX, torch_seed: int = 0, **kwargs
) -> tuple[FeatureHead, head_fit.FitResult]:
    """A head on 10 features of 4 dimensions, evaluated on its training features, with
    torch's global stream at `torch_seed`."""
    x, y = _features()
    head = FeatureHead(4, 2)  # zero weights: the same head whatever torch's seed
    torch.manual_seed(torch_seed)
    result = head_fit.train_head_on_features(
        head, x, y, x, y, num_classes=2, hp=hp, ex=ex, seed=0, **kwargs
    )
    return head, result


def _images(n: int, seed: int) -> ImageTensors:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 18, 18), dtype=torch.uint8, generator=g)
    return ImageTensors(images, torch.arange(n) % 3)


def fit_model(
    hp: Hyperparameters = HALVING,
    ex: Execution = EX,
    torch_seed: int = 0,
    n_train: int = 10,
    n_eval: int = 6,
    **kwargs,
) -> tuple[ImageClassifier, image_fit.FitResult]:
    """A tiny network end to end on `n_train` training and `n_eval` evaluation images of 3
    classes, its weights drawn at torch's seed 0, then torch's global stream at `torch_seed`."""
    torch.manual_seed(0)
    model = ImageClassifier(tiny_net(), nn.Linear(16, 3), Preprocessing(resize=18, crop=16))
    torch.manual_seed(torch_seed)
    groups = [{"params": list(model.parameters()), "lr": hp.lr, "name": "all"}]
    result = image_fit.train_images(
        model, groups, _images(n_train, 0), _images(n_eval, 1), num_classes=3, image_size=16,
        hp=hp, ex=ex, seed=0, **kwargs,
    )  # fmt: skip
    return model, result


FITS = {"head": (fit_head, head_fit, "head"), "images": (fit_model, image_fit, "all")}
#: the evaluation's batch sizes: the head's 10 features in one batch of up to 4,096, the
#: model's 6 images in batches of twice the training batch.
EVAL_SIZES = {"head": [10], "images": [6]}


@pytest.mark.parametrize("loop", FITS)
def test_a_fit_tells_its_phases_and_records_each_epochs_rate(loop):
    fit, _, group = FITS[loop]
    told: list[str] = []
    _, result = fit(on_phase=told.append)
    assert told == ["train warm-up", "train", "eval", "train", "eval"]
    assert [epoch["lr"] for epoch in result.curve] == [{group: 0.1}, {group: 0.05}]


@pytest.mark.parametrize("loop", FITS)
def test_each_timed_span_of_a_fit_is_its_clocks_difference(loop, monkeypatch):
    """Upload, warm-up, each epoch and each evaluation read the clock twice: 1 ms each."""
    fit, module, _ = FITS[loop]
    monkeypatch.setattr(module, "time", SimpleNamespace(perf_counter=FakeClock().perf_counter))
    _, result = fit()
    assert result.upload_seconds == pytest.approx(0.001)
    assert result.warmup_seconds == pytest.approx(0.001)
    assert [epoch["epoch_seconds"] for epoch in result.curve] == pytest.approx([0.001, 0.001])
    assert result.measured_seconds == pytest.approx(0.002)
    assert result.eval_seconds == pytest.approx(0.002)
    assert result.resident_data_bytes == 0  # nothing is kept on a CPU "device"
    assert result.batch_size == 4
    assert result.warmup_batches == {"train": [4, 2], "eval": EVAL_SIZES[loop]}


def test_the_final_evaluation_is_recorded_image_by_image():
    """One epoch: its evaluation is the final one, and its per-image results are what
    the trained head predicts on each evaluation feature."""
    head, result = fit_head(HALVING.replace(epochs=1))
    x, y = _features()
    with torch.no_grad():
        expected = (head(x).argmax(1) == y).tolist()
    assert result.final_correct.tolist() == expected


def test_the_final_evaluation_of_a_model_is_recorded_image_by_image():
    """As for the head: what the trained model predicts on each centre-cropped image."""
    model, result = fit_model(HALVING.replace(epochs=1))
    evalset = _images(6, 1)
    model.eval()
    with torch.no_grad():
        predicted = model(center_crop(evalset.images, 16)).argmax(1)
    assert result.final_correct.tolist() == (predicted == evalset.labels).tolist()


@pytest.mark.parametrize("loop", FITS)
def test_a_thread_alive_during_the_epochs_is_named_in_the_result(loop):
    fit, _, _ = FITS[loop]
    stop = threading.Event()
    display = threading.Thread(target=stop.wait, name="live display")
    display.start()
    try:
        _, result = fit()
    finally:
        stop.set()
        display.join()
    assert "live display" in result.timed_with_threads


@pytest.mark.parametrize("loop", FITS)
def test_a_rung_continued_from_a_saved_state_ends_as_the_whole_fit(loop, tmp_path):
    """Epoch 1 as a rung that leaves its state, then epochs 2 and 3 continued from it: the
    curve of the whole 3-epoch fit, and only the continued epochs' steps measured."""
    fit, _, _ = FITS[loop]
    hp = HALVING.replace(epochs=3)
    state = tmp_path / "rung.pt"
    _, whole = fit(hp)
    fit(hp, rung=Rung(stop=1, save_to=state))
    _, continued = fit(hp, rung=Rung(stop=3, load_from=state))
    losses = [(e["epoch"], e["train_loss"], e["eval_loss"]) for e in whole.curve]
    assert [(e["epoch"], e["train_loss"], e["eval_loss"]) for e in continued.curve] == losses
    assert continued.measured_steps == 2 * 3  # 10 images in batches of 4: 3 steps an epoch


@pytest.mark.parametrize("loop", FITS)
def test_a_rung_state_of_another_batch_size_is_not_continued(loop, tmp_path):
    """A state left at batch 4 counts its schedule in other steps than a fit at batch 5
    (an out-of-memory retry): that fit trains all 3 epochs, 2 steps each, itself."""
    fit, _, _ = FITS[loop]
    state = tmp_path / "rung.pt"
    fit(HALVING.replace(epochs=3), rung=Rung(stop=1, save_to=state))
    _, retried = fit(HALVING.replace(epochs=3, batch_size=5), rung=Rung(stop=3, load_from=state))
    assert [e["epoch"] for e in retried.curve] == [1, 2, 3]
    assert retried.measured_steps == 3 * 2


@pytest.mark.parametrize(("n", "batch"), [(100, 1), (10, 4)])
def test_an_epochs_loss_is_its_images_mean_loss_summed_in_float64(n, batch):
    """A head of zero weights that does not learn (lr 0) loses ln 2 on every image: the
    epoch's loss is exactly that float32 value, as the float64 sum of each batch's mean
    times its size, over n, is; a float32 sum of 100 steps drifts from it."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 4, generator=g), torch.arange(n) % 2
    hp = Hyperparameters(epochs=1, batch_size=batch, lr=0.0, weight_decay=0.0)
    result = head_fit.train_head_on_features(
        FeatureHead(4, 2), x, y, x, y, num_classes=2, hp=hp, ex=EX, seed=0
    )
    ln2 = F.cross_entropy(torch.zeros(1, 2), torch.tensor([0])).item()
    assert result.curve[0]["train_loss"] == ln2


@pytest.mark.parametrize(("n", "batch"), [(100, 1), (10, 4), (1, 1)])
def test_an_epochs_loss_on_images_is_their_mean_loss_summed_in_float64(n, batch):
    """As for the head: a model whose head has zero weights and does not learn loses ln 3
    on every image, and an epoch of one image is that image's loss."""
    head = nn.Linear(3, 3)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    pooled = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = ImageClassifier(pooled, head, Preprocessing(resize=18, crop=16))
    hp = Hyperparameters(epochs=1, batch_size=batch, lr=0.0, weight_decay=0.0, augment=False)
    result = image_fit.train_images(
        model, [{"params": list(head.parameters())}], _images(n, 0), _images(6, 1),
        num_classes=3, image_size=16, hp=hp, ex=EX, seed=0,
    )  # fmt: skip
    ln3 = F.cross_entropy(torch.zeros(1, 3), torch.tensor([0])).item()
    assert result.curve[0]["train_loss"] == ln3


@pytest.mark.parametrize("loop", FITS)
def test_a_fits_order_is_drawn_from_its_seed_not_from_torchs_global_stream(loop):
    fit, _, _ = FITS[loop]
    curves = []
    for torch_seed in (1, 2):
        _, result = fit(torch_seed=torch_seed)
        curves.append([(e["train_loss"], e["eval_loss"]) for e in result.curve])
    assert curves[0] == curves[1]


def test_the_head_warms_up_on_each_batch_size_its_epochs_meet():
    """10 features in batches of 8: the warm-up steps on 8 and 2, evaluates the 10, and
    the epoch then meets the same sizes."""
    x, y = _features()
    head = FeatureHead(4, 2)
    seen: list[int] = []
    head.register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
    hp = Hyperparameters(epochs=1, batch_size=8)
    head_fit.train_head_on_features(head, x, y, x, y, num_classes=2, hp=hp, ex=EX, seed=0)
    assert seen == [8, 2, 10, 8, 2, 10]


def test_the_model_warms_up_on_each_batch_size_its_epochs_meet(monkeypatch):
    """10 training images in batches of 4 and 20 evaluation images in batches of 8: the
    warm-up steps on 4 and 2 and evaluates one batch of 8 and one of 4 (12 images); the
    epoch then meets 4, 4, 2 and evaluates 8, 8, 4."""
    seen: list[int] = []
    real_make = image_fit._ImageFit.make

    def make(*args):
        fit = real_make(*args)
        fit.model.register_forward_pre_hook(lambda module, inputs: seen.append(len(inputs[0])))
        return fit

    monkeypatch.setattr(image_fit._ImageFit, "make", make)
    fit_model(HALVING.replace(epochs=1), n_eval=20)
    assert seen == [4, 2, 8, 4, 4, 4, 2, 8, 8, 4]  # the warm-up, then the epoch


def test_a_head_trains_in_fp32_whatever_the_runs_precision():
    """A linear layer gains nothing from bf16 and would lose precision: under a bf16 run
    the head's curve is its fp32 curve."""
    _, fp32 = fit_head()
    _, bf16 = fit_head(ex=Execution(torch.device("cpu"), "bf16"))
    assert [e["train_loss"] for e in bf16.curve] == [e["train_loss"] for e in fp32.curve]


#: bytes kept "on the device" when every split fits: 10 training images of 3 x 18 x 18 uint8,
#: their 10 int64 labels and the 6 evaluation images.
RESIDENT = 10 * 3 * 18 * 18 + 10 * 8 + 6 * 3 * 18 * 18


def _fits_on_the_device(monkeypatch) -> None:
    """Every split "fits": kept as if on the device (on a CPU, the tensor itself)."""
    monkeypatch.setattr(image_fit, "to_device_if_fits", lambda images, device: images)


def test_a_batch_loader_keeps_its_split_on_the_device_unless_told_not_to(monkeypatch):
    _fits_on_the_device(monkeypatch)
    data = _images(10, 0)
    kept = image_fit.BatchLoader(data, 16, EX, augment=False, seed=0)
    host = image_fit.BatchLoader(data, 16, EX, augment=False, seed=0, on_device=False)
    assert (kept.on_device, kept.device_bytes) == (True, 10 * 3 * 18 * 18 + 10 * 8)
    assert (host.on_device, host.device_bytes) == (False, 0)


def test_the_splits_kept_on_the_device_are_counted_and_none_when_told_to_stay(monkeypatch):
    _fits_on_the_device(monkeypatch)
    _, kept = fit_model()
    _, told = fit_model(data_on_device=True)
    _, host = fit_model(data_on_device=False)
    assert (kept.resident_data_bytes, told.resident_data_bytes) == (RESIDENT, RESIDENT)
    assert host.resident_data_bytes == 0


class OutOfMemory(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 MiB")


def test_an_oom_with_the_data_on_the_device_says_how_much_data_is_there(monkeypatch):
    _fits_on_the_device(monkeypatch)
    model = ImageClassifier(OutOfMemory(), nn.Linear(16, 3), Preprocessing(resize=18, crop=16))
    groups = [{"params": list(model.parameters()), "lr": 0.1}]
    with pytest.raises(DataOnDeviceOOM) as raised:
        image_fit.train_images(
            model, groups, _images(10, 0), _images(6, 1), num_classes=3, image_size=16,
            hp=HALVING, ex=EX, seed=0,
        )  # fmt: skip
    assert raised.value.resident_bytes == RESIDENT
    assert isinstance(raised.value.__cause__, torch.OutOfMemoryError)


def test_an_oom_while_uploading_to_a_cpu_is_raised_as_it_came(monkeypatch):
    """On a CPU the data has nowhere else to go: no retry with it on the host."""

    def no_room(images: torch.Tensor, device: torch.device) -> torch.Tensor:
        raise torch.OutOfMemoryError("out of memory")

    monkeypatch.setattr(image_fit, "to_device_if_fits", no_room)
    with pytest.raises(torch.OutOfMemoryError):
        fit_model()


def _compiled(monkeypatch, counts: list[int]) -> Execution:
    """A compiled run whose compiler is a stand-in: the model runs eager, and dynamo's
    graph counter reads `counts` in turn (before the fit, after its warm-up, at its end)."""
    monkeypatch.setattr(Execution, "prepare", lambda self, model: model)
    monkeypatch.setattr(image_fit, "compiled_graph_count", iter(counts).__next__)
    return Execution(torch.device("cpu"), compile=True)


def test_a_compiled_fit_records_the_graphs_it_captured(monkeypatch):
    ex = _compiled(monkeypatch, [5, 7, 8])
    _, result = fit_model(ex=ex)
    assert result.compiled_graphs == 8 - 5


def test_a_compiled_fit_that_captured_no_graph_fails_before_the_clock(monkeypatch):
    ex = _compiled(monkeypatch, [5, 5])
    told: list[str] = []
    with pytest.raises(NothingCompiled) as raised:
        fit_model(ex=ex, on_phase=told.append)
    assert str(raised.value) == (
        "--compile captured no graph (torch.compile fell back to eager: a recompile limit "
        "reached or a graph break on every frame); the run would be timed eager while "
        "recorded as compiled"
    )
    assert told == ["train warm-up"]  # no epoch was trained


def test_a_last_batch_of_one_image_is_dropped():
    """9 images in batches of 4: BatchNorm cannot train on one image, so each epoch trains
    2 batches of 4 and the warm-up meets only the 4."""
    _, result = fit_model(n_train=9)
    assert result.warmup_batches["train"] == [4]
    assert (result.measured_steps, result.measured_images) == (2 * 2, 2 * 8)


def test_every_step_augments_with_a_seed_drawn_from_the_fits_own(monkeypatch):
    """Pinned: a fit of seed 0 augments with the stream of seed 900450186894289455 (the first
    draw below 2**62 of its own generator), so a new version reproduces the augmented runs
    an older one recorded; every training step, the warm-up's too, is augmented."""
    seeds: list[int] = []
    augmented: list[int] = []
    real_loader, real_augment = image_fit.BatchLoader, image_fit.random_resized_crop_flip

    class Loader(real_loader):
        def __init__(self, *args, **kwargs):
            seeds.append(kwargs["seed"])
            super().__init__(*args, **kwargs)

    def augment(images, size, generator):
        augmented.append(len(images))
        return real_augment(images, size, generator)

    monkeypatch.setattr(image_fit, "BatchLoader", Loader)
    monkeypatch.setattr(image_fit, "random_resized_crop_flip", augment)
    fit_model(HALVING.replace(augment=True))
    assert seeds == [900450186894289455]
    assert augmented == [4, 2] + [4, 4, 2] * 2  # the warm-up's sizes, then two epochs
