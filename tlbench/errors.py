"""User-facing errors: each says what is wrong and what to do about it.

The CLI prints a `TlbenchError` as a message, never as a traceback.
"""

from __future__ import annotations

import contextlib
import difflib
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar


class TlbenchError(Exception):
    """An error the user can fix; its message says how."""


class Terminated(KeyboardInterrupt):
    """A signal that stops a grid (SIGTERM, SIGHUP, or SIGINT where tlbench handles it),
    raised where Ctrl-C raises `KeyboardInterrupt`: the grid stops the same way, the
    interrupted records name the signal, and the command exits with 128 + the signal
    (143 for SIGTERM, 129 for SIGHUP), as a shell reports it."""

    #: the signal of the last one raised in this process: a library that catches it and
    #: raises a plain KeyboardInterrupt instead (Ray's calls do) loses its type, not its signal.
    last: ClassVar[signal.Signals | None] = None

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(int(signum))  # an int: the exception pickles (a worker sends it)
        self.signum = signal.Signals(signum)
        Terminated.last = self.signum

    def __str__(self) -> str:
        return self.signum.name


def signal_of(stop: BaseException) -> signal.Signals:
    """The signal behind an interruption: a plain `KeyboardInterrupt` is the `Terminated`
    it replaced, if one was raised (`Terminated.last`), else Ctrl-C (SIGINT)."""
    return getattr(stop, "signum", None) or Terminated.last or signal.SIGINT


#: the signals that stop tlbench as Ctrl-C does: a CI timeout, `kill`, a scheduler (SIGTERM),
#: a closed terminal or SSH session (SIGHUP), Ctrl-C itself (SIGINT).
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def raise_terminated(signum: int, frame: Any) -> None:
    """A signal handler: raise `Terminated` for the signal."""
    raise Terminated(signum)


@contextlib.contextmanager
def stop_signals_raise(
    handler: Callable[[int, Any], None] = raise_terminated,
) -> Iterator[None]:
    """Inside the block each of `STOP_SIGNALS` calls `handler` (by default it raises
    `Terminated`, where Ctrl-C raises KeyboardInterrupt); the handlers before are put back
    after. Used by the command from its first line (`tlbench.cli.main`) and around a grid.

    A signal this process ignores stays ignored: `nohup` (SIGHUP) and a shell's
    background job (SIGINT) asked for that. Outside the main thread, which alone
    receives signals, nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, before in previous.items():
            if before is not None:  # None: installed outside Python, cannot be put back
                signal.signal(signum, before)


def interruption(stop: BaseException) -> str:
    """The reason an interrupted record gives: "interrupted (SIGHUP)"."""
    return f"interrupted ({signal_of(stop).name})"


def plural(kind: str) -> str:
    """The `tlbench list` argument of a kind: "strategy" -> "strategies", "backbone" -> "backbones"."""
    return kind[:-1] + "ies" if kind.endswith("y") else kind + "s"


class UnknownNameError(TlbenchError, KeyError):
    """A backbone, dataset or strategy name that no plugin registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str], detail: str = ""):
        self.kind, self.name = kind, name
        self.matches = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(m) for m in self.matches)}?" if self.matches else ""
        # `detail`: what the plugin itself said about the name (a family's LookupError).
        said = f": {detail.rstrip('.')}" if detail else ""
        super().__init__(
            f"unknown {kind} {name!r}{said}.{hint} Run `tlbench list {plural(kind)}` to see what "
            "is available."
        )

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class DuplicateNameError(TlbenchError):
    """Two plugins registered the same name."""


class WeightsUnavailableError(TlbenchError):
    """Pretrained weights cannot be loaded (offline and not cached)."""


class DatasetError(TlbenchError):
    """A dataset cannot be read: missing folder, no classes, bad split, offline download."""


class ConfigError(TlbenchError):
    """A config file or flag value is invalid."""


class ResultsError(TlbenchError):
    """A results file cannot be read or written."""
