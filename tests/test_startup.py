"""Instant commands: registering plugins and the informational commands import no torch.

Each command runs in a fresh interpreter (a test process has torch imported
already), and the modules loaded when it returns are checked. The plugin
metadata that makes this possible (torchvision models described as plain data,
declared parameter counts) is checked here against torchvision and the built
networks, so what `list` and `show` print stays true.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from tlbench.builtin import efficientnet_lite, small_cnn, torchvision_backbones
from tlbench.builtin.efficientnet_lite import efficientnet_lite as build_lite
from tlbench.builtin.small_cnn_net import SmallCNN

REPO = Path(__file__).resolve().parents[1]
REPORT_FILE = REPO / "results" / "flowers12-cpu.jsonl"

#: runs `tlbench.cli.main(argv)`, then prints its exit code and the heavy modules loaded.
PROBE = """
import json, sys
from tlbench.cli import main
try:
    code = main(json.loads(sys.argv[1]))
except SystemExit as stop:  # --help and --version exit through argparse
    code = stop.code
sys.stdout.flush()
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "timm"))
print("\\nPROBE " + json.dumps({"code": code, "heavy": heavy}))
"""


def _plugin_env() -> dict[str, str]:
    """Only the plugins this repository ships, when installed: never whatever else is."""
    ours = {"timm", "example"}
    installed = {ep.name for ep in importlib.metadata.entry_points(group="tlbench")}
    return {**os.environ, "TLBENCH_LOAD_PLUGINS": ",".join(sorted(ours & installed))}


def probe(*argv: str, env: dict[str, str] | None = None) -> tuple[int, list[str], str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(list(argv))],
        capture_output=True,
        text=True,
        env={**_plugin_env(), "COLUMNS": "200", **(env or {})},
        cwd=REPO,
        timeout=300,
    )
    out, _, tail = done.stdout.rpartition("\nPROBE ")
    assert tail, done.stderr
    result = json.loads(tail)
    return result["code"], result["heavy"], out + done.stderr


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--help"], "COMMAND"),
        (["--version"], "tlbench"),
        (["list"], "efficientnet_lite0"),
        (["list", "--json"], '"name": "resnet50"'),
        (["show", "efficientnet_lite0"], "3,371,008"),
        (["show", "resnet50"], "23,508,032"),
        (["show", "small_cnn"], "388,896"),
        (["show", "linear"], "frozen"),
        (["show", "imagefolder:<path>"], "<path>"),
        (["plugins"], "efficientnet_lite"),
        (["report", str(REPORT_FILE)], "efficientnet_lite0"),
        (["examples"], "flowers12_quick"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_informational_commands_import_no_torch(argv, expected):
    code, heavy, out = probe(*argv)
    assert code == 0, out
    assert expected in out
    assert heavy == [], f"`tlbench {' '.join(argv)}` imported {heavy[:5]}"


def test_registering_every_plugin_imports_no_torch():
    """Nor numpy and Pillow: every builtin imports them with its first model or image."""
    code = (
        "import sys, tlbench; p = tlbench.Plugins(); "
        "print(len(p.backbones), [i.name for i in p.failures], "
        "sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torchvision', 'numpy', 'PIL'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_plugin_env(), timeout=300
    )
    assert done.returncode == 0, done.stderr
    count, failures, heavy = done.stdout.strip().split(" ", 2)
    assert int(count) >= 13 and failures == "[]" and heavy == "[]", done.stdout


@pytest.mark.slow  # two `tlbench run` processes that train, each importing torch
def test_run_imports_torchvision_only_for_torchvision_names(tmp_path):
    """A small-CNN run on images in a folder never loads torchvision; resnet18 does."""
    from imagetree import make_tree

    data = make_tree(tmp_path / "data", train=4, val=2, size=16)
    common = [
        "run", "--datasets", f"imagefolder:{data}", "--strategies", "scratch", "--epochs", "1",
        "--image-size", "16", "--batch-size", "8", "--device", "cpu", "--quiet",
        "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    code, heavy, out = probe(
        *common, "--backbones", "small_cnn", "--out", str(tmp_path / "a.jsonl")
    )
    assert code == 0, out
    assert "torch" in heavy and not any(m.startswith("torchvision") for m in heavy), out
    records = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    # The record still names the installed torchvision, build tag included.
    assert records[-1]["environment"]["torchvision"] == torchvision.__version__

    # ResNet-18 needs 32 px at least (the last --image-size wins).
    resnet = ["--backbones", "resnet18", "--image-size", "32", "--out", str(tmp_path / "b.jsonl")]
    code, heavy, out = probe(*common, *resnet)
    assert code == 0, out
    assert "torchvision" in heavy
    (record,) = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert record["status"] == "ok", record


@pytest.mark.slow  # two `tlbench run` processes that train, each importing torch
def test_a_warm_linear_run_never_imports_torch_dynamo(tmp_path):
    """Issue 23's warm run: a `linear` run whose features are cached, into a new results
    file. Its optimiser is torch.optim's less the import of torch._dynamo on first use
    (1.5 s on the 2-core machine, more than the rest of the run): tlbench.optim."""
    common = [
        "run", "--datasets", "synthetic", "--backbones", "efficientnet_lite0",
        "--strategies", "linear", "--epochs", "2", "--image-size", "32", "--device", "cpu",
        "--quiet", "--no-inference", "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    code, _, out = probe(*common, "--out", str(tmp_path / "cold.jsonl"))
    assert code == 0, out
    code, heavy, out = probe(*common, "--out", str(tmp_path / "warm.jsonl"))
    assert code == 0, out
    (record,) = [json.loads(line) for line in (tmp_path / "warm.jsonl").read_text().splitlines()]
    assert record["status"] == "ok" and record["cost"]["feature_cache"] == "disk", record
    assert "torch.optim" in heavy and "torch._dynamo" not in heavy


# --------------------------------------------------------------------------- declared metadata


@pytest.mark.parametrize("spec", torchvision_backbones.SPECS, ids=lambda s: s.name)
def test_torchvision_specs_are_what_torchvision_declares(spec):
    weights = torchvision.models.get_model_weights(spec.name).DEFAULT
    meta = weights.meta
    assert spec.weights == torchvision_backbones.weights_id(weights)
    assert spec.url == weights.url
    transform = weights.transforms()
    assert (spec.resize, spec.crop) == (transform.resize_size[0], transform.crop_size[0])
    assert spec.interpolation == transform.interpolation.value
    assert list(transform.mean) == [0.485, 0.456, 0.406]  # Preprocessing's default
    assert list(transform.std) == [0.229, 0.224, 0.225]
    assert spec.min_size == meta.get("min_size", (1, 1))[0]
    assert spec.classifier_params == meta["num_params"]
    assert spec.gflops == meta["_ops"]
    assert spec.top1 == meta["_metrics"]["ImageNet-1K"]["acc@1"]
    with torch.device("meta"):  # shapes only: no memory, no time
        model = torchvision_backbones.strip_head(
            torchvision.models.get_model(spec.name, weights=None), spec.head
        )
    assert spec.backbone_params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(efficientnet_lite.VARIANTS))
def test_lite_declared_parameter_count_is_the_networks(name):
    registered = []
    efficientnet_lite.tlbench_register_backbones(registered.append)
    (backbone,) = [b for b in registered if b.name == name]
    with torch.device("meta"):
        model = build_lite(name, pretrained=False, num_classes=0)
    assert backbone.num_params == sum(p.numel() for p in model.parameters())


def test_small_cnn_parameter_count_follows_its_widths():
    for widths in (small_cnn.WIDTHS, (8, 16)):
        expected = sum(p.numel() for p in SmallCNN(widths).parameters())
        assert small_cnn.parameter_count(widths) == expected
