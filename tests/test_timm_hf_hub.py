"""`timm:hf-hub:<org>/<model>` of plugins/tlbench-timm, from a Hub repo the test puts in the
Hugging Face cache layout (offline; nothing is downloaded).

Needs the plugin (`pip install ./plugins/tlbench-timm`); without it these tests skip.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tlbench import cli, testing
from tlbench.errors import WeightsUnavailableError

timm = pytest.importorskip("timm")
tlbench_timm = pytest.importorskip(
    "tlbench_timm", reason="tlbench-timm is not installed: pip install ./plugins/tlbench-timm"
)
hf_hub = pytest.importorskip("tlbench_timm.hf_hub", reason="tlbench-timm without hf-hub support")

REPO = "someone/tiny-resnet"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face hub cache in tmp_path, offline, downloads not allowed."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.delenv("TLBENCH_TIMM_DOWNLOAD", raising=False)
    monkeypatch.delenv("TLBENCH_TIMM_WEIGHTS_DIR", raising=False)
    return cache


def publish(cache: Path, *, weights: bool = True, commit: str = COMMIT) -> torch.nn.Module:
    """What `timm.create_model('hf-hub:someone/tiny-resnet', pretrained=True)` leaves in the cache.

    timm's own `save_for_hf` writes config.json and the weights of a seeded test_resnet
    with 7 classes; the config gets distinctive preprocessing so the test can see it is used.
    Returns the model whose weights were saved.
    """
    from timm.models import save_for_hf

    with torch.random.fork_rng():
        torch.manual_seed(123)
        model = timm.create_model("test_resnet", num_classes=7)
    folder = cache / f"models--{REPO.replace('/', '--')}"
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    save_for_hf(model, snapshot)
    config = json.loads((snapshot / "config.json").read_text())
    config["pretrained_cfg"].update(
        mean=[0.1, 0.2, 0.3],
        std=[0.4, 0.5, 0.6],
        input_size=[3, 64, 64],
        crop_pct=0.8,
        interpolation="bicubic",
    )
    (snapshot / "config.json").write_text(json.dumps(config))
    if not weights:
        for name in hf_hub.WEIGHT_FILES:
            (snapshot / name).unlink(missing_ok=True)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    return model


def test_a_cached_hub_model_resolves_with_its_config_and_weights(hf_cache: Path) -> None:
    saved = publish(hf_cache)
    backbone = tlbench_timm.resolve(f"hf-hub:{REPO}")
    assert backbone.weights == f"hf-hub:{REPO}@{COMMIT}"
    assert str(hf_cache) in backbone.weights_source
    p = backbone.preprocessing
    assert (p.mean, p.std) == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    assert (p.crop, p.resize, p.interpolation) == (64, 80, "bicubic")  # 64 / 0.8
    assert backbone.feature_dim == saved.num_features

    model = backbone.build(True)
    expected = {k: v for k, v in saved.state_dict().items() if not k.startswith("fc.")}
    got = model.state_dict()
    assert set(got) == set(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    features = model.eval()(torch.rand(2, 3, 64, 64))
    assert features.shape == (2, backbone.feature_dim)
    # Random init is something else: the weights came from the cache.
    fresh = backbone.build(False).state_dict()
    assert not all(torch.equal(fresh[k], expected[k]) for k in expected if k.endswith("weight"))
    testing.check_backbone(backbone, image_size=32)


def test_a_revision_and_random_weights(hf_cache: Path) -> None:
    publish(hf_cache)
    pinned = tlbench_timm.resolve(f"hf-hub:{REPO}@{COMMIT}")
    assert pinned.weights == f"hf-hub:{REPO}@{COMMIT}"
    random = tlbench_timm.resolve(f"hf-hub:{REPO}@random")
    assert random.weights == "random-init:seed0"
    a, b = random.build(True).state_dict(), random.build(True).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # fixed random weights


def test_config_without_weights_trains_from_scratch_only(hf_cache: Path) -> None:
    publish(hf_cache, weights=False)
    backbone = tlbench_timm.resolve(f"hf-hub:{REPO}")
    assert backbone.weights is None and not backbone.has_pretrained
    assert backbone.build(False).eval()(torch.rand(1, 3, 32, 32)).shape == (1, backbone.feature_dim)
    with pytest.raises(WeightsUnavailableError) as error:
        backbone.build(True)
    message = str(error.value)
    assert f"snapshots/{COMMIT}/model.safetensors" in message
    assert "TLBENCH_TIMM_DOWNLOAD=1" in message and "@random" in message


def test_nothing_cached_says_how_to_fill_the_cache(
    hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(WeightsUnavailableError) as error:
        tlbench_timm.resolve(f"hf-hub:{REPO}")
    message = str(error.value)
    assert "config.json" in message and "models--someone--tiny-resnet" in message
    assert "TLBENCH_TIMM_DOWNLOAD=1" in message
    # With downloads allowed it asks the Hub, which offline mode refuses: still a clear error.
    monkeypatch.setenv("TLBENCH_TIMM_DOWNLOAD", "1")
    with pytest.raises(WeightsUnavailableError, match="downloading someone/tiny-resnet's config"):
        tlbench_timm.resolve(f"hf-hub:{REPO}")
    with pytest.raises(LookupError, match="hf-hub:<org>/<model>"):
        tlbench_timm.resolve("hf-hub:no-org")


def test_linear_run_on_a_hub_model_records_its_weights(
    hf_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from imagetree import make_tree

    publish(hf_cache)
    images = make_tree(tmp_path / "images", train=4, val=2)
    # The installed timm plugin through its entry point, the builtins, nothing else installed.
    for var in testing.PLUGIN_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TLBENCH_LOAD_PLUGINS", "timm")
    monkeypatch.setenv("COLUMNS", "1000")
    out = tmp_path / "results.jsonl"
    code = cli.main(
        [
            "run",
            "--backbones",
            f"timm:hf-hub:{REPO}",
            "--datasets",
            f"imagefolder:{images}",
            "--strategies",
            "linear",
            "--epochs",
            "1",
            "--image-size",
            "32",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    (record,) = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    assert record["status"] == "ok", record
    text = json.dumps(record)
    assert f"timm:hf-hub:{REPO}" in text
    assert f"hf-hub:{REPO}@{COMMIT}" in text  # the exact weights, by commit
