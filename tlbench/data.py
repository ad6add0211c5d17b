"""Decode once: every (dataset, split, size) becomes one uint8 tensor, cached.

Each image is decoded, its shorter side resized to `store_size` and the centre
square kept, once. The result lives in memory for the process and on disk as a
plain `.npy` file (read with `allow_pickle=False`: loading a cache file never
executes code) keyed by the dataset's fingerprint, so a second process reuses
it and a change to the files invalidates it. Training augmentations then run
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

from tlbench.api import ImageSource
from tlbench.cache import ArrayStore, cache_key
from tlbench.errors import DatasetError

#: bumped whenever decoding changes, so old caches are not reused.
DECODE_VERSION = 1


@dataclass
class ImageTensors:
    """A decoded split: `images` uint8 (N, 3, S, S) on the CPU and `labels` int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    #: descriptions (paths) of items that could not be decoded and were left out.
    skipped: list[str] = field(default_factory=list)
    cache_hit: str = "none"  # "memory", "disk" or "none"
    seconds: float = 0.0
    #: why each of `skipped` could not be read, in the same order.
    skip_reasons: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])


class UnreadableImagesError(DatasetError):
    """Images of a split could not be decoded: all of them, or any of them under `--strict`.

    It is about the data, not about one run, so the runner stops the grid on
    it instead of recording a failure for every run on that dataset.
    """


def default_cache_dir() -> Path:
    if env := os.environ.get("TLBENCH_CACHE_DIR"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tlbench"


def _decode_one(source: ImageSource, index: int, size: int) -> np.ndarray:
    from PIL import Image

    image = source.load(index)
    if image.mode != "RGB":
        image = image.convert("RGB")
    w, h = image.size
    scale = size / min(w, h)
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


class DecodeCache:
    """Decoded splits, in memory and on disk.

    Unreadable images (corrupt, truncated, not an image at all) are left out
    and listed in `ImageTensors.skipped`, with one warning per split and
    process; with `strict=True` any of them is an `UnreadableImagesError`
    naming the files. Strictness is checked on every `get`, also when the
    split comes from a cache that a non-strict run filled.
    """

    def __init__(self, cache_dir: Path | None, *, workers: int | None = None):
        self.store = ArrayStore(cache_dir / "decoded" if cache_dir else None)
        self.workers = workers or min(8, os.cpu_count() or 1)
        self._memory: dict[str, ImageTensors] = {}
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
    ) -> ImageTensors:
        key = self.key(fingerprint, split, size)
        if key in self._memory:
            cached = self._memory[key]
            result = dataclasses.replace(cached, cache_hit="memory", seconds=0.0)
        else:
            t0 = time.perf_counter()
            result = self._load_disk(key, source, size) if fingerprint else None
            if result is None:
                result = self._decode(source, size, split=split, progress=progress)
                if fingerprint:
                    self._save_disk(key, result, {"fingerprint": fingerprint, "split": split})
            result.seconds = time.perf_counter() - t0
            # Cached even when strict fails below: the decode itself was sound.
            self._memory[key] = result
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

    def _decode(self, source: ImageSource, size: int, *, split: str, progress: Any) -> ImageTensors:
        n = len(source)
        images = np.empty((n, 3, size, size), dtype=np.uint8)
        ok = np.ones(n, dtype=bool)
        errors: dict[int, str] = {}

        def work(i: int) -> None:
            try:
                images[i] = _decode_one(source, i, size)
            except Exception as exc:  # unreadable image: counted, reported, left out
                ok[i] = False
                errors[i] = f"{type(exc).__name__}: {exc}"

        # PIL releases the GIL while decoding and resizing, so threads scale.
        with ThreadPoolExecutor(self.workers) as pool:
            for done, _ in enumerate(pool.map(work, range(n)), start=1):
                if progress is not None and (done % 32 == 0 or done == n):
                    progress(done, n)
        failed = sorted(errors)
        skipped = [source.describe(i) for i in failed]
        reasons = [errors[i] for i in failed]
        labels = torch.as_tensor(np.asarray(source.labels, dtype=np.int64)[ok])
        if len(labels) == 0:
            data = ImageTensors(torch.empty(0), labels, skipped, skip_reasons=reasons)
            raise UnreadableImagesError(
                f"none of the {n} image(s) of the {split} split could be read:{_listing(data, 5)}"
            )
        return ImageTensors(
            torch.from_numpy(images[ok] if failed else images),
            labels,
            skipped,
            skip_reasons=reasons,
        )

    # ---------------------------------------------------------------- disk

    def _load_disk(self, key: str, source: ImageSource, size: int) -> ImageTensors | None:
        """The cached split, or None when absent or not what it claims to be."""
        entry = self.store.load(key, dtype="uint8")
        if entry is None:
            return None
        array, meta = entry
        try:
            labels = np.asarray(meta["labels"], dtype=np.int64)
            skipped = [str(s) for s in meta.get("skipped", [])]
            reasons = [str(s) for s in meta.get("skip_reasons", [])]
            expected = np.asarray(source.labels, dtype=np.int64)
            # The sidecar must describe this very split: every image kept or
            # skipped, and labels the dataset itself gives (no out-of-range class).
            if array.shape[1:] != (3, size, size) or len(labels) != len(array):
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
            torch.from_numpy(array), torch.from_numpy(labels), skipped, "disk", skip_reasons=reasons
        )

    def _save_disk(self, key: str, data: ImageTensors, meta: dict[str, Any]) -> None:
        meta = {
            **meta,
            "labels": data.labels.tolist(),
            "skipped": data.skipped,
            "skip_reasons": data.skip_reasons,
        }
        self.store.save(key, data.images.numpy(), meta)


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
