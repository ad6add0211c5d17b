"""The feature store: frozen-backbone features, computed once per backbone x data x size.

A `linear` run trains only a head on features of a frozen backbone, so the
features are worth keeping: in this process's memory (for the next run of the
grid) and on disk (for the next grid). Beside the features an entry keeps what
a record says of the model that made them (`backbone_params`,
`forward_flops_per_image`) and the device that made them, so a hit needs no
backbone at all.

The key holds everything that changes the features: backbone and weights, the
images (the dataset's fingerprint and the split), the input size and the
stored resize, the preprocessing, the precision they were computed in, and
the number of images. The device is not in the key: features computed in
fp32 on a CPU are the same numbers a GPU computes in fp32 (to float noise),
and the record names where the features it used came from.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from tlbench.cache import ArrayStore, MemoryLRU, cache_key
from tlbench.plugin_types import Backbone

FEATURES_VERSION = 1
#: what an entry records of the model that made it, besides the features.
MODEL_FACTS = ("backbone_params", "forward_flops_per_image")


def feature_key(
    backbone: Backbone,
    *,
    fingerprint: str,
    split: str,
    image_size: int,
    store_size: int,
    precision: str,
    count: int,
) -> str:
    """The cache key of one split's features (see the module docstring for what it holds)."""
    return cache_key(
        "features",
        FEATURES_VERSION,
        backbone.name,
        backbone.weights,
        fingerprint,
        split,
        image_size,
        store_size,
        backbone.preprocessing.to_dict(),
        precision,
        count,
    )


class FeatureStore:
    """Features by key: a bounded memory of this process's entries, then the disk cache.

    Disk entries are read memory-mapped (a split's features are never all
    resident unless used), and their sidecars are type-checked: an entry
    whose facts are missing or mistyped is a miss, made again with a warning.
    `lock(key)` serialises the making of one entry across processes, so two
    workers never extract the same features at once.
    """

    #: bytes of features kept in this process's memory (mapped entries count as 0).
    MEMORY_BYTES = 1 << 30

    def __init__(self, cache_dir: Path | None):
        self.disk = ArrayStore(cache_dir / "features" if cache_dir else None)
        self._memory: MemoryLRU[tuple[np.ndarray, dict[str, Any]]] = MemoryLRU(self.MEMORY_BYTES)

    def get(
        self, key: str, feature_dim: int, count: int
    ) -> tuple[np.ndarray, dict[str, Any], str] | None:
        """`(features, facts, "memory" | "disk")`, or None on a miss or a damaged entry."""
        entry = self._memory.get(key)
        if entry is not None:
            return entry[0], entry[1], "memory"
        # A FLOP count that failed is never stored (see `put`): an entry without one is made again.
        stored = self.disk.load(key, dtype="float32", shape=(count, feature_dim), fields=_FIELDS)
        if stored is None:
            return None
        array, meta = stored
        facts = {k: meta.get(k) for k in (*MODEL_FACTS, "device")}
        why = _implausible(key, facts, meta.get("facts_checksum"))
        if why:
            self.disk.reject(key, why)
            return None
        # What making the entry cost, so a hit is charged it too (None in older entries).
        facts["extract_seconds"] = _seconds(meta.get("extract_seconds"))
        self._remember(key, array, facts)
        return array, facts, "disk"

    def get_or_make(
        self,
        key: str,
        feature_dim: int,
        count: int,
        make: Callable[[], tuple[np.ndarray, dict[str, Any], dict[str, Any]]],
        timed: Callable[[], AbstractContextManager[Any]] = nullcontext,
    ) -> tuple[np.ndarray, dict[str, Any], str]:
        """`(features, facts, hit)`: the stored entry, or `make()`'s, stored, with hit "none".

        On a miss another worker may be making this very entry: the lock waits
        for it, then looks again, so an entry is made once. `make()` returns
        `(features, facts, meta)` and times its own work; `timed()` wraps the
        reads and the save (the cost of using the store).
        """
        with timed():
            found = self.get(key, feature_dim, count)
        if found is not None:
            return found
        with self.lock(key):
            with timed():
                found = self.get(key, feature_dim, count)
            if found is not None:
                return found
            features, facts, meta = make()
            with timed():
                self.put(key, features, facts, meta)
        return features, facts, "none"

    def lock(self, key: str) -> Any:
        """Hold while making entry `key`: another process making it waits, then finds it."""
        return self.disk.lock(key)

    def put(
        self, key: str, features: np.ndarray, facts: dict[str, Any], meta: dict[str, Any]
    ) -> None:
        self._remember(key, features, facts)
        if facts.get("forward_flops_per_image") is None:
            return  # kept in memory only: a failed count must not outlive this process
        checksum = _facts_checksum(key, facts)
        self.disk.save(
            key, features, {"kind": "features", **meta, **facts, "facts_checksum": checksum}
        )

    def _remember(self, key: str, features: np.ndarray, facts: dict[str, Any]) -> None:
        size = 0 if isinstance(features, np.memmap) else features.nbytes
        self._memory.put(key, (features, facts), size)


#: what a feature entry's sidecar must hold, with the types it must have.
_FIELDS = {
    "backbone_params": int,
    "forward_flops_per_image": int,
    "device": (str, type(None)),
    "facts_checksum": str,
}
#: the range each model fact can have: the largest vision models have ~1e11 parameters and
#: ~1e14 FLOPs per image; a parameterless backbone (a colour mean) has 0 of either.
_FACT_RANGE = {"backbone_params": 10**13, "forward_flops_per_image": 10**17}


def _facts_checksum(key: str, facts: dict[str, Any]) -> str:
    """sha1 of the entry's key and model facts: an edited fact, or one copied from another
    entry, no longer matches. (The array's own checksum is the store's.)"""
    shown = {k: facts.get(k) for k in (*MODEL_FACTS, "device")}
    text = json.dumps([key, shown], sort_keys=True)
    return "sha1:" + hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def _implausible(key: str, facts: dict[str, Any], checksum: Any) -> str | None:
    """Why an entry's model facts cannot be what made it, or None: they reach the record."""
    for name, top in _FACT_RANGE.items():
        if not 0 <= facts[name] <= top:
            return f"sidecar field {name!r} is {facts[name]}, expected 0 to {top:.0e}"
    if checksum != _facts_checksum(key, facts):
        return "its model facts (backbone_params, forward_flops_per_image) were changed"
    return None


def _seconds(value: Any) -> float | None:
    """A stored duration, or None when it is missing or not a finite, non-negative number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0 <= value < float("inf") else None
