"""The results file: JSON lines, one record per run, appended atomically.

Each record is written with a single `write` of one complete line, then
flushed and fsynced, so a crash or power loss can at worst leave a torn last
line. The reader skips such a line with a warning, and the next append starts
on a fresh line, so finished records are never lost.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tlbench.errors import ResultsError

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


def append(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append `record` as one line of `path` (created with its folder if missing)."""
    path = Path(path)
    line = json.dumps(_clean(record), separators=(",", ":"), sort_keys=False) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as exc:
        raise ResultsError(
            f"cannot write results file {path}: {exc.strerror}. Choose another with --out."
        ) from exc
    try:
        size = os.fstat(fd).st_size
        if size:
            # A torn last line (no newline) must not swallow this record.
            os.lseek(fd, size - 1, os.SEEK_SET)
            if os.read(fd, 1) != b"\n":
                line = "\n" + line
        data = line.encode()
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"short write ({written} of {len(data)} bytes)")
        os.fsync(fd)
    except OSError as exc:
        raise ResultsError(f"cannot append to results file {path}: {exc}") from exc
    finally:
        os.close(fd)


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
        for number, line in enumerate(text.splitlines(), start=1):
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
            if isinstance(record, dict) and "key" in record:
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
