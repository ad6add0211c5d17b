"""The `tlbench` command: the entry point, and what an error means as an exit code.

Each command is a module of `tlbench.commands` (`add_parser` and `main`);
this module builds the parser from them, runs the one asked for and maps
what it raises to a message and an exit code: 2 for a usage or input error
(`TlbenchError`), 128 + the signal for Ctrl-C, SIGTERM or SIGHUP (130, 143,
129), 141 for a closed pipe. `main` takes the stop signals before anything
but the standard library and `tlbench.errors` is imported: the command
modules, rich and the rest are imported after, on first use. The installed
script runs `console_main`: `main`, then an exit that skips the garbage
collections Python's shutdown would spend on objects the process frees anyway.
"""

# PYTHON_ARGCOMPLETE_OK (tab completion: `eval "$(register-python-argcomplete tlbench)"`)

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import re
import signal
import sys
import warnings
from typing import Any

from tlbench import commands
from tlbench.commands import interrupted_code
from tlbench.errors import TlbenchError, stop_signals_raise

# DEVICE_PATTERN and device_arg come from tlbench.config on first use (`__getattr__`).
__all__ = ["COMMANDS", "DEVICE_PATTERN", "build_parser", "console_main", "device_arg", "main"]  # noqa: F822


class _Commands(dict):
    """Command name -> its `main(args, console)`, its module imported when first asked for
    (`tlbench.commands.module`): after `main` has taken the stop signals, not on import."""

    def __missing__(self, name: str) -> Any:
        if name not in commands.NAMES:
            raise KeyError(name)
        self[name] = found = commands.module(name).main
        return found


#: command name -> its `main(args, console)`.
COMMANDS: dict[str, Any] = _Commands()


def __getattr__(name: str) -> Any:
    """`DEVICE_PATTERN` (a `--device` value: auto, cpu, cuda, cuda:N or mps) and `device_arg`,
    from `tlbench.config` when first asked for."""
    if name in ("DEVICE_PATTERN", "device_arg"):
        from tlbench import config

        return config.DEVICE.pattern if name == "DEVICE_PATTERN" else config.device_arg
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlbench",
        description="Benchmark transfer learning on images: every backbone x dataset x strategy, "
        "accuracy against training cost.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in commands.NAMES:
        commands.module(name).add_parser(sub)
    _document_defaults(parser)
    return parser


def _version() -> str:
    from tlbench.version import __version__

    return __version__


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """`parser` and every subcommand's parser below it, depth first."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += _subparsers(child)
    return found


def _shown_default(action: argparse.Action, group_default: str | None) -> str:
    if action.default not in (None, False, argparse.SUPPRESS):
        return str(action.default)
    if group_default:
        return group_default
    if action.nargs == 0 or isinstance(action, argparse.BooleanOptionalAction):
        return "off"
    if action.choices and "auto" in action.choices:
        return "auto"
    return "none"


def _document_defaults(parser: argparse.ArgumentParser) -> None:
    """Every option's help ends with its default, unless it already names it.

    The default shown is the option's own, or for options left unset so that
    something else decides (a strategy's hyperparameters) what the option's
    group title says: "training (default: each strategy's own, ...)". The
    grid's options name theirs already (`tlbench.commands.run`).
    """
    for sub in _subparsers(parser):
        for group in sub._action_groups:
            said = re.search(r"\(default: ([^,)]+)", group.title or "")
            for action in group._group_actions:
                if (
                    not action.option_strings
                    or action.help == argparse.SUPPRESS
                    or isinstance(action, (argparse._HelpAction, argparse._VersionAction))
                    or "default" in (action.help or "")
                ):
                    continue
                default = _shown_default(action, said.group(1) if said else None)
                # `%` is argparse's format character in help strings.
                action.help = (
                    f"{action.help or ''} (default: {default.replace('%', '%%')})".lstrip()
                )


def _autocomplete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell's tab completion (argcomplete, optional: `pip install 'tlbench[completion]'`)."""
    try:
        import argcomplete
    except ImportError:
        return
    argcomplete.autocomplete(parser)  # exits when it has answered


def main(argv: list[str] | None = None) -> int:
    """Run the `tlbench` command line `argv` (default: the process's); its exit code.

    SIGINT, SIGTERM and SIGHUP raise `Terminated` from the first line on, so a
    signal while tlbench still imports, loads plugins or plans ends the command
    as one during a grid does: `interrupted`, 128 + the signal, no traceback.
    """
    with stop_signals_raise():
        try:
            return _command(argv)
        except KeyboardInterrupt as stop:
            # Not stopped again while saying so (the group's copy of the signal, a second
            # Ctrl-C); a closed terminal is not an error either.
            with stop_signals_raise(_ignore), contextlib.suppress(OSError, ValueError):
                sys.stderr.write("interrupted\n")
                sys.stderr.flush()
            return interrupted_code(stop)


def console_main() -> int:
    """The `tlbench` script and `python -m tlbench`: `main` on the process's arguments.

    When the command is done, its garbage is collected once and what is left
    (torch's and the other libraries' few hundred thousand objects) is frozen
    out of the collector (`gc.freeze`). Python's shutdown otherwise walks them
    all in several full collections, though the process frees them at once as
    it exits: about 1 s of every command that imported torch (4.6 s against
    3.6 s to import torch, torchvision and the runner and exit, here). atexit
    hooks run and the standard streams are flushed as before; a file still open
    at exit should be closed by its owner, as tlbench's results file is after
    each record (an object in a reference cycle is otherwise never finalised).
    """
    code = main()
    gc.collect()
    gc.freeze()
    return code


def _ignore(signum: int, frame: Any) -> None:
    pass


def _command(argv: list[str] | None) -> int:
    from rich.console import Console
    from rich.text import Text

    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # set only while the shell asks for completions
        _autocomplete(parser)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from tlbench.console import PipeSafeConsole, show_warning

    console = PipeSafeConsole(highlight=False)
    # Messages are never hard-wrapped: a terminal wraps them itself, a log keeps one line each.
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    warnings.simplefilter("default")
    # tlbench's warnings as `warning: ...`, other libraries' in Python's format (whose they are).
    warnings.showwarning = show_warning(err)
    try:
        return COMMANDS[args.command](args, console)
    except TlbenchError as exc:
        err.print(Text.assemble(("error:", "red"), " ", str(exc)))
        return 2
    except BrokenPipeError:
        # `tlbench list | head`: the reader has gone; say nothing more, exit as a shell would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(console_main())
