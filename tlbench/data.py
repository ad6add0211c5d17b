"""Decode once: every (dataset, split, size) becomes one uint8 array, cached and mapped.

Each image is decoded, its shorter side resized to `store_size` and the centre
square kept, once. The result is written straight into the disk cache (a
plain `.npy` file, read with `allow_pickle=False`: loading a cache file never
executes code), keyed by the dataset's fingerprint, so a second process reuses
it and a change to the files invalidates it. The split is then read
memory-mapped: a dataset larger than memory trains without being loaded,
each batch gathered by index from the map, the kernel paging the images in
and out. Two processes decoding the same split at once take turns: the
second waits for the first and reads its entry. Within a process, decoded
splits are kept in a bounded LRU (`default_memory_limit`; a mapped split
holds no process memory and costs nothing there). Training augmentations run
batched on tensors, on the device (`random_resized_crop_flip`); evaluation
takes the centre crop, which equals torchvision's resize + centre-crop.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tlbench.cache import (
    ArrayStore,
    MemoryLRU,
    cache_key,
    default_cache_dir,
    default_memory_limit,
)
from tlbench.errors import DatasetError
from tlbench.plugin_types import ImageSource

__all__ = [
    "DECODE_VERSION",
    "DecodeCache",
    "ImageTensors",
    "UnreadableImagesError",
    "center_crop",
    "default_cache_dir",
    "default_memory_limit",
    "mapped_tensor",
    "random_resized_crop_flip",
]

#: bumped whenever decoding changes, so old caches are not reused.
DECODE_VERSION = 1

#: What a decoded entry's sidecar must hold beyond shape and dtype, with its types.
DECODED_FIELDS: dict[str, Any] = {
    "labels": list[int],
    "skipped": list[str],
    "skip_reasons": list[str],
}


def mapped_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor sharing `array`'s memory, a read-only memory map (`ArrayStore.load`) included.

    torch has no read-only tensors and warns about a read-only array; the
    warning is silenced here because tlbench only reads cached tensors:
    batches are gathered (copied) by index, never written in place. Writing
    into the returned tensor would fault, as the pages are mapped read-only.
    """
    if array.flags.writeable:
        return torch.from_numpy(array)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
        return torch.from_numpy(array)


@dataclass
class ImageTensors:
    """A decoded split: `images` uint8 (N, 3, S, S) on the CPU and `labels` int64 (N,).

    `images` may be a read-only memory map of the disk cache (`mapped`):
    gather from it (`images[idx]`, slices), never write into it in place.
    """

    images: torch.Tensor
    labels: torch.Tensor
    #: descriptions (paths) of items that could not be decoded and were left out.
    skipped: list[str] = field(default_factory=list)
    cache_hit: str = "none"  # "memory", "disk" or "none"
    seconds: float = 0.0
    #: why each of `skipped` could not be read, in the same order.
    skip_reasons: list[str] = field(default_factory=list)
    #: whether `images` is memory-mapped from the disk cache (it holds no process memory).
    mapped: bool = False

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def resident_bytes(self) -> int:
        """Process memory the split holds: its labels, and its images unless mapped."""
        images = 0 if self.mapped else self.images.numel() * self.images.element_size()
        return images + self.labels.numel() * self.labels.element_size()


class UnreadableImagesError(DatasetError):
    """Images of a split could not be decoded: all of them, or any of them under `--strict`.

    It is about the data, not about one run, so the runner stops the grid on
    it instead of recording a failure for every run on that dataset.
    """


#: images longer than this many times their short side skip the full resize (see below);
#: under it, the resized image is at most this many squares, and decoding is unchanged.
_MAX_ASPECT = 4


def _decode_one(source: ImageSource, index: int, size: int) -> np.ndarray:
    from PIL import Image

    image = source.load(index)
    if image.mode != "RGB":
        image = image.convert("RGB")
    w, h = image.size
    side = min(w, h)
    if max(w, h) > _MAX_ASPECT * side:
        # A 1 x 1,000,000 px strip resized by its short side would be 64 x 64,000,000
        # (gigabytes): resample only the centre square, which is all that is kept.
        left, top = (w - side) / 2, (h - side) / 2
        image = image.resize(
            (size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side)
        )
        return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)
    scale = size / side
    # Resize the shorter side to `size` with antialiasing, then keep the centre square.
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=None)
    left, top = (nw - size) // 2, (nh - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def _listing(data: ImageTensors, limit: int = 20) -> str:
    lines = [f"{path}: {why}" for path, why in zip(data.skipped, data.skip_reasons, strict=True)][
        :limit
    ]
    more = f"\n  ... and {len(data.skipped) - limit} more" if len(data.skipped) > limit else ""
    return "\n  " + "\n  ".join(lines) + more


#: rows copied at a time when failed images are squeezed out of a mapped split.
_COPY_ROWS = 256


class DecodeCache:
    """Decoded splits: on disk, memory-mapped, and in a bounded in-process LRU.

    Unreadable images (corrupt, truncated, not an image at all) are left out
    and listed in `ImageTensors.skipped`, with one warning per split and
    process; with `strict=True` any of them is an `UnreadableImagesError`
    naming the files. Strictness is checked on every `get`, also when the
    split comes from a cache that a non-strict run filled.

    `memory_limit` bounds the bytes of process memory the LRU keeps
    (default: `default_memory_limit()`, a quarter of the RAM). Without a
    disk cache (`cache_dir=None`, or a folder that cannot be written) a split
    is decoded into memory and kept only while it fits that bound.
    """

    def __init__(
        self, cache_dir: Path | None, *, workers: int | None = None, memory_limit: int | None = None
    ):
        self.store = ArrayStore(cache_dir / "decoded" if cache_dir else None)
        self.workers = workers or min(8, os.cpu_count() or 1)
        self._memory: MemoryLRU[ImageTensors] = MemoryLRU(memory_limit)
        self._warned: set[str] = set()

    def key(self, fingerprint: str, split: str, size: int) -> str:
        return cache_key("decoded", DECODE_VERSION, fingerprint, split, size)

    def get(
        self,
        source: ImageSource,
        *,
        fingerprint: str,
        split: str,
        size: int,
        strict: bool = False,
        progress: Any = None,
        dataset: str | None = None,
    ) -> ImageTensors:
        """The decoded `split` of `source` at `size` px: from memory, the disk cache, or decoded.

        `dataset` (the canonical name, `tlbench.identity.dataset_identity`)
        is written in the entry's sidecar for `tlbench cache`; it is not part
        of the key: the fingerprint is.
        """
        content = getattr(source, "content_fingerprint", None)
        if fingerprint and callable(content):
            # The dataset's fingerprint names the files (and keys the runs); the decode
            # cache also sees their bytes, so same-size content with the old mtime is new.
            fingerprint = f"{fingerprint}|content={content()}"
        key = self.key(fingerprint, split, size)
        cached = self._memory.get(key)
        if cached is not None:
            result = dataclasses.replace(cached, cache_hit="memory", seconds=0.0)
        else:
            t0 = time.perf_counter()
            result = self._load_disk(key, source, size, fingerprint) if fingerprint else None
            if result is None and fingerprint:
                meta = {
                    "kind": "decoded",
                    "dataset": dataset,
                    "fingerprint": fingerprint,
                    "split": split,
                    "size": size,
                }
                # One decoder per split across processes: who waited reads the entry.
                with self.store.lock(key):
                    result = self._load_disk(key, source, size, fingerprint)
                    if result is None:
                        result = self._decode_to_disk(key, source, size, split, progress, meta)
            if result is None:
                result = self._decode(source, size, split=split, progress=progress)
            result.seconds = time.perf_counter() - t0
            # Kept even when strict fails below: the decode itself was sound.
            self._memory.put(key, result, result.resident_bytes)
        if result.skipped:
            self._report_skipped(key, result, split, strict)
        return result

    def _report_skipped(self, key: str, data: ImageTensors, split: str, strict: bool) -> None:
        n = len(data.skipped)
        if strict:
            raise UnreadableImagesError(
                f"{n} image(s) of the {split} split could not be read (--strict):"
                f"{_listing(data)}\nRemove or replace them, or run without --strict to skip them."
            )
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(
                f"skipped {n} unreadable image(s) of the {split} split, e.g. "
                f"{data.skipped[0]} ({data.skip_reasons[0] if data.skip_reasons else '?'}); "
                "they are listed in the run record; use --strict to make this an error",
                RuntimeWarning,
                stacklevel=4,
            )

    # ---------------------------------------------------------------- decode

    def _decode_into(
        self, images: np.ndarray, source: ImageSource, size: int, progress: Any
    ) -> dict[int, str]:
        """Decode every image of `source` into `images` (N, 3, size, size); {index: error}."""
        n = len(source)
        errors: dict[int, str] = {}

        def work(i: int) -> None:
            try:
                images[i] = _decode_one(source, i, size)
            except Exception as exc:  # unreadable image: counted, reported, left out
                errors[i] = f"{type(exc).__name__}: {exc}"

        # PIL releases the GIL while decoding and resizing, so threads scale.
        with ThreadPoolExecutor(self.workers) as pool:
            for done, _ in enumerate(pool.map(work, range(n)), start=1):
                if progress is not None and (done % 32 == 0 or done == n):
                    progress(done, n)
        return errors

    def _outcome(
        self, source: ImageSource, errors: dict[int, str], split: str
    ) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
        """(kept mask, labels kept, skipped descriptions, reasons); raises if nothing was read."""
        n = len(source)
        ok = np.ones(n, dtype=bool)
        failed = sorted(errors)
        ok[failed] = False
        skipped = [source.describe(i) for i in failed]
        reasons = [errors[i] for i in failed]
        labels = np.asarray(source.labels, dtype=np.int64)[ok]
        if len(labels) == 0:
            data = ImageTensors(
                torch.empty(0), torch.from_numpy(labels), skipped, skip_reasons=reasons
            )
            raise UnreadableImagesError(
                f"none of the {n} image(s) of the {split} split could be read:{_listing(data, 5)}"
            )
        return ok, labels, skipped, reasons

    def _decode(self, source: ImageSource, size: int, *, split: str, progress: Any) -> ImageTensors:
        """Decode into process memory (no disk cache)."""
        images = np.empty((len(source), 3, size, size), dtype=np.uint8)
        errors = self._decode_into(images, source, size, progress)
        ok, labels, skipped, reasons = self._outcome(source, errors, split)
        return ImageTensors(
            torch.from_numpy(images[ok] if skipped else images),
            torch.from_numpy(labels),
            skipped,
            skip_reasons=reasons,
        )

    def _decode_to_disk(
        self,
        key: str,
        source: ImageSource,
        size: int,
        split: str,
        progress: Any,
        meta: dict[str, Any],
    ) -> ImageTensors | None:
        """Decode straight into a new cache entry and return it mapped; None if it cannot be written.

        The images go into a map of the entry's temporary file, never all in
        process memory; unreadable ones are squeezed out into a second file.
        """
        n = len(source)
        with self.store.create(key, (n, 3, size, size), "uint8") as pending:
            if pending is None:
                return None
            errors = self._decode_into(pending.array, source, size, progress)
            ok, labels, skipped, reasons = self._outcome(source, errors, split)
            meta = {**meta, "labels": labels.tolist(), "skipped": skipped, "skip_reasons": reasons}
            if not skipped:
                committed = pending.commit(meta)
            else:
                with self.store.create(key, (len(labels), 3, size, size), "uint8") as kept:
                    if kept is None:
                        return None
                    rows = np.flatnonzero(ok)
                    for start in range(0, len(rows), _COPY_ROWS):
                        chunk = rows[start : start + _COPY_ROWS]
                        kept.array[start : start + len(chunk)] = pending.array[chunk]
                    committed = kept.commit(meta)
        if not committed:
            return None
        result = self._load_disk(key, source, size)
        if result is not None:
            result.cache_hit = "none"
        return result

    # ---------------------------------------------------------------- disk

    def _load_disk(
        self, key: str, source: ImageSource, size: int, fingerprint: str | None = None
    ) -> ImageTensors | None:
        """The cached split, mapped, or None when absent or not what it claims to be."""
        entry = self.store.load(
            key, dtype="uint8", shape=(None, 3, size, size), fields=DECODED_FIELDS
        )
        if entry is None:
            return None
        array, meta = entry
        try:
            # What the sidecar says it holds must be what was asked for (the key hashes
            # them, so only a forged or copied sidecar differs).
            if meta.get("size", size) != size:
                raise ValueError(f"its sidecar says {meta['size']} px, {size} px were asked for")
            if fingerprint is not None and meta.get("fingerprint", fingerprint) != fingerprint:
                raise ValueError("its sidecar names other images (another fingerprint)")
            labels = np.asarray(meta["labels"], dtype=np.int64)
            skipped, reasons = meta["skipped"], meta["skip_reasons"]
            expected = np.asarray(source.labels, dtype=np.int64)
            # The sidecar must describe this very split: every image kept or
            # skipped, and labels the dataset itself gives (no out-of-range class).
            if len(labels) != len(array):
                raise ValueError(f"shape {array.shape} for {len(labels)} labels at {size} px")
            if len(labels) + len(skipped) != len(expected):
                raise ValueError(
                    f"{len(labels)} + {len(skipped)} images, the split has {len(expected)}"
                )
            if skipped and not np.isin(labels, expected).all():
                raise ValueError("labels the dataset does not have")
            if not skipped and not np.array_equal(labels, expected):
                raise ValueError("labels differ from the dataset's")
        except (KeyError, ValueError, TypeError) as exc:
            self.store.reject(key, str(exc))
            return None
        reasons = (reasons + ["unreadable"] * len(skipped))[: len(skipped)]
        return ImageTensors(
            mapped_tensor(array),
            torch.from_numpy(labels),
            skipped,
            "disk",
            skip_reasons=reasons,
            mapped=isinstance(array, np.memmap),
        )


# --------------------------------------------------------------------------- on-device transforms


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Centre `size` x `size` crop of a (B, 3, S, S) batch, as float in [0, 1]."""
    s = images.shape[-1]
    o = (s - size) // 2
    return images[..., o : o + size, o : o + size].float().div_(255)


def random_resized_crop_flip(
    images: torch.Tensor,
    size: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.35, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Random resized crop + horizontal flip of a uint8 batch, batched as one `grid_sample`.

    Each image gets its own crop (area fraction in `scale`, aspect in `ratio`)
    and a coin-flip mirror, all expressed as one affine sampling grid.
    Returns float in [0, 1], (B, 3, size, size), on the batch's device.
    """
    b, device = images.shape[0], images.device
    # Draw where the generator lives; a generator on the batch's device (as the
    # training loop passes) makes this copy a no-op, so no step waits on the host.
    rand = torch.rand(b, 5, generator=generator, device=generator.device)
    rand = rand.to(device, non_blocking=True)
    area = scale[0] + (scale[1] - scale[0]) * rand[:, 0]
    # Python floats, not a tensor built on the host: that copy would sync the device.
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * rand[:, 1])
    w = torch.sqrt(area * aspect).clamp(max=1.0)  # fraction of the width kept
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (1 - w) * (2 * rand[:, 2] - 1)  # crop centre in [-1, 1] coordinates
    cy = (1 - h) * (2 * rand[:, 4] - 1)
    flip = torch.where(rand[:, 3] < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=device)
    theta[:, 0, 0] = w * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, [b, 3, size, size], align_corners=False)
    x = images.float().div_(255)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
