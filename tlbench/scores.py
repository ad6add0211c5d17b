"""Transferability scores of a run's training features, computed once per content, kept on disk.

Every run that trains on frozen features records three scores of its training
features (`tlbench.transferability`): LogME, leave-one-out k-NN accuracy (k=5,
cosine) and the Ledoit-Wolf H-score. The same features and labels give the same
scores, so they are computed once and kept in the cache beside the features
(`<cache>/scores/`), where the next process finds them: a warm `linear` run no
longer spends a second recomputing them.

The key is the content itself: a digest of the very feature matrix and labels
the scores read (after a data budget's subset or a tuning trial's validation
part is taken out), the score settings (`SCORES`), the source of the code that
computes them and numpy's version. Where the features came from need not be
trusted: the same bytes give the same key, other bytes another one. An entry
keeps what computing it cost (`seconds`), so a record reports the same cost
whether its scores were computed or read, as `cost.feature_extract_seconds`
does for features. Entries follow the rules of every cache entry
(`tlbench.cache`): checked sidecar, checksummed array, a miss when damaged.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from tlbench.cache import ArrayStore, array_checksum, cache_key

#: bumped whenever what an entry holds changes.
SCORES_VERSION = 1
#: each score (a function of `tlbench.transferability`) with its settings, in the record's order.
SCORES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("logme", {}),
    ("knn_accuracy", {"k": 5, "metric": "cosine"}),
    ("h_score", {"shrinkage": "ledoit-wolf"}),
)
#: the modules whose code decides the scores: an edit to either is a new key.
_CODE = ("tlbench.transferability", "tlbench.scores")
#: what an entry's sidecar must hold beyond shape and dtype, with its types.
_FIELDS: dict[str, Any] = {"seconds": float, "errors": dict, "scores_checksum": str}


def compute_scores(features: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """The scores of `features` (n, D) with integer `labels` (n,), and the seconds they took.

    A score that cannot be computed (too few images of a class) is None, with
    its reason under `errors`.
    """
    from tlbench import transferability

    started = time.perf_counter()
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    found: dict[str, Any] = {}
    for name, settings in SCORES:
        try:
            found[name] = float(getattr(transferability, name)(x, y, **settings))
        except (ValueError, np.linalg.LinAlgError) as exc:
            found[name] = None
            found.setdefault("errors", {})[name] = str(exc)
    found["seconds"] = time.perf_counter() - started
    return found


@functools.cache
def _code_digest() -> str | None:
    """sha1 of the source of the modules that compute the scores; None if one cannot be read."""
    h = hashlib.sha1(usedforsecurity=False)
    for name in _CODE:
        spec = importlib.util.find_spec(name)
        try:
            h.update(Path(spec.origin).read_bytes())  # type: ignore[union-attr,arg-type]
        except (AttributeError, TypeError, OSError):
            return None
    return h.hexdigest()


def score_key(features: np.ndarray, labels: np.ndarray) -> str | None:
    """The key of these features' scores: their bytes, the settings and the code; None
    when the code cannot be read (the scores are then computed and not kept)."""
    code = _code_digest()
    if code is None:
        return None
    return cache_key(
        "scores",
        SCORES_VERSION,
        SCORES,
        code,
        np.__version__,
        [array_checksum(features), list(features.shape), str(features.dtype)],
        [array_checksum(labels), list(labels.shape), str(labels.dtype)],
    )


class ScoreStore:
    """Scores by the content they were computed on: `<cache>/scores/`, or none without a cache.

    `about` (dataset, backbone, ...) describes an entry for `tlbench cache`
    (listing, pruning by dataset or backbone); it is not part of the key.
    """

    def __init__(self, cache_dir: Path | None):
        self.disk = ArrayStore(cache_dir / "scores" if cache_dir else None)

    def get_or_make(
        self, features: np.ndarray, labels: np.ndarray, about: dict[str, Any]
    ) -> dict[str, Any]:
        """The stored scores of these features and labels, else computed and stored.

        Under the entry's lock, as features are: a second process computing the
        same scores waits for the first and reads what it wrote.
        """
        key = score_key(features, labels) if self.disk.root is not None else None
        if key is None:
            return compute_scores(features, labels)
        found = self.get(key)
        if found is not None:
            return found
        with self.disk.lock(key):
            found = self.get(key)
            if found is None:
                found = compute_scores(features, labels)
                self.put(key, found, about)
        return found

    def get(self, key: str) -> dict[str, Any] | None:
        """The entry's scores as a record holds them, or None on a miss or a damaged entry."""
        stored = self.disk.load(key, dtype="float64", shape=(len(SCORES),), fields=_FIELDS)
        if stored is None:
            return None
        values, meta = stored
        why = _implausible(key, meta)
        if why:
            self.disk.reject(key, why)
            return None
        found: dict[str, Any] = {}
        for (name, _), value in zip(SCORES, values.tolist(), strict=True):
            if name in meta["errors"]:
                found[name] = None
                found.setdefault("errors", {})[name] = meta["errors"][name]
            else:
                found[name] = value
        found["seconds"] = float(meta["seconds"])
        return found

    def put(self, key: str, found: dict[str, Any], about: dict[str, Any]) -> bool:
        """Keep `found` (`compute_scores`'s answer) under `key`; False if it cannot be written."""
        values = np.array(
            [math.nan if found[name] is None else found[name] for name, _ in SCORES],
            dtype=np.float64,
        )
        errors = dict(found.get("errors", {}))
        meta = {
            "kind": "scores",
            **about,
            "seconds": found["seconds"],
            "errors": errors,
            "scores_checksum": _checksum(key, found["seconds"], errors),
        }
        return self.disk.save(key, values, meta)


def _checksum(key: str, seconds: float, errors: dict[str, Any]) -> str:
    """sha1 of the entry's key, cost and errors: an edited cost, or one copied from another
    entry, no longer matches. (The scores themselves are the array, checksummed by the store.)"""
    text = json.dumps([key, seconds, errors], sort_keys=True)
    return "sha1:" + hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def _implausible(key: str, meta: dict[str, Any]) -> str | None:
    """Why an entry's sidecar cannot be what computed it, or None: it reaches the record."""
    seconds, errors = meta["seconds"], meta["errors"]
    if not 0 <= seconds < math.inf:
        return f"sidecar field 'seconds' is {seconds}, expected a duration"
    names = {name for name, _ in SCORES}
    if not all(name in names and isinstance(why, str) for name, why in errors.items()):
        return "sidecar field 'errors' names a score it does not hold, or a reason not text"
    if meta["scores_checksum"] != _checksum(key, seconds, errors):
        return "its cost or errors (seconds, errors) were changed"
    return None
