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

from pathlib import Path
from typing import Any

import numpy as np

from tlbench.api import Backbone
from tlbench.cache import ArrayStore, cache_key

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
    """Features by key: a bounded memory of this process's entries, then the disk cache."""

    #: entries kept in memory (each is one split of one backbone: a few MB on small data).
    MEMORY_ENTRIES = 16

    def __init__(self, cache_dir: Path | None):
        self.disk = ArrayStore(cache_dir / "features" if cache_dir else None)
        self._memory: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}

    def get(
        self, key: str, feature_dim: int, count: int
    ) -> tuple[np.ndarray, dict[str, Any], str] | None:
        """`(features, facts, "memory" | "disk")`, or None on a miss or a damaged entry."""
        entry = self._memory.get(key)
        if entry is not None:
            self._memory[key] = self._memory.pop(key)  # most recently used last
            return entry[0], entry[1], "memory"
        stored = self.disk.load(key, dtype="float32")
        if stored is None:
            return None
        array, meta = stored
        facts = {k: meta.get(k) for k in MODEL_FACTS}
        facts["device"] = meta.get("device")
        # A FLOP count that failed (None) is never reused: the entry is made again and recounted.
        if (
            array.shape != (count, feature_dim)
            or not isinstance(facts["backbone_params"], int)
            or not isinstance(facts["forward_flops_per_image"], int)
        ):
            self.disk.reject(
                key, f"shape {array.shape} or its facts do not match {(count, feature_dim)}"
            )
            return None
        self._remember(key, array, facts)
        return array, facts, "disk"

    def put(
        self, key: str, features: np.ndarray, facts: dict[str, Any], meta: dict[str, Any]
    ) -> None:
        self._remember(key, features, facts)
        self.disk.save(key, features, {**meta, **facts})

    def _remember(self, key: str, features: np.ndarray, facts: dict[str, Any]) -> None:
        self._memory[key] = (features, facts)
        while len(self._memory) > self.MEMORY_ENTRIES:
            self._memory.pop(next(iter(self._memory)))
