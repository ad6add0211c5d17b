"""The plugin distributions in plugins/, installed, through `tlbench` as users run it.

CI installs them first:

    pip install ./plugins/tlbench-timm ./plugins/tlbench-example

Without them these tests skip, saying so. Runs use timm's tiny `test_*`
models at 32 px with random weights, offline.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tlbench
from tlbench import testing
from tlbench.cli import main
from tlbench.errors import TlbenchError, WeightsUnavailableError
from tlbench.plugin_types import DatasetRequest
from tlbench.results import read


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_timm = pytest.mark.skipif(
    not _installed("tlbench-timm"),
    reason="tlbench-timm is not installed: pip install ./plugins/tlbench-timm",
)
needs_example = pytest.mark.skipif(
    not _installed("tlbench-example"),
    reason="tlbench-example is not installed: pip install ./plugins/tlbench-example",
)


@pytest.fixture(autouse=True)
def only_these_plugins(monkeypatch):
    # Whatever else is installed stays out; rich keeps table rows on one line.
    for var in testing.PLUGIN_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TLBENCH_LOAD_PLUGINS", "timm,example")
    monkeypatch.setenv("COLUMNS", "250")


@pytest.fixture
def offline_caches(tmp_path, monkeypatch):
    """Empty Hugging Face and torch hub caches: no weights anywhere, whatever this machine has."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("TLBENCH_TIMM_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("TLBENCH_TIMM_DOWNLOAD", raising=False)
    return tmp_path


def _images(folder: Path, n: int, colour: tuple[int, int, int], seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        pixels = rng.integers(0, 80, (20, 20, 3), dtype=np.uint8)
        pixels[5:15, 5:15] = colour
        path = folder / f"{i}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def image_tree(tmp_path) -> Path:
    """imagefolder layout: train/ and val/, 2 classes."""
    root = tmp_path / "tree"
    for split, n in (("train", 8), ("val", 3)):
        _images(root / split / "red", n, (230, 30, 30), 1)
        _images(root / split / "blue", n, (30, 30, 230), 2)
    return root


def _write_csv(path: Path, rows: list[tuple[str, ...]], header: str) -> Path:
    path.write_text(header + "\n" + "\n".join(",".join(r) for r in rows) + "\n")
    return path


@pytest.fixture
def csv_file(tmp_path) -> Path:
    """A CSV of relative image paths and labels with a split column."""
    rows = []
    for label, colour in (
        ("red", (230, 30, 30)),
        ("blue", (30, 30, 230)),
        ("green", (30, 230, 30)),
    ):
        for i, path in enumerate(_images(tmp_path / "imgs" / label, 6, colour, len(rows))):
            rows.append((str(path.relative_to(tmp_path)), label, "test" if i < 2 else "train"))
    return _write_csv(tmp_path / "labels.csv", rows, "path,label,split")


def _plugins() -> tlbench.Plugins:
    return tlbench.Plugins()


# --------------------------------------------------------------------------- installation


@needs_timm
@needs_example
def test_both_distributions_load_through_the_entry_point_group():
    names = {ep.name: ep.dist.name for ep in importlib.metadata.entry_points(group="tlbench")}
    assert names["timm"] == "tlbench-timm" and names["example"] == "tlbench-example"
    plugins = _plugins()
    assert plugins.info["timm"].status == "loaded" and plugins.info["example"].status == "loaded"
    assert plugins.versions() == {"timm": "0.1.0", "example": "0.1.0"}
    testing.check_plugin(importlib.import_module("tlbench_timm"), "timm")
    testing.check_plugin(importlib.import_module("tlbench_example"), "example")


# --------------------------------------------------------------------------- tlbench-timm


@needs_timm
def test_list_backbones_timm_lists_timm_models(capsys):
    assert main(["list", "backbones", "timm:*"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "│ timm:" in line]
    names = {row.split("│")[1].strip() for row in rows}
    assert {"timm:resnet18", "timm:vit_small_patch16_224", "timm:<model_name>[@random]"} <= names
    import timm

    assert len(names) == len(timm.list_models()) + 1


# slow: builds a real timm network and trains it (6 s).
@pytest.mark.slow
@needs_timm
def test_a_linear_run_on_a_timm_backbone_completes_and_is_recorded(
    image_tree, tmp_path, offline_caches
):
    out = tmp_path / "runs.jsonl"
    command = [
        sys.executable,
        "-m",
        "tlbench.cli",
        "run",
        "--backbones",
        "timm:test_resnet@random,timm:test_resnet",
        "--datasets",
        f"imagefolder:{image_tree}",
        "--strategies",
        "linear",
        "--epochs",
        "2",
        "--image-size",
        "32",
        "--out",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--device",
        "cpu",
        "--quiet",
    ]
    env = {**os.environ, "TLBENCH_LOAD_PLUGINS": "timm", "HF_HUB_CACHE": str(tmp_path / "hf")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    # Skipped runs are recorded before the grid trains; find each by its backbone.
    by_backbone = {r["config"]["backbone"]: r for r in read(out)}
    ok, skipped = by_backbone["timm:test_resnet@random"], by_backbone["timm:test_resnet"]
    assert ok["status"] == "ok", ok["reason"]
    assert ok["config"]["backbone"] == "timm:test_resnet@random"
    assert ok["config"]["weights"] == "random-init:seed0", "random features are recorded as such"
    assert ok["providers"]["backbone"] == "timm"
    assert ok["environment"]["plugins"] == {"timm": "0.1.0"}
    assert ok["cost"]["trainable_params"] == 96 * 2 + 2  # the head on test_resnet's 96 features
    assert len(ok["accuracy"]["curve"]) == 2
    assert skipped["status"] == "skipped"
    assert skipped["reason"] == "timm:test_resnet has no pretrained weights; linear needs them"


@needs_timm
@pytest.mark.parametrize(
    "model",
    ["test_resnet", "test_efficientnet", "test_convnext", "test_vit", "mobilenetv3_small_050"],
)
def test_timm_backbones_pass_the_contract(model, offline_caches):
    backbone = _plugins().backbones.get(f"timm:{model}")
    testing.check_backbone(backbone, image_size=32)


@pytest.mark.slow  # timm's registry of every model
@needs_timm
def test_every_featured_timm_name_resolves_without_building(offline_caches):
    registry = _plugins().backbones
    featured = [n for n in registry.names() if n.startswith("timm:")]
    assert len(featured) == len(registry.families["timm"].featured) >= 5
    for name in featured:
        backbone = registry.get(name)
        assert backbone.name == name and backbone.feature_dim > 0 and backbone.weights is None


@needs_timm
def test_timm_preprocessing_and_sizes_are_timms_own(offline_caches):
    registry = _plugins().backbones
    vit = registry.get("timm:vit_small_patch16_224")
    assert (
        vit.preprocessing.mean == (0.5, 0.5, 0.5) and vit.preprocessing.interpolation == "bicubic"
    )
    assert (vit.preprocessing.crop, vit.preprocessing.resize) == (224, round(224 / 0.9))
    assert vit.fixed_image_size == 224 and vit.feature_dim == 384
    resnet = registry.get("timm:resnet10t")
    assert resnet.preprocessing.crop == 176 and resnet.fixed_image_size is None
    # MobileNetV3's pooled features come after its conv head: 1280, not num_features (960).
    assert registry.get("timm:mobilenetv3_large_100").feature_dim == 1280


@needs_timm
def test_missing_timm_weights_say_where_timm_looks_and_how_to_run_without(offline_caches):
    backbone = _plugins().backbones.get("timm:test_resnet")
    assert backbone.weights is None
    with pytest.raises(WeightsUnavailableError) as info:
        backbone.build(True)
    message = str(info.value)
    hub = offline_caches / "hf" / "models--timm--test_resnet.r160_in1k"
    assert str(hub) in message, "the Hugging Face cache folder timm reads"
    assert "TLBENCH_TIMM_WEIGHTS_DIR" in message and "--strategies scratch" in message
    assert "timm:test_resnet@random" in message


def _saved_weights(seed: int) -> dict[str, torch.Tensor]:
    import timm

    torch.manual_seed(seed)
    return timm.create_model("test_resnet", num_classes=0).state_dict()


@needs_timm
def test_timm_weights_in_the_weights_dir_are_found_and_loaded(offline_caches, monkeypatch):
    state = _saved_weights(7)
    folder = offline_caches / "weights"
    folder.mkdir()
    torch.save(state, folder / "test_resnet.r160_in1k.pth")
    monkeypatch.setenv("TLBENCH_TIMM_WEIGHTS_DIR", str(folder))
    backbone = _plugins().backbones.get("timm:test_resnet")
    assert backbone.weights == "test_resnet.r160_in1k"
    assert backbone.weights_source.startswith(str(folder))
    loaded = backbone.build(True).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    testing.check_backbone(backbone, image_size=32, pretrained=True)


@needs_timm
def test_timm_weights_in_the_hugging_face_cache_are_found_and_loaded(offline_caches):
    from safetensors.torch import save_file

    state = _saved_weights(8)
    repo = offline_caches / "hf" / "models--timm--test_resnet.r160_in1k"
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    save_file(
        {k: v.contiguous() for k, v in state.items()},
        repo / "snapshots" / "abc123" / "model.safetensors",
    )
    backbone = _plugins().backbones.get("timm:test_resnet")
    assert backbone.weights == "test_resnet.r160_in1k"
    module = backbone.build(True)
    assert torch.equal(module.state_dict()["conv1.0.weight"], state["conv1.0.weight"])


@needs_timm
def test_random_weights_are_fixed_and_distinct_from_a_scratch_init():
    backbone = _plugins().backbones.get("timm:test_resnet@random")
    first, second = backbone.build(True).state_dict(), backbone.build(True).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    torch.manual_seed(123)
    scratch = backbone.build(False).state_dict()
    assert not torch.equal(first["conv1.0.weight"], scratch["conv1.0.weight"])


@needs_timm
def test_an_unknown_timm_model_suggests_close_names(capsys, tmp_path):
    argv = [
        "run",
        "--backbones",
        "timm:resnt18",
        "--datasets",
        "synthetic",
        "--strategies",
        "scratch",
        "--out",
        str(tmp_path / "r.jsonl"),
    ]
    assert main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "unknown backbone 'timm:resnt18'" in err and "'timm:resnet18'" in err
    assert not (tmp_path / "r.jsonl").exists()


# --------------------------------------------------------------------------- tlbench-example


@needs_example
def test_csv_dataset_contract_with_and_without_a_split_column(csv_file, tmp_path):
    dataset = _plugins().datasets.get("csv")
    request = DatasetRequest(argument=str(csv_file), data_dir=tmp_path, test_fraction=0.25)
    splits = testing.check_dataset(dataset, request)
    assert splits.classes == ["blue", "green", "red"]
    assert (len(splits.train), len(splits.eval), splits.eval_split) == (12, 6, "test")

    rows = [line.rsplit(",", 1)[0].split(",") for line in csv_file.read_text().splitlines()[1:]]
    plain = _write_csv(tmp_path / "plain.csv", [tuple(r) for r in rows], "path,label")
    splits = testing.check_dataset(dataset, dataclasses.replace(request, argument=str(plain)))
    assert (len(splits.train), len(splits.eval)) == (12, 6), "a quarter of each class's 6, rounded"
    again = testing.check_dataset(dataset, dataclasses.replace(request, argument=str(plain)))
    assert [again.eval.describe(i) for i in range(3)] == [splits.eval.describe(i) for i in range(3)]


@needs_example
def test_csv_dataset_errors_name_the_problem(csv_file, tmp_path):
    dataset = _plugins().datasets.get("csv")
    broken = _write_csv(
        tmp_path / "broken.csv", [("imgs/red/0.png", "red"), ("nope.png", "red")], "path,label"
    )
    with pytest.raises(TlbenchError, match=r"1 of 2 files .* do not exist, e\.g\. .*nope\.png"):
        dataset.load(DatasetRequest(argument=str(broken), data_dir=tmp_path))
    wrong = _write_csv(tmp_path / "wrong.csv", [("a.png", "x")], "file,class")
    with pytest.raises(TlbenchError, match="needs the columns path and label"):
        dataset.load(DatasetRequest(argument=str(wrong), data_dir=tmp_path))


@needs_example
@pytest.mark.parametrize("name", ["bitfit", "partial:1", "partial:2"])
def test_example_strategies_pass_the_contract(name):
    strategy = _plugins().strategies.get(name)
    result = testing.check_strategy(strategy)
    # tiny_backbone() has two stages: partial:2 trains all of it.
    assert 0 < result["trainable"] <= result["total"]
    assert (result["trainable"] == result["total"]) == (name == "partial:2")


@needs_example
def test_bitfit_trains_biases_and_norms_and_partial_the_last_blocks():
    plugins = _plugins()
    backbone = testing.tiny_backbone()
    bitfit = testing.check_strategy(plugins.strategies.get("bitfit"), backbone)
    # tiny_cnn: conv biases (8 + 16), BatchNorm weight and bias (8 + 8); head 16 * 3 + 3.
    assert bitfit["trainable"] == 8 + 16 + 16 + 51
    partial = testing.check_strategy(plugins.strategies.get("partial:1"), backbone)
    assert partial["trainable"] == 8 * 16 * 9 + 16 + 51  # the last stage (a conv) and the head
    with pytest.raises(TlbenchError, match="whole number of stages"):
        plugins.strategies.get("partial:x")
    with pytest.raises(TlbenchError, match="N >= 1"):
        plugins.strategies.get("partial:0")


@pytest.mark.slow  # builds a timm network and trains it
@needs_timm
@needs_example
def test_example_dataset_and_strategies_run_on_a_timm_backbone(csv_file, tmp_path, capsys):
    out = tmp_path / "runs.jsonl"
    argv = [
        "run",
        "--backbones",
        "timm:test_resnet@random",
        "--datasets",
        f"csv:{csv_file}",
        "--strategies",
        "bitfit,partial:2,finetune",
        "--epochs",
        "1",
        "--image-size",
        "32",
        "--out",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--device",
        "cpu",
        "--quiet",
    ]
    assert main(argv) == 0, capsys.readouterr().err
    records = {r["config"]["strategy"]: r for r in read(out)}
    assert {s: r["status"] for s, r in records.items()} == {
        "bitfit": "ok",
        "partial:2": "ok",
        "finetune": "ok",
    }
    trainable = {s: r["cost"]["trainable_params"] for s, r in records.items()}
    assert trainable["bitfit"] < trainable["partial:2"] < trainable["finetune"]
    assert records["partial:2"]["providers"] == {
        "backbone": "timm",
        "strategy": "example",
        "dataset": "example",
    }
    assert records["bitfit"]["environment"]["plugins"] == {"timm": "0.1.0", "example": "0.1.0"}
    assert records["bitfit"]["config"]["dataset"] == f"csv:{csv_file}"
    assert json.loads(json.dumps(records["bitfit"])) == records["bitfit"]
