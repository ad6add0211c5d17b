"""Saved models you can find and load (issue 24): `tlbench models`, `tlbench.load_model`,
`create_backbone(name, num_classes=N)`.

The problem: checkpoints are files named by opaque keys, with no command or API
saying which is which, no `load_model()`, and `create_backbone` had no
`num_classes` as timm users expect.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import ColourSquares

import tlbench
from tlbench import testing


@pytest.fixture
def saved(run_cli, tmp_path) -> tuple[Path, dict]:
    """A real linear probe on the tiny test backbone with its checkpoint, and its record."""
    out = tmp_path / "runs.jsonl"
    result = run_cli(
        "run", "--datasets", "tinyset", "--backbones", "tiny", "--strategies", "linear",
        "--epochs", "3", "--device", "cpu", "--no-cache", "--quiet", "--save-models",
        "--out", str(out),
    )  # fmt: skip
    assert result.code == 0, result
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    return out, record


def test_models_lists_which_checkpoint_is_which(run_cli, saved) -> None:
    out, record = saved
    result = run_cli("models", str(out))
    assert result.code == 0, result
    (line,) = [x for x in result.out.splitlines() if x.startswith("tiny ")]
    assert line.split()[:3] == ["tiny", "linear", "tinyset"]
    assert f"{100 * record['accuracy']['final']:.1f}" in line
    assert record["cost"]["checkpoint"] in line
    # A folder of checkpoints alone: found by their sidecars, as json.
    result = run_cli("models", str(out.parent / "models"), "--format", "json")
    (found,) = json.loads(result.out)
    assert found["path"] == record["cost"]["checkpoint"] and found["strategy"] == "linear"
    assert found["saved_accuracy"] == pytest.approx(record["accuracy"]["final"])


def test_models_says_when_a_recorded_checkpoint_is_gone(run_cli, saved) -> None:
    out, record = saved
    Path(record["cost"]["checkpoint"]).unlink()
    result = run_cli("models", str(out))
    assert "(missing)" in result.out


def test_load_model_is_a_ready_classifier_with_its_transform(run_cli, saved) -> None:
    _, record = saved
    plugins = tlbench.Plugins(entry_points=False, extra=[("tiny", testing.TINY_PLUGIN)])
    model = tlbench.load_model(record["cost"]["checkpoint"], plugins=plugins)
    assert not model.training
    assert model.classes == ["red", "green", "blue"]
    images = ColourSquares(18, seed=1)  # tinyset's evaluation split
    x = torch.stack([model.transform(images.load(i)) for i in range(len(images))])
    assert x.shape == (18, 3, model.image_size, model.image_size) and 0 <= x.min() <= x.max() <= 1
    with torch.no_grad():
        predicted = model(x).argmax(1).tolist()
    right = sum(p == images.labels[i] for i, p in enumerate(predicted))
    # The same preprocessing as the evaluation split: the run's reported top-1 again.
    assert right / 18 == pytest.approx(record["accuracy"]["final"])
    assert model.checkpoint["strategy"] == "linear" and "state_dict" not in model.checkpoint


def test_load_model_of_a_file_that_is_no_checkpoint_says_so(tmp_path) -> None:
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not weights")
    with pytest.raises(tlbench.TlbenchError, match="checkpoint"):
        tlbench.load_model(bad)


def test_create_backbone_with_num_classes_gives_logits() -> None:
    features = tlbench.create_backbone("small_cnn", pretrained=False)
    model = tlbench.create_backbone("small_cnn", pretrained=False, num_classes=5)
    x = torch.rand(2, 3, 32, 32)
    assert model(x).shape == (2, 5) and model.num_classes == 5
    width = model.tlbench_backbone.feature_dim
    assert features(x).shape == (2, width) and model.backbone(x).shape == (2, width)
    assert tlbench.create_backbone("small_cnn", False, num_classes=0)(x).shape == (2, width)
    with pytest.raises(ValueError, match="num_classes"):
        tlbench.create_backbone("small_cnn", False, num_classes=-1)
