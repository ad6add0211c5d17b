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
    #: descriptions of items that could not be decoded and were left out.
    skipped: list[str] = field(default_factory=list)
    cache_hit: str = "none"  # "memory", "disk" or "none"
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])


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


class DecodeCache:
    """Decoded splits, in memory and on disk."""

    def __init__(self, cache_dir: Path | None, *, workers: int | None = None):
        self.store = ArrayStore(cache_dir / "decoded" if cache_dir else None)
        self.workers = workers or min(8, os.cpu_count() or 1)
        self._memory: dict[str, ImageTensors] = {}

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
            return ImageTensors(cached.images, cached.labels, cached.skipped, "memory", 0.0)
        t0 = time.perf_counter()
        loaded = self._load_disk(key) if fingerprint else None
        if loaded is not None:
            loaded.seconds = time.perf_counter() - t0
            self._memory[key] = loaded
            return loaded
        decoded = self._decode(source, size, strict=strict, progress=progress)
        decoded.seconds = time.perf_counter() - t0
        if fingerprint:
            self._save_disk(key, decoded, {"fingerprint": fingerprint, "split": split})
        self._memory[key] = decoded
        return decoded

    # ---------------------------------------------------------------- decode

    def _decode(self, source: ImageSource, size: int, *, strict: bool, progress: Any) -> ImageTensors:
        n = len(source)
        images = np.empty((n, 3, size, size), dtype=np.uint8)
        ok = np.ones(n, dtype=bool)
        errors: list[tuple[int, str]] = []

        def work(i: int) -> None:
            try:
                images[i] = _decode_one(source, i, size)
            except Exception as exc:  # unreadable image: counted, reported, left out
                ok[i] = False
                errors.append((i, f"{type(exc).__name__}: {exc}"))

        # PIL releases the GIL while decoding and resizing, so threads scale.
        with ThreadPoolExecutor(self.workers) as pool:
            for done, _ in enumerate(pool.map(work, range(n)), start=1):
                if progress is not None and (done % 32 == 0 or done == n):
                    progress(done, n)
        skipped = [source.describe(i) for i, _ in sorted(errors)]
        if errors and strict:
            listing = "\n  ".join(f"{source.describe(i)}: {e}" for i, e in sorted(errors)[:20])
            more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
            raise DatasetError(
                f"{len(errors)} image(s) could not be read (--strict):\n  {listing}{more}\n"
                "Remove or replace them, or run without --strict to skip them."
            )
        if errors:
            warnings.warn(
                f"skipped {len(errors)} unreadable image(s), e.g. {skipped[0]}; "
                "use --strict to make this an error",
                RuntimeWarning,
                stacklevel=3,
            )
        labels = torch.as_tensor(np.asarray(source.labels, dtype=np.int64)[ok])
        if len(labels) == 0:
            raise DatasetError("no image of this split could be read")
        return ImageTensors(torch.from_numpy(images[ok] if errors else images), labels, skipped)

    # ---------------------------------------------------------------- disk

    def _load_disk(self, key: str) -> ImageTensors | None:
        entry = self.store.load(key)
        if entry is None:
            return None
        array, meta = entry
        labels = np.asarray(meta.get("labels", []), dtype=np.int64)
        if array.dtype != np.uint8 or array.ndim != 4 or len(labels) != len(array):
            return None
        return ImageTensors(
            torch.from_numpy(array), torch.from_numpy(labels), list(meta.get("skipped", [])), "disk"
        )

    def _save_disk(self, key: str, data: ImageTensors, meta: dict[str, Any]) -> None:
        meta = {**meta, "labels": data.labels.tolist(), "skipped": data.skipped}
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
    rand = torch.rand(b, 4, generator=generator, device=generator.device).to(device)
    area = scale[0] + (scale[1] - scale[0]) * rand[:, 0]
    log_r = torch.log(torch.tensor(ratio, device=device))
    aspect = torch.exp(log_r[0] + (log_r[1] - log_r[0]) * rand[:, 1])
    w = torch.sqrt(area * aspect).clamp(max=1.0)  # fraction of the width kept
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (1 - w) * (2 * rand[:, 2] - 1)  # crop centre in [-1, 1] coordinates
    cy = (1 - h) * (2 * torch.rand(b, generator=generator, device=generator.device).to(device) - 1)
    flip = torch.where(rand[:, 3] < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=device)
    theta[:, 0, 0] = w * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, [b, 3, size, size], align_corners=False)
    x = images.float().div_(255)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
