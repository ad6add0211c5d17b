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
i): `load(i)` is random access and gives the same image every time. The
drawing code (numpy, Pillow) is in `tlbench.builtin.synthetic_draw`, imported
with the first image, so registering the dataset is instant.
Labels are `i % 10`, balanced and known without drawing. Train and test
images come from different seeds, so they never coincide.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tlbench.hookspecs import hookimpl
from tlbench.plugin_types import Dataset, DatasetRequest, DatasetSplits

if TYPE_CHECKING:
    from PIL import Image

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


# --------------------------------------------------------------------------- difficulty


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
        from tlbench.builtin.synthetic_draw import render

        c = self.config
        seed = (c.seed, _SPLIT_CODES[self.split], index)
        return render(self.labels[index], seed, size=c.size, clutter=c.clutter, classes=CLASSES)

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


def __getattr__(name: str) -> Any:
    # PEP 562: `from tlbench.builtin.synthetic import render` imports the drawing code then.
    if name in ("render", "SHAPES"):
        from tlbench.builtin import synthetic_draw

        return getattr(synthetic_draw, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
