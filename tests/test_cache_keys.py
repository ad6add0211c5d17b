"""Every cache key: each field that must invalidate it does, and one that must not does not.

Three keys decide what a run reuses: the decode cache's (decoded images per
dataset fingerprint, split and stored size), the feature cache's (backbone
features per backbone, weights, dataset fingerprint, split, image size,
preprocessing and precision) and the run key (a results file resumes every
run whose key it already holds). A key that loses a field reuses the wrong
thing silently: a bf16 run trains on fp32 features, a second dataset trains
on the first one's images. So each test here checks what the record says
(`cost.decode_cache`, `cost.feature_cache`, whether a rerun trains) and, where
it matters, that the run learnt exactly what it learns with a cold cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import torch
from conftest import ColourSquares

import tlbench
from tlbench import testing
from tlbench.cache import cache_key
from tlbench.config import RunConfig
from tlbench.data import DecodeCache
from tlbench.plugin_types import Dataset, DatasetSplits, Hyperparameters
from tlbench.runner import Runner

CLASSES = ["red", "green", "blue"]


def colour_dataset(name: str, *, seed: int = 0, fingerprint: str | None = None) -> Dataset:
    """tinyset's shape (3 classes, 48 train / 18 eval) with the pixels of `seed`."""

    def load(request) -> DatasetSplits:
        return DatasetSplits(
            classes=list(CLASSES),
            train=ColourSquares(48, seed=seed),
            eval=ColourSquares(18, seed=seed + 1),
            eval_split="test",
            fingerprint=fingerprint or f"colour-squares-seed-{seed}",
        )

    return Dataset(name, load, description="coloured squares", native_size=16)


class Registers:
    """A plugin that registers the backbones and datasets it is given."""

    def __init__(self, backbones=(), datasets=()):
        self.backbones, self.datasets = list(backbones), list(datasets)

    @tlbench.hookimpl
    def tlbench_register_backbones(self, register):
        for backbone in self.backbones:
            register(backbone)

    @tlbench.hookimpl
    def tlbench_register_datasets(self, register):
        for dataset in self.datasets:
            register(dataset)


TINY = testing.tiny_backbone("tiny")
TINYSET = colour_dataset("tinyset", seed=0)
#: same classes and counts as tinyset, other pixels (and so another fingerprint).
OTHERSET = colour_dataset("otherset", seed=10)


def plugins(*, backbones=(TINY,), datasets=(TINYSET, OTHERSET)) -> tlbench.Plugins:
    return tlbench.Plugins(entry_points=False, extra=[("keys", Registers(backbones, datasets))])


def config(where: Path, **changes) -> RunConfig:
    """One linear run of tiny on tinyset, 1 epoch at 16 px; `hp={...}` changes hyperparameters."""
    hp = {"epochs": 1, "batch_size": 16, **changes.pop("hp", {})}
    settings = {
        "backbones": ["tiny"],
        "datasets": ["tinyset"],
        "strategies": ["linear"],
        "seeds": [0],
        "image_size": 16,
        "hyperparameters": hp,
        "out": str(where / "runs.jsonl"),
        "cache_dir": str(where / "cache"),
        "device": "cpu",
        **changes,
    }
    return RunConfig(**settings)


def run(cfg: RunConfig, registry: tlbench.Plugins | None = None) -> list[dict]:
    records = Runner(cfg, registry or plugins()).run()
    for r in records:
        assert r["status"] == "ok", r["reason"]
    return records


def curve(record: dict) -> list[tuple[float, float]]:
    return [(c["train_loss"], c["eval_loss"]) for c in record["accuracy"]["curve"]]


# --------------------------------------------------------------------------- the hash itself


def test_cache_key_is_a_stable_hash_of_its_parts_in_order():
    parts = ("features", 1, {"b": 2, "a": 1}, None, 0.5)
    expected = hashlib.sha256(
        json.dumps(list(parts), sort_keys=True, default=str).encode()
    ).hexdigest()[:24]
    assert cache_key(*parts) == expected
    assert cache_key("x", {"a": 1, "b": 2}) == cache_key("x", {"b": 2, "a": 1})  # dict order
    assert cache_key("x", 1, 2) != cache_key("x", 2, 1)  # argument order counts
    assert cache_key("x", "1") != cache_key("x", 1)
    assert len(cache_key("x")) == 24 and int(cache_key("x"), 16) >= 0


# --------------------------------------------------------------------------- decode cache


def _decode(cache: DecodeCache, source, fingerprint="fp-a", split="train", size=16):
    return cache.get(source, fingerprint=fingerprint, split=split, size=size)


def test_decode_cache_hits_only_the_same_fingerprint_split_and_size(tmp_path):
    a, b = ColourSquares(12, seed=0), ColourSquares(12, seed=7)  # same labels, other pixels
    cache = DecodeCache(tmp_path)
    first = _decode(cache, a)
    assert first.cache_hit == "none"
    assert _decode(cache, a).cache_hit == "memory"
    again = _decode(DecodeCache(tmp_path), a)  # another process: from disk
    assert again.cache_hit == "disk"
    assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)

    other = _decode(cache, b, fingerprint="fp-b")  # another dataset, same classes and counts
    assert other.cache_hit == "none"
    assert not torch.equal(other.images, first.images)
    assert torch.equal(other.images, _decode(DecodeCache(None), b, fingerprint="fp-b").images)
    assert _decode(DecodeCache(tmp_path), b, fingerprint="fp-b").cache_hit == "disk"

    assert _decode(cache, a, split="test").cache_hit == "none"
    resized = _decode(cache, a, size=20)
    assert resized.cache_hit == "none" and resized.images.shape[-1] == 20


def test_decode_cache_keys_differ_in_every_field():
    cache = DecodeCache(None)
    base = cache.key("fp", "train", 16)
    assert base == DecodeCache(None).key("fp", "train", 16)
    assert (
        len(
            {
                base,
                cache.key("fp2", "train", 16),
                cache.key("fp", "val", 16),
                cache.key("fp", "train", 17),
            }
        )
        == 4
    )


def test_a_second_dataset_with_the_same_classes_and_counts_trains_on_its_own_images(tmp_path):
    # Alone, in a cold cache: what `otherset` learns from its own images.
    (alone,) = run(config(tmp_path / "alone", datasets=["otherset"]))
    # After tinyset, in one process and then from disk in another.
    shared = tmp_path / "shared"
    first, second = run(config(shared, datasets=["tinyset", "otherset"]))
    assert [r["config"]["dataset"] for r in (first, second)] == ["tinyset", "otherset"]
    assert first["cost"]["decode_cache"] == "none"
    assert second["cost"]["decode_cache"] == "none", "otherset was served tinyset's images"
    assert second["cost"]["feature_cache"] == "none", "otherset was served tinyset's features"
    assert curve(second) == curve(alone)
    assert curve(second) != curve(first)


def test_decoded_images_are_shared_by_strategies_backbones_and_processes(tmp_path):
    tiny_b = testing.tiny_backbone("tiny_b")  # same preprocessing: the same stored size
    registry = plugins(backbones=(TINY, tiny_b))
    records = run(
        config(tmp_path, backbones=["tiny", "tiny_b"], strategies=["linear", "scratch"]),
        registry,
    )
    assert [r["cost"]["decode_cache"] for r in records] == ["none", "memory", "memory", "memory"]
    (again,) = run(config(tmp_path, seeds=[1]), registry)  # a new runner, another seed
    assert again["cost"]["decode_cache"] == "disk"


def test_a_backbone_that_stores_another_size_decodes_again(tmp_path):
    # resize 20 for crop 16 (tiny's is 18): another stored size, so another decode.
    wide = dataclasses.replace(
        testing.tiny_backbone("tiny_wide"),
        preprocessing=dataclasses.replace(TINY.preprocessing, resize=20),
    )
    records = run(
        config(tmp_path, backbones=["tiny", "tiny_wide"]), plugins(backbones=(TINY, wide))
    )
    assert [r["cost"]["decode_cache"] for r in records] == ["none", "none"]
    assert [r["data"]["store_size"] for r in records] == [18, 20]


# --------------------------------------------------------------------------- feature cache


def test_feature_cache_is_reused_across_seeds_and_head_settings(tmp_path):
    (first,) = run(config(tmp_path))
    assert first["cost"]["feature_cache"] == "none"
    # Nothing here changes the backbone's features: each new runner reads them from disk.
    for changes in (
        {"seeds": [1]},
        {"hp": {"lr": 0.01}},
        {"hp": {"epochs": 2}},
        {"hp": {"batch_size": 8}},
        {"hp": {"weight_decay": 0.1}},
    ):
        (record,) = run(config(tmp_path, **changes))
        assert record["cost"]["feature_cache"] == "disk", changes


def test_a_bf16_run_never_trains_on_cached_fp32_features(tmp_path):
    (bf16_alone,) = run(config(tmp_path / "alone", precision="bf16"))
    assert bf16_alone["config"]["precision"] == "bf16"

    shared = tmp_path / "shared"
    (fp32,) = run(config(shared, precision="fp32"))
    (bf16,) = run(config(shared, precision="bf16"))
    assert (fp32["config"]["precision"], bf16["config"]["precision"]) == ("fp32", "bf16")
    assert bf16["cost"]["feature_cache"] == "none", "bf16 run read the fp32 features"
    assert curve(bf16) == curve(bf16_alone)
    assert curve(bf16) != curve(fp32)  # bf16 features do differ: the test can see the mix-up
    (fp32_again,) = run(config(shared, precision="fp32", seeds=[1]))
    assert fp32_again["cost"]["feature_cache"] == "disk"


def _changed_backbone(**changes) -> tlbench.Backbone:
    return dataclasses.replace(TINY, **changes)


@pytest.mark.parametrize(
    ("what", "backbone"),
    [
        ("weights", _changed_backbone(weights="tiny-other-init")),
        (
            "normalisation",
            _changed_backbone(
                preprocessing=dataclasses.replace(TINY.preprocessing, mean=(0.5, 0.5, 0.5))
            ),
        ),
    ],
)
def test_features_of_other_weights_or_preprocessing_are_computed_again(tmp_path, what, backbone):
    (first,) = run(config(tmp_path))
    (changed,) = run(config(tmp_path, seeds=[1]), plugins(backbones=(backbone,)))
    assert first["cost"]["feature_cache"] == "none"
    assert changed["cost"]["feature_cache"] == "none", f"other {what}, same cached features"


def test_features_are_keyed_by_backbone_image_size_and_dataset(tmp_path):
    tiny_b = testing.tiny_backbone("tiny_b")
    registry = plugins(backbones=(TINY, tiny_b))
    records = run(config(tmp_path, backbones=["tiny", "tiny_b"]), registry)
    assert [r["cost"]["feature_cache"] for r in records] == ["none", "none"]
    (smaller,) = run(config(tmp_path, image_size=12), registry)
    assert smaller["cost"]["feature_cache"] == "none"
    (other,) = run(config(tmp_path, datasets=["otherset"]), registry)
    assert other["cost"]["feature_cache"] == "none"
    (same,) = run(config(tmp_path, seeds=[3]), registry)
    assert same["cost"]["feature_cache"] == "disk"


# --------------------------------------------------------------------------- run key


def _rerun(where: Path, registry: tlbench.Plugins | None = None, **changes) -> list[dict]:
    """Records of a rerun into `where`'s results file (empty: every run was resumed)."""
    return Runner(config(where, **changes), registry or plugins()).run()


@pytest.fixture
def finished(tmp_path) -> Path:
    """A results file holding the base run, and its caches."""
    run(config(tmp_path))
    return tmp_path


HP_CHANGES = {
    "epochs": 2,
    "batch_size": 8,
    "lr": 0.01,
    "backbone_lr_mult": 0.5,
    "weight_decay": 0.0,
    "optimizer": "sgd",
    "momentum": 0.5,
    "nesterov": True,
    "schedule": "constant",
    "warmup_epochs": 1,
    "step_size": 3,
    "gamma": 0.5,
    "label_smoothing": 0.1,
    "augment": True,
}


def test_every_hyperparameter_is_tried_below():
    assert set(HP_CHANGES) == {f.name for f in dataclasses.fields(Hyperparameters)}
    defaults = tlbench.LINEAR.defaults.replace(epochs=1, batch_size=16)
    assert all(getattr(defaults, k) != v for k, v in HP_CHANGES.items())


@pytest.mark.parametrize(
    "changes",
    [
        {"seeds": [1]},
        {"image_size": 12},
        {"precision": "bf16"},
        {"channels_last": False},
        {"strategies": ["finetune"]},
        {"datasets": ["otherset"]},
        *({"hp": {k: v}} for k, v in HP_CHANGES.items()),
    ],
    ids=lambda c: "-".join(f"{k}" if k != "hp" else next(iter(c["hp"])) for k in c),
)
def test_a_changed_setting_is_a_new_run(finished, changes):
    (base,) = [json.loads(line) for line in (finished / "runs.jsonl").read_text().splitlines()]
    records = _rerun(finished, **changes)
    assert len(records) == 1, f"{changes}: resumed from a run with other settings"
    assert records[0]["status"] == "ok" and records[0]["key"] != base["key"]


@pytest.mark.parametrize(
    "registry",
    [
        # The same backbone name with other weights.
        lambda: plugins(backbones=(_changed_backbone(weights="tiny-other-init"),)),
        # The same dataset name holding other images (its fingerprint changed).
        lambda: plugins(datasets=(colour_dataset("tinyset", seed=10),)),
    ],
    ids=["weights", "dataset-fingerprint"],
)
def test_same_names_with_other_weights_or_images_are_a_new_run(finished, registry):
    (record,) = _rerun(finished, registry())
    assert record["status"] == "ok" and record["config"]["dataset"] == "tinyset"


@pytest.mark.parametrize(
    "changes",
    [{"cache_dir": "elsewhere"}, {"workers": 1}, {"no_cache": True}, {"strict": True}],
    ids=lambda c: next(iter(c)),
)
def test_settings_that_do_not_change_the_result_resume(finished, changes):
    if changes.get("cache_dir"):
        changes = {"cache_dir": str(finished / changes["cache_dir"])}
    assert _rerun(finished, **changes) == []
    assert len((finished / "runs.jsonl").read_text().splitlines()) == 1


def test_a_plugins_part_that_is_not_json_is_keyed_by_its_text():
    # A plugin may give its weights as an enum (torchvision's are): the key is that of
    # the enum's text, not an error.
    import enum

    from tlbench.cache import cache_key

    class Weights(enum.Enum):
        IMAGENET1K_V1 = "v1"

    assert cache_key("features", Weights.IMAGENET1K_V1, 64) == cache_key(
        "features", "Weights.IMAGENET1K_V1", 64
    )
    assert cache_key("features", Path("/data/x")) == cache_key("features", "/data/x")
