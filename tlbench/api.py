"""Deprecated: the types plugins see are in `tlbench.plugin_types`; this name goes next release.

`tlbench.api` named the plugin types while `tlbench.python_api` is the user's
Python API; the types moved to `tlbench.plugin_types` (issue 23) and are
re-exported here, unchanged, for one release. Plugins import them from the
package root (`tlbench.Backbone`, `tlbench.RunSpec`, ...).
"""

from __future__ import annotations

import warnings

from tlbench.plugin_types import (  # noqa: F401
    IMAGENET_MEAN,
    IMAGENET_STD,
    RESULTS_VERSION,
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
    SearchDim,
    Strategy,
    StrategyOption,
    Workspace,
    all_trainable,
    call_param_groups,
    stage_parameters,
)

warnings.warn(
    "tlbench.api is deprecated: import the plugin types from tlbench (tlbench.Backbone, "
    "tlbench.RunSpec, ...) or tlbench.plugin_types",
    DeprecationWarning,
    stacklevel=2,
)
