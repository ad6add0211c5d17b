"""Real data: ImageNet-pretrained EfficientNet-Lite0 on flowers12 (12 flower species).

These are the few chosen real-data tests: real weights, real JPEGs, real
training, through the same code a user runs. They need `../shared/data/flowers12`
beside the repository (CI has it) and take about a minute on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FLOWERS12

import tlbench
from tlbench.cli import main
from tlbench.config import RunConfig
from tlbench.data import DecodeCache, ImageTensors
from tlbench.engine import Execution, ImageClassifier, extract_features
from tlbench.features import FeatureStore, feature_key
from tlbench.plugin_types import DatasetRequest
from tlbench.runner import Runner

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not FLOWERS12.is_dir(), reason=f"real data not found at {FLOWERS12}"),
]

#: at or above 160 px, the size at which issue 2 compares against a probe.
IMAGE_SIZE = 160


def _logistic_probe(train_x, train_y, test_x, test_y, num_classes: int) -> float:
    """L2-regularised multinomial logistic regression (full-batch L-BFGS) on standardised
    features; the L2 strength chosen by 3-fold cross-validation on the training split only."""
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)

    def fit(x, y, l2):
        w = torch.zeros(x.shape[1], num_classes, requires_grad=True)
        b = torch.zeros(num_classes, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(x @ w + b, y) + l2 * (w**2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return lambda z: (z @ w + b).argmax(1)

    xs = (train_x - mean) / std
    folds = torch.arange(len(xs)) % 3
    best_l2, best_acc = None, -1.0
    for l2 in (1e-4, 1e-3, 1e-2, 1e-1):
        accs = []
        for k in range(3):
            predict = fit(xs[folds != k], train_y[folds != k], l2)
            accs.append((predict(xs[folds == k]) == train_y[folds == k]).float().mean().item())
        if sum(accs) > best_acc:
            best_l2, best_acc = l2, sum(accs)
    predict = fit(xs, train_y, best_l2)
    return (predict((test_x - mean) / std) == test_y).float().mean().item()


def test_linear_lite0_on_flowers12_reaches_85_percent_and_matches_a_probe(tmp_path):
    plugins = tlbench.Plugins(entry_points=False)
    config = RunConfig(
        backbones=["efficientnet_lite0"],
        datasets=[f"imagefolder:{FLOWERS12}"],
        strategies=["linear"],
        image_size=IMAGE_SIZE,
        out=str(tmp_path / "runs.jsonl"),
        cache_dir=str(tmp_path / "cache"),
        device="cpu",
    )
    (record,) = Runner(config, plugins).run()
    assert record["status"] == "ok", record["reason"]
    assert record["data"]["train_images"] == 720 and record["data"]["eval_images"] == 240
    accuracy = record["accuracy"]["final"]
    assert accuracy >= 0.85, f"linear top-1 {accuracy:.3f} at {IMAGE_SIZE} px"

    # The reference a practitioner would fit by hand on the same frozen features: the run's
    # own, from its feature cache, each split's rows checked against a fresh extraction of
    # a spread of its images (the right images, in label order, from these weights).
    backbone = plugins.backbones.get("efficientnet_lite0")
    splits = plugins.datasets.get("imagefolder").load(
        DatasetRequest(argument=str(FLOWERS12), data_dir=tmp_path)
    )
    decode = DecodeCache(tmp_path / "cache")
    store = backbone.preprocessing.resize_for(IMAGE_SIZE)
    model = ImageClassifier(backbone.build(True), torch.nn.Identity(), backbone.preprocessing)
    ex = Execution(torch.device("cpu"))
    cache = FeatureStore(tmp_path / "cache")
    feats = {}
    for split, name, source in (
        ("train", "train", splits.train),
        ("eval", splits.eval_split, splits.eval),  # the run's decode cache names the split
    ):
        data = decode.get(source, fingerprint=splits.fingerprint, split=name, size=store)
        key = feature_key(
            backbone, fingerprint=splits.fingerprint, split=split, image_size=IMAGE_SIZE,
            store_size=store, precision=ex.precision, count=len(data),
        )  # fmt: skip
        found = cache.get(key, backbone.feature_dim, len(data))
        assert found is not None, f"the run left no {split} features in its cache"
        cached = torch.from_numpy(np.array(found[0]))
        rows = torch.linspace(0, len(data) - 1, 12).long()
        fresh = extract_features(
            model, ImageTensors(data.images[rows], data.labels[rows]), IMAGE_SIZE, 64, ex
        )
        torch.testing.assert_close(cached[rows], fresh, rtol=1e-3, atol=1e-3)
        feats[split] = (cached, data.labels)
    probe = _logistic_probe(*feats["train"], *feats["eval"], num_classes=12)
    print(f"tlbench linear {accuracy:.4f} vs logistic-regression probe {probe:.4f}")
    assert accuracy >= probe - 0.03, f"tlbench linear {accuracy:.3f} vs probe {probe:.3f}"


def _few_flowers(root: Path, classes: int = 3, train: int = 4, test: int = 2) -> Path:
    """A small real ImageFolder tree: links to a few flowers12 photographs."""
    for split, count in (("train", train), ("test", test)):
        for cls in sorted(os.listdir(FLOWERS12 / split))[:classes]:
            (root / split / cls).mkdir(parents=True)
            for f in sorted((FLOWERS12 / split / cls).iterdir())[:count]:
                (root / split / cls / f.name).symlink_to(f)
    return root


def test_cli_linear_finetune_and_scratch_on_a_few_flowers(tmp_path, capsys):
    """Through the CLI and a config file: linear at its 30 default epochs learns three flower
    species from four photographs each (5 of 6 held-out images at 64 px when this was written;
    the floor is 4 of 6, twice chance); finetune and scratch run one epoch each."""
    data = _few_flowers(tmp_path / "flowers")
    out = tmp_path / "runs.jsonl"
    config = tmp_path / "few.toml"
    config.write_text("[strategy.finetune]\nepochs = 1\n\n[strategy.scratch]\nepochs = 1\n")
    code = main([
        "run", "--config", str(config), "--datasets", f"imagefolder:{data}",
        "--backbones", "efficientnet_lite0", "--strategies", "linear,finetune,scratch",
        "--batch-size", "4", "--image-size", "64", "--out", str(out),
        "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--quiet",
    ])  # fmt: skip
    assert code == 0, capsys.readouterr()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["config"]["strategy"], r["status"]) for r in records] == [
        ("linear", "ok"), ("finetune", "ok"), ("scratch", "ok"),
    ]  # fmt: skip
    for r in records:
        assert r["config"]["backbone"] == "efficientnet_lite0"
        assert r["data"]["train_images"] == 12 and r["data"]["eval_images"] == 6
        assert r["data"]["classes"] == sorted(os.listdir(FLOWERS12 / "train"))[:3]
        assert r["cost"]["train_seconds"] > 0
    linear, finetune, scratch = records
    assert [r["config"]["hyperparameters"]["epochs"] for r in records] == [30, 1, 1]
    assert [len(r["accuracy"]["curve"]) for r in records] == [30, 1, 1]
    # Real transfer on real photographs: far above the 1/3 of guessing.
    assert linear["accuracy"]["final"] >= 4 / 6, linear["accuracy"]["final"]
    assert linear["cost"]["trainable_params"] == 1280 * 3 + 3  # the head alone
    for r in (finetune, scratch):
        assert r["cost"]["trainable_params"] == r["cost"]["total_params"] > 3_000_000
        assert 0 <= r["accuracy"]["final"] <= 1  # one epoch on 12 images: no floor to hold
    assert finetune["config"]["weights"] and scratch["config"]["weights"] is None
    printed = capsys.readouterr().out
    assert all(name in printed for name in ("linear", "finetune", "scratch"))  # the table
