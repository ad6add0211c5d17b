"""`synthetic`: a generated shape-recognition task, offline and deterministic.

Ten classes of shape (circle, square, triangle, pentagon, star, cross, ring,
crescent, heart, arrow). Each 64 px image shows one large shape of its class
at a random position (up to 30% of its radius may leave the frame), scale
(about 2x range), any rotation, a random aspect and a random colour, drawn
solid, striped or as an outline, on a cluttered background: smooth colour
noise, fine noise, sensor grain, random lines (some across the shape) and
sometimes a small distractor shape of *another* class. A fifth of the images
are blurred. The label is the class of the large shape. `Clutter` holds every
knob; `SyntheticConfig` the size, counts and seed.

Why this task: colour, position and texture carry no label information, so a
network has to recognise shape through clutter. From 600 images a small CNN
trained from scratch overfits and stays low, while ImageNet-pretrained
features (edges, corners, contours) transfer. Measured on a 2-core CPU at the
defaults: the builtin `small_cnn` from scratch (AdamW 2e-3, 10 epochs,
flips, 64 px) reaches about 19% test top-1 (22% after 30 epochs; chance is
10%); a frozen ImageNet EfficientNet-Lite0 with a linear head reaches 73% at
128 px (55% at 64 px). Images are small (64 px) so the default `tlbench run`
is fast on a CPU; the core resizes them to the run's image size. Drawing one
image costs about 1.3 ms of CPU.

Image `i` of a split is drawn from a random generator seeded by (seed, split,
i): `load(i)` is random access and gives the same image every time.
Labels are `i % 10`, balanced and known without drawing. Train and test
images come from different seeds, so they never coincide.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from tlbench.api import Dataset, DatasetRequest, DatasetSplits
from tlbench.hookspecs import hookimpl

#: bump on any change to the drawing code: it keys the decode and feature caches.
GENERATOR_VERSION = "shapes-v1"

CLASSES = (
    "circle",
    "square",
    "triangle",
    "pentagon",
    "star",
    "cross",
    "ring",
    "crescent",
    "heart",
    "arrow",
)

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


# --------------------------------------------------------------------------- drawing


@dataclass(frozen=True)
class Clutter:
    """How hard the task is. Count ranges are inclusive; sizes are fractions of the side."""

    radius: tuple[float, float] = (0.22, 0.45)
    #: how far, as a fraction of its radius, the shape may leave the frame.
    crop: float = 0.3
    #: rotation range in degrees (either way).
    rotation: float = 180.0
    lines_behind: tuple[int, int] = (0, 2)
    lines_front: tuple[int, int] = (0, 1)
    distractors: tuple[int, int] = (0, 1)
    distractor_radius: tuple[float, float] = (0.06, 0.13)
    #: probabilities of an outline-only and of a striped shape (else solid).
    outline: float = 0.1
    texture: float = 0.15
    #: weight of the fine background noise against the smooth colour field.
    detail: tuple[float, float] = (0.05, 0.25)
    grain: tuple[float, float] = (3.0, 10.0)
    blur: float = 0.2


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
    size: int = 64,
    clutter: Clutter | None = None,
) -> Image.Image:
    """Draw one `size` px image of class `label` from `seed` (same seed, same pixels)."""
    c = clutter or Clutter()
    rng = np.random.default_rng(seed)
    side = size * _SUPERSAMPLE
    image = _background(rng, side, c.detail)
    _lines(rng, image, _count(rng, c.lines_behind))
    others = [k for k in range(len(CLASSES)) if k != label]
    for _ in range(_count(rng, c.distractors)):
        shape = CLASSES[others[int(rng.integers(len(others)))]]
        radius = rng.uniform(*c.distractor_radius) * side
        center = (float(rng.uniform(0, side)), float(rng.uniform(0, side)))
        _draw_shape(rng, image, shape, radius, center, c)
    radius = rng.uniform(*c.radius) * side
    lo, hi = (1 - c.crop) * radius, side - (1 - c.crop) * radius
    center = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))
    _draw_shape(rng, image, CLASSES[label], radius, center, c)
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


# --------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class SyntheticConfig:
    """The generated task's size and difficulty; the registered `synthetic` uses the defaults."""

    size: int = 64  # small: the default `tlbench run` must be quick on a CPU
    train_per_class: int = 60
    eval_per_class: int = 20
    seed: int = 0
    clutter: Clutter = Clutter()

    @property
    def fingerprint(self) -> str:
        # The dataclass repr lists every field, so any change of parameters
        # (or of GENERATOR_VERSION) gives a new cache key.
        return f"{GENERATOR_VERSION}|{self!r}"


_SPLIT_CODES = {"train": 0, "test": 1}


class SyntheticImages:
    """One split of the shape task as an `ImageSource`: image `i` drawn on demand."""

    def __init__(self, split: str, config: SyntheticConfig = SyntheticConfig()):
        per_class = config.train_per_class if split == "train" else config.eval_per_class
        self.split = split
        self.config = config
        self.labels = [i % len(CLASSES) for i in range(per_class * len(CLASSES))]

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int) -> Image.Image:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.describe(index)} is out of range ({len(self)} images)")
        c = self.config
        seed = (c.seed, _SPLIT_CODES[self.split], index)
        return render(self.labels[index], seed, size=c.size, clutter=c.clutter)

    def describe(self, index: int) -> str:
        return f"synthetic[{self.split}][{index}]"

    def __repr__(self) -> str:
        return f"SyntheticImages({self.split}, {len(self)} images, {self.config.size} px)"


def make_synthetic(config: SyntheticConfig = SyntheticConfig()) -> DatasetSplits:
    """Build the shape task's splits (nothing is drawn until `load`)."""
    return DatasetSplits(
        classes=list(CLASSES),
        train=SyntheticImages("train", config),
        eval=SyntheticImages("test", config),
        eval_split="test",
        fingerprint=hashlib.sha256(config.fingerprint.encode()).hexdigest()[:16],
        info={"generator": GENERATOR_VERSION, "size": config.size, "seed": config.seed},
    )


def load_synthetic(request: DatasetRequest) -> DatasetSplits:
    """The registered dataset: the default `SyntheticConfig` (the request changes nothing)."""
    return make_synthetic()


@hookimpl
def tlbench_register_datasets(register: Callable[[Dataset], None]) -> None:
    n, c = len(CLASSES), SyntheticConfig()
    register(
        Dataset(
            name="synthetic",
            load=load_synthetic,
            description=(
                f"generated offline: {n} shapes in clutter, {c.size} px, "
                f"{c.train_per_class * n} train / {c.eval_per_class * n} test"
            ),
            native_size=c.size,
        )
    )
