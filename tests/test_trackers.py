"""Experiment trackers (--log-to): the real libraries, read back through their own readers.

MLflow through `MlflowClient` on the default local store, TensorBoard through
its `EventAccumulator`, W&B through its offline run folder. Every grid is the
tiny backbone at 16 px on CPU.
"""

from __future__ import annotations

import json
import os
import struct
import warnings
from pathlib import Path
from typing import Any

import pytest

import tlbench
from tlbench import results as results_file
from tlbench import testing
from tlbench.trackers import run_name, series_name


def tiny_plugins() -> tlbench.Plugins:
    return tlbench.Plugins(entry_points=False, extra=[("tiny", testing.TINY_PLUGIN)])


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No tracker settings of the machine leak in."""
    for name in list(os.environ):
        if name.startswith(("MLFLOW_", "WANDB_")) or name == "TLBENCH_TENSORBOARD_DIR":
            monkeypatch.delenv(name)


def _tiny_grid(tmp_path: Path) -> list[Any]:
    """The options of a tiny grid on the CPU, writing under `tmp_path`."""
    return [
        "--backbones", "tiny",
        "--datasets", "tinyset",
        "--epochs", "2",
        "--batch-size", "16",
        "--image-size", "16",
        "--device", "cpu",
        "--out", tmp_path / "results.jsonl",
        "--cache-dir", tmp_path / "cache",
    ]  # fmt: skip


def _cli_grid(run_cli: Any, tmp_path: Path, *extra: str) -> Any:
    return run_cli("run", *_tiny_grid(tmp_path), "--strategies", "scratch,linear", *extra)


@pytest.mark.slow  # MLflow's and TensorBoard's own libraries
def test_log_to_mlflow_and_tensorboard_from_the_cli(
    run_cli: Any, tmp_path: Path, clean_env: None
) -> None:
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = _cli_grid(run_cli, tmp_path, "--log-to", "mlflow,tensorboard")
    assert result.code == 0, result
    records = {r["key"]: r for r in results_file.read(tmp_path / "results.jsonl")}
    assert len(records) == 2 and {r["status"] for r in records.values()} == {"ok"}

    # MLflow: the default store is a `mlruns` folder beside the results file.
    store = tmp_path / "mlruns" / "mlflow.db"
    assert store.is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("tlbench")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    for run in runs:
        record = records[run.data.tags["tlbench.key"]]
        config = record["config"]
        assert run.info.status == "FINISHED"
        assert run.info.run_name == run_name(config, record["key"])
        tags = run.data.tags
        assert (tags["backbone"], tags["strategy"], tags["dataset"], tags["seed"]) == (
            "tiny",
            config["strategy"],
            "tinyset",
            "0",
        )
        assert tags["status"] == "ok"
        params = run.data.params
        assert params["lr"] == str(config["hyperparameters"]["lr"])
        assert params["epochs"] == "2" and params["image_size"] == "16"
        assert params["optimizer"] == config["hyperparameters"]["optimizer"]
        history = client.get_metric_history(run.info.run_id, "eval/accuracy")
        curve = record["accuracy"]["curve"]
        assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
            (p["epoch"], pytest.approx(p["eval_accuracy"])) for p in curve
        ]
        losses = client.get_metric_history(run.info.run_id, "train/loss")
        assert sorted(m.step for m in losses) == [1, 2]
        # The final figures are apart: the per-epoch throughput series holds the epochs
        # only (the final figure was appended to it at step 0), the final its own one value.
        speed = client.get_metric_history(run.info.run_id, "train/images_per_s")
        assert sorted(m.step for m in speed) == [1, 2]
        (final_speed,) = client.get_metric_history(run.info.run_id, "final/train_images_per_s")
        assert final_speed.value == pytest.approx(record["cost"]["train_images_per_s"])
        assert not any(k in run.data.metrics for k in ("train_images_per_s", "top1_final"))
        metrics = run.data.metrics
        assert metrics["final/top1_final"] == pytest.approx(record["accuracy"]["final"])
        assert metrics["final/train_seconds"] == pytest.approx(record["cost"]["train_seconds"])
        assert metrics["final/peak_memory_mb"] == pytest.approx(
            record["cost"]["peak_memory_bytes"] / 1e6
        )
        artifact = client.download_artifacts(
            run.info.run_id, "tlbench-record.json", str(tmp_path / run.info.run_id)
        )
        assert json.loads(Path(artifact).read_text()) == json.loads(json.dumps(record))

    # TensorBoard: one folder per run under tensorboard/<dataset>/ beside the results file.
    folders = sorted((tmp_path / "tensorboard" / "tinyset").iterdir())
    assert [f.name for f in folders] == sorted(run_name(r["config"], k) for k, r in records.items())
    for folder in folders:
        record = records[next(k for k in records if folder.name.endswith(k[:8]))]
        events = EventAccumulator(str(folder))
        events.Reload()
        curve = record["accuracy"]["curve"]
        for tag in ("train_loss", "eval_accuracy", "eval_loss"):
            assert [(e.step, e.value) for e in events.Scalars(series_name(tag))] == [
                (p["epoch"], pytest.approx(p[tag], rel=1e-6)) for p in curve
            ]
        assert (
            "train/loss" in events.Tags()["scalars"]
            and "train_loss" not in events.Tags()["scalars"]
        )
        (final,) = events.Scalars("final/top1_final")
        assert final.value == pytest.approx(record["accuracy"]["final"], rel=1e-6)
        # add_hparams' summary (the HPARAMS tab) is in the run's own folder.
        assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")


def test_select_logs_both_stages_to_the_trackers(
    run_cli: Any, tmp_path: Path, clean_env: None
) -> None:
    pytest.importorskip("tensorboard")
    result = run_cli("select", *_tiny_grid(tmp_path), "--top-k", "1", "--log-to", "tensorboard")
    assert result.code == 0, result
    records = results_file.read(tmp_path / "results.jsonl")
    tested = [r for r in records if not r["config"].get("holdout")]
    assert sorted(r["config"]["strategy"] for r in tested) == ["finetune", "linear"]
    # select chooses on validation runs, which the trackers hear of like any run.
    assert len(records) == 2 * len(tested)
    folders = sorted(f.name for f in (tmp_path / "tensorboard" / "tinyset").iterdir())
    assert folders == sorted(run_name(r["config"], r["key"]) for r in records)


def test_unknown_tracker_fails_before_training(run_cli: Any, tmp_path: Path) -> None:
    from imagetree import assert_clean_error

    result = _cli_grid(run_cli, tmp_path, "--log-to", "tensorbord")
    assert_clean_error(result, "unknown tracker 'tensorbord'", "Did you mean 'tensorboard'?")
    assert not (tmp_path / "results.jsonl").exists()


def _one_run(tmp_path: Path, strategies: Any = ("linear",), **options: Any) -> tlbench.Results:
    return tlbench.run(
        backbones=["tiny"],
        datasets=["tinyset"],
        strategies=strategies,
        image_size=16,
        epochs=2,
        batch_size=16,
        device="cpu",
        out=tmp_path / "results.jsonl",
        cache_dir=str(tmp_path / "cache"),
        progress=False,
        plugins=tiny_plugins(),
        **options,
    )


def test_config_file_key_and_tensorboard_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = tmp_path / "elsewhere"
    monkeypatch.setenv("TLBENCH_TENSORBOARD_DIR", str(logs))
    config = tmp_path / "grid.toml"
    config.write_text('log_to = ["tensorboard"]\n', encoding="utf-8")
    (record,) = _one_run(tmp_path, config=config)
    assert not (tmp_path / "tensorboard").exists()
    folder = logs / "tinyset" / run_name(record["config"], record["key"])
    events = EventAccumulator(str(folder))
    events.Reload()
    assert [e.step for e in events.Scalars("eval/accuracy")] == [1, 2]


def test_missing_package_warns_naming_the_extra_and_the_grid_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    with pytest.warns(RuntimeWarning, match=r"pip install 'tlbench\[wandb\]'"):
        results = _one_run(tmp_path, log_to="wandb")
    assert [r["status"] for r in results] == ["ok"]
    assert not (tmp_path / "wandb").exists()


def test_a_failing_tracker_warns_once_and_the_grid_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    pytest.importorskip("mlflow")
    # A tracking server that is not there (nothing listens on port 9), asked once.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = _one_run(tmp_path, log_to=["mlflow"], strategies=["linear", "scratch"])
    assert [r["status"] for r in results] == ["ok", "ok"]
    said = [str(w.message) for w in caught if "mlflow" in str(w.message)]
    assert len(said) == 1, said
    assert said[0].startswith("--log-to mlflow failed while starting")
    assert "the grid goes on without mlflow" in said[0]


# --------------------------------------------------------------------------- W&B offline


def _wandb_records(path: Path) -> list[Any]:
    """The protobuf records of an offline `.wandb` file (a LevelDB-style log of 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, out = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the block's tail is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        if kind == 0 and length == 0:
            break
        pending += data[pos : pos + length]
        pos += length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


@pytest.mark.slow  # wandb's library and its service process
def test_wandb_offline_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    (record,) = _one_run(tmp_path, log_to="wandb")
    (folder,) = (tmp_path / "wandb").glob("offline-run-*")  # offline: no key configured
    saved = json.loads((folder / "files" / "tlbench-record.json").read_text())
    assert saved == json.loads(json.dumps(record))
    (log,) = folder.glob("run-*.wandb")
    entries = _wandb_records(log)
    # The first run record opens the run; later ones update it (the status tag at the end).
    run, *updates = [e.run for e in entries if e.WhichOneof("record_type") == "run"]
    assert "status:ok" in [tag for u in updates for tag in u.tags]
    assert run.display_name == run_name(record["config"], record["key"])
    assert run.project == "tlbench" and run.run_group == "tinyset"
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["lr"] == record["config"]["hyperparameters"]["lr"]
    assert config["tlbench_key"] == record["key"]
    history = []
    for e in entries:
        if e.WhichOneof("record_type") == "history":
            items = {
                i.nested_key[0] if i.nested_key else i.key: i.value_json for i in e.history.item
            }
            if "eval/accuracy" in items:
                history.append((int(items["_step"]), json.loads(items["eval/accuracy"])))
    assert history == [
        (p["epoch"], pytest.approx(p["eval_accuracy"])) for p in record["accuracy"]["curve"]
    ]
    summary: dict[str, Any] = {}
    for e in entries:
        if e.WhichOneof("record_type") == "summary":
            for u in e.summary.update:
                summary[u.nested_key[0] if u.nested_key else u.key] = json.loads(u.value_json)
    assert summary["final/top1_final"] == pytest.approx(record["accuracy"]["final"])
    assert summary["status"] == "ok"


def test_series_names_are_grouped() -> None:
    """Trackers group what they log: train/, eval/, and final/ for a finished run's figures."""
    from tlbench.trackers import epoch_series, final_series

    epoch = {"epoch": 2, "train_loss": 0.5, "eval_accuracy": 0.75, "epoch_seconds": 3.0}
    assert epoch_series({**epoch, "train_images_per_s": 90.0}) == {
        "train/loss": 0.5,
        "eval/accuracy": 0.75,
        "train/epoch_seconds": 3.0,
        "train/images_per_s": 90.0,
    }
    record = {"status": "ok", "accuracy": {"final": 0.75}, "cost": {"train_images_per_s": 80.0}}
    final = final_series(record)
    assert final["final/top1_final"] == 0.75 and final["final/train_images_per_s"] == 80.0
    assert not set(final) & set(epoch_series(epoch))
