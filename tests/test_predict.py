"""`--save-models` checkpoints and `tlbench predict`: safe loading, strict rebuild, same answers.

A checkpoint is `<key>.safetensors` + its `<key>.json` sidecar; the older one-file
`<key>.pt` still predicts, with the same answers.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

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
def test_checkpoint_is_safetensors_with_a_json_sidecar_holding_what_predict_needs(
    trained, strategy, head
):
    from safetensors import safe_open
    from safetensors.torch import load_file

    records, _, tmp = trained
    record = records[strategy]
    weights = Path(record["cost"]["checkpoint"])
    assert weights == tmp / "models" / f"{record['key']}.safetensors"
    sidecar = weights.with_suffix(".json")
    # Plain JSON a Hub page or another program can read, no tlbench needed.
    meta = json.loads(sidecar.read_text(encoding="utf-8"))
    assert meta["format"] == predict.SAFETENSORS_FORMAT == "tlbench-checkpoint-2"
    assert meta["head"] == head and meta["classes"] == CLASSES and meta["num_classes"] == 3
    assert meta["image_size"] == 16 and meta["preprocessing"]["crop"] == 16
    assert meta["backbone"] == "tiny" and meta["strategy"] == strategy
    # The model as it ended: the final epoch, whose top-1 the record reports.
    assert meta["epoch"] == len(record["accuracy"]["curve"])
    assert meta["accuracy"] == pytest.approx(record["accuracy"]["final"])
    assert meta["key"] == record["key"] and meta["dataset"] == "tinyset" and meta["seed"] == 0
    assert meta["tlbench_version"] == tlbench.__version__
    assert meta["weights_file"] == weights.name
    assert meta["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert "state_dict" not in meta
    # The weights: every tensor of the classifier, readable by safetensors alone.
    state = load_file(weights)
    model = predict.build_model(predict.load_checkpoint(weights), _plugins())
    assert not model.training
    assert set(state) == set(model.state_dict())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    with safe_open(str(weights), framework="pt") as f:
        assert f.metadata()["format"] == "pt" and f.metadata()["key"] == record["key"]
    assert not list(weights.parent.glob("*.tmp")), "a temporary file was left behind"


def _write_old_format(checkpoint: dict, path: Path) -> Path:
    """The one-file `.pt` checkpoints older tlbench versions wrote."""
    torch.save({**checkpoint, "format": predict.CHECKPOINT_FORMAT}, path)
    return path


@pytest.mark.parametrize("strategy", ["finetune", "linear"])
def test_new_and_old_formats_load_alike_and_predict_the_same(
    trained, tiny_cli, capsys, tmp_path, strategy
):
    records, folder, _ = trained
    weights = Path(records[strategy]["cost"]["checkpoint"])
    new = predict.load_checkpoint(weights)
    old_path = _write_old_format(new, tmp_path / "old.pt")
    old = predict.load_checkpoint(old_path)
    # The same dict for build_model: the same fields, the same tensors.
    assert set(old) == set(new)
    assert (old["format"], new["format"]) == ("tlbench-checkpoint-1", "tlbench-checkpoint-2")
    assert all(torch.equal(old["state_dict"][k], v) for k, v in new["state_dict"].items())
    assert {k: v for k, v in old.items() if k not in ("state_dict", "format")} == {
        k: v for k, v in new.items() if k not in ("state_dict", "format")
    }
    assert predict.load_checkpoint(weights.with_suffix(".json")).keys() == new.keys()
    answers = []
    for path in (weights, weights.with_suffix(".json"), old_path):
        assert main(["predict", str(path), str(folder), "--json", "-k", "3"]) == 0
        answers.append(json.loads(capsys.readouterr().out))
    classes = [[o["top"][0]["class"] for o in a] for a in answers]
    assert classes[0] == classes[1] == classes[2]
    assert len(classes[0]) == 18 and set(classes[0]) <= set(CLASSES)
    for o_new, o_old in zip(answers[0], answers[2], strict=True):
        for t_new, t_old in zip(o_new["top"], o_old["top"], strict=True):
            assert t_new["class"] == t_old["class"]
            assert t_new["probability"] == pytest.approx(t_old["probability"], abs=1e-6)


@pytest.mark.parametrize("strategy", ["finetune", "linear"])
def test_predict_reproduces_the_runs_reported_accuracy(trained, tiny_cli, capsys, strategy):
    records, folder, _ = trained
    record = records[strategy]
    assert main(["predict", record["cost"]["checkpoint"], str(folder), "--json", "-k", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out) == 18 and all(len(o["top"]) == 2 and o["true"] in CLASSES for o in out)
    assert all(o["top"][0]["probability"] >= o["top"][1]["probability"] for o in out)
    right = sum(o["top"][0]["class"] == o["true"] for o in out)
    # The same decode, resize and centre crop as the evaluation split: the same answers.
    assert right / 18 == pytest.approx(record["accuracy"]["final"])


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


TAMPERED = [
    ({"image_size": "large"}, "image_size is not a positive integer"),
    ({"classes": 3}, "classes is not a list of class names"),
    ({"num_classes": True}, "num_classes is not a positive integer"),
    ({"classes": ["red"]}, "class names do not match num_classes"),
    ({"preprocessing": {"colour": "blue"}}, "preprocessing has unknown fields ['colour']"),
    ({"preprocessing": {"mean": [0.5, 0.5]}}, "preprocessing mean is not three numbers"),
    ({"head": 7}, "head is not a name"),
]


@pytest.mark.parametrize(
    ("changes", "message"),
    [*TAMPERED, ({"state_dict": [1, 2, 3]}, "state_dict is not a mapping of names to tensors")],
)
def test_tampered_fields_of_an_old_checkpoint_are_clear_errors(trained, tmp_path, changes, message):
    records, _, _ = trained
    content = predict.load_checkpoint(records["linear"]["cost"]["checkpoint"])
    path = _write_old_format({**content, **changes}, tmp_path / "tampered.pt")
    with pytest.raises(TlbenchError) as info:
        predict.load_checkpoint(path)
    assert f"{path}: damaged tlbench checkpoint, {message}" in str(info.value)


def _copy_pair(weights: str | Path, folder: Path, stem: str = "model") -> tuple[Path, Path]:
    """A checkpoint's two files copied into `folder` as `<stem>.safetensors` + `<stem>.json`."""
    weights = Path(weights)
    folder.mkdir(parents=True, exist_ok=True)
    new_weights, new_sidecar = folder / f"{stem}.safetensors", folder / f"{stem}.json"
    shutil.copyfile(weights, new_weights)
    shutil.copyfile(weights.with_suffix(".json"), new_sidecar)
    return new_weights, new_sidecar


@pytest.mark.parametrize(("changes", "message"), TAMPERED)
def test_tampered_sidecar_fields_are_clear_errors(trained, tmp_path, changes, message):
    records, _, _ = trained
    weights, sidecar = _copy_pair(records["linear"]["cost"]["checkpoint"], tmp_path)
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), **changes}))
    for given in (weights, sidecar):
        with pytest.raises(TlbenchError) as info:
            predict.load_checkpoint(given)
        assert f"{given}: damaged tlbench checkpoint, {message}" in str(info.value)


def test_a_renamed_pair_loads_from_either_file(trained):
    records, _, tmp = trained
    weights, sidecar = _copy_pair(records["linear"]["cost"]["checkpoint"], tmp / "hub-upload")
    original = predict.load_checkpoint(records["linear"]["cost"]["checkpoint"])
    for given in (weights, sidecar):  # the sidecar names <key>.safetensors: found by its stem
        loaded = predict.load_checkpoint(given)
        assert loaded["classes"] == CLASSES and loaded["key"] == original["key"]


def _flip_a_weight_byte(path: Path) -> None:
    """Change one byte of tensor data, leaving the safetensors header readable."""
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    data[header + 5] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_mismatched_or_incomplete_pair_is_a_clear_error(trained, tmp_path):
    records, _, _ = trained
    linear, finetune = (records[s]["cost"]["checkpoint"] for s in ("linear", "finetune"))
    advice = "copy both again"

    def error(path: Path) -> str:
        with pytest.raises(TlbenchError) as info:
            predict.load_checkpoint(path)
        return " ".join(str(info.value).split())

    # Weights without their sidecar: the classes are unknown.
    alone = tmp_path / "alone" / "model.safetensors"
    alone.parent.mkdir()
    shutil.copyfile(linear, alone)
    message = error(alone)
    assert f"{alone}: the checkpoint's sidecar model.json is missing" in message
    assert advice in message
    # A sidecar without its weights.
    weights, sidecar = _copy_pair(linear, tmp_path / "no-weights")
    weights.unlink()
    assert f"weights {Path(linear).name} are missing" in error(sidecar)
    # Another run's weights beside this run's sidecar.
    weights, sidecar = _copy_pair(linear, tmp_path / "mixed")
    shutil.copyfile(finetune, weights)
    message = error(weights)
    assert "do not belong together" in message and advice in message
    assert f"the weights are run {records['finetune']['key']}'s" in message
    assert f"the sidecar describes run {records['linear']['key']}" in message
    assert "do not belong together" in error(sidecar)
    # The right run's weights, damaged: the checksum tells.
    weights, sidecar = _copy_pair(linear, tmp_path / "damaged")
    _flip_a_weight_byte(weights)
    message = error(weights)
    assert "do not belong together" in message and "SHA-256" in message
    # Truncated weights: not readable as safetensors at all.
    weights, sidecar = _copy_pair(linear, tmp_path / "truncated")
    weights.write_bytes(weights.read_bytes()[:100])
    assert f"{weights} is not a tlbench checkpoint (cannot be read as safetensors" in error(weights)
    # A sidecar that is not JSON, and another program's JSON (a Hub model's config.json).
    weights, sidecar = _copy_pair(linear, tmp_path / "not-json")
    sidecar.write_text('{"classes": ["red", ')
    assert f"{sidecar} is not a tlbench checkpoint sidecar (not readable JSON" in error(weights)
    sidecar.write_text(json.dumps({"model_type": "vit", "num_labels": 3}))
    assert f"{sidecar} is not a tlbench checkpoint sidecar (format None" in error(weights)
    # A sidecar that points outside its folder.
    weights, sidecar = _copy_pair(linear, tmp_path / "escape")
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "weights_file": "../x"}))
    assert "weights_file is not a file name ('../x')" in error(sidecar)


def test_another_programs_safetensors_is_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    foreign = tmp_path / "model.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(foreign))
    with pytest.raises(TlbenchError, match=r"sidecar model\.json is missing"):
        predict.load_checkpoint(foreign)
    (tmp_path / "model.json").write_text("{}")  # beside it, a JSON file of someone else's
    with pytest.raises(TlbenchError, match=r"model\.json is not a tlbench checkpoint sidecar"):
        predict.load_checkpoint(foreign)


def test_cli_predict_on_a_mismatched_pair_exits_2(trained, tmp_path, tiny_cli, capsys):
    records, folder, _ = trained
    weights, _ = _copy_pair(records["linear"]["cost"]["checkpoint"], tmp_path)
    _flip_a_weight_byte(weights)
    assert main(["predict", str(weights), str(folder / "red" / "00.png")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "do not belong together" in err and "Traceback" not in err


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
