"""Drawing the `synthetic` shape task: geometry, clutter and `render` (numpy and Pillow).

Imported by `tlbench.builtin.synthetic` when the first image is drawn; the
task's description, classes and difficulty knobs (`Clutter`) live there.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

if TYPE_CHECKING:  # the knobs are described where the task is; this module only draws
    from tlbench.builtin.synthetic import Clutter


_SUPERSAMPLE = 2  # draw at 2x and reduce: anti-aliased edges without per-shape alpha maths

# --------------------------------------------------------------------------- geometry
# Each shape is a list of (polygon, fill) in unit coordinates (radius about 1,
# y down); fill 0 cuts a hole, so rings and crescents are two polygons.

Polygon = np.ndarray  # (K, 2)


def _regular(k: int, radius: float = 1.0, phase: float = -math.pi / 2) -> Polygon:
    t = phase + np.arange(k) * 2 * math.pi / k
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def _star() -> Polygon:
    outer, inner = _regular(5, 1.0), _regular(5, 0.42, -math.pi / 2 + math.pi / 5)
    return np.stack([outer, inner], axis=1).reshape(-1, 2)


def _heart() -> Polygon:
    t = np.linspace(0, 2 * math.pi, 40, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    pts = np.stack([x, y + 2.5], axis=1) / 16.5
    return pts


_CROSS = np.array(
    [
        *[(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3)],
        *[(0.3, 1), (-0.3, 1), (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)],
    ],
    dtype=float,
)
_ARROW = np.array(
    [(-1, -0.22), (0.15, -0.22), (0.15, -0.65), (1, 0), (0.15, 0.65), (0.15, 0.22), (-1, 0.22)],
    dtype=float,
)
_CIRCLE = _regular(48)

SHAPES: dict[str, list[tuple[Polygon, int]]] = {
    "circle": [(_CIRCLE, 255)],
    "square": [(np.array([(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]), 255)],
    "triangle": [(_regular(3, 1.0), 255)],
    "pentagon": [(_regular(5, 0.95), 255)],
    "star": [(_star(), 255)],
    "cross": [(_CROSS * 0.9, 255)],
    "ring": [(_CIRCLE, 255), (_CIRCLE * 0.58, 0)],
    "crescent": [(_CIRCLE, 255), (_CIRCLE * 0.88 + (0.5, -0.1), 0)],
    "heart": [(_heart(), 255)],
    "arrow": [(_ARROW, 255)],
}


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    r, g, b = (int(c) for c in rng.integers(0, 256, 3))
    return r, g, b


def _contrasting(rng: np.random.Generator, against: np.ndarray) -> tuple[int, int, int]:
    # A shape the colour of its background is unlearnable noise, not difficulty.
    best, best_d = (0, 0, 0), -1.0
    for _ in range(8):
        c = _colour(rng)
        d = float(np.linalg.norm(np.asarray(c, dtype=np.float32) - against))
        if d > 120:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def _count(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))


def _background(rng: np.random.Generator, side: int, detail: tuple[float, float]) -> Image.Image:
    coarse = rng.uniform(0, 255, (rng.integers(2, 6), rng.integers(2, 6), 3)).astype(np.uint8)
    fine = rng.uniform(0, 255, (rng.integers(8, 20), rng.integers(8, 20), 3)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((side, side), Image.BICUBIC), np.float32)
    noise = np.asarray(Image.fromarray(fine).resize((side, side), Image.BILINEAR), np.float32)
    w = rng.uniform(*detail)
    return Image.fromarray(((1 - w) * smooth + w * noise).astype(np.uint8))


def _lines(rng: np.random.Generator, image: Image.Image, count: int) -> None:
    draw = ImageDraw.Draw(image)
    side = image.size[0]
    for _ in range(count):
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(-0.1, 1.1, 4) * side)
        width = int(rng.integers(1, 4)) * _SUPERSAMPLE
        draw.line([(x0, y0), (x1, y1)], fill=_colour(rng), width=width)


@functools.lru_cache(maxsize=4)
def _grid(side: int) -> np.ndarray:
    return np.mgrid[0:side, 0:side].astype(np.float32)


def _erode(mask: np.ndarray, half: int) -> np.ndarray:
    """Minimum over a (2 half + 1)^2 square: separable shifts, far cheaper than MinFilter."""
    out = mask.copy()
    for axis in (0, 1):
        src = out.copy()
        for s in range(1, half + 1):
            lo = [slice(None)] * 2
            hi = [slice(None)] * 2
            lo[axis], hi[axis] = slice(s, None), slice(None, -s)
            np.minimum(out[tuple(lo)], src[tuple(hi)], out=out[tuple(lo)])
            np.minimum(out[tuple(hi)], src[tuple(lo)], out=out[tuple(hi)])
    return out


def _draw_shape(
    rng: np.random.Generator,
    image: Image.Image,
    shape: str,
    radius: float,
    center: tuple[float, float],
    clutter: Clutter,
) -> None:
    side = image.size[0]
    angle = math.radians(rng.uniform(-clutter.rotation, clutter.rotation))
    aspect = math.exp(rng.uniform(-0.25, 0.25))
    cos, sin = math.cos(angle), math.sin(angle)
    transform = np.array([[cos, -sin], [sin, cos]]) @ np.diag([radius * aspect, radius / aspect])
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    for polygon, fill in SHAPES[shape]:
        pts = polygon @ transform.T + center
        draw.polygon([(float(x), float(y)) for x, y in pts], fill=fill)

    x, y = (int(np.clip(v, 0, side - 1)) for v in center)
    colour = _contrasting(rng, np.asarray(image.getpixel((x, y)), dtype=np.float32))
    style = rng.random()
    if style < clutter.outline:
        # Outline only: the mask minus its erosion, a stroke a few pixels wide.
        full = np.asarray(mask)
        mask = Image.fromarray(full - _erode(full, int(rng.integers(1, 3)) * _SUPERSAMPLE))
        image.paste(colour, mask=mask)
    elif style < clutter.outline + clutter.texture:
        # Striped fill: the colour blended with a second one along a random direction.
        second = np.asarray(_colour(rng), np.float32)
        period = rng.uniform(3, 10) * _SUPERSAMPLE
        theta = rng.uniform(0, math.pi)
        yy, xx = _grid(side)
        phase = (xx * math.cos(theta) + yy * math.sin(theta)) * (2 * math.pi / period)
        wave = (0.25 + 0.25 * np.sin(phase))[..., None]
        fill = np.asarray(colour, np.float32) * (1 - wave) + second * wave
        image.paste(Image.fromarray(fill.astype(np.uint8)), mask=mask)
    else:
        image.paste(colour, mask=mask)


def render(
    label: int,
    seed: int | Sequence[int],
    *,
    size: int,
    clutter: Clutter,
    classes: Sequence[str],
) -> Image.Image:
    """Draw one `size` px image of class `label` (of `classes`, names in `SHAPES`) from
    `seed`: the same seed gives the same pixels."""
    c = clutter
    rng = np.random.default_rng(seed)
    side = size * _SUPERSAMPLE
    image = _background(rng, side, c.detail)
    _lines(rng, image, _count(rng, c.lines_behind))
    others = [k for k in range(len(classes)) if k != label]
    for _ in range(_count(rng, c.distractors)):
        shape = classes[others[int(rng.integers(len(others)))]]
        radius = rng.uniform(*c.distractor_radius) * side
        center = (float(rng.uniform(0, side)), float(rng.uniform(0, side)))
        _draw_shape(rng, image, shape, radius, center, c)
    radius = rng.uniform(*c.radius) * side
    lo, hi = (1 - c.crop) * radius, side - (1 - c.crop) * radius
    center = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))
    _draw_shape(rng, image, classes[label], radius, center, c)
    # Lines in front of the shape occlude parts of it.
    _lines(rng, image, _count(rng, c.lines_front))
    image = image.reduce(_SUPERSAMPLE)
    # Sensor-like grain at the output resolution (cheaper than at 2x, and not averaged away).
    pixels = np.asarray(image, np.float32)
    pixels += rng.normal(0, rng.uniform(*c.grain), (size, size, 1)).astype(np.float32)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if rng.random() < c.blur:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.4, 1.1))))
    return image
