"""What a checkpoint's fields and saved preprocessing may hold, at the edges of each bound.

Written for the mutants the recheck of shard 2 (results/mutation.md) left alive in
`tlbench.checkpoint`: the largest image size and resize accepted (and the first refused),
the mean or std of exactly 1e3, a crop of 0, a sidecar that is JSON but not an object,
a checkpoint whose weights lack their sidecar, and which weights a sidecar loads. Every
message is checked whole.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tlbench import checkpoint
from tlbench.checkpoint import SAFETENSORS_FORMAT
from tlbench.errors import TlbenchError


def _fields(**changes) -> dict:
    fields = {
        "state_dict": {},
        "backbone": "tiny",
        "head": "linear",
        "num_classes": 1,
        "classes": ["cat"],
        "image_size": 2048,
        "preprocessing": {},
    }
    return {**fields, **changes}


def test_the_largest_image_size_and_no_preprocessing_of_its_own_are_accepted():
    # 2048 px, and the default 256/224 resize: 2048 x 256 / 224 = 2341 px, within 4096
    assert checkpoint._field_problem(_fields()) is None
    assert checkpoint._field_problem(_fields(image_size=2049)) == (
        "image_size is larger than 2048 (2049)"
    )


@pytest.mark.parametrize(
    ("preprocessing", "message"),
    [
        (5, "preprocessing has unknown fields 5"),
        ({"std": "abc"}, "preprocessing std is not three numbers ('abc')"),
        ({"mean": ["a", 0, 0]}, "preprocessing mean is not three numbers (['a', 0, 0])"),
        ({"mean": [True, 0, 0]}, "preprocessing mean is not three numbers ([True, 0, 0])"),
    ],
)
def test_preprocessing_that_is_not_three_numbers_each_is_named(preprocessing, message):
    assert checkpoint._field_problem(_fields(preprocessing=preprocessing)) == message


@pytest.mark.parametrize(
    "preprocessing",
    [
        {"mean": [1000, -1000, 0], "std": [1000, 1, 1]},
        {"resize": 1, "crop": 1},
        {"resize": 4096, "crop": 4096},
        # 2048 x 4096 / 2048 = 4096 px for image_size 2048: the largest decode accepted
        {"resize": 4096, "crop": 2048},
    ],
)
def test_preprocessing_at_the_edge_of_each_bound_is_accepted(preprocessing):
    assert checkpoint._preprocessing_problem(preprocessing, 2048) is None


@pytest.mark.parametrize(
    ("preprocessing", "message"),
    [
        (
            {"mean": [1000.5, 0, 0]},
            "preprocessing mean holds a number that is not finite or is absurd ([1000.5, 0, 0])",
        ),
        ({"crop": 0}, "preprocessing crop is not an integer from 1 to 4096 (0)"),
        ({"resize": 4097}, "preprocessing resize is not an integer from 1 to 4096 (4097)"),
        (
            # 2000 x 3000 / 1000 = 6000 px
            {"resize": 3000, "crop": 1000},
            "preprocessing resize 3000 for crop 1000 would decode every image at 6000 px for "
            "image_size 2000 (at most 4096)",
        ),
    ],
)
def test_preprocessing_past_a_bound_is_refused_saying_which(preprocessing, message):
    assert checkpoint._preprocessing_problem(preprocessing, 2000) == message


def test_a_sidecar_that_is_json_but_not_an_object_is_named_by_its_type(tmp_path):
    sidecar = tmp_path / "m.json"
    sidecar.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(TlbenchError) as info:
        checkpoint._read_sidecar(sidecar, tmp_path / "m.safetensors")
    assert str(info.value) == (
        f"{sidecar} is not a tlbench checkpoint sidecar (format 'list', expected "
        f"{SAFETENSORS_FORMAT!r}). Checkpoints are written by `tlbench run --save-models`."
    )


def test_a_checkpoint_is_complete_only_with_its_weights_and_its_sidecar(tmp_path):
    weights, sidecar = tmp_path / "m.safetensors", tmp_path / "m.json"
    weights.write_bytes(b"")
    assert not checkpoint.checkpoint_complete(weights)
    assert not checkpoint.checkpoint_complete(sidecar)
    sidecar.write_text("{}", encoding="utf-8")
    assert checkpoint.checkpoint_complete(weights) and checkpoint.checkpoint_complete(sidecar)
    older = tmp_path / "old.pt"  # a checkpoint of one file, from before the sidecar
    assert not checkpoint.checkpoint_complete(older)
    older.write_bytes(b"")
    assert checkpoint.checkpoint_complete(older)


# --------------------------------------------------------------------------- the pair


def _weights(path, value: float = 0.0) -> str:
    """A safetensors file of one tensor; its SHA-256, computed here and not by tlbench."""
    save_file({"w": torch.full((2,), value)}, str(path), metadata={"key": "k1"})
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sidecar(path, weights_file: str, sha: str | None) -> None:
    meta = {"format": SAFETENSORS_FORMAT, "key": "k1", "weights_file": weights_file}
    if sha is not None:
        meta["weights_sha256"] = sha
    path.write_text(json.dumps(meta), encoding="utf-8")


def test_the_sidecar_finds_the_weights_it_names_before_those_of_its_own_stem(tmp_path):
    sha = _weights(tmp_path / "run-k1.safetensors", 1.0)
    _sidecar(tmp_path / "copy.json", "run-k1.safetensors", sha)
    loaded = checkpoint._load_pair(None, tmp_path / "copy.json", tmp_path / "copy.json")
    assert loaded["state_dict"]["w"].tolist() == [1.0, 1.0]
    # Another run's weights under the sidecar's own stem do not take their place.
    _weights(tmp_path / "copy.safetensors", 2.0)
    loaded = checkpoint._load_pair(None, tmp_path / "copy.json", tmp_path / "copy.json")
    assert loaded["state_dict"]["w"].tolist() == [1.0, 1.0]
    assert loaded["key"] == "k1" and "weights_sha256" not in loaded


def test_a_sidecar_without_the_weights_checksum_is_damaged(tmp_path):
    _weights(tmp_path / "m.safetensors")
    _sidecar(tmp_path / "m.json", "m.safetensors", None)
    with pytest.raises(TlbenchError) as info:
        checkpoint._load_pair(None, tmp_path / "m.json", tmp_path / "m.json")
    assert str(info.value) == (
        f"{tmp_path / 'm.json'}: damaged tlbench checkpoint, weights_sha256 is missing"
    )


def test_weights_of_another_checksum_name_the_first_16_digits_of_each(tmp_path):
    weights = tmp_path / "m.safetensors"
    actual = _weights(weights)
    _sidecar(tmp_path / "m.json", "m.safetensors", "0123456789abcdef" * 4)
    with pytest.raises(TlbenchError) as info:
        checkpoint._load_pair(None, tmp_path / "m.json", tmp_path / "m.json")
    assert str(info.value).startswith(
        f"{weights} and {tmp_path / 'm.json'} do not belong together: the sidecar describes "
        f"weights with SHA-256 0123456789abcdef..., the file's is {actual[:16]}... (one of "
    )


def test_weights_that_are_not_safetensors_say_what_the_reader_said(tmp_path):
    weights = tmp_path / "m.safetensors"
    weights.write_bytes(b"\x01\x02")
    _sidecar(tmp_path / "m.json", "m.safetensors", "0" * 64)
    try:
        with safe_open(str(weights), framework="pt"):
            pass
    except Exception as exc:  # the reader's own error, whatever its version calls it
        said = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
    with pytest.raises(TlbenchError) as info:
        checkpoint._load_pair(None, tmp_path / "m.json", tmp_path / "m.json")
    assert str(info.value) == (
        f"{weights} is not a tlbench checkpoint (cannot be read as safetensors: {said}). "
        "Checkpoints are written by `tlbench run --save-models`."
    )


def test_resume_finds_a_complete_pair_else_an_older_single_file_else_nothing(tmp_path):
    assert checkpoint.find_checkpoint(tmp_path, "k1") is None
    (tmp_path / "k1.safetensors").write_bytes(b"")
    assert checkpoint.find_checkpoint(tmp_path, "k1") is None  # weights without their sidecar
    (tmp_path / "k1.pt").write_bytes(b"")
    assert checkpoint.find_checkpoint(tmp_path, "k1") == tmp_path / "k1.pt"
    (tmp_path / "k1.json").write_text("{}", encoding="utf-8")
    assert checkpoint.find_checkpoint(tmp_path, "k1") == tmp_path / "k1.safetensors"
    (tmp_path / "k1.safetensors").unlink()
    assert checkpoint.find_checkpoint(str(tmp_path), "k1") == tmp_path / "k1.pt"
