"""Experiment trackers: MLflow, TensorBoard and Weights & Biases as observer plugins.

`tlbench run --log-to mlflow,tensorboard` (or `log_to = [...]` in a config
file, or `tlbench.run(..., log_to=[...])`) registers one observer per name
for the grid; each hears the same hooks as the console (`tlbench.hookspecs`)
in the driver process, whatever executor runs the trials, and writes each
tlbench run as one run of its tracker. None is loaded unless named, and each
imports its library only when a grid starts.

A tracker never stops the grid: a missing package is one warning at startup
naming the extra to install (`pip install 'tlbench[mlflow]'`) and the grid
runs without it; a tracker that fails later (a server down, a full disk)
warns once and is silent for the rest of the grid, and so is one that does
not answer within its timeout (`TLBENCH_TRACKER_TIMEOUT`, default 10 s a
call): each tracker's calls run in a thread of its own, and a call that
hangs (a server that accepts and never answers) is left behind. Where each writes by
default is beside the results file (see each module and docs/trackers.md).
"""

from __future__ import annotations

import abc
import concurrent.futures
import difflib
import importlib
import importlib.util
import json
import os
import queue
import threading
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tlbench.errors import ConfigError
from tlbench.hookspecs import hookimpl

#: name -> (module with the `Tracker` class, package it needs, extra that installs it).
TRACKERS: dict[str, tuple[str, str, str]] = {
    "mlflow": ("tlbench.trackers.mlflow", "mlflow", "mlflow"),
    "tensorboard": ("tlbench.trackers.tensorboard", "tensorboard", "tensorboard"),
    "wandb": ("tlbench.trackers.wandb", "wandb", "wandb"),
}


def check_names(names: Iterable[str]) -> list[str]:
    """The tracker names, each once; an unknown one raises with the close match."""
    checked: list[str] = []
    for name in names:
        key = name.strip().lower()
        if key not in TRACKERS:
            close = difflib.get_close_matches(key, list(TRACKERS), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"--log-to: unknown tracker {name!r}.{hint} Known: {', '.join(TRACKERS)}"
            )
        if key not in checked:
            checked.append(key)
    return checked


def plugin_name(tracker: str) -> str:
    """The name a tracker is registered under in the plugin manager."""
    return f"tracker-{tracker}"


def register_trackers(
    plugins: Any, names: Iterable[str], results_file: str | Path | None
) -> list[str]:
    """Register the named trackers as observers of `plugins`; returns their plugin names.

    `results_file` places the trackers' default output (beside it); None (no
    results file) places it in the current folder. A tracker whose package is
    not installed is left out with a warning; the grid runs without it.
    Unregister them with `plugins.unregister(name)` when the grid is over.
    """
    base = Path.cwd() if results_file is None else Path(results_file).expanduser().absolute().parent
    registered: list[str] = []
    for name in check_names(names):
        module, package, extra = TRACKERS[name]
        if plugins.pm.has_plugin(plugin_name(name)):
            continue  # already following this grid (a second stage of the same command)
        if importlib.util.find_spec(package) is None:
            warnings.warn(
                f"--log-to {name}: the {package!r} package is not installed "
                f"(pip install 'tlbench[{extra}]'); the grid runs without {name}",
                RuntimeWarning,
                stacklevel=2,
            )
            continue
        tracker = importlib.import_module(module).Tracker(base)
        plugins.register_observer(tracker, name=plugin_name(name))
        registered.append(plugin_name(name))
    return registered


# --------------------------------------------------------------------------- shared by every tracker


def run_params(config: dict[str, Any]) -> dict[str, Any]:
    """A record's or spec's config as flat parameters: hyperparameters by their own names."""
    params: dict[str, Any] = {}
    for key, value in config.items():
        if key == "hyperparameters" and isinstance(value, dict):
            params.update(value)
        elif isinstance(value, dict):
            params.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            params[key] = value
    return params


def run_tags(config: dict[str, Any]) -> dict[str, str]:
    """Tags every tracker sets: backbone, strategy, dataset, seed."""
    return {k: str(config.get(k)) for k in ("backbone", "strategy", "dataset", "seed")}


#: what a tracker logs every epoch (the rest of the epoch's metrics are also logged).
CURVE_METRICS = ("train_loss", "eval_accuracy", "eval_loss")


def epoch_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric per-epoch metrics, without the epoch counters; the learning rate of each
    parameter group (`metrics["lr"]`) as its own series, `lr/<group>` (`lr/head`)."""
    flat = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    for group, rate in (metrics.get("lr") or {}).items():
        flat[f"lr/{group}"] = rate
    return {
        k: float(v)
        for k, v in flat.items()
        if k not in ("epoch", "epochs")
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
        and v == v
    }


def final_metrics(record: dict[str, Any]) -> dict[str, float]:
    """A finished run's accuracy and cost as flat numbers (the `Results.to_pandas` columns)."""
    from tlbench.record import flat_record

    return {
        k: float(v)
        for k, v in flat_record(record).items()
        if k in FINAL_COLUMNS and isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
    }


#: the columns of `flat_record` a tracker logs when a run finishes.
FINAL_COLUMNS = (
    "top1_final",
    "top1_best",
    "best_epoch",
    "balanced_top1_final",
    "epochs_completed",
    "wall_seconds",
    "data_prep_seconds",
    "feature_seconds",
    "train_seconds",
    "eval_seconds",
    "train_images_per_s",
    "eval_images_per_s",
    "peak_memory_mb",
    "trainable_params",
    "total_params",
    "forward_flops_per_image",
    "train_energy_j",
    "latency_ms_p50",
    "latency_ms_p90",
    "inference_images_per_s",
    "inference_j_per_1000",
    "onnx_top1",
)


def series_name(name: str) -> str:
    """A per-epoch metric's name in the trackers, grouped: `train/loss`, `eval/accuracy`,
    `train/images_per_s`, `train/epoch_seconds`; names with a group keep it (`lr/head`)."""
    if "/" in name:
        return name
    group, _, rest = name.partition("_")
    return f"{group}/{rest}" if group in ("train", "eval") and rest else f"train/{name}"


def epoch_series(metrics: dict[str, Any]) -> dict[str, float]:
    """An epoch's metrics as every tracker logs them at step = epoch (`series_name`)."""
    return {series_name(k): v for k, v in epoch_metrics(metrics).items()}


def final_series(record: dict[str, Any]) -> dict[str, float]:
    """A finished run's figures as every tracker logs them: `final/<column>`
    (`final/top1_final`, `final/train_images_per_s`), never in a per-epoch series."""
    return {f"final/{k}": v for k, v in final_metrics(record).items()}


def record_json(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=2, sort_keys=True, default=str) + "\n"


#: seconds a tracker call may take before the tracker is dropped for the grid.
DEFAULT_TIMEOUT_S = 10.0


def call_timeout(default: float = DEFAULT_TIMEOUT_S) -> float:
    """`TLBENCH_TRACKER_TIMEOUT` (seconds, > 0), else `default`."""
    try:
        value = float(os.environ.get("TLBENCH_TRACKER_TIMEOUT", ""))
    except ValueError:
        return default
    return value if value > 0 and value == value else default


class _Caller:
    """One daemon thread running a tracker's calls in order; a call that hangs is left there.

    A daemon thread, not a `ThreadPoolExecutor`: the interpreter joins an
    executor's threads at exit, so one stuck call would keep tlbench alive.
    """

    def __init__(self, name: str):
        self.calls: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._serve, name=f"tlbench-{name}", daemon=True)
        self.thread.start()

    def submit(self, call: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.calls.put((future, call, args))
        return future

    def _serve(self) -> None:
        while True:
            future, call, args = self.calls.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call(*args))
            except BaseException as exc:  # handed to the waiting hook, which warns
                future.set_exception(exc)


class BaseTracker:
    """Turns the observer hooks into a tracker's calls, keyed by run, failing once.

    Subclasses implement `start(run)` -> handle, `epoch(handle, epoch, metrics)`
    and `finish(handle, record)`. Runs may overlap (the `devices` and `ray`
    executors), so each open run is kept by its key. The first exception a
    tracker raises is one warning; the tracker is then silent for the grid.
    So is a call that has not returned after `timeout_s` (a server that
    accepts and never answers, retries with back-off): the grid goes on and
    the stuck call is left in the tracker's own thread.
    """

    #: the name shown in the warning.
    name = "tracker"
    #: seconds one call may take (`TLBENCH_TRACKER_TIMEOUT` overrides it); `load` has none.
    timeout_s = DEFAULT_TIMEOUT_S
    #: seconds `setup` may take, when it differs (a local store made on first use).
    setup_timeout_s: float | None = None

    def __init__(self, base: Path):
        self.base = base
        self.open: dict[str, Any] = {}
        self.failed = False
        self._caller: _Caller | None = None

    def _warn(self, text: str) -> None:
        self.failed = True
        warnings.warn(
            f"--log-to {self.name} {text}; the grid goes on without {self.name}",
            RuntimeWarning,
            stacklevel=3,
        )

    def _guard(
        self, action: str, call: Any, *args: Any, timeout: bool = True, limit: float | None = None
    ) -> Any:
        if self.failed:
            return None
        if not timeout:
            try:
                return call(*args)
            except Exception as exc:
                self._warn(f"failed while {action} ({type(exc).__name__}: {exc})")
                return None
        if self._caller is None:
            self._caller = _Caller(self.name)
        future = self._caller.submit(call, *args)
        limit = limit or call_timeout(self.timeout_s)
        try:
            return future.result(timeout=limit)
        except concurrent.futures.TimeoutError as exc:
            if future.done():  # the call's own TimeoutError (a socket's)
                self._warn(f"failed while {action} ({type(exc).__name__}: {exc})")
            else:
                self._caller = None  # its thread is stuck in that call: left behind
                self._warn(f"did not answer within {limit:g} s while {action}")
        except Exception as exc:
            self._warn(f"failed while {action} ({type(exc).__name__}: {exc})")
        return None

    @hookimpl
    def tlbench_grid_started(self, plan: list[Any]) -> None:
        self.failed = False
        self._guard("loading", self.load, timeout=False)  # an import: slow, never stuck
        self._guard("starting", self.setup, limit=self.setup_timeout_s)

    @hookimpl
    def tlbench_run_started(self, run: Any) -> None:
        handle = self._guard(f"starting {run.label}", self.start, run.config(), run.key)
        if handle is not None:
            self.open[run.key] = handle

    @hookimpl
    def tlbench_epoch_ended(self, run: Any, epoch: int, metrics: dict[str, Any]) -> None:
        handle = self.open.get(run.key)
        if handle is not None:
            self._guard(f"logging epoch {epoch} of {run.label}", self.epoch, handle, epoch, metrics)

    @hookimpl
    def tlbench_run_finished(self, run: Any, record: dict[str, Any]) -> None:
        if record.get("status") == "skipped":
            return  # never started: nothing trained, nothing to track
        handle = self.open.pop(run.key, None)
        if handle is None:  # its start was lost (a worker died before saying so)
            handle = self._guard(f"starting {run.label}", self.start, run.config(), run.key)
        if handle is not None:
            self._guard(f"finishing {run.label}", self.finish, handle, record)

    @hookimpl
    def tlbench_grid_finished(self, records: list[dict[str, Any]]) -> None:
        self.open.clear()
        self._guard("closing", self.teardown)

    def load(self) -> None:
        """Once per grid, first: import the library (not timed: an import can be slow)."""

    def setup(self) -> None:
        """Once per grid, before any run, within the timeout: connect."""

    def teardown(self) -> None:
        """Once per grid, after every run."""

    @abc.abstractmethod
    def start(self, config: dict[str, Any], key: str) -> Any:
        """One tracker run for a tlbench run; returns the handle `epoch` and `finish` get."""

    @abc.abstractmethod
    def epoch(self, handle: Any, epoch: int, metrics: dict[str, Any]) -> None:
        """Log one epoch's metrics."""

    @abc.abstractmethod
    def finish(self, handle: Any, record: dict[str, Any]) -> None:
        """Log the run's result and close its tracker run."""


def run_name(config: dict[str, Any], key: str) -> str:
    """`tiny-linear-seed0-61a2b73b`: readable, and unique per run key."""
    return f"{config.get('backbone')}-{config.get('strategy')}-seed{config.get('seed')}-{key[:8]}"
