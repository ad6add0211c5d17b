"""Every hook a tlbench plugin can implement, grouped by when it is called.

Implement a hook with `@tlbench.hookimpl` on a function of the same name in a
module (or class) listed under the `tlbench` entry-point group. An
implementation may accept only the arguments it needs. The plugin author
guide, `docs/plugins.md`, is checked against this module by the test suite.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from tlbench.api import Backbone, Dataset, Strategy
    from tlbench.runner import RunSpec

hookspec = pluggy.HookspecMarker("tlbench")
hookimpl = pluggy.HookimplMarker("tlbench")


# --------------------------------------------------------------------------- discovery
# Called once when the plugin manager loads, in plugin registration order. The
# core owns the registries: duplicates and "did you mean" errors are its job.


@hookspec
def tlbench_register_backbones(register: Callable[[Backbone], None]) -> None:
    """Register backbones.

    Called once at load time. Call `register(backbone)` with a
    `tlbench.api.Backbone` for each one the plugin provides. `register` also
    accepts a `tlbench.Family` (names `family:<argument>`, e.g. `timm:<model>`).
    Return nothing.
    """


@hookspec
def tlbench_register_datasets(register: Callable[[Dataset], None]) -> None:
    """Register datasets.

    Called once at load time. Call `register(dataset)` with a
    `tlbench.api.Dataset` for each one. A dataset whose name takes an argument
    (`imagefolder:<path>`) sets `takes_argument=True`. Return nothing.
    """


@hookspec
def tlbench_register_strategies(register: Callable[[Strategy], None]) -> None:
    """Register strategies.

    Called once at load time. Call `register(strategy)` with a
    `tlbench.api.Strategy` for each one. `register` also accepts a
    `tlbench.Family` (names `family:<argument>`, e.g. `partial:<N>`). Return nothing.
    """


# --------------------------------------------------------------------------- observers
# Called by the runner while a grid runs. Observers follow; they cannot change
# a run. An observer that raises is reported and the grid goes on.


@hookspec
def tlbench_run_started(run: RunSpec) -> None:
    """A run is about to start (after its data is ready, before training).

    `run` is the `tlbench.runner.RunSpec`: backbone, dataset, strategy, seed,
    hyperparameters and its stable `key`. Return nothing.
    """


@hookspec
def tlbench_epoch_ended(run: RunSpec, epoch: int, metrics: dict[str, Any]) -> None:
    """An epoch of `run` finished and was evaluated.

    `epoch` counts from 1. `metrics` holds `train_loss`, `eval_accuracy`,
    `eval_balanced_accuracy`, `eval_loss`, `epoch_seconds` and
    `train_images_per_s`. Return nothing.
    """


@hookspec
def tlbench_run_finished(run: RunSpec, record: dict[str, Any]) -> None:
    """A run ended and its result `record` was appended to the results file.

    `record["status"]` is "ok", "failed", "skipped" or "interrupted". Return nothing.
    """


@hookspec
def tlbench_grid_finished(records: list[dict[str, Any]]) -> None:
    """Every run of the grid ended; `records` are this invocation's records, in order.

    Return nothing.
    """
