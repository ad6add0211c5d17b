"""What the forkserver imports once, so that every worker forked from it starts warm.

torch and the trial's modules. Nothing here runs a kernel or starts a thread:
a process forked from this one is as fresh as a new interpreter, only without
the seconds of imports. (It also made a torch.optim optimiser, which imported
torch._dynamo, 2.5 s; tlbench's optimisers no longer import it: `tlbench.optim`.)
"""

from __future__ import annotations

import torch  # noqa: F401  (imported for the workers forked from here)

import tlbench.trial  # noqa: F401  (imported for the workers forked from here)
