"""Reliability, round three (issue 26): nothing deletes or trusts what tlbench did not write,
nothing outside tlbench stalls a grid, and the report stays fast on big results files.

Each test is named after what it protects; each failed before its fix.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tlbench.cache import ArrayStore
from tlbench.data import DecodeCache
from tlbench.testing import ColourSquares

REPO = Path(__file__).resolve().parents[1]
#: the signals that stop a command: Ctrl-C, `kill`, a closed terminal.
STOPS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]

# --------------------------------------------------------------------------- cache: deleting


def _tlbench_cache(root: Path) -> Path:
    """A cache with one decoded and one feature entry, both written by tlbench."""
    DecodeCache(root).get(ColourSquares(8, seed=1), fingerprint="fp", split="train", size=16)
    ArrayStore(root / "features").save(
        "f1", np.zeros((8, 4), np.float32), {"kind": "features", "backbone": "tiny"}
    )
    return root


def _project(tmp_path: Path) -> dict[Path, bytes]:
    """A project's own arrays and JSON files (no tlbench sidecar marker), and their bytes."""
    project = tmp_path / "project" / "features"
    project.mkdir(parents=True)
    files = {
        project / "embeddings.npy": b"\x93NUMPY my embeddings",
        project / "embeddings.json": json.dumps({"shape": [2, 2], "dtype": "float32"}).encode(),
        project / "settings.json": b'{"lr": 0.1}',
        project / "run.lock": b"",
    }
    for path, data in files.items():
        path.write_bytes(data)
    return files


def _intact(files: dict[Path, bytes]) -> None:
    for path, data in files.items():
        assert path.exists(), f"{path} was removed"
        assert path.read_bytes() == data


@pytest.mark.parametrize("action", [["clear", "--yes"], ["prune", "--older-than", "0s"]])
@pytest.mark.parametrize("kind", ["features", "decoded"])
def test_cache_clear_never_follows_a_linked_entry_folder_out_of_the_cache(
    run_cli, tmp_path, action, kind
):
    root = tmp_path / "cache"
    (root / kind).mkdir(parents=True)
    files = _project(tmp_path)
    (root / kind).rmdir()
    (root / kind).symlink_to(tmp_path / "project" / "features")
    result = run_cli("cache", *action, "--cache-dir", root)
    assert result.code == 0, result
    _intact(files)


@pytest.mark.parametrize("action", [["clear", "--yes"], ["prune", "--older-than", "0s"]])
def test_cache_clear_removes_only_entries_whose_sidecar_tlbench_wrote(run_cli, tmp_path, action):
    root = _tlbench_cache(tmp_path / "cache")
    # A --cache-dir pointed at a project: its features/ holds the project's own files.
    theirs = {}
    for name, data in {
        "embeddings.npy": b"\x93NUMPY mine",
        "embeddings.json": json.dumps({"shape": [2, 2], "dtype": "float32"}).encode(),
        "labels.json": b"[1, 2]",
        "orphan.npy": b"no sidecar at all",
        "old.npy.tmp": b"not a name tlbench writes",
    }.items():
        (root / "features" / name).write_bytes(data)
        theirs[root / "features" / name] = data
    old = time.time() - 3 * 86400
    for path in theirs:
        os.utime(path, (old, old))
    # A link named like an entry, to a file outside: neither the link nor its target goes.
    outside = tmp_path / "outside.json"
    outside.write_text(
        json.dumps({"shape": [1], "dtype": "uint8", "format": "tlbench-cache-entry/1"})
    )
    (root / "features" / "linked.json").symlink_to(outside)
    (root / "features" / "linked.npy").symlink_to(outside)

    result = run_cli("cache", *action, "--cache-dir", root)
    assert result.code == 0, result
    assert "removed 2 entries" in result.out
    _intact(theirs)
    assert (root / "features" / "linked.json").is_symlink() and outside.exists()
    left = {p.name for p in (root / "features").iterdir()} | {
        p.name for p in (root / "decoded").iterdir()
    }
    assert left == {p.name for p in theirs} | {"linked.json", "linked.npy"}


def test_cache_prune_older_than_zero_is_a_criterion(run_cli, tmp_path):
    root = _tlbench_cache(tmp_path / "cache")
    result = run_cli("cache", "prune", "--older-than", "0s", "--cache-dir", root)
    assert result.code == 0, result
    assert "say what to prune" not in result.err
    assert "removed 2 entries" in result.out


# --------------------------------------------------------------------------- decode cache: content


def _bmp(path: Path, colour: tuple[int, int, int]) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)  # BMP: the same size whatever the colour


def test_decode_cache_sees_same_size_content_copied_with_its_old_mtime(tmp_path):
    from tlbench.builtin.imagefolder import load_imagefolder
    from tlbench.plugin_types import DatasetRequest

    root = tmp_path / "ds"
    for cls, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        for i in range(3):
            _bmp(root / cls / f"{i}.bmp", colour)
    splits = load_imagefolder(DatasetRequest(str(root), tmp_path, test_fraction=0.34))
    first = DecodeCache(tmp_path / "cache").get(
        splits.train, fingerprint=splits.fingerprint, split="train", size=8
    )
    assert first.cache_hit == "none"
    # `cp -p` / `rsync -a` of new content: same size, the old modification time.
    for path in sorted((root / "red").iterdir()):
        st = path.stat()
        _bmp(path, (0, 255, 0))
        assert path.stat().st_size == st.st_size
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = load_imagefolder(DatasetRequest(str(root), tmp_path, test_fraction=0.34))
    assert again.fingerprint == splits.fingerprint  # the run key's identity is unchanged...
    second = DecodeCache(tmp_path / "cache").get(
        again.train, fingerprint=again.fingerprint, split="train", size=8
    )
    assert second.cache_hit == "none"  # ...but the decode cache saw the new bytes
    assert not np.array_equal(second.images.numpy(), first.images.numpy())


def test_random_bytes_over_cached_decoded_pixels_are_a_miss_with_a_warning(tmp_path):
    cache = DecodeCache(tmp_path)
    source = ColourSquares(8, seed=3)
    truth = cache.get(source, fingerprint="fp", split="train", size=16).images.clone()
    (entry,) = (tmp_path / "decoded").glob("*.npy")
    data = bytearray(entry.read_bytes())
    data[-200:] = os.urandom(200)  # the header and sidecar still agree
    entry.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="do not match the checksum"):
        again = DecodeCache(tmp_path).get(source, fingerprint="fp", split="train", size=16)
    assert again.cache_hit == "none" and torch.equal(again.images, truth)


# --------------------------------------------------------------------------- files that hang


def _returns_within(seconds: float, fn, *args):
    """fn(*args)'s result or exception, or a failure if it has not returned in `seconds`."""
    import threading

    out: dict = {}

    def call():
        try:
            out["value"] = fn(*args)
        except Exception as exc:
            out["error"] = exc

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"{fn.__name__} blocked for more than {seconds} s"
    return out


def test_a_fifo_named_like_an_image_never_blocks_a_dataset(tmp_path):
    from tlbench.images import FileImages, open_rgb

    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    out = _returns_within(5, open_rgb, str(fifo))
    assert "not a regular file" in str(out.get("error")), out
    # A dataset naming it (an hf: row's path): the split decodes, the FIFO is skipped.
    good = tmp_path / "good.bmp"
    _bmp(good, (1, 2, 3))
    source = FileImages([str(good), str(fifo)], [0, 1])
    out = _returns_within(
        10,
        lambda: DecodeCache(tmp_path / "cache").get(source, fingerprint="f", split="t", size=8),
    )
    assert "error" not in out, out
    assert out["value"].skipped == [str(fifo)]


def test_a_one_by_a_million_pixel_strip_is_decoded_without_gigabytes(tmp_path, monkeypatch):
    from PIL import Image

    from tlbench.data import _decode_one
    from tlbench.images import FileImages

    strip = tmp_path / "strip.png"
    Image.new("RGB", (1, 1_000_000), (10, 200, 30)).save(strip)
    assert strip.stat().st_size < 100_000
    resize = Image.Image.resize

    def bounded_resize(self, size, *args, **kwargs):
        assert size[0] * size[1] <= 4 * 64 * 64, f"resize to {size}: gigabytes for one image"
        return resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", bounded_resize)
    t0 = time.perf_counter()
    pixels = _decode_one(FileImages([str(strip)], [0]), 0, 64)
    assert time.perf_counter() - t0 < 10
    assert pixels.shape == (3, 64, 64) and (pixels[:, 32, 32] == [10, 200, 30]).all()


def test_an_image_declaring_too_many_pixels_is_refused_before_decoding(tmp_path):
    from PIL import Image

    from tlbench.images import MAX_PIXELS, open_rgb

    big = tmp_path / "big.png"
    Image.new("1", (12_000, 9_000)).save(big)  # 108 Mpx, a few kB on disk
    assert MAX_PIXELS < 12_000 * 9_000
    with pytest.raises(ValueError, match="12000 x 9000 px is too large to decode"):
        open_rgb(big)


# --------------------------------------------------------------------------- imagefolder layouts


def test_a_class_folder_named_train_is_a_class_not_a_split(tmp_path):
    from tlbench.builtin.imagefolder import load_imagefolder
    from tlbench.plugin_types import DatasetRequest

    root = tmp_path / "ds"
    for cls in ("cat", "dog"):
        for i in range(3):
            _bmp(root / cls / f"{i}.bmp", (i, 0, 0))
    for sub in ("steam", "diesel"):  # the class `train`, its images in sub-folders
        for i in range(3):
            _bmp(root / "train" / sub / f"{i}.bmp", (0, i, 0))
    splits = load_imagefolder(DatasetRequest(str(root), tmp_path, test_fraction=0.34))
    assert splits.classes == ["cat", "dog", "train"]
    assert len(splits.train) + len(splits.eval) == 12
    # A tree with only train/ (and a folder without images beside it) is still a tree.
    (root / "cat").rename(tmp_path / "cat")
    (root / "dog").rename(tmp_path / "dog")
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("x")
    assert load_imagefolder(DatasetRequest(str(root), tmp_path, test_fraction=0.34)).classes == [
        "diesel",
        "steam",
    ]


def test_a_class_folder_1100_folders_deep_is_read_without_recursion_error(tmp_path):
    from tlbench.builtin.imagefolder import load_imagefolder
    from tlbench.plugin_types import DatasetRequest

    root = tmp_path / "ds"
    _bmp(root / "a" / "0.bmp", (1, 0, 0))
    _bmp(root / "a" / "1.bmp", (2, 0, 0))
    deep = root / "b"
    deep.mkdir()
    chain = [deep]
    try:
        for _ in range(1100):  # one at a time: Path.mkdir(parents=True) recurses too
            deep = deep / "d"
            deep.mkdir()
            chain.append(deep)
        _bmp(deep / "0.bmp", (0, 1, 0))
        _bmp(root / "b" / "1.bmp", (0, 2, 0))
        splits = load_imagefolder(DatasetRequest(str(root), tmp_path, test_fraction=0.5))
        assert splits.classes == ["a", "b"]
        assert len(splits.train) + len(splits.eval) == 4
    finally:
        # Taken down bottom-up here: pytest removes old temporary folders with a recursive
        # shutil.rmtree, which a tree this deep would crash in every later pytest session.
        for folder in reversed(chain):
            for item in folder.iterdir():
                if not item.is_dir():
                    item.unlink()
            folder.rmdir()


# --------------------------------------------------------------------------- sidecars that lie


@pytest.mark.parametrize(
    "field, value",
    [
        ("backbone_params", 7),
        ("forward_flops_per_image", 10**30),
        ("forward_flops_per_image", 1e30),
        ("backbone_params", -5),
    ],
)
def test_a_feature_sidecars_well_typed_lie_is_a_miss_with_a_warning(tmp_path, field, value):
    from tlbench.features import FeatureStore

    facts = {"backbone_params": 11_689_512, "forward_flops_per_image": 1_819_066_368}
    FeatureStore(tmp_path).put(
        "k1", np.ones((4, 8), np.float32), {**facts, "device": "cpu"}, {"backbone": "resnet18"}
    )
    assert FeatureStore(tmp_path).get("k1", 8, 4) is not None
    sidecar = tmp_path / "features" / "k1.json"
    meta = json.loads(sidecar.read_text())
    meta[field] = value
    sidecar.write_text(json.dumps(meta))
    with pytest.warns(RuntimeWarning, match="ignoring damaged cache entry"):
        assert FeatureStore(tmp_path).get("k1", 8, 4) is None


# --------------------------------------------------------------------------- trackers that hang


class SleepyTracker:
    """A tracker whose runs never start: `start` sleeps far longer than any timeout."""

    def __new__(cls, base):
        from tlbench.trackers import BaseTracker

        class Sleepy(BaseTracker):
            name = "mlflow"

            def start(self, config, key):
                time.sleep(60)

            def epoch(self, handle, epoch, metrics):
                raise AssertionError("never reached")

            def finish(self, handle, record):
                raise AssertionError("never reached")

        return Sleepy(base)


def _tiny_run(tmp_path: Path, **options):
    import tlbench
    from tlbench import testing

    return tlbench.run(
        backbones=["tiny"],
        datasets=["tinyset"],
        strategies=["linear", "scratch"],
        image_size=16,
        epochs=1,
        batch_size=16,
        device="cpu",
        out=tmp_path / "results.jsonl",
        cache_dir=str(tmp_path / "cache"),
        progress=False,
        plugins=tlbench.Plugins(entry_points=False, extra=[("tiny", testing.TINY_PLUGIN)]),
        **options,
    )


def test_a_tracker_that_never_answers_is_dropped_with_one_warning_and_the_grid_goes_on(
    tmp_path, monkeypatch
):
    import sys
    import types
    import warnings

    from tlbench import trackers

    module = types.ModuleType("sleepy_tracker")
    module.Tracker = SleepyTracker
    monkeypatch.setitem(sys.modules, "sleepy_tracker", module)
    monkeypatch.setitem(trackers.TRACKERS, "mlflow", ("sleepy_tracker", "json", "mlflow"))
    monkeypatch.setenv("TLBENCH_TRACKER_TIMEOUT", "1")
    t0 = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = _tiny_run(tmp_path, log_to=["mlflow"])
    assert [r["status"] for r in results] == ["ok", "ok"]
    assert time.monotonic() - t0 < 40  # not 2 x 60 s of sleeping
    said = [str(w.message) for w in caught if "--log-to mlflow" in str(w.message)]
    assert len(said) == 1, said
    assert "did not answer within 1 s while starting" in said[0]
    assert "the grid goes on without mlflow" in said[0]


def test_an_mlflow_server_that_accepts_and_never_answers_cannot_stall_the_grid(
    tmp_path, monkeypatch
):
    import socket
    import warnings

    pytest.importorskip("mlflow")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)  # the kernel accepts connections; nothing ever answers
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{server.getsockname()[1]}")
        monkeypatch.setenv("TLBENCH_TRACKER_TIMEOUT", "2")
        t0 = time.monotonic()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results = _tiny_run(tmp_path, log_to=["mlflow"])
        took = time.monotonic() - t0
    finally:
        server.close()
    assert [r["status"] for r in results] == ["ok", "ok"]
    said = [str(w.message) for w in caught if "--log-to mlflow" in str(w.message)]
    assert len(said) == 1 and "did not answer within 2 s" in said[0], said
    assert took < 60, took


# --------------------------------------------------------------------------- a report of 20,000 rows


def _single_seed_records(count: int, images: int, seed: int = 0) -> list[dict]:
    """`count` distinct one-seed rows on one evaluation split of `images` images."""
    from tlbench.record import encode_correct

    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        right = (rng.random(images) < rng.uniform(0.3, 0.95)).astype(int).tolist()
        out.append(
            {
                "schema": 2,
                "key": f"k{i}",
                "status": "ok",
                "time": f"2026-01-01T00:00:{i % 60:02d}+00:00",
                "config": {
                    "backbone": f"b{i % 40}",
                    "dataset": "flowers",
                    "dataset_fingerprint": "fp",
                    "strategy": ("linear", "finetune", "scratch")[i % 3],
                    "seed": 0,
                    "hyperparameters": {"lr": 10 ** -(1 + i // 120)},
                },
                "accuracy": {
                    "final": sum(right) / images,
                    "best": sum(right) / images,
                    "final_correct": encode_correct(right),
                },
                "cost": {"train_seconds": float(rng.integers(1, 50))},
                "data": {"eval_images": images, "eval_split": "test"},
            }
        )
    return out


def test_a_report_of_many_rows_bootstraps_each_distinct_count_once(monkeypatch):
    from tlbench import report, stats

    calls = {"interval": 0, "paired": 0}
    interval, paired = stats.bootstrap_interval, stats.paired_bootstrap

    def counted_interval(*a, **k):
        calls["interval"] += 1
        return interval(*a, **k)

    def counted_paired(*a, **k):
        calls["paired"] += 1
        return paired(*a, **k)

    monkeypatch.setattr(stats, "bootstrap_interval", counted_interval)
    monkeypatch.setattr(stats, "paired_bootstrap", counted_paired)
    report._bootstrap_interval.cache_clear()
    rows = report.summarize(_single_seed_records(1500, 60))
    assert len(rows) == 1500
    assert calls["interval"] <= 61  # one per number of right images out of 60, not per row
    assert calls["paired"] < 1500  # rows surely apart from the best are not resampled


def test_a_report_that_checks_rankings_imports_no_scipy_stats(tmp_path):
    """Importing scipy.stats cost every report half a second (issue 26): the ranking checks'
    weighted tau is computed without it, and tuning's Kendall tau imports it only for
    tuned rows."""
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _single_seed_records(240, 40)))
    probe = (
        "import sys; from tlbench.cli import main; code = main(['report', sys.argv[1]]); "
        "print('scipy.stats' in sys.modules, code)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-c", probe, str(path)], capture_output=True, text=True, env=env
    )
    assert "ranking check: flowers" in done.stdout, done.stdout + done.stderr  # they ran
    assert done.stdout.split()[-2:] == ["False", "0"], done.stderr


def test_a_report_leaves_the_garbage_collector_on(run_cli, tmp_path):
    """The report turns Python's cyclic collector off while it holds the records (issue 26);
    a caller of `tlbench.cli.main` gets it back on."""
    import gc

    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _single_seed_records(30, 20)))
    assert gc.isenabled()
    assert run_cli("report", path).code == 0
    assert gc.isenabled()


def test_the_reports_fast_statistics_are_the_stats_modules_floats():
    """The report's batched t intervals, ties and bootstraps give what tlbench.stats gives."""
    from tlbench import report, stats

    rng = np.random.default_rng(7)
    for n in range(2, 21):
        values = rng.uniform(0.2, 0.99, size=(30, n)).round(rng.integers(2, 6)).tolist()
        rows = [report.Row("d", "b", "s", "ok") for _ in values]
        report._fill_t_intervals(list(zip(rows, values, strict=True)))
        for row, v in zip(rows, values, strict=True):
            expected = stats.t_interval(v)
            assert (row.ci_low, row.ci_high) == (
                max(0.0, expected.lower),
                min(1.0, expected.upper),
            ), (n, v)
            assert row.accuracy_std == pytest.approx(np.std(v, ddof=1), rel=1e-12)
            assert report._t_interval(v) == expected
        assert report._row_means(values) == [stats.Row(0, dict(enumerate(v))).mean for v in values]

    # Ties: multi-seed rows (some seeds in common) and one-seed rows with per-image results.
    records = _single_seed_records(150, 40, seed=3)
    more = _single_seed_records(150, 40, seed=4)  # the same rows' second seeds
    for i, r in enumerate(more):
        r["key"] = f"m{i}"
        r["config"]["seed"] = 1 + i % 3
        r["config"]["backbone"] = records[i]["config"]["backbone"]
        r["config"]["hyperparameters"] = records[i]["config"]["hyperparameters"]
    records += more
    rows = report.summarize(records)
    by_section: dict[str, list] = {}
    for row in rows:
        by_section.setdefault(row.section, []).append(row)
    assert {len(row.seeds) for row in rows} == {2}
    # Brute force with the per-image results, as report did before it was made fast.
    from tlbench.record import decode_correct

    by_key = {r["key"]: r for r in records}
    for group in by_section.values():
        expected = stats.compare_to_best(
            [
                stats.Row(
                    key=i,
                    accuracy=row.seed_accuracy,
                    correct={
                        by_key[k]["config"]["seed"]: decode_correct(
                            by_key[k]["accuracy"]["final_correct"], 40
                        )
                        for k in row.run_keys
                    },
                )
                for i, row in enumerate(group)
            ]
        )
        assert [row.tie for row in group] == [expected[i].tied for i in range(len(group))]


def test_a_row_called_surely_apart_is_never_tied_by_the_bootstrap():
    from tlbench import report, stats

    rng = np.random.default_rng(11)
    apart = 0
    for _ in range(400):
        n = int(rng.choice([10, 40, 240, 1000, 10_000]))
        both, only_a, only_b = rng.multinomial(n, rng.dirichlet([4, 1, 1, 4]))[:3]
        a = np.r_[np.ones(both + only_a), np.zeros(n - both - only_a)].astype(int)
        b = np.r_[np.ones(both), np.zeros(only_a), np.ones(only_b)]
        b = np.r_[b, np.zeros(n - len(b))].astype(int)
        if report._surely_apart(n, int(only_a), int(only_b)):
            apart += 1
            assert not stats.paired_bootstrap(a, b).contains(0.0), (n, both, only_a, only_b)
    assert 50 < apart < 400  # both kinds were drawn


def test_class_names_that_differ_only_in_unicode_normalisation_say_so(tmp_path):
    import unicodedata

    from tlbench.builtin.imagefolder import load_imagefolder
    from tlbench.errors import DatasetError
    from tlbench.plugin_types import DatasetRequest

    root = tmp_path / "ds"
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    for split, name in (("train", nfc), ("val", nfd)):
        for cls in (name, "tea"):
            _bmp(root / split / cls / "0.bmp", (3, 4, 5))
    if sorted(os.listdir(root / "val")) == sorted(os.listdir(root / "train")):
        pytest.skip("this filesystem normalises names")
    with pytest.raises(DatasetError) as caught:
        load_imagefolder(DatasetRequest(str(root), tmp_path))
    message = str(caught.value)
    assert "different class folders" in message
    assert "look the same but are written differently" in message
    assert "NFC" in message and "NFD" in message


def test_checking_the_models_folder_leaves_no_folder_in_a_dataset(tmp_path):
    from tlbench.builtin.imagefolder import load_imagefolder
    from tlbench.errors import TlbenchError
    from tlbench.plugin_types import DatasetRequest
    from tlbench.results import check_folder_writable

    root = tmp_path / "ds"
    for cls in ("cat", "dog"):
        for i in range(2):
            _bmp(root / cls / f"{i}.bmp", (i, 9, 9))
    check_folder_writable(root / "models", "checkpoints", "--models-dir")
    assert sorted(p.name for p in root.iterdir()) == ["cat", "dog"]
    assert load_imagefolder(DatasetRequest(str(root), tmp_path, test_fraction=0.5)).classes == [
        "cat",
        "dog",
    ]
    (tmp_path / "file").write_text("x")
    with pytest.raises(TlbenchError, match="cannot write checkpoints"):
        check_folder_writable(tmp_path / "file" / "models", "checkpoints", "--models-dir")


def _red_and_blue(root: Path, images: int = 4, *, layout: tuple[str, ...] = ()) -> Path:
    """A dataset of two class folders of plain BMPs (under each of `layout`'s split folders)."""
    for part in layout or ("",):
        for cls, colour in (("red", (250, 0, 0)), ("blue", (0, 0, 250))):
            for i in range(images):
                _bmp(root / part / cls / f"{i}.bmp", colour)
    return root


def test_a_models_folder_saved_inside_a_single_folder_dataset_is_not_a_class(run_cli, tmp_path):
    root = _red_and_blue(tmp_path / "ds")
    args = ["--backbones", "tiny", "--strategies", "linear", "--epochs", "1", "--device", "cpu"]
    args += ["--no-cache", "--quiet", "--save-models", "--out", str(tmp_path / "runs.jsonl")]
    args += ["--models-dir", str(root / "models")]  # --out there is refused (test below)
    args += ["--image-size", "16", "--no-inference"]  # 224 px took 3 s, the models dir is the point
    first = run_cli("run", "--datasets", f"imagefolder:{root}", *args)
    assert first.code == 0, first
    assert list((root / "models").glob("*.safetensors"))  # beside the classes
    again = run_cli("run", "--datasets", f"imagefolder:{root}", *args, "--force")
    assert again.code == 0, again  # models/ is not read as a class without images


@pytest.mark.parametrize("field, value", [("fingerprint", "someone-else"), ("size", 64)])
def test_a_decoded_sidecar_describing_other_images_is_a_miss_with_a_warning(tmp_path, field, value):
    source = ColourSquares(6, seed=2)
    DecodeCache(tmp_path).get(source, fingerprint="fp", split="train", size=16)
    (sidecar,) = (tmp_path / "decoded").glob("*.json")
    meta = json.loads(sidecar.read_text())
    meta[field] = value
    sidecar.write_text(json.dumps(meta))
    with pytest.warns(RuntimeWarning, match="ignoring damaged cache entry"):
        again = DecodeCache(tmp_path).get(source, fingerprint="fp", split="train", size=16)
    assert again.cache_hit == "none"


# --------------------------------------------------------------------------- small ones


def test_out_inside_a_single_folder_dataset_is_refused_before_training(run_cli, tmp_path):
    from imagetree import assert_clean_error

    root = _red_and_blue(tmp_path / "ds")
    args = ["--backbones", "tiny", "--strategies", "linear", "--epochs", "1", "--device", "cpu"]
    args += ["--no-cache", "--quiet", "--save-models"]
    refused = run_cli(
        "run", "--datasets", f"imagefolder:{root}", *args, "--out", root / "runs.jsonl"
    )
    assert_clean_error(refused, f"is inside the dataset folder {root.resolve()}", "outside")
    assert sorted(p.name for p in root.iterdir()) == ["blue", "red"]  # nothing written there

    # A dataset of train/ and val/ folders has room beside them.
    split = _red_and_blue(tmp_path / "split", 3, layout=("train", "val"))
    beside = run_cli(
        "run", "--datasets", f"imagefolder:{split}", *args, "--dry-run",
        "--out", split / "runs.jsonl",
    )  # fmt: skip
    assert beside.code == 0, beside


def test_out_in_a_new_folder_inside_a_single_folder_dataset_is_refused_creating_nothing(
    run_cli, tmp_path
):
    from imagetree import assert_clean_error

    root = _red_and_blue(tmp_path / "ds")
    args = ["--backbones", "tiny", "--strategies", "linear", "--epochs", "1", "--device", "cpu"]
    args += ["--no-cache", "--quiet", "--out", root / "sub" / "runs.jsonl"]
    refused = run_cli("run", "--datasets", f"imagefolder:{root}", *args)
    # The refusal names the real problem; checking --out made no `sub/`, which the
    # dataset would read as a class folder without images.
    assert_clean_error(refused, f"is inside the dataset folder {root.resolve()}", "outside")
    assert "no images" not in refused.err
    assert sorted(p.name for p in root.iterdir()) == ["blue", "red"]
    from tlbench.console import Observer
    from tlbench.plugin_types import PlannedRun

    class Numbers(Observer):
        def __init__(self):
            super().__init__()
            self.seen: list[tuple[str, int, int]] = []

        def grid_started(self, plans):
            pass

        def run_started(self, spec, index, total):
            self.seen.append((spec.key, index, total))

    a, b = (type("Spec", (), {"key": k})() for k in ("a", "b"))
    numbers = Numbers()
    numbers.tlbench_grid_started([PlannedRun(a, "pending", ""), PlannedRun(b, "pending", "")])
    for spec in (a, a, b):  # a's worker died: a starts again, then b
        numbers.tlbench_run_started(spec)
    assert numbers.seen == [("a", 1, 2), ("a", 1, 2), ("b", 2, 2)]


def test_report_warnings_are_printed_once(run_cli, tmp_path):
    records = []
    for i, bad in enumerate(({"train_seconds": "fast"}, {"schema": 99})):
        record = {
            "key": f"k{i}", "status": "ok", "reason": None, "schema": 2,
            "time": f"2026-01-01T00:00:0{i}+00:00",
            "config": {"backbone": f"b{i}", "dataset": "d", "strategy": "linear", "seed": 0},
            "accuracy": {"final": 0.5, "best": 0.5, "curve": []},
            "cost": {"train_seconds": 1.0},
        }  # fmt: skip
        if "schema" in bad:
            record.update(bad)
        else:
            record["cost"].update(bad)
        records.append(record)
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    for fmt in ([], ["--format", "markdown"]):
        shown = run_cli("report", path, *fmt)
        assert shown.code == 0, shown
        text = " ".join(shown.err.split())
        for problem in ("cost.train_seconds is 'fast'", "schema 99 is newer"):
            assert text.count(problem) == 1, (fmt, shown.err)


def test_the_fast_json_parser_reads_every_line_as_the_standard_one(tmp_path, monkeypatch):
    from tlbench import results

    if results._fast_loads is None:
        pytest.skip("orjson is not installed (the fast extra)")

    def line(key: str, **extra: object) -> str:
        record = {"key": key, "status": "ok", "config": {"seed": 0}, **extra}
        return json.dumps(record, ensure_ascii=False)

    lines = [
        "\ufeff" + line("bom"),  # an editor's byte-order mark
        line("nan").replace('"status"', '"loss": NaN, "status"'),
        "",
        line("big", n=2**70),
        line("surrogate").replace('"key"', '"text": "\\ud800", "key"'),
        line("unicode", name="café 🌸"),
        '{"key": "torn", "sta',
    ]
    path = tmp_path / "runs.jsonl"
    path.write_bytes("\n".join(lines).encode("utf-8") + b"\n\xff\xfe\n")
    with pytest.warns(RuntimeWarning):
        fast = results.read(path)
    monkeypatch.setattr(results, "_fast_loads", None)
    with pytest.warns(RuntimeWarning):
        standard = results.read(path)
    assert [r["key"] for r in fast] == ["bom", "nan", "big", "surrogate", "unicode"]
    # The one difference, documented: an integer past 64 bits (no record tlbench writes
    # holds one) reads as a float.
    assert (fast[2]["n"], standard[2]["n"]) == (float(2**70), 2**70)
    fast[2]["n"] = standard[2]["n"]
    assert repr(fast) == repr(standard)  # NaN == NaN is False: compared as written


# --------------------------------------------------------------------------- a signal while starting

#: what the `tlbench` console script runs, behind an import hook that holds the command's
#: first import of rich (its terminal output, imported while the command starts) until
#: the test has sent its signal; the command line is the process's (`list`).
_STARTING = """
import importlib.abc, os, sys, time
from pathlib import Path


class HoldRich(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "rich":
            sys.meta_path.remove(self)
            Path(os.environ["TLBENCH_TEST_HELD"]).touch()
            time.sleep(60)  # a signal's handler interrupts this
        return None


sys.meta_path.insert(0, HoldRich())
from tlbench.cli import main

sys.exit(main())
"""


def _default_signals() -> None:
    # As from a terminal (a background job starts with SIGINT ignored).
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signum", STOPS, ids=[s.name for s in STOPS])
def test_a_signal_while_the_command_still_imports_ends_it_with_one_line(tmp_path, signum):
    held = tmp_path / "held"
    env = {**os.environ, "TLBENCH_TEST_HELD": str(held), "PYTHONPATH": str(REPO)}
    command = subprocess.Popen(
        [sys.executable, "-c", _STARTING, "list"], cwd=tmp_path, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_default_signals,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not held.exists():
        assert command.poll() is None and time.monotonic() < deadline, command.communicate()
        time.sleep(0.02)
    command.send_signal(signum)
    out, err = command.communicate(timeout=120)
    assert (command.returncode, out, err) == (128 + signum, "", "interrupted\n")


def test_the_command_takes_the_stop_signals_before_importing_anything_of_its_own():
    """`import tlbench` loads no other module (its names come on first use), so `main`'s
    first line, which takes SIGINT, SIGTERM and SIGHUP, runs after the interpreter and
    three small modules: the package's eager imports (pluggy, the plugin types, about
    170 ms) were a window where a Ctrl-C still printed a traceback."""
    code = (
        "import sys, tlbench.cli; print(sorted(m for m in sys.modules"
        " if m.split('.')[0] in ('tlbench', 'pluggy', 'numpy', 'rich', 'torch')))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == str(["tlbench", "tlbench.cli", "tlbench.commands", "tlbench.errors"])
    import tlbench

    assert all(getattr(tlbench, name) is not None for name in tlbench.__all__)
    assert tlbench.plugins.Plugins is tlbench.Plugins  # a submodule, as when imported eagerly
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tlbench.nope  # noqa: B018


def test_tlbench_select_called_first_in_a_process_reaches_the_front_door():
    """`import tlbench` loads the Python API on first use: `tlbench.select(...)` as the
    first call of a script (the module is loaded, the front door not yet) must load it,
    not fail an assertion."""
    code = (
        "import tlbench, sys\n"
        "assert 'tlbench.python_api' not in sys.modules\n"
        "try:\n    tlbench.select(no_such_option=1)\n"
        "except TypeError as exc:\n    print('front door:', exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("front door: ") and "no_such_option" in out


def test_the_terminal_table_prints_as_richs_table_did():
    """`tlbench report`'s table is built line by line (`output.Columns`, issue 26: rich's
    `Table` spent 10 of 17 s on 20,000 rows); it prints what the `Table` printed."""
    import io
    import random

    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from tlbench.commands.output import Columns, print_wide

    rng = random.Random(26)
    words = ["resnet18", "linear", "85.0 ± 1.2 [80.1, 89.9]", "", "名前", "1,234", "*", "="]
    for _ in range(60):
        names = [rng.choice(["backbone", "strategy", "top-1 %", "n", "note", "px"]) for _ in "ab"]
        names += rng.sample(["train s", "peak MB", "tie", "pareto"], rng.randint(0, 4))
        rows = [[rng.choice(words) for _ in names] for _ in range(rng.randint(1, 6))]
        styles = [rng.choice([None, "bold", "dim"]) for _ in rows]
        left = {"backbone", "strategy", "note"}
        title = rng.choice(["flowers12: top-1 against training cost", "x"])
        table = Table(title=Text(title), title_justify="left", title_style="bold",
                      box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)  # fmt: skip
        for i, name in enumerate(names):
            width = max(len(name), *(len(r[i]) for r in rows))  # as print_rows gave it
            table.add_column(name, justify="left" if name in left else "right",
                             no_wrap=True, min_width=width)  # fmt: skip
        for row, style in zip(rows, styles, strict=True):
            table.add_row(*map(Text, row), style=style)
        from rich.cells import cell_len

        widths = [max(map(cell_len, column)) for column in zip(names, *rows, strict=True)]
        ours = Columns(Text(title), names, rows, widths, styles)
        for make in (
            lambda: Console(file=io.StringIO(), width=80),  # a log or a pipe
            lambda: Console(file=io.StringIO(), width=300, force_terminal=True, color_system=None),
        ):
            expected, got = make(), make()
            print_wide(expected, table)
            print_wide(got, ours)
            assert got.file.getvalue() == expected.file.getvalue(), (names, rows)


def test_the_markdown_table_is_tabulates_pipe_table():
    """`tlbench report --format markdown` builds its tables line by line (issue 26: tabulate
    inferred a type and measured every cell, 0.7 s for 10,000 rows); they are tabulate's
    "pipe" tables, and cells that are not plain go to tabulate itself."""
    import random

    from tabulate import tabulate

    from tlbench import tables

    rng = random.Random(26)
    plain = ["resnet18", "85.0 ± 1.2 [80.1, 89.9]", "", "1,234", "*", "a\\|b", "True", "é", "[1]"]
    odd = ["名前", " padded", "e\u0301", "a\tb", "x\x1b[1my"]  # wide, spaced, combining, control
    fast = 0
    for _ in range(500):
        header = rng.sample(["backbone", "n", "top-1 %", "note", "px", "trainable / total"], 3)
        words = plain + (odd if rng.random() < 0.3 else [])
        cells = [[rng.choice(words) for _ in header] for _ in range(rng.randint(1, 5))]
        colalign = [rng.choice(["left", "right"]) for _ in header]
        ours = tables._pipe_table(header, cells, colalign)
        expected = tabulate(
            cells, headers=header, tablefmt="pipe", disable_numparse=True, colalign=colalign
        )
        if ours is not None:
            fast += 1
            assert ours == expected, (header, cells, colalign)
        else:
            assert any(c in odd for row in cells for c in row)
    assert fast > 300
