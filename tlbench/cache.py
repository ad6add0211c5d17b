"""On-disk array caches that are safe to share between processes and to distrust.

An entry is a plain `.npy` array plus a `.json` sidecar, written to temporary
names and renamed into place, so a reader never sees half an entry. Arrays are
read with `allow_pickle=False`: a cache file that came from elsewhere cannot
execute code, and one that is not what it claims is ignored (and recomputed)
with a warning. A cache folder that cannot be written is not fatal: the run
goes on without the disk cache, with one warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np


def cache_key(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


class ArrayStore:
    """`<root>/<key>.npy` + `<key>.json`; `root=None` stores nothing."""

    def __init__(self, root: Path | None):
        self.root = root
        self._warned: set[str] = set()

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            warnings.warn(message, RuntimeWarning, stacklevel=4)

    def reject(self, key: str, why: str) -> None:
        """Warn that entry `key` is not what it claims and will be computed again."""
        where = self.root / f"{key}.npy" if self.root else key
        self._warn_once(f"ignoring damaged cache entry {where} ({why}); computing it again")

    def load(
        self, key: str, *, dtype: str | None = None
    ) -> tuple[np.ndarray, dict[str, Any]] | None:
        """The entry's array and sidecar, or None when it is absent or damaged.

        `dtype`, when given, is required of the array (a cache is trusted no
        further than its contents can be checked).
        """
        if self.root is None:
            return None
        array_path, meta_path = self.root / f"{key}.npy", self.root / f"{key}.json"
        try:
            if not (array_path.is_file() and meta_path.is_file()):
                return None
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            # allow_pickle=False: an object array (a pickle) is refused, never run.
            array = np.load(array_path, allow_pickle=False)
            if not isinstance(array, np.ndarray):
                array.close()  # an .npz archive: not what this cache writes
                raise ValueError("not a single .npy array")
            if (
                not isinstance(meta, dict)
                or list(array.shape) != meta.get("shape")
                or str(array.dtype) != meta.get("dtype")
            ):
                raise ValueError(f"array {array.shape}/{array.dtype} does not match its sidecar")
            if dtype is not None and str(array.dtype) != dtype:
                raise ValueError(f"dtype {array.dtype}, expected {dtype}")
        except Exception as exc:  # any unreadable entry is just a cache miss
            self.reject(key, f"{type(exc).__name__}: {exc}")
            return None
        return array, meta

    def save(self, key: str, array: np.ndarray, meta: dict[str, Any]) -> None:
        if self.root is None:
            return
        array_path, meta_path = self.root / f"{key}.npy", self.root / f"{key}.json"
        tmp_array = array_path.with_name(f"{array_path.name}.{os.getpid()}.tmp")
        tmp_meta = meta_path.with_name(f"{meta_path.name}.{os.getpid()}.tmp")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(tmp_array, "wb") as f:
                np.save(f, array, allow_pickle=False)
            meta = {**meta, "shape": list(array.shape), "dtype": str(array.dtype)}
            tmp_meta.write_text(json.dumps(meta))
            # The array first: an entry counts only once its sidecar is in place.
            os.replace(tmp_array, array_path)
            os.replace(tmp_meta, meta_path)
        except OSError as exc:
            for tmp in (tmp_array, tmp_meta):
                # Not unlink(missing_ok=True): under a file it raises NotADirectoryError.
                with contextlib.suppress(OSError):
                    tmp.unlink()
            self._warn_once(
                f"cannot write the cache under {self.root} ({exc.strerror or exc}); going on "
                "without it (point --cache-dir at a writable folder to keep it)"
            )
