"""The results file: JSON lines, one record per run, appended atomically.

Each record is written with a single `write` of one complete line, then
fsynced (the file is opened unbuffered, so there is nothing else to flush),
so a crash or power loss can at worst leave a torn last line. The reader
skips such a line with a warning, and the next append starts on a fresh line,
so finished records are never lost. Ctrl-C, SIGTERM and SIGHUP are held back for the
few microseconds of an append, so an interruption lands before or after a
record, never between a finished run and its record.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import gc
import json
import math
import os
import signal
import tempfile
import threading
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlbench.errors import ResultsError, TlbenchError

if TYPE_CHECKING:  # only for the hint: reading results needs no config module
    from tlbench.config import RunConfig

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
    """Delay SIGINT, SIGTERM and SIGHUP until the block ends, then deliver them as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread can install handlers (and receives the signals)
        return
    pending: list[int] = []
    # A handler installed outside Python (getsignal() is None) cannot be put back: leave it.
    stops = [getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)]
    held = [s for s in stops if signal.getsignal(s) is not None]
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
                problem = _foreign(os.pread(fd, _HEAD, 0), size)
                if problem:
                    raise ResultsError(_foreign_message(path, problem))
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
    Creates nothing (`append` makes the folder with the first record): a
    folder made by a check inside a dataset folder reads as a class without
    images, and would hide the refusal that names the real problem. A
    missing folder is proved writable by its nearest existing parent. An
    existing non-empty file whose first line is not a run record (notes, a
    CSV, a report) is refused: records are never mixed into someone else's
    file.
    """
    if isinstance(path, str) and path.endswith(("/", os.sep)):
        raise ResultsError(
            f"--out {path} names a folder; name the results file, e.g. {path}runs.jsonl"
        )
    path = Path(path)
    try:
        folder = _nearest_existing(path.parent)
        if not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{folder} is not a folder")
        if path.exists():
            if not path.is_file():
                raise IsADirectoryError(errno.EISDIR, "not a regular file")
            fd = os.open(path, os.O_RDWR | os.O_APPEND)
            try:
                problem = _foreign(os.pread(fd, _HEAD, 0), os.fstat(fd).st_size)
            finally:
                os.close(fd)
            if problem:
                raise ResultsError(_foreign_message(path, problem))
        elif not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "folder not writable")
    except OSError as exc:
        raise ResultsError(
            f"cannot write results file {path}: {exc.strerror or exc}. Choose another with --out."
        ) from exc


def _nearest_existing(path: Path) -> Path:
    """`path`, or its nearest parent that exists (the folder a missing one would be made in)."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


#: how much of an existing file is read to tell whether it is a results file.
_HEAD = 64 * 1024
_BOM = b"\xef\xbb\xbf"


def _foreign(head: bytes, size: int) -> str | None:
    """Why a non-empty file starting with `head` is not a results file, or None.

    A results file starts with a record: a JSON object line. A first line that
    does not start with `{` (notes, a CSV, a report) or that is a complete JSON
    value but not a record is foreign: appending to it would mix records into
    someone's file. A first line that starts like a record (`{"`) but does not
    parse, followed by a record or by nothing, is a torn record (a power loss
    during the first append) and is accepted; a pretty-printed JSON file (`{`
    alone on its first line) is not.
    """
    text = head.removeprefix(_BOM).lstrip()  # an editor may have saved it with a BOM
    if not text:
        return None  # empty, or only blank lines
    line, newline, rest = text.partition(b"\n")
    line = line.rstrip(b"\r")
    shown = line[:60].decode("utf-8", errors="replace")
    if not line.startswith(b"{"):
        return f"its first line is not a run record: {shown!r}"
    if not (newline or len(head) >= size):
        return None  # a first line longer than what was read: a (long) record
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        # A torn record (a power loss during the first append) starts like one, and
        # the next line, if any, is a record; `{` alone starts a pretty-printed JSON file.
        if not line.startswith(b'{"'):
            return f"its first line is not a run record: {shown!r}"
        following, more, _ = rest.lstrip().partition(b"\n")
        if more and following.strip():
            try:
                if not _is_record(json.loads(following)):
                    raise ValueError
            except (ValueError, RecursionError):
                return f"its first lines are not run records: {shown!r}"
        return None
    if not _is_record(value):
        return f"its first line is JSON but not a run record: {shown!r}"
    return None


def _foreign_message(path: Path, problem: str) -> str:
    return (
        f"{path} exists and is not a tlbench results file ({problem}). Records are not "
        "appended to it: choose another file with --out, or move this one away."
    )


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


#: per file and kind of bad line, how many are named one by one before a summary.
_WARN_LINES = 3


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block (restored after, if it was on).

    Reading 50,000 records makes millions of dicts and lists and no cycles,
    and every few thousand of them Python's collector walks all that were
    made before: reading and summarising spent about half their time there.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Every record of one or more results files, skipping torn or invalid lines.

    The first few bad lines of a file are each named in a warning, then one
    warning counts the rest: a foreign file read by mistake gives a few
    lines of warnings, not one per line.
    """
    with gc_paused():
        return _read(paths)


def _read(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    records: list[dict[str, Any]] = []
    for path in map(Path, paths):
        if not path.exists():
            continue
        bad: dict[str, list[int]] = {"torn": [], "foreign": []}
        try:
            _read_lines(path, records, bad)
        except OSError as exc:
            raise ResultsError(f"cannot read results file {path}: {exc.strerror or exc}") from exc
        _warn_the_rest(path, bad)
    return records


#: what a skipped line is, by kind.
_SKIPPED = {
    "torn": ("a torn or invalid line (an interrupted write?)", "torn or invalid lines"),
    "foreign": ("a line that is not a tlbench record", "lines that are not tlbench records"),
}


def _read_lines(path: Path, records: list[dict[str, Any]], bad: dict[str, list[int]]) -> None:
    """Append `path`'s records to `records`; the numbers of its other lines go to `bad`,
    the first `_WARN_LINES` of each kind with a warning."""
    # Binary lines split on b"\n" only: str.splitlines would also split inside a
    # record at characters such as \x1c or \u2028.
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                record = _parse(raw, first=number == 1)
            except _Blank:
                continue
            except (json.JSONDecodeError, RecursionError):
                kind = "torn"
            else:
                if _is_record(record):
                    records.append(record)
                    continue
                kind = "foreign"
            bad[kind].append(number)
            if len(bad[kind]) <= _WARN_LINES:
                what = _SKIPPED[kind][0]
                warnings.warn(f"{path}:{number}: skipping {what}", RuntimeWarning, stacklevel=3)


def _warn_the_rest(path: Path, bad: dict[str, list[int]]) -> None:
    """One warning for the skipped lines of each kind beyond the first `_WARN_LINES`."""
    for kind, numbers in bad.items():
        if len(numbers) > _WARN_LINES:
            warnings.warn(
                f"{path}: skipping {len(numbers) - _WARN_LINES} more {_SKIPPED[kind][1]} "
                f"({len(numbers)} in all; is it a results file?)",
                RuntimeWarning,
                stacklevel=3,
            )


class _Blank(Exception):
    """A line with nothing on it (read past, never warned about)."""


try:  # optional (`pip install 'tlbench[fast]'`): parses a big results file about 3x faster
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - the standard parser reads every file alike
    _fast_loads = None


def _parse(raw: bytes, *, first: bool) -> Any:
    """One line's JSON value. orjson reads a well-formed line; whatever it refuses (a BOM,
    invalid UTF-8, NaN, a blank or torn line) the standard parser decides, as before
    orjson was used. One difference is left: an integer past 64 bits, which no record
    tlbench writes holds, reads as a float (finding one would cost more than the parse)."""
    if _fast_loads is not None:
        try:
            return _fast_loads(raw)
        except ValueError:
            pass
    line = raw.decode("utf-8", errors="replace")
    if first:
        line = line.removeprefix("\ufeff")  # saved by an editor with a BOM
    if not line.strip():
        raise _Blank
    return json.loads(line)


def record_time(record: dict[str, Any]) -> _dt.datetime | None:
    """When a record was written (its "time", ISO-8601; naive times are UTC), or None."""
    value = record.get("time")
    if not isinstance(value, str):
        return None
    try:
        when = _dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=_dt.timezone.utc)


_DAWN = _dt.datetime.min.replace(tzinfo=_dt.timezone.utc)


def in_time_order(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records oldest first by their "time"; records without one count as oldest.

    The sort is stable, so records of the same second (or without a time)
    keep the order they were read in: within one file, the order written.
    Records read from several files are thus resolved by when they were
    written, not by the order of the files on the command line.
    """
    return sorted(records, key=lambda r: record_time(r) or _DAWN)


def latest_by_key(
    records: Iterable[dict[str, Any]], *, ordered: bool = False
) -> dict[str, dict[str, Any]]:
    """The newest record of each run key, whatever its status (see `answer_by_key`).

    `ordered`: the records are in time order already (`in_time_order`'s), not sorted again.
    """
    return {r["key"]: r for r in (records if ordered else in_time_order(records))}


def answer_by_key(
    records: Iterable[dict[str, Any]], *, ordered: bool = False
) -> dict[str, dict[str, Any]]:
    """The record that answers each run key: its newest "ok" one, else its newest one.

    A finished result stays the answer until a newer "ok" replaces it: a rerun
    that was interrupted, failed or skipped after it (`--force`, Ctrl-C) does
    not hide its accuracy, and resuming does not train it again. Used by both
    resume (which keys are done) and the report (which accuracy to show).
    `ordered`: the records are in time order already (`in_time_order`'s), not sorted again.
    """
    out: dict[str, dict[str, Any]] = {}
    for r in records if ordered else in_time_order(records):
        previous = out.get(r["key"])
        if previous is None or r.get("status") == "ok" or previous.get("status") != "ok":
            out[r["key"]] = r
    return out


def needs_rerun(record: dict[str, Any], config: RunConfig) -> str | None:
    """Why the finished `record` does not give what `config` asks of its run, or None.

    For the planner: a key whose answer is "ok" is "already done" only when
    this is None. Reads `config.save_models`, `models_dir`, `out` and `strict`.
    The reason is a phrase for "trained again: <reason>".
    """
    if record.get("status") != "ok":
        return f"its last run ended {record.get('status')!r}"
    if config.save_models:
        cost = record.get("cost") if isinstance(record.get("cost"), dict) else {}
        saved = cost.get("checkpoint")
        folder = config.models_dir or Path(config.out).expanduser().parent / "models"
        from tlbench.checkpoint import checkpoint_complete, checkpoint_paths, find_checkpoint

        key = str(record.get("key"))
        weights, sidecar = checkpoint_paths(folder, key)
        # The pair --save-models writes, or an older single-file checkpoint.
        expected = f"{weights} with {sidecar.name}, or an older {weights.with_suffix('.pt')}"
        here = find_checkpoint(folder, key) is not None
        # Without --models-dir, the checkpoint the record names (wherever it was written) will do.
        there = isinstance(saved, str) and config.models_dir is None and checkpoint_complete(saved)
        if not (here or there):
            if not isinstance(saved, str):
                return (
                    f"it ran without --save-models, so it has no checkpoint (looked for {expected})"
                )
            return f"its checkpoint is missing (--save-models; looked for {expected})"
    if config.strict:
        data = record.get("data") if isinstance(record.get("data"), dict) else {}
        skipped = data.get("skipped_images")
        if isinstance(skipped, int) and not isinstance(skipped, bool) and skipped > 0:
            files = data.get("skipped_files") or []
            example = f", e.g. {files[0]}" if files and isinstance(files[0], str) else ""
            return (
                f"it skipped {skipped} unreadable image(s){example}, which --strict does not "
                "accept (remove or replace them, or rerun without --strict)"
            )
    return None


def check_folder_writable(folder: str | os.PathLike, what: str, flag: str) -> Path:
    """Prove `folder` can be made and written in; `TlbenchError` if not.

    The folder itself is not created here (its writer makes it when it first
    writes): a check must leave no trace, and an empty `models/` left inside a
    dataset folder would read as a class without images. Writing is proved
    in the folder when it exists, else in its nearest existing parent.
    """
    path = Path(folder).expanduser()
    if path.exists() and not path.is_dir():
        raise TlbenchError(f"{what} {path} is a file, not a folder. Choose another with {flag}.")
    existing = _nearest_existing(path)
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{existing} is a file")
        fd, probe = tempfile.mkstemp(prefix=".tlbench-write-check-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise TlbenchError(
            f"cannot write {what} in {path}: {exc.strerror or exc}. Choose another with {flag}."
        ) from None
    return path


def looks_like_results(path: str | os.PathLike) -> bool:
    """Whether `path` is a non-empty file that starts with a run record (or a torn one)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False
    return bool(head.strip()) and _foreign(head, size) is None


def check_report_output(
    name: str | os.PathLike,
    inputs: Iterable[str | os.PathLike] = (),
    *,
    flag: str = "--output",
    example: str = "report.md",
) -> Path:
    """The file `tlbench report --output` (or `flag`) may write, checked before any work.

    Refused: a folder; one of the results files being read, or any file
    holding run records (the report would replace them); a place that
    cannot be written. Raises a `TlbenchError` naming the path.
    """
    text = os.fspath(name)
    path = Path(text).expanduser()
    if path.is_dir() or text.endswith(("/", os.sep)):
        raise TlbenchError(f"{flag} {path} is a folder; name a file, e.g. {path / example}")
    if path.exists():
        for source in map(Path, inputs):
            if source.exists() and os.path.samefile(path, source):
                raise TlbenchError(
                    f"{flag} {path} is one of the results files being read; writing the "
                    "report there would replace its records. "
                    f"Choose another {flag}."
                )
        if looks_like_results(path):
            raise TlbenchError(
                f"{flag} {path} holds tlbench run records; writing the report there would "
                "replace them. "
                f"Choose another {flag}."
            )
        if not path.is_file():
            return path  # a device or a pipe (/dev/stdout): written as it is
    check_folder_writable(path.parent, "the report", flag)
    if path.exists() and not os.access(path, os.W_OK):
        raise TlbenchError(f"{flag} {path} cannot be overwritten. Choose another {flag}.")
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Replace `path` with `text` in one step: an interruption or a full disk leaves the old
    file, never half a new one. A device or a pipe (/dev/stdout) is written directly."""
    path = Path(path)
    if path.exists() and not path.is_file():
        path.write_text(text, encoding="utf-8")
        return
    path.parent.mkdir(parents=True, exist_ok=True)  # the output checks make no folders
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
