"""What the forkserver imports once, so that every worker forked from it starts warm.

torch, the trial's modules, and torch._dynamo: 1.5-2.5 s on a 2-core CPU,
which a worker would otherwise import on its first FLOP count (torch's meta
kernels written in Python, and its FLOP counter's dispatch, are wrapped in
`torch._disable_dynamo`, which imports it on first call; tlbench's optimisers
no longer do, `tlbench.optim`). Nothing here runs a kernel or starts a
thread: a process forked from this one is as fresh as a new interpreter,
only without the seconds of imports.
"""

from __future__ import annotations

import torch._dynamo  # noqa: F401  (imported for the workers forked from here)

import tlbench.trial  # noqa: F401  (imported for the workers forked from here)
