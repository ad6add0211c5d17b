"""Moved: `tlbench cache` is `tlbench.commands.cache`, one module per command.

This name stays for one release: importing it gives that module itself, so
`tlbench.cachecmd.parse_size` and the other names are the same objects.
"""

from __future__ import annotations

import sys

from tlbench.commands import cache

sys.modules[__name__] = cache
