"""`--log-to mlflow`: one MLflow run per tlbench run.

Where: the tracking URI in `MLFLOW_TRACKING_URI` when set (a server, a
database, Databricks); otherwise a local `mlruns` folder beside the results
file, holding an SQLite store (`mlruns/mlflow.db`, MLflow's recommended local
backend) and the artifacts (`mlruns/artifacts`). See it with
`mlflow ui --backend-store-uri sqlite:///results/mlruns/mlflow.db`.

The experiment is named by `MLFLOW_EXPERIMENT_NAME` when set, else
"tlbench". Each run is named `<backbone>-<strategy>-seed<N>-<key>` and has:

- params: the run's config (backbone, weights, dataset, strategy, seed,
  image size, execution settings) with every hyperparameter by its own name;
- metrics: each epoch's `train/loss`, `eval/accuracy`, `eval/loss`, ... at
  step = epoch (`tlbench.trackers.series_name`); at the end the accuracy and
  cost columns of `Results.to_pandas()` as `final/top1_final`,
  `final/train_seconds`, `final/peak_memory_mb`, ...;
- tags: backbone, strategy, dataset, seed, status, `tlbench.key`;
- the run record as the artifact `tlbench-record.json`;
- MLflow status FINISHED (ok), FAILED (failed) or KILLED (interrupted).

The client API (`MlflowClient`) is used rather than `mlflow.start_run`, so
overlapping runs stay apart and a user's own active run is left alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tlbench.trackers import (
    BaseTracker,
    epoch_series,
    final_series,
    record_json,
    run_name,
    run_params,
    run_tags,
)

#: MLflow caps a param value at 6000 characters (older servers: 500).
MAX_PARAM = 500
STATUS = {"ok": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}


def default_store(base: Path) -> tuple[str, str]:
    """(tracking URI, artifact location) of the local store beside the results file."""
    folder = base / "mlruns"
    return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()


class Tracker(BaseTracker):
    name = "mlflow"

    def load(self) -> None:
        import mlflow.entities  # noqa: F401 - fails here, once, when it cannot be imported
        from mlflow.tracking import MlflowClient

        self.client_class = MlflowClient
        # The local store's first use creates its database (~10 s on a busy machine):
        # slow, never stuck. A server gets the ordinary timeout.
        self.setup_timeout_s = None if os.environ.get("MLFLOW_TRACKING_URI") else 120.0

    def setup(self) -> None:
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        artifacts = None
        if not uri:
            (self.base / "mlruns").mkdir(parents=True, exist_ok=True)
            uri, artifacts = default_store(self.base)
        self.client = self.client_class(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "tlbench"
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            self.experiment_id = self.client.create_experiment(name, artifact_location=artifacts)
        else:
            self.experiment_id = experiment.experiment_id

    def start(self, config: dict[str, Any], key: str) -> str:
        from mlflow.entities import Param

        tags = {**run_tags(config), "status": "running", "tlbench.key": key}
        run = self.client.create_run(self.experiment_id, run_name=run_name(config, key), tags=tags)
        run_id = run.info.run_id
        params = [Param(k, str(v)[:MAX_PARAM]) for k, v in run_params(config).items()]
        self.client.log_batch(run_id, params=params)
        return run_id

    def epoch(self, run_id: str, epoch: int, metrics: dict[str, Any]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, epoch) for k, v in epoch_series(metrics).items()]
        self.client.log_batch(run_id, metrics=batch)

    def finish(self, run_id: str, record: dict[str, Any]) -> None:
        import time

        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        status = record.get("status", "failed")
        # `final/...`: a final figure joins no per-epoch series (it was logged at step 0
        # of `train_images_per_s`, the epochs' own series).
        final = [Metric(k, v, now, 0) for k, v in final_series(record).items()]
        tags = [RunTag("status", str(status))]
        if record.get("reason"):
            tags.append(RunTag("reason", str(record["reason"])[:5000]))
        self.client.log_batch(run_id, metrics=final, tags=tags)
        self.client.log_text(run_id, record_json(record), "tlbench-record.json")
        self.client.set_terminated(run_id, STATUS.get(str(status), "FAILED"))
