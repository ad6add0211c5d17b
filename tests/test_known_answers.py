"""Known answers for every on-disk contract: each pinned by a literal written by hand.

A round trip cannot see a contract changed on both sides at once: pack the
per-image bitset little-endian in `encode_correct` and in `decode_correct` and
every round-trip test passes, while every results file already written decodes
into other images. So each format here is checked against bytes, keys and
lines written out in this file, not against what the code produces today:

- the per-image bitset (`tlbench.record`): bit order, padding, base64;
- the run key (`RunSpec.key`): the literal key of a hand-built spec, and the
  JSON text it hashes;
- the feature-cache key (`tlbench.features.feature_key`), the same way;
- the content part of a file dataset's decode key (its files' bytes);
- the checkpoint sidecar (`tlbench.checkpoint`): a pair written here by hand
  loads and predicts, and what `save_checkpoint` writes is the literal layout;
- the results schema: record lines written by hand (schema 2 and schema 1)
  still parse, resume under their key and answer the report.

Pinned elsewhere already, exactly (not repeated here):

- the decode-cache key: `tests/test_mutation_decode_cache.py::
  test_a_decoded_splits_key_is_stable_across_releases_and_changes_with_the_decode_version`
  (`DecodeCache(None).key("fp-a", "train", 64) == "72f8712f55cfbed1f3944a2d"`);
- the image-folder fingerprint: `tests/test_mutation_imagefolder.py::
  test_the_fingerprint_of_a_fixed_folder_never_changes`;
- the hash itself (`cache_key`: sha256 of the sorted JSON, 24 hex digits):
  `tests/test_cache_keys.py::test_cache_key_is_a_stable_hash_of_its_parts_in_order`.

A test here failing means a format changed: if that was meant, bump the
format's version (SCHEMA_VERSION, RESULTS_VERSION, FEATURES_VERSION,
DECODE_VERSION, the checkpoint format name) and say so in the changelog, then
update the literal.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import tlbench
from tlbench import checkpoint as ckpt
from tlbench import report, results, stats, testing
from tlbench.features import feature_key
from tlbench.images import FileImages
from tlbench.plugin_types import Backbone, Hyperparameters, Preprocessing, RunSpec
from tlbench.record import decode_correct, encode_correct, problems

# --------------------------------------------------------------------------- the bitset

#: image i is bit i counted from the most significant bit of byte i // 8 (numpy's
#: `packbits`, big-endian bit order), padded with zero bits, base64 with padding.
#: 1000 0000 | 01.. ....  -> bytes 0x80 0x40 -> "gEA="
TEN_IMAGES = [1, 0, 0, 0, 0, 0, 0, 0, 0, 1]
#: 1101 0000 -> 0xD0 -> "0A=="
FOUR_IMAGES = [1, 1, 0, 1]


def test_the_bitset_packs_image_0_into_the_most_significant_bit():
    assert encode_correct(TEN_IMAGES) == {"images": 10, "bits": "gEA="}
    assert encode_correct(FOUR_IMAGES) == {"images": 4, "bits": "0A=="}
    assert encode_correct([]) == {"images": 0, "bits": ""}


def test_a_bitset_written_by_an_earlier_tlbench_reads_as_the_same_images():
    assert decode_correct({"images": 10, "bits": "gEA="}).tolist() == TEN_IMAGES
    assert decode_correct({"images": 4, "bits": "0A=="}).tolist() == FOUR_IMAGES
    # 0x01 0x80: image 7 and image 8 (the last bit of byte 0, the first of byte 1).
    assert np.flatnonzero(decode_correct({"images": 16, "bits": "AYA="})).tolist() == [7, 8]


# --------------------------------------------------------------------------- the run key

HP = Hyperparameters(epochs=3, lr=0.01)
EXECUTION = {
    "device": "cpu",
    "precision": "fp32",
    "memory_format": "channels_last",
    "compile": False,
}
SPEC = RunSpec(
    backbone="resnet18",
    dataset="imagefolder:/data/flowers12",
    strategy="linear",
    seed=7,
    image_size=96,
    hp=HP,
    execution=EXECUTION,
    weights="IMAGENET1K_V1",
    dataset_fingerprint="0123456789abcdef",
)
#: what the run key hashes, written out: ["run", RESULTS_VERSION, config, fingerprint].
RUN_KEY_TEXT = (
    '["run", 1, {"backbone": "resnet18", "compile": false, "dataset": '
    '"imagefolder:/data/flowers12", "device": "cpu", "hyperparameters": {"augment": true, '
    '"backbone_lr_mult": 1.0, "batch_size": 32, "epochs": 3, "gamma": 0.1, '
    '"label_smoothing": 0.0, "lr": 0.01, "momentum": 0.9, "nesterov": false, '
    '"optimizer": "adamw", "schedule": "cosine", "step_size": 7, "warmup_epochs": 0, '
    '"weight_decay": 0.0001}, "image_size": 96, "memory_format": "channels_last", '
    '"precision": "fp32", "seed": 7, "strategy": "linear", "weights": "IMAGENET1K_V1"}, '
    '"0123456789abcdef"]'
)


def _sha24(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def test_the_run_key_of_a_fixed_spec_never_changes():
    # Every results file is resumed by this key: a change reruns every finished run.
    assert _sha24(RUN_KEY_TEXT) == "6960c0074beeef5be02f0547"
    assert SPEC.key == "6960c0074beeef5be02f0547"


def test_a_budget_is_in_the_key_only_when_set():
    with_budget = RUN_KEY_TEXT.replace(
        '"backbone": "resnet18", ', '"backbone": "resnet18", "budget": "shots=5", '
    )
    assert _sha24(with_budget) == "dc572d3ba7907b6fc5bbd08b"
    assert dataclasses.replace(SPEC, budget="shots=5").key == "dc572d3ba7907b6fc5bbd08b"
    assert dataclasses.replace(SPEC, budget=None).key == "6960c0074beeef5be02f0547"


# --------------------------------------------------------------------------- the feature key

FEATURE_KEY_TEXT = (
    '["features", 1, "resnet18", "IMAGENET1K_V1", "0123456789abcdef", "train", 96, 110, '
    '{"crop": 224, "interpolation": "bilinear", "mean": [0.485, 0.456, 0.406], '
    '"resize": 256, "std": [0.229, 0.224, 0.225]}, "fp32", 720]'
)


def test_the_feature_key_of_a_fixed_backbone_and_split_never_changes():
    resnet = Backbone("resnet18", lambda pretrained: nn.Identity(), 512, weights="IMAGENET1K_V1")
    # 96 px at the ImageNet crop fraction (224/256) is stored at 110 px.
    assert resnet.preprocessing.resize_for(96) == 110
    key = feature_key(
        resnet,
        fingerprint="0123456789abcdef",
        split="train",
        image_size=96,
        store_size=110,
        precision="fp32",
        count=720,
    )
    assert _sha24(FEATURE_KEY_TEXT) == "9639f2e945bdae791abe5c56"
    assert key == "9639f2e945bdae791abe5c56"


# --------------------------------------------------------------------------- the decode key's content part


def test_a_file_datasets_decode_key_holds_its_files_bytes_by_a_fixed_rule(tmp_path):
    # The decode key of `DecodeCache.key` is pinned in test_mutation_decode_cache.py; a
    # split of files adds their bytes to the fingerprint it is given:
    # sha1("tlbench-content-v1" + sha1(size + bytes) of each file, in order)[:16].
    from PIL import Image

    from tlbench.data import DecodeCache
    from tlbench.images import content_fingerprint

    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"red")
    b.write_bytes(b"blue!")
    by_hand = hashlib.sha1(b"tlbench-content-v1")
    for data in (b"red", b"blue!"):
        by_hand.update(hashlib.sha1(str(len(data)).encode() + data).digest())
    assert by_hand.hexdigest()[:16] == "2e2554a029e4b7ba"
    assert content_fingerprint([str(a), str(b)]) == "2e2554a029e4b7ba"

    red, blue = tmp_path / "red.png", tmp_path / "blue.png"
    for path, colour in ((red, (255, 0, 0)), (blue, (0, 0, 255))):
        Image.new("RGB", (8, 8), colour).save(path)
    images = FileImages([str(red), str(blue)], [0, 1])
    DecodeCache(tmp_path / "cache").get(images, fingerprint="fp-a", split="train", size=8)
    content = content_fingerprint([str(red), str(blue)])
    key = DecodeCache(None).key(f"fp-a|content={content}", "train", 8)
    assert sorted(p.name for p in (tmp_path / "cache" / "decoded").glob("*.npy")) == [f"{key}.npy"]


# --------------------------------------------------------------------------- the checkpoint


def _mean_colour(pretrained: bool) -> nn.Module:
    """A backbone without parameters: the image's mean colour (3 features)."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())


MEAN_COLOUR = Backbone(
    "mean_colour",
    _mean_colour,
    3,
    Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), resize=8, crop=8),
    min_image_size=1,
)


class _Registers:
    @tlbench.hookimpl
    def tlbench_register_backbones(self, register):
        register(MEAN_COLOUR)


#: A checkpoint sidecar as `tlbench-checkpoint-2` defines it, written by hand: the final
#: epoch's weights and their top-1 (no epoch is chosen on the test split).
SIDECAR = """{
  "format": "tlbench-checkpoint-2",
  "weights_file": "run-by-hand.safetensors",
  "weights_sha256": "%s",
  "backbone": "mean_colour",
  "strategy": "finetune",
  "head": "linear",
  "num_classes": 2,
  "classes": ["red", "blue"],
  "image_size": 8,
  "preprocessing": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "resize": 8,
                    "crop": 8, "interpolation": "bilinear"},
  "epoch": 3,
  "accuracy": 0.75,
  "key": "run-by-hand",
  "dataset": "colours",
  "seed": 0,
  "weights": null,
  "tlbench_version": "0.0.0"
}
"""


def _hand_weights() -> dict[str, torch.Tensor]:
    # red logit = normalised red mean, blue logit = normalised blue mean + 0.5
    return {
        "normalize.mean": torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1),
        "normalize.std": torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1),
        "head.weight": torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
        "head.bias": torch.tensor([0.0, 0.5]),
    }


def test_a_checkpoint_written_by_hand_in_the_documented_format_loads_and_predicts(tmp_path):
    from safetensors.torch import save_file

    weights = tmp_path / "run-by-hand.safetensors"
    save_file(_hand_weights(), str(weights), metadata={"format": "pt", "key": "run-by-hand"})
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    # As the first writers of the format wrote it: the epoch that scored best on test.
    older = SIDECAR.replace('"epoch"', '"best_epoch"').replace('"accuracy"', '"best_accuracy"')
    (tmp_path / "run-by-hand.json").write_text(older % sha, encoding="utf-8")

    loaded = ckpt.load_checkpoint(weights)
    assert ckpt.load_checkpoint(tmp_path / "run-by-hand.json").keys() == loaded.keys()
    assert (loaded["classes"], loaded["head"], loaded["image_size"]) == (
        ["red", "blue"],
        "linear",
        8,
    )
    assert ckpt.checkpoint_preprocessing(loaded) == MEAN_COLOUR.preprocessing
    model = ckpt.build_model(loaded, testing.load_plugins([_Registers()]))
    # A pure red image: normalised colour (2, -2, -2) -> logits (2, -1.5).
    red = torch.zeros(1, 3, 8, 8)
    red[:, 0] = 1.0
    with torch.no_grad():
        assert model(red).tolist() == [[2.0, -1.5]]


def test_save_checkpoint_writes_the_documented_sidecar(tmp_path):
    from tlbench import __version__
    from tlbench.engine import ImageClassifier

    spec = dataclasses.replace(
        SPEC, backbone="mean_colour", dataset="colours", strategy="finetune", seed=0,
        image_size=8, weights=None,
    )  # fmt: skip
    head = nn.Linear(3, 2)
    model = ImageClassifier(_mean_colour(False), head, MEAN_COLOUR.preprocessing)
    model.load_state_dict(_hand_weights())
    path = ckpt.save_checkpoint(
        tmp_path, spec, MEAN_COLOUR, model, head_only=False, classes=["red", "blue"],
        epoch=3, accuracy=0.75,
    )  # fmt: skip
    # The pair is named after the run's key (pinned above), so a record finds its model.
    assert path == tmp_path / f"{spec.key}.safetensors"
    meta = json.loads((tmp_path / f"{spec.key}.json").read_text(encoding="utf-8"))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    expected = json.loads(
        SIDECAR.replace("run-by-hand", spec.key).replace("0.0.0", __version__) % sha
    )
    assert meta == expected
    assert list(meta) == list(expected)  # the documented order, for a reader of the file


# --------------------------------------------------------------------------- the results schema

#: A schema-2 record line as a results file holds it, written by hand: one seed of a
#: linear probe on 10 evaluation images, 8 of them right (images 2 and 7 wrong).
SCHEMA_2_LINE = (
    '{"schema": 2, "key": "6960c0074beeef5be02f0547", "status": "ok", "reason": null, '
    '"time": "2026-01-02T03:04:05.678+00:00", "config": {"backbone": "resnet18", '
    '"weights": "IMAGENET1K_V1", "dataset": "imagefolder:/data/flowers12", '
    '"strategy": "linear", "seed": 7, "image_size": 96, "hyperparameters": {"epochs": 3, '
    '"batch_size": 32, "lr": 0.01, "backbone_lr_mult": 1.0, "weight_decay": 0.0001, '
    '"optimizer": "adamw", "momentum": 0.9, "nesterov": false, "schedule": "cosine", '
    '"warmup_epochs": 0, "step_size": 7, "gamma": 0.1, "label_smoothing": 0.0, '
    '"augment": true}, "device": "cpu", "precision": "fp32", '
    '"memory_format": "channels_last", "compile": false, '
    '"dataset_fingerprint": "0123456789abcdef"}, '
    '"providers": {"backbone": "tlbench", "strategy": "tlbench", "dataset": "tlbench"}, '
    '"accuracy": {"best": 0.9, "best_epoch": 2, "final": 0.8, "final_balanced": 0.8, '
    '"curve": [], "final_correct": {"images": 10, "bits": "3sA="}}, '
    '"cost": {"train_seconds": 12.5, "feature_seconds": 3.0, "eval_seconds": 0.5, '
    '"feature_cache": "none", "trainable_params": 5130, "total_params": 11181642}, '
    '"data": {"num_classes": 10, "train_images": 600, "eval_images": 10, '
    '"eval_split": "val"}}'
)
#: A schema-1 line (the first release: no fingerprint, no per-image results).
SCHEMA_1_LINE = (
    '{"schema": 1, "key": "0f0f0f0f0f0f0f0f0f0f0f0f", "status": "ok", "reason": null, '
    '"time": "2025-06-01T00:00:00+00:00", "config": {"backbone": "resnet18", '
    '"weights": null, "dataset": "cifar10", "strategy": "scratch", "seed": 0, '
    '"image_size": 32, "hyperparameters": {"epochs": 1}, "device": "cpu", '
    '"precision": "fp32"}, "accuracy": {"best": 0.5, "best_epoch": 1, "final": 0.25}, '
    '"cost": {"train_seconds": 40.0}}'
)


def test_a_schema_2_line_written_by_hand_parses_resumes_and_answers(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text(SCHEMA_2_LINE + "\n", encoding="utf-8")
    (record,) = results.read(path)
    assert problems(record) == []
    # The key stored is the key the same settings plan to: the run resumes, not reruns.
    assert record["key"] == SPEC.key
    assert results.answer_by_key([record]) == {SPEC.key: record}
    # 0xDE 0xC0: 1101 1110 11.. -> images 2 and 7 wrong.
    correct = decode_correct(record["accuracy"]["final_correct"], 10)
    assert correct.tolist() == [1, 1, 0, 1, 1, 1, 1, 0, 1, 1]
    (row,) = report.summarize([record])
    assert (row.backbone, row.strategy, row.dataset) == (
        "resnet18",
        "linear",
        "imagefolder:/data/flowers12",
    )
    assert (row.n, row.seeds, row.accuracy, row.best_accuracy) == (1, [7], 0.8, 0.9)
    assert row.train_seconds == 12.5 + 3.0  # features computed here are charged
    interval = stats.bootstrap_interval([1, 1, 0, 1, 1, 1, 1, 0, 1, 1])
    assert (row.ci_low, row.ci_high, row.ci_method) == (interval.lower, interval.upper, "bootstrap")


def test_a_schema_1_line_still_answers_the_report(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text(SCHEMA_1_LINE + "\n" + SCHEMA_2_LINE + "\n", encoding="utf-8")
    old, new = results.read(path)
    assert problems(old) == [] and problems(new) == []
    rows = {r.dataset: r for r in report.summarize([old, new])}
    assert (rows["cifar10"].accuracy, rows["cifar10"].train_seconds) == (0.25, 40.0)
    assert rows["cifar10"].ci_low is None  # one seed and no per-image results: no interval
    assert rows["imagefolder:/data/flowers12"].accuracy == 0.8


@pytest.mark.parametrize(
    "line, problem",
    [
        (SCHEMA_2_LINE.replace('"schema": 2', '"schema": 3'), "schema 3 is newer"),
        (SCHEMA_2_LINE.replace('"status": "ok"', '"status": "done"'), "status 'done'"),
    ],
)
def test_a_line_this_tlbench_cannot_trust_is_named(line, problem):
    assert any(problem in p for p in problems(json.loads(line)))


def test_the_pinned_versions_are_the_ones_these_literals_were_written_for():
    from tlbench import data, features, plugin_types, record

    assert record.SCHEMA_VERSION == 2
    assert plugin_types.RESULTS_VERSION == 1
    assert features.FEATURES_VERSION == 1
    assert data.DECODE_VERSION == 1
    assert (ckpt.SAFETENSORS_FORMAT, ckpt.CHECKPOINT_FORMAT) == (
        "tlbench-checkpoint-2",
        "tlbench-checkpoint-1",
    )
    assert Path(ckpt.checkpoint_paths("m", "k")[1]).name == "k.json"
