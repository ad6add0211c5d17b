"""`--save-models` checkpoints and `tlbench predict`: safe loading, strict rebuild, same answers."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from conftest import ColourSquares, TinyPlugin

import tlbench
import tlbench.plugins
from tlbench import predict
from tlbench.cli import main
from tlbench.errors import TlbenchError
from tlbench.runner import Runner

PNG = b"\x89PNG\r\n\x1a\n"
CLASSES = ["red", "green", "blue"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Checkpoints of a fine-tuned (linear head) and a linear-probe (feature head) run,
    and the tinyset evaluation images written as PNG files in class folders."""
    from tlbench.config import RunConfig

    tmp = tmp_path_factory.mktemp("predict")
    config = RunConfig(
        backbones=["tiny"],
        datasets=["tinyset"],
        strategies=["linear", "finetune"],
        image_size=16,
        hyperparameters={"epochs": 3, "batch_size": 16, "lr": 0.01},
        out=str(tmp / "runs.jsonl"),
        cache_dir=str(tmp / "cache"),
        device="cpu",
        save_models=True,
    )
    plugins = tlbench.Plugins(entry_points=False, extra=[("tiny", TinyPlugin())])
    records = {r["config"]["strategy"]: r for r in Runner(config, plugins).run()}
    evalset = ColourSquares(18, seed=1)  # tinyset's evaluation split
    folder = tmp / "test"
    for i in range(len(evalset)):
        target = folder / CLASSES[evalset.labels[i]] / f"{i:02d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        evalset.load(i).save(target)
    return records, folder, tmp


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """A linear probe trained until it separates tinyset's colours (100% on its held-out split),
    and the 48 training images it learnt from, as PNG files in class folders."""
    from tlbench.config import RunConfig

    tmp = tmp_path_factory.mktemp("probe")
    config = RunConfig(
        backbones=["tiny"],
        datasets=["tinyset"],
        strategies=["linear"],
        image_size=16,
        hyperparameters={"epochs": 30, "batch_size": 16, "lr": 0.05},
        out=str(tmp / "runs.jsonl"),
        cache_dir=str(tmp / "cache"),
        device="cpu",
        save_models=True,
    )
    (record,) = Runner(config, _plugins()).run()
    assert record["status"] == "ok", record["reason"]
    train = ColourSquares(48, seed=0)  # tinyset's training split
    folder = tmp / "train"
    for i in range(len(train)):
        target = folder / CLASSES[train.labels[i]] / f"{i:02d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        train.load(i).save(target)
    return record, folder


def test_predict_names_the_class_of_images_the_model_learnt(probe, tiny_cli, capsys):
    record, folder = probe
    assert record["accuracy"]["final"] == 1.0  # it separates the colours on unseen images too
    assert main(["predict", record["cost"]["checkpoint"], str(folder), "--json", "-k", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out) == 48
    wrong = [(o["true"], o["top"][0]["class"]) for o in out if o["top"][0]["class"] != o["true"]]
    assert not wrong, f"predicted the wrong class for training images: {wrong[:5]}"
    assert {o["true"] for o in out} == set(CLASSES)
    for o in out:
        assert sorted(t["class"] for t in o["top"]) == sorted(CLASSES)  # k=3: every class
        assert o["top"][0]["probability"] > 0.5
        assert sum(t["probability"] for t in o["top"]) == pytest.approx(1.0, abs=1e-4)


def test_predict_one_image_of_each_class(probe, tiny_cli, capsys):
    record, folder = probe
    images = [folder / name / f"{i:02d}.png" for i, name in enumerate(CLASSES)]  # 00 red, ...
    assert main(["predict", record["cost"]["checkpoint"], *map(str, images), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["top"][0]["class"] for o in out] == CLASSES


@pytest.mark.parametrize(("strategy", "head"), [("finetune", "linear"), ("linear", "feature")])
def test_checkpoint_holds_what_predict_needs_and_loads_safely(trained, strategy, head):
    records, _, _ = trained
    path = records[strategy]["cost"]["checkpoint"]
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint["format"] == predict.CHECKPOINT_FORMAT
    assert checkpoint["head"] == head and checkpoint["classes"] == CLASSES
    assert checkpoint["image_size"] == 16 and checkpoint["preprocessing"]["crop"] == 16
    assert checkpoint["best_epoch"] == records[strategy]["accuracy"]["best_epoch"]
    assert checkpoint["key"] == records[strategy]["key"]
    model = predict.build_model(predict.load_checkpoint(path), _plugins())
    assert not model.training


@pytest.mark.parametrize("strategy", ["finetune", "linear"])
def test_predict_reproduces_the_runs_best_accuracy(trained, tiny_cli, capsys, strategy):
    records, folder, _ = trained
    record = records[strategy]
    assert main(["predict", record["cost"]["checkpoint"], str(folder), "--json", "-k", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out) == 18 and all(len(o["top"]) == 2 and o["true"] in CLASSES for o in out)
    assert all(o["top"][0]["probability"] >= o["top"][1]["probability"] for o in out)
    right = sum(o["top"][0]["class"] == o["true"] for o in out)
    # The same decode, resize and centre crop as the evaluation split: the same answers.
    assert right / 18 == pytest.approx(record["accuracy"]["best"])


def test_predict_prints_top_k_and_saves_a_grid(trained, tiny_cli, capsys, tmp_path):
    records, folder, _ = trained
    images = [str(folder / "red" / "00.png"), str(folder / "green" / "01.png")]
    grid = tmp_path / "grid.png"
    code = main(
        [
            "predict",
            records["finetune"]["cost"]["checkpoint"],
            *images,
            "--top-k",
            "9",
            "--grid",
            str(grid),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert f"{images[0]}  (true: red)" in out
    lines = out.splitlines()
    first = lines.index(f"{images[0]}  (true: red)")
    assert all(line.strip().endswith(tuple(CLASSES)) for line in lines[first + 1 : first + 4])
    assert lines[first + 4] == f"{images[1]}  (true: green)"  # k is capped at the 3 classes
    assert "top-1 on the 2 images with a known label" in out
    assert grid.read_bytes().startswith(PNG)


def test_unreadable_image_is_reported_and_the_rest_classified(trained, tiny_cli, capsys, tmp_path):
    records, folder, _ = trained
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    code = main(
        [
            "predict",
            records["finetune"]["cost"]["checkpoint"],
            str(broken),
            str(folder / "blue" / "02.png"),
        ]
    )
    assert code == 1
    out = capsys.readouterr().out
    assert "unreadable:" in out and "(true: blue)" in out


def _plugins():
    return tlbench.Plugins(entry_points=False, extra=[("tiny", TinyPlugin())])


class _NotAllowed:
    """An object weights_only loading must refuse to unpickle."""


def test_files_that_are_not_checkpoints_are_clear_errors(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01 definitely not torch")
    other = tmp_path / "other.pt"
    torch.save({"model": torch.zeros(2)}, other)
    hostile = tmp_path / "hostile.pt"
    torch.save(
        {"format": predict.CHECKPOINT_FORMAT, "x": _NotAllowed()}, hostile, pickle_module=pickle
    )
    for path, message in [
        (tmp_path / "missing.pt", "does not exist"),
        (garbage, "is not a tlbench checkpoint"),
        (other, "is not a tlbench checkpoint (format None"),
        (hostile, "is not a tlbench checkpoint"),  # refused by weights_only, never executed
    ]:
        with pytest.raises(TlbenchError, match=message.replace("(", r"\(")):
            predict.load_checkpoint(path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"image_size": "large"}, "image_size is not a positive integer"),
        ({"classes": 3}, "classes is not a list of class names"),
        ({"num_classes": True}, "num_classes is not a positive integer"),
        ({"preprocessing": {"colour": "blue"}}, "preprocessing has unknown fields ['colour']"),
        ({"preprocessing": {"mean": [0.5, 0.5]}}, "preprocessing mean is not three numbers"),
        ({"state_dict": [1, 2, 3]}, "state_dict is not a mapping of names to tensors"),
        ({"head": 7}, "head is not a name"),
    ],
)
def test_tampered_fields_are_clear_errors(trained, tmp_path, changes, message):
    records, _, _ = trained
    content = torch.load(records["linear"]["cost"]["checkpoint"], weights_only=True)
    path = tmp_path / "tampered.pt"
    torch.save({**content, **changes}, path)
    with pytest.raises(TlbenchError) as info:
        predict.load_checkpoint(path)
    assert f"{path}: damaged tlbench checkpoint, {message}" in str(info.value)


def test_checkpoint_for_a_missing_or_changed_backbone(tmp_path, trained):
    records, _, _ = trained
    checkpoint = predict.load_checkpoint(records["finetune"]["cost"]["checkpoint"])
    with pytest.raises(
        TlbenchError, match="needs backbone 'tiny', which no loaded plugin provides"
    ):
        predict.build_model(checkpoint, tlbench.Plugins(builtins=False, entry_points=False))
    changed = dict(
        checkpoint,
        state_dict={k: v for k, v in checkpoint["state_dict"].items() if "head" not in k},
    )
    with pytest.raises(TlbenchError, match="do not fit backbone 'tiny'"):
        predict.build_model(changed, _plugins())


def test_cli_predict_on_a_non_checkpoint_exits_2(tmp_path, tiny_cli, capsys):
    path = tmp_path / "x.pt"
    path.write_text("hello")
    image = tmp_path / "a.png"
    ColourSquares(1, seed=0).load(0).save(image)
    assert main(["predict", str(path), str(image)]) == 2
    assert "is not a tlbench checkpoint" in " ".join(capsys.readouterr().err.split())
