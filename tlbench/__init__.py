"""tlbench: which backbone, trained which way, gives the best accuracy for its cost on my images?"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # `tlbench.select(...)` picks a backbone in two stages: the module is callable, so
    # `tlbench.select.rank` and its other names stay where they were.
    from tlbench import events, select
    from tlbench.builtin.strategies import FINETUNE, LINEAR, LOGREG, LP_FT, SCRATCH
    from tlbench.errors import (
        ConfigError,
        DatasetError,
        DuplicateNameError,
        TlbenchError,
        UnknownNameError,
        WeightsUnavailableError,
    )
    from tlbench.executors import run_trial
    from tlbench.hookspecs import hookimpl
    from tlbench.plugin_types import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        Backbone,
        Dataset,
        DatasetRequest,
        DatasetSplits,
        Executor,
        ExecutorKind,
        ExecutorOptions,
        Family,
        Hyperparameters,
        ImageSource,
        PlannedRun,
        Preprocessing,
        RunSpec,
        Strategy,
        StrategyOption,
        Workspace,
        all_trainable,
        stage_parameters,
    )
    from tlbench.plugins import Plugins
    from tlbench.python_api import (
        Results,
        compare,
        create_backbone,
        list_backbones,
        list_datasets,
        list_strategies,
        load_model,
        load_results,
        run,
        run_options,
    )
    from tlbench.version import __version__

#: each public name -> the module that holds it (None: a module of its own), imported on
#: first use (PEP 562). `import tlbench` runs no other module, so `tlbench.cli` takes the
#: stop signals on the first line of `main` moments after the interpreter starts, and
#: `tlbench.Backbone` still costs one import when first read.
_HOMES: dict[str, str | None] = {
    "events": None,
    "select": None,
    "FINETUNE": "tlbench.builtin.strategies",
    "LINEAR": "tlbench.builtin.strategies",
    "LOGREG": "tlbench.builtin.strategies",
    "LP_FT": "tlbench.builtin.strategies",
    "SCRATCH": "tlbench.builtin.strategies",
    "ConfigError": "tlbench.errors",
    "DatasetError": "tlbench.errors",
    "DuplicateNameError": "tlbench.errors",
    "TlbenchError": "tlbench.errors",
    "UnknownNameError": "tlbench.errors",
    "WeightsUnavailableError": "tlbench.errors",
    "run_trial": "tlbench.executors",
    "hookimpl": "tlbench.hookspecs",
    "IMAGENET_MEAN": "tlbench.plugin_types",
    "IMAGENET_STD": "tlbench.plugin_types",
    "Backbone": "tlbench.plugin_types",
    "Dataset": "tlbench.plugin_types",
    "DatasetRequest": "tlbench.plugin_types",
    "DatasetSplits": "tlbench.plugin_types",
    "Executor": "tlbench.plugin_types",
    "ExecutorKind": "tlbench.plugin_types",
    "ExecutorOptions": "tlbench.plugin_types",
    "Family": "tlbench.plugin_types",
    "Hyperparameters": "tlbench.plugin_types",
    "ImageSource": "tlbench.plugin_types",
    "PlannedRun": "tlbench.plugin_types",
    "Preprocessing": "tlbench.plugin_types",
    "RunSpec": "tlbench.plugin_types",
    "Strategy": "tlbench.plugin_types",
    "StrategyOption": "tlbench.plugin_types",
    "Workspace": "tlbench.plugin_types",
    "all_trainable": "tlbench.plugin_types",
    "stage_parameters": "tlbench.plugin_types",
    "Plugins": "tlbench.plugins",
    "Results": "tlbench.python_api",
    "compare": "tlbench.python_api",
    "create_backbone": "tlbench.python_api",
    "list_backbones": "tlbench.python_api",
    "list_datasets": "tlbench.python_api",
    "list_strategies": "tlbench.python_api",
    "load_model": "tlbench.python_api",
    "load_results": "tlbench.python_api",
    "run": "tlbench.python_api",
    "run_options": "tlbench.python_api",
    "__version__": "tlbench.version",
}

__all__ = [
    "FINETUNE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LINEAR",
    "LOGREG",
    "LP_FT",
    "SCRATCH",
    "Backbone",
    "ConfigError",
    "Dataset",
    "DatasetError",
    "DatasetRequest",
    "DatasetSplits",
    "DuplicateNameError",
    "Executor",
    "ExecutorKind",
    "ExecutorOptions",
    "Family",
    "Hyperparameters",
    "ImageSource",
    "PlannedRun",
    "Plugins",
    "Preprocessing",
    "Results",
    "RunSpec",
    "Strategy",
    "StrategyOption",
    "TlbenchError",
    "UnknownNameError",
    "WeightsUnavailableError",
    "Workspace",
    "__version__",
    "all_trainable",
    "compare",
    "create_backbone",
    "events",
    "hookimpl",
    "list_backbones",
    "list_datasets",
    "list_strategies",
    "load_model",
    "load_results",
    "run",
    "run_options",
    "run_trial",
    "select",
    "stage_parameters",
]


def __getattr__(name: str) -> Any:
    """`tlbench.<name>`: a public name from its module, or a submodule, imported now."""
    if name in _HOMES:
        home = _HOMES[name]
        value = importlib.import_module(f"tlbench.{name}" if home is None else home)
        if home is not None:
            value = getattr(value, name)
        globals()[name] = value
        return value
    try:  # `import tlbench` then `tlbench.plugins.Plugins`: a submodule, as if imported eagerly
        return importlib.import_module(f"tlbench.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"tlbench.{name}":
            raise
    raise AttributeError(f"module 'tlbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
