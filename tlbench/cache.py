"""On-disk array caches that are safe to share between processes and to distrust.

An entry is a plain `.npy` array plus a `.json` sidecar, written to temporary
names and renamed into place, so a reader never sees half an entry. Arrays are
read with `allow_pickle=False`: a cache file that came from elsewhere cannot
execute code, and one that is not what it claims is ignored (and recomputed)
with a warning. A cache folder that cannot be written is not fatal: the run
goes on without the disk cache, with one warning.
"""

from __future__ import annotations

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

    def load(self, key: str) -> tuple[np.ndarray, dict[str, Any]] | None:
        if self.root is None:
            return None
        array_path, meta_path = self.root / f"{key}.npy", self.root / f"{key}.json"
        if not (array_path.exists() and meta_path.exists()):
            return None
        try:
            meta = json.loads(meta_path.read_text())
            array = np.load(array_path, allow_pickle=False)
            if not isinstance(meta, dict) or list(array.shape) != meta.get("shape") or str(array.dtype) != meta.get("dtype"):
                raise ValueError(f"array {array.shape}/{array.dtype} does not match its sidecar")
        except (OSError, ValueError, TypeError) as exc:
            self._warn_once(f"ignoring damaged cache entry {array_path} ({exc}); computing it again")
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
                tmp.unlink(missing_ok=True)
            self._warn_once(
                f"cannot write the cache under {self.root} ({exc.strerror or exc}); going on "
                "without it (point --cache-dir at a writable folder to keep it)"
            )
