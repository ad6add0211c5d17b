"""Deprecated: what `tlbench.engine` held now lives in modules named for each job.

Kept for one release so that code importing `tlbench.engine` keeps working;
import from these instead:

- `tlbench.execution`: `Execution` (precision, memory format, compile), `PRECISIONS`;
- `tlbench.classifier`: `ImageClassifier`, `FeatureHead`, `Normalize`, `count_parameters`;
- `tlbench.optim`: `make_optimizer`, `make_schedule`, `TrainStep`, `group_rates`;
- `tlbench.image_fit`: `train_images`, `fit_images`, `BatchLoader` (the loop on images);
- `tlbench.head_fit`: `train_head_on_features` (the loop on cached features);
- `tlbench.fitting`: `FitResult`, `Diverged` (what every fit shares);
- `tlbench.evaluation`: `evaluate_logits`, `evaluate_images`, `eval_counts`;
- `tlbench.extraction`: `extract_features`, `warm_up_extraction`;
- `tlbench.memory`: `is_out_of_memory`, `next_attempt_after_oom`, `Attempt`, `DataOnDeviceOOM`.

Names are re-exported here, not copied: patch a module's global (its `time`,
say) in the module that uses it. `PhaseClock`, `synchronize` and
`release_host_memory`, which this module imported, are re-exported too.
"""

from __future__ import annotations

from tlbench.classifier import (  # noqa: F401
    FeatureHead,
    ImageClassifier,
    Normalize,
    count_parameters,
)
from tlbench.clocks import PhaseClock  # noqa: F401
from tlbench.devices import synchronize  # noqa: F401
from tlbench.evaluation import (  # noqa: F401
    eval_counts,
    evaluate_images,
    evaluate_logits,
    image_logits,
)
from tlbench.execution import (  # noqa: F401
    COMPILE_BACKEND,
    PRECISIONS,
    Execution,
    NothingCompiled,
    compiled_graph_count,
    set_tf32,
)
from tlbench.extraction import (  # noqa: F401
    extract_features,
    warm_up_extraction,
)
from tlbench.fitting import (  # noqa: F401
    IDLE_THREAD_PREFIX,
    Diverged,
    EpochCallback,
    FitResult,
    PhaseCallback,
)
from tlbench.head_fit import (  # noqa: F401
    HEAD_EVAL_BATCH,
    train_head_on_features,
)
from tlbench.image_fit import (  # noqa: F401
    BatchLoader,
    fit_images,
    train_images,
)
from tlbench.memory import (  # noqa: F401
    Attempt,
    DataOnDeviceOOM,
    is_out_of_memory,
    next_attempt_after_oom,
    release_host_memory,
)
from tlbench.optim import (  # noqa: F401
    TrainStep,
    group_rates,
    make_optimizer,
    make_schedule,
)
