"""`--log-to wandb`: one Weights & Biases run per tlbench run, offline unless a key is set.

Mode: `WANDB_MODE` when the user sets it; otherwise online when
`WANDB_API_KEY` is set and offline when not, so a machine without an account
(or without network) still keeps every run, in folders `wandb sync` uploads
later. Where: `WANDB_DIR` when set, else beside the results file (W&B adds
its own `wandb/` folder there). The project is `WANDB_PROJECT` or "tlbench".

Each run is named `<backbone>-<strategy>-seed<N>-<key>`, grouped by dataset,
tagged with backbone, strategy, dataset, seed and status, and has the run's
config (hyperparameters by their own names), each epoch's metrics at step =
epoch (`train/loss`, `eval/accuracy`, ...), the accuracy and cost columns of
`Results.to_pandas()` in its summary (`final/top1_final`, ...),
and the run record as the file `tlbench-record.json`.
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


def mode() -> str:
    """offline unless the user chose a mode or configured a key."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


class Tracker(BaseTracker):
    name = "wandb"
    #: `wandb.init` starts W&B's service process: tens of seconds on a busy machine.
    timeout_s = 60.0

    def load(self) -> None:
        import wandb

        self.wandb = wandb

    def setup(self) -> None:
        self.dir = Path(os.environ.get("WANDB_DIR") or self.base).expanduser().absolute()
        self.dir.mkdir(parents=True, exist_ok=True)

    def start(self, config: dict[str, Any], key: str) -> Any:
        tags = run_tags(config)
        return self.wandb.init(
            project=os.environ.get("WANDB_PROJECT") or "tlbench",
            name=run_name(config, key),
            group=str(config.get("dataset")),
            tags=[f"{k}:{v}" for k, v in tags.items()],
            config={**run_params(config), "tlbench_key": key},
            dir=str(self.dir),
            mode=mode(),
            # Runs of a grid may overlap (devices, ray): each is its own W&B run.
            reinit="create_new",
        )

    def epoch(self, run: Any, epoch: int, metrics: dict[str, Any]) -> None:
        run.log(epoch_series(metrics), step=epoch)

    def finish(self, run: Any, record: dict[str, Any]) -> None:
        status = str(record.get("status", "failed"))
        try:
            run.summary.update({**final_series(record), "status": status})
            run.tags = (*run.tags, f"status:{status}")
            path = Path(run.dir) / "tlbench-record.json"
            path.write_text(record_json(record), encoding="utf-8")
            run.save(str(path), base_path=run.dir, policy="now")
        finally:
            run.finish(exit_code=0 if status == "ok" else 1)
