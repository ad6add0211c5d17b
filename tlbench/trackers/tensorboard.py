"""`--log-to tensorboard`: TensorBoard event files, one folder per tlbench run.

Where: `$TLBENCH_TENSORBOARD_DIR` when set, else a `tensorboard` folder
beside the results file; each run writes to
`<dir>/<dataset>/<backbone>-<strategy>-seed<N>-<key>`, so
`tensorboard --logdir results/tensorboard` shows every run, grouped by dataset.

Written with `torch.utils.tensorboard.SummaryWriter` (it needs the
`tensorboard` package): per epoch (step = epoch) the scalars `train/loss`,
`eval/accuracy`, `eval/loss` and the rest of the epoch's metrics; at the end
the run's hyperparameters with its accuracy and cost (`add_hparams`, the
HPARAMS tab: `final/top1_final`, `final/top1_best`, `final/train_seconds`, ...).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from tlbench.trackers import BaseTracker, epoch_series, final_series, run_name, run_params

#: the environment variable that moves the event files elsewhere.
ENV = "TLBENCH_TENSORBOARD_DIR"


def log_dir(base: Path) -> Path:
    """The root of the event files: $TLBENCH_TENSORBOARD_DIR or `tensorboard/` beside the results."""
    given = os.environ.get(ENV)
    return Path(given).expanduser().absolute() if given else base / "tensorboard"


def _folder_name(text: str) -> str:
    """A dataset name (`imagefolder:/data/flowers`) as one folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "dataset"


def _hparam(value: Any) -> Any:
    """add_hparams takes numbers, strings and booleans only."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class Tracker(BaseTracker):
    name = "tensorboard"

    def load(self) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self.writer_class = SummaryWriter

    def setup(self) -> None:
        self.root = log_dir(self.base)

    def start(self, config: dict[str, Any], key: str) -> Any:
        folder = self.root / _folder_name(str(config.get("dataset"))) / run_name(config, key)
        writer = self.writer_class(log_dir=str(folder))
        return {"writer": writer, "params": run_params(config)}

    def epoch(self, handle: Any, epoch: int, metrics: dict[str, Any]) -> None:
        writer = handle["writer"]
        for k, v in epoch_series(metrics).items():
            writer.add_scalar(k, v, global_step=epoch)
        writer.flush()

    def finish(self, handle: Any, record: dict[str, Any]) -> None:
        writer = handle["writer"]
        try:
            if record.get("status") == "ok":
                hparams = {k: _hparam(v) for k, v in handle["params"].items()}
                # The final figures under their own names: the epoch scalars keep theirs.
                metrics = final_series(record)
                # run_name=".": in the run's own folder, not a timestamped subfolder.
                writer.add_hparams(hparams, metrics, run_name=".")
        finally:
            writer.close()
