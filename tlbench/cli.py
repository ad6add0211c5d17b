"""The `tlbench` command: the entry point, and what an error means as an exit code.

Each command is a module of `tlbench.commands` (`add_parser` and `main`);
this module builds the parser from them, runs the one asked for and maps
what it raises to a message and an exit code: 2 for a usage or input error
(`TlbenchError`), 130 or 143 for Ctrl-C or SIGTERM, 141 for a closed pipe.
"""

# PYTHON_ARGCOMPLETE_OK (tab completion: `eval "$(register-python-argcomplete tlbench)"`)

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import warnings

from rich.console import Console
from rich.text import Text

from tlbench import commands
from tlbench.commands import interrupted_code
from tlbench.config import DEVICE, device_arg
from tlbench.errors import TlbenchError

__all__ = ["COMMANDS", "DEVICE_PATTERN", "build_parser", "device_arg", "main"]

#: a `--device` value: auto, cpu, cuda, cuda:N or mps (`tlbench.config.DEVICE`).
DEVICE_PATTERN = DEVICE.pattern

#: command name -> its `main(args, console)`.
COMMANDS = {name: commands.module(name).main for name in commands.NAMES}


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
    except KeyboardInterrupt as stop:
        err.print("interrupted")
        return interrupted_code(stop)
    except BrokenPipeError:
        # `tlbench list | head`: the reader has gone; say nothing more, exit as a shell would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
