"""tlbench: which backbone, trained which way, gives the best accuracy for its cost on my images?"""

from __future__ import annotations

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
