"""The results file: JSON lines, one record per run, appended atomically.

Each record is written with a single `write` of one complete line, then
fsynced (the file is opened unbuffered, so there is nothing else to flush),
so a crash or power loss can at worst leave a torn last line. The reader
skips such a line with a warning, and the next append starts on a fresh line,
so finished records are never lost. Ctrl-C and SIGTERM are held back for the
few microseconds of an append, so an interruption lands before or after a
record, never between a finished run and its record.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import signal
import threading
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tlbench.errors import ResultsError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: appends are still one write each
    fcntl = None  # type: ignore[assignment]

#: bumped when the record layout changes incompatibly.
SCHEMA_VERSION = 1


def _clean(value: Any) -> Any:
    # JSON has no NaN or inf; a diverged loss is recorded as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Delay SIGINT and SIGTERM until the block ends, then deliver them as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread can install handlers (and receives the signals)
        return
    pending: list[int] = []
    # A handler installed outside Python (getsignal() is None) cannot be put back: leave it.
    held = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not None]
    previous = {s: signal.signal(s, lambda signum, frame: pending.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(pending):
            signal.raise_signal(s)  # now handled by the restored handler


def append(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append `record` as one line of `path` (created with its folder if missing)."""
    path = Path(path)
    line = json.dumps(_clean(record), separators=(",", ":"), sort_keys=False) + "\n"
    with _interrupts_held():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            created = not path.exists()
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise ResultsError(
                f"cannot write results file {path}: {exc.strerror or exc}. Choose another with --out."
            ) from exc
        try:
            if fcntl is not None:
                # Other tlbench processes appending to the same file wait here, so
                # the torn-line check below never sees another's write half done.
                fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size:
                # A torn last line (no newline) must not swallow this record.
                os.lseek(fd, size - 1, os.SEEK_SET)
                if os.read(fd, 1) != b"\n":
                    line = "\n" + line
            data = line.encode()
            written = os.write(fd, data)  # O_APPEND: one write lands whole at the end
            if written != len(data):
                raise OSError(f"short write ({written} of {len(data)} bytes)")
            os.fsync(fd)
            if created:
                _fsync_dir(path.parent)  # so the new file itself survives a power loss
        except OSError as exc:
            raise ResultsError(f"cannot append to results file {path}: {exc}") from exc
        finally:
            os.close(fd)


def check_writable(path: str | os.PathLike) -> None:
    """Raise `ResultsError` now if records could not be appended to `path` later.

    Meant for before the first run, so that a typo in --out or a read-only
    folder fails in a second instead of after the first hour of training.
    Creates the folder (as `append` would) but not the file.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            if not path.is_file():
                raise IsADirectoryError(errno.EISDIR, "not a regular file")
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            os.close(fd)
        elif not os.access(path.parent, os.W_OK):
            raise PermissionError(errno.EACCES, "folder not writable")
    except OSError as exc:
        raise ResultsError(
            f"cannot write results file {path}: {exc.strerror or exc}. Choose another with --out."
        ) from exc


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not every platform opens folders; the data itself is synced
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _is_record(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("key"), str)
        and isinstance(value.get("status"), str)
        and isinstance(value.get("config"), dict)
    )


def read(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Every record of one or more results files, skipping torn or invalid lines."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    records: list[dict[str, Any]] = []
    for path in map(Path, paths):
        if not path.exists():
            continue
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise ResultsError(f"cannot read results file {path}: {exc.strerror}") from exc
        # Split on newlines only: str.splitlines would also split inside a
        # record at characters such as \x1c or \u2028.
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                warnings.warn(
                    f"{path}:{number}: skipping a torn or invalid line (an interrupted write?)",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            if _is_record(record):
                records.append(record)
            else:
                warnings.warn(
                    f"{path}:{number}: skipping a line that is not a tlbench record",
                    RuntimeWarning,
                    stacklevel=2,
                )
    return records


def latest_by_key(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last record of each run key: a rerun supersedes what came before it."""
    return {r["key"]: r for r in records}
