"""Deprecated: what `tlbench.timing` held now lives in modules named for each job.

Kept for one release so that code importing `tlbench.timing` keeps working;
import from these instead:

- `tlbench.devices`: `resolve_device`, `synchronize`, `device_identity`, `device_name`,
  `backend_state`;
- `tlbench.peaks`: `PEAKS`, `device_peak`, `mfu`;
- `tlbench.clocks`: `PhaseClock`, `Stopwatch`;
- `tlbench.memory`: `PeakMemory`, `release_host_memory`, `vm_kib`;
- `tlbench.flops`: `forward_flops`, `training_flops`, `FlopCount`;
- `tlbench.provenance`: `environment`, `git_sha`.
"""

from __future__ import annotations

from tlbench.clocks import (  # noqa: F401
    PhaseClock,
    Stopwatch,
)
from tlbench.devices import (  # noqa: F401
    backend_state,
    device_identity,
    device_name,
    resolve_device,
    synchronize,
)
from tlbench.flops import (  # noqa: F401
    FlopCount,
    forward_flops,
    training_flops,
)
from tlbench.memory import (  # noqa: F401
    PeakMemory,
    _glibc,
    release_host_memory,
    vm_kib,
)
from tlbench.peaks import (  # noqa: F401
    PEAKS,
    Peak,
    device_peak,
    mfu,
)
from tlbench.provenance import (  # noqa: F401
    environment,
    git_sha,
)
