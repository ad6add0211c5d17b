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

import os
from collections.abc import Sequence

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

    def __repr__(self) -> str:
        return f"FileImages({len(self)} images)"


def is_image_file(name: str) -> bool:
    """Whether a file name has an image extension (case-insensitive); hidden files never do."""
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def open_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """Decode `path` into an 8-bit RGB image, upright and with alpha composited on white.

    Raises on an unreadable, truncated or corrupt file.
    """
    with Image.open(path) as image:
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
