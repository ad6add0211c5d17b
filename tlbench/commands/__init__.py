"""The `tlbench` commands, one module each (as tox's `session/cmd`).

Each module declares its command with `add_parser(subparsers)` and runs it
with `main(args, console) -> int` (the exit code); `tlbench.cli` builds the
parser from them and maps errors to exit codes. Importing a command module
imports no torch: `tlbench --help`, `list` and `show` answer at once.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from tlbench.errors import signal_of

#: the commands, in the order `tlbench --help` lists them.
NAMES = (
    "run",
    "select",
    "list",
    "show",
    "plugins",
    "examples",
    "report",
    "compare",
    "models",
    "bench",
    "predict",
    "cache",
)


def module(name: str) -> ModuleType:
    """The module of the command `name` (`tlbench.commands.<name>`)."""
    return importlib.import_module(f"tlbench.commands.{name}")


def interrupted_code(stop: KeyboardInterrupt) -> int:
    """The shell's convention, 128 + the signal: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    return 128 + signal_of(stop)
