"""What the forkserver imports once, so that every worker forked from it starts warm.

torch, the trial's modules, and the import torch's optimisers make on their
first use (torch._dynamo: 2.5 s on a 2-core CPU). Nothing here runs a
kernel or starts a thread: a process forked from this one is as fresh as a
new interpreter, only without the seconds of imports.
"""

from __future__ import annotations

import torch

import tlbench.trial  # noqa: F401  (imported for the workers forked from here)

torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
