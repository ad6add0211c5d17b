"""`tlbench models`' list, field by field, from records and sidecars written by hand.

Written for the mutants the mutation run's second shard (results/mutation.md) left
alive in `checkpoint._from_record` and `_from_sidecar`: the CLI tests list models
whose record and sidecar say the same thing, so a list built from either alone
passed them. Each field here has a value only one source gives.
"""

from __future__ import annotations

import json
from pathlib import Path

from tlbench.checkpoint import SAFETENSORS_FORMAT, SavedModel, list_saved_models


def _record(path: Path | str | None, *, status: str = "ok", **extra) -> dict:
    return {
        "key": "k-record",
        "status": status,
        "config": {
            "backbone": "tiny",
            "strategy": "linear",
            "dataset": "tinyset",
            "seed": 3,
            "image_size": 24,
        },
        "accuracy": {"final": 81.25},
        "cost": {} if path is None else {"checkpoint": str(path)},
        **extra,
    }


def _pair(folder: Path, stem: str, meta: object, *, weights: bool = True) -> Path:
    """A checkpoint's two files by hand: `<stem>.safetensors` (not read) and its sidecar."""
    folder.mkdir(parents=True, exist_ok=True)
    if weights:
        (folder / f"{stem}.safetensors").write_bytes(b"not read by the list")
    sidecar = folder / f"{stem}.json"
    sidecar.write_text(json.dumps(meta), encoding="utf-8")
    return folder / f"{stem}.safetensors"


def _meta(**fields) -> dict:
    return {
        "format": SAFETENSORS_FORMAT,
        "backbone": "other_net",
        "strategy": "finetune",
        "dataset": "flowers",
        "seed": 7,
        "image_size": 32,
        "accuracy": 64.5,
        "key": "k-sidecar",
        **fields,
    }


def test_a_recorded_checkpoint_is_listed_with_the_records_settings_and_accuracy(tmp_path):
    weights = _pair(tmp_path / "models", "run", _meta())
    (model,) = list_saved_models([_record(weights)], [])
    assert model == SavedModel(
        path=str(weights),
        backbone="tiny",
        strategy="linear",
        dataset="tinyset",
        seed=3,
        image_size=24,
        accuracy=81.25,
        saved_accuracy=81.25,
        key="k-record",
        exists=True,
    )


def test_a_record_whose_checkpoint_files_are_gone_is_listed_as_gone(tmp_path):
    (model,) = list_saved_models([_record(tmp_path / "gone.safetensors")], [])
    assert (model.path, model.exists) == (str(tmp_path / "gone.safetensors"), False)


def test_records_without_a_checkpoint_or_that_did_not_finish_list_nothing(tmp_path):
    weights = _pair(tmp_path, "run", _meta())
    assert list_saved_models([_record(None)], []) == []
    assert list_saved_models([_record(weights, status="failed")], []) == []
    assert list_saved_models([_record(weights, status="interrupted")], []) == []
    assert list_saved_models([{**_record(None), "cost": {"checkpoint": 3}}], []) == []
    assert list_saved_models([{**_record(None), "cost": None}], []) == []
    # a record without a key still lists its checkpoint, under an empty key
    record = _record(weights)
    del record["key"]
    (model,) = list_saved_models([record], [])
    assert model.key == ""


def test_a_checkpoint_no_record_names_is_listed_from_its_sidecar(tmp_path):
    weights = _pair(tmp_path, "orphan", _meta())
    (model,) = list_saved_models([], [tmp_path])
    assert model == SavedModel(
        path=str(weights),
        backbone="other_net",
        strategy="finetune",
        dataset="flowers",
        seed=7,
        image_size=32,
        accuracy=None,
        saved_accuracy=64.5,
        key="k-sidecar",
        exists=True,
    )


def test_an_older_sidecar_gives_its_best_accuracy_and_a_missing_key_is_empty(tmp_path):
    meta = _meta(best_accuracy=70.0)
    del meta["accuracy"], meta["key"]
    _pair(tmp_path, "old", meta)
    (model,) = list_saved_models([], [tmp_path])
    assert (model.saved_accuracy, model.key) == (70.0, "")


def test_a_sidecar_whose_weights_are_gone_is_listed_as_gone(tmp_path):
    weights = _pair(tmp_path, "half", _meta(), weights=False)
    (model,) = list_saved_models([], [tmp_path])
    assert (model.path, model.exists) == (str(weights), False)


def test_json_that_is_not_a_tlbench_sidecar_is_not_a_model(tmp_path):
    _pair(tmp_path, "other_program", {"format": "something-else", "backbone": "x"})
    _pair(tmp_path, "a_list", [1, 2, 3])
    _pair(tmp_path, "no_format", {k: v for k, v in _meta().items() if k != "format"})
    (tmp_path / "torn.json").write_text('{"format": "tlbench-checkpoint-2", "ba', "utf-8")
    assert list_saved_models([], [tmp_path]) == []


def test_a_checkpoint_both_a_record_and_its_sidecar_name_is_listed_once_as_the_record_says(
    tmp_path,
):
    weights = _pair(tmp_path, "both", _meta())
    models = list_saved_models([_record(weights)], [tmp_path])
    assert [(m.path, m.backbone, m.key) for m in models] == [(str(weights), "tiny", "k-record")]


# --------------------------------------------------------------------------- what a checkpoint may hold


def _fields(**changes) -> dict:
    """A checkpoint's fields as `load_checkpoint` checks them: a valid two-class one."""
    import torch

    return {
        "state_dict": {"head.weight": torch.zeros(2, 4)},
        "backbone": "tiny",
        "head": "linear",
        "num_classes": 2,
        "classes": ["a", "b"],
        "image_size": 16,
        "preprocessing": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        **changes,
    }


def test_a_one_class_checkpoint_is_valid_and_a_zero_class_one_is_not():
    from tlbench.checkpoint import _field_problem

    assert _field_problem(_fields()) is None
    assert _field_problem(_fields(num_classes=1, classes=["only"])) is None
    assert _field_problem(_fields(num_classes=0, classes=[])) == (
        "num_classes is not a positive integer (0)"
    )


def test_a_state_dict_keyed_by_anything_but_names_is_refused():
    import torch

    from tlbench.checkpoint import _field_problem

    assert _field_problem(_fields(state_dict={1: torch.zeros(2)})) == (
        "state_dict is not a mapping of names to tensors"
    )


def test_a_finite_but_absurd_mean_or_std_is_refused():
    from tlbench.checkpoint import _field_problem

    for key, value in (("mean", [5000.0, 0.0, 0.0]), ("std", [0.25, 1e4, 0.25])):
        pre = {"mean": [0.5] * 3, "std": [0.25] * 3, key: value}
        assert _field_problem(_fields(preprocessing=pre)) == (
            f"preprocessing {key} holds a number that is not finite or is absurd ({value!r})"
        )


def test_a_torn_sidecar_says_what_the_json_reader_found(tmp_path):
    import pytest

    from tlbench.checkpoint import load_checkpoint
    from tlbench.errors import TlbenchError

    weights = _pair(tmp_path, "torn", _meta())
    (tmp_path / "torn.json").write_text('{"format": "tlbench-checkpoint-2", "ba', "utf-8")
    with pytest.raises(TlbenchError) as info:
        load_checkpoint(weights)
    assert "(not readable JSON: JSONDecodeError: Unterminated string starting at" in str(info.value)
