"""Builtin executors: where the runs of a grid execute (`--executor NAME`).

- `inline`: one run after another in this process (the default).
- `process`: each run in a fresh subprocess; a crash of the interpreter is a
  failed run, not the end of the grid.
- `devices`: one worker process per entry of `--devices` (default: every
  visible GPU); runs go to whichever worker is free.
- `ray`: Ray tasks on a local Ray instance or a running cluster
  (`--ray-address`); needs `pip install 'tlbench[ray]'`.

Executors are plugins like any other: a third party registers its own with
`tlbench_register_executors(register)`, and runs each spec with `run_trial`
(`tlbench.run_trial`) wherever it likes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tlbench.hookspecs import hookimpl
from tlbench.plugin_types import ExecutorKind, ExecutorOptions

if TYPE_CHECKING:
    from tlbench.plugin_types import RunSpec, Workspace
    from tlbench.record import RunRecord


def run_trial(spec: RunSpec, workspace: Workspace, **options: Any) -> RunRecord:
    """Run one spec in this process and return its record: `tlbench.trial.run_trial`,
    imported when first called (so `import tlbench` stays free of torch)."""
    from tlbench.trial import run_trial as run

    return run(spec, workspace, **options)


def _inline(options: ExecutorOptions):
    from tlbench.executors.inline import InlineExecutor

    return InlineExecutor(options)


def _process(options: ExecutorOptions):
    from tlbench.executors.pool import ProcessExecutor

    return ProcessExecutor(options)


def _devices(options: ExecutorOptions):
    from tlbench.executors.pool import DevicesExecutor

    return DevicesExecutor(options)


def _ray(options: ExecutorOptions):
    from tlbench.executors.ray import RayExecutor

    return RayExecutor(options)


EXECUTORS = (
    ExecutorKind("inline", "one run after another in this process (default)", _inline),
    ExecutorKind(
        "process",
        "each run in a fresh subprocess: its own memory peak; a crash fails one run",
        _process,
    ),
    ExecutorKind(
        "devices",
        "one worker process per --devices entry (default: every GPU); runs go to the free one",
        _devices,
    ),
    ExecutorKind(
        "ray", "Ray tasks, one GPU (or CPU) each, on a local instance or --ray-address", _ray
    ),
)


@hookimpl
def tlbench_register_executors(register):
    for kind in EXECUTORS:
        register(kind)
