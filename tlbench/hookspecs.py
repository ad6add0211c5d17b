"""Every hook a tlbench plugin can implement, grouped by when it is called.

Implement a hook with `@tlbench.hookimpl` on a function of the same name in a
module (or class) listed under the `tlbench` entry-point group. An
implementation may accept only the arguments it needs. Observer hooks are
called through pluggy, so `tryfirst`, `trylast` and `wrapper=True` mean what
pluggy documents. The plugin author guide, `docs/plugins.md`, is checked
against this module by the test suite.

This module imports only `tlbench.plugin_types`: a hook receives plain, picklable,
torch-free values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from tlbench.plugin_types import Backbone, Dataset, ExecutorKind, PlannedRun, RunSpec, Strategy
    from tlbench.record import RunRecord

hookspec = pluggy.HookspecMarker("tlbench")
hookimpl = pluggy.HookimplMarker("tlbench")


# --------------------------------------------------------------------------- discovery
# Called once when the plugin manager loads, in plugin registration order. The
# core owns the registries: duplicates and "did you mean" errors are its job.


@hookspec
def tlbench_register_backbones(register: Callable[[Backbone], None]) -> None:
    """Register backbones.

    Called once at load time. Call `register(backbone)` with a
    `tlbench.Backbone` for each one the plugin provides. `register` also
    accepts a `tlbench.Family` (names `family:<argument>`, e.g. `timm:<model>`).
    Return nothing.
    """


@hookspec
def tlbench_register_datasets(register: Callable[[Dataset], None]) -> None:
    """Register datasets.

    Called once at load time. Call `register(dataset)` with a
    `tlbench.Dataset` for each one. A dataset whose name takes an argument
    (`imagefolder:<path>`) sets `takes_argument=True`. Return nothing.
    """


@hookspec
def tlbench_register_strategies(register: Callable[[Strategy], None]) -> None:
    """Register strategies.

    Called once at load time. Call `register(strategy)` with a
    `tlbench.Strategy` for each one. `register` also accepts a
    `tlbench.Family` (names `family:<argument>`, e.g. `partial:<N>`). Return nothing.
    """


@hookspec
def tlbench_register_executors(register: Callable[[ExecutorKind], None]) -> None:
    """Register executors: where and how the runs of a grid execute.

    Called once at load time. Call `register(kind)` with a
    `tlbench.ExecutorKind`; `--executor NAME` then calls
    `kind.create(options)` and runs the grid's pending specs through the
    returned `tlbench.Executor`. Return nothing.
    """


# --------------------------------------------------------------------------- observers
# Called in the process that drives the grid (the one the user started), also
# when the runs execute elsewhere. Observers follow; they cannot change a run.
# An observer that raises is reported once and neither the other observers nor
# the grid stop.


@hookspec
def tlbench_grid_started(plan: list[PlannedRun]) -> None:
    """A grid is about to run; `plan` lists every run with its status.

    Status "pending" runs will train, "done" ones are already in the results
    file and "skipped" ones cannot run (`reason` says why). Return nothing.
    """


@hookspec
def tlbench_run_started(run: RunSpec) -> None:
    """A run is about to start (before its data is decoded).

    `run` is the `tlbench.RunSpec`: backbone, dataset, strategy, seed,
    hyperparameters and its stable `key`. Return nothing.
    """


@hookspec
def tlbench_run_phase(run: RunSpec, phase: str, done: int | None, total: int | None) -> None:
    """A run entered a phase, or made progress within one.

    `phase` is "decode train" / "decode <eval split>" (then "decode" with
    `done` of `total` images while decoding), "build", "features", "train" or
    "eval" (training and evaluation alternate every epoch). `done` and `total`
    are None when the phase has no count. Return nothing.
    """


@hookspec
def tlbench_epoch_ended(run: RunSpec, epoch: int, metrics: dict[str, Any]) -> None:
    """An epoch of `run` finished and was evaluated.

    `epoch` counts from 1. `metrics` holds `train_loss`, `eval_accuracy`,
    `eval_balanced_accuracy`, `eval_loss`, `epoch_seconds` and
    `train_images_per_s`, plus `epochs` (how many the run has). Return nothing.
    """


@hookspec
def tlbench_run_finished(run: RunSpec, record: RunRecord) -> None:
    """A run ended and its `record` (a `tlbench.record.RunRecord`) is in the results file.

    `record["status"]` is "ok", "failed", "skipped" or "interrupted". Return nothing.
    """


@hookspec
def tlbench_grid_finished(records: list[RunRecord]) -> None:
    """Every run of the grid ended; `records` are this invocation's records, in order.

    Return nothing.
    """
