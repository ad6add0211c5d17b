"""Reading image files into RGB: the one loader every file-based dataset uses.

`open_rgb` decodes a file fully, applies its EXIF orientation and converts any
Pillow mode to 8-bit RGB so that pixel values mean the same thing whatever the
file format:

- transparency (RGBA, LA, PA, P or L/RGB with a transparent colour) is
  composited on **white**. Dropping the alpha channel, as torchvision's
  `pil_loader` does, shows whatever colour the encoder left under transparent
  pixels (often black, sometimes garbage); white is what a viewer shows and
  what cut-out product and icon images are designed against.
- 16-bit greyscale (I;16, I;16B, I;16L, and mode I holding 16-bit data) is
  scaled 0..65535 -> 0..255. Pillow's own `convert("RGB")` clips it instead,
  turning almost every 16-bit image white.
- 32-bit integer and float images are scaled from [0, 1] when they lie there,
  otherwise from their own min..max.
- CMYK, YCbCr, palette, 1-bit and greyscale go through Pillow's conversion.

A truncated or corrupt file raises (`OSError`, `PIL.UnidentifiedImageError`,
`ValueError`...), never loads half-grey: Pillow's global
`ImageFile.LOAD_TRUNCATED_IMAGES` is left alone, and the file is decoded here,
not lazily later.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

#: file extensions read as images, as torchvision's `IMG_EXTENSIONS` (compare lower-cased).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

_BACKGROUND = (255, 255, 255)
_ORIENTATION = 0x0112  # the EXIF tag


class FileImages:
    """An `ImageSource` over image files: labels known upfront, each file decoded on `load`."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]], labels: Sequence[int]):
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths = [os.fspath(p) for p in paths]
        self.labels = [int(label) for label in labels]

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Image.Image:
        return open_rgb(self.paths[index])

    def describe(self, index: int) -> str:
        return self.paths[index]

    def content_fingerprint(self) -> str:
        """A hash of every file's bytes, in order (see `content_fingerprint`)."""
        return content_fingerprint(self.paths)

    def __repr__(self) -> str:
        return f"FileImages({len(self)} images)"


def is_image_file(name: str) -> bool:
    """Whether a file name has an image extension (case-insensitive); hidden files never do."""
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


#: the most pixels an image may have; checked from its header, before it is decoded.
#: 100 megapixels (300 MB decoded) is above any camera's; a few-kB PNG can declare far more.
MAX_PIXELS = 100_000_000


def open_rgb(path: str | os.PathLike[str] | BinaryIO) -> Image.Image:
    """Decode `path` into an 8-bit RGB image, upright and with alpha composited on white.

    Raises on an unreadable, truncated or corrupt file, on a path that is not
    a regular file (a FIFO would block: it is never opened for reading), and
    on an image of more than `MAX_PIXELS` pixels (before decoding it).
    """
    if isinstance(path, (str, bytes, os.PathLike)):
        with os.fdopen(open_regular(path), "rb") as f:
            return _decode_rgb(f)
    return _decode_rgb(path)


def _decode_rgb(f: BinaryIO) -> Image.Image:
    with Image.open(f) as image:
        w, h = image.size
        if w * h > MAX_PIXELS:
            raise ValueError(
                f"image of {w} x {h} px is too large to decode (more than {MAX_PIXELS:,} pixels)"
            )
        # Decode now, inside the `with`: a truncated file must fail here, and
        # a lazily-loaded image would outlive its file handle.
        image.load()
        image = _exif_upright(image)
        return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded image of any Pillow mode to 8-bit RGB (see the module docstring)."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _high_depth_to_rgb(image)
    # "transparency" in info: a transparent palette index or colour (PNG tRNS, GIF).
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "RGB":
        return image
    return image.convert("RGB")


def _exif_upright(image: Image.Image) -> Image.Image:
    try:
        orientation = image.getexif().get(_ORIENTATION, 1)
        # exif_transpose copies even an upright image; most are upright.
        return ImageOps.exif_transpose(image) if orientation in range(2, 9) else image
    except Exception:
        # A malformed EXIF block should not make readable pixels unreadable:
        # keep the image as stored.
        return image


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    array = np.asarray(image)
    if image.mode.startswith("I;16"):
        scaled = array.astype(np.float32) / 257.0
    elif image.mode == "I" and array.size and array.min() >= 0 and array.max() <= 65535:
        # Pillow versions and formats disagree on whether 16-bit data opens as
        # I;16 or I; in this range, treat it as 16-bit.
        scaled = array.astype(np.float32) / 257.0
    else:
        array = array.astype(np.float64)
        finite = array[np.isfinite(array)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if image.mode == "F" and low >= 0.0 and high <= 1.0:
            low, high = 0.0, 1.0
        scale = 255.0 / (high - low) if high > low else 0.0
        scaled = np.nan_to_num((array - low) * scale)
    grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


# --------------------------------------------------------------------------- content fingerprints

#: files up to this size are hashed whole; larger ones by `_SAMPLES` slices of `_SLICE` bytes
#: (the first and last included) and their size: a photo is a few MB at most, a 100 MB TIFF
#: is not read through for a cache key.
_WHOLE = 1 << 20
_SLICE = 64 << 10
_SAMPLES = 16
#: (path, device, inode, size, mtime, ctime) -> digest: a grid hashes each file once per
#: process. ctime is in it because `cp -p`, `rsync -a` and `tar -x` restore the mtime but
#: cannot restore the ctime.
_DIGESTS: dict[tuple, bytes] = {}
_DIGESTS_LOCK = threading.Lock()


def open_regular(path: str | os.PathLike[str]) -> int:
    """A read-only descriptor of `path`, or OSError unless it is a regular file.

    Opened without blocking, then checked: a FIFO named `x.jpg` (or a device)
    would block a plain `open` for good, or never end.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a pipe" if stat.S_ISFIFO(mode) else "a device or socket"
            raise OSError(f"{os.fspath(path)} is not a regular file ({kind})")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def file_digest(path: str) -> bytes:
    """sha1 of the file's bytes (sampled above `_WHOLE`); b"" for a file that cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return b""
    memo = (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    digest = _DIGESTS.get(memo)
    if digest is not None:
        return digest
    h = hashlib.sha1(str(st.st_size).encode(), usedforsecurity=False)
    try:
        fd = open_regular(path)
    except OSError:
        return b""  # the decode reports it
    try:
        if st.st_size <= _WHOLE:
            while chunk := os.read(fd, _WHOLE):
                h.update(chunk)
        else:
            last = st.st_size - _SLICE
            for i in range(_SAMPLES):
                h.update(os.pread(fd, _SLICE, last * i // (_SAMPLES - 1)))
    except OSError:
        return b""
    finally:
        os.close(fd)
    digest = h.digest()
    with _DIGESTS_LOCK:
        _DIGESTS[memo] = digest
    return digest


def content_fingerprint(paths: Sequence[str], workers: int = 8) -> str:
    """A hash of the files' bytes, in order: what the decode cache is keyed on.

    A replaced image changes it even when it keeps the old size and
    modification time (`cp -p`, `rsync -a`, `tar -x`). Files are read by
    `workers` threads (reads and sha1 release the GIL).
    """
    h = hashlib.sha1(b"tlbench-content-v1", usedforsecurity=False)
    digests: list[bytes | None] = [_known_digest(p) for p in paths]  # one stat each
    missing = [i for i, d in enumerate(digests) if d is None]
    if missing:
        with ThreadPoolExecutor(workers) as pool:
            for i, digest in zip(
                missing, pool.map(file_digest, [paths[i] for i in missing]), strict=True
            ):
                digests[i] = digest
    for digest in digests:
        h.update(digest or b"\0unreadable")
    return h.hexdigest()[:16]


def _known_digest(path: str) -> bytes | None:
    try:
        st = os.stat(path)
    except OSError:
        return b""
    return _DIGESTS.get((path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
