"""Data budgets: train on K images per class (`--shots`) or a fraction of each class (`--train-fraction`).

A budget is part of a run's key and record. The subset is stratified (drawn
class by class) and seeded by the run's seed, so seeds vary the subset as
well as the initialisation; the evaluation split never changes. Each class's
images are drawn in one seeded order and a budget takes the first ones, so
the budgets of one seed are nested: the 1-shot images are among the 5-shot
ones, and accuracy against budget compares more data, not other data. A
class with fewer images than K uses all it has, and the record says so.

Budgets are written `shots=K` and `fraction=F`; no budget (None) is the
whole split, which keeps the run keys of grids without budgets unchanged.
Imports numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from tlbench.errors import ConfigError


def parse_budgets(shots: Iterable[Any] = (), fractions: Iterable[float] = ()) -> list[str | None]:
    """The budgets of a grid, in the order given: `shots=K`, `fraction=F`, or None for all images."""
    budgets: list[str | None] = []
    for value in shots:
        text = str(value).strip().lower()
        if text == "all":
            budgets.append(None)
            continue
        try:
            k = int(text)
        except ValueError:
            raise ConfigError(
                f"--shots takes whole numbers of images per class or 'all', not {value!r}"
            ) from None
        if k < 1:
            raise ConfigError(f"--shots must be at least 1 image per class, not {k}")
        budgets.append(f"shots={k}")
    for value in fractions:
        f = float(value)
        if not (0 < f <= 1) or math.isnan(f):
            raise ConfigError(f"--train-fraction must be in (0, 1], not {value!r}")
        budgets.append(None if f == 1 else f"fraction={f:g}")
    return list(dict.fromkeys(budgets)) or [None]


def describe(budget: str | None) -> str:
    """`shots=5` -> `5-shot`, `fraction=0.25` -> `25%`, None -> `all`."""
    if budget is None:
        return "all"
    kind, _, value = budget.partition("=")
    return f"{value}-shot" if kind == "shots" else f"{100 * float(value):g}%"


def budget_indices(labels: np.ndarray, budget: str, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Sorted indices of the training images a run with `budget` and `seed` trains on, and facts.

    The facts go into the record: the budget, the images taken, and the
    classes that had fewer images than asked (`short_classes`: class index ->
    images it had).
    """
    kind, _, value = budget.partition("=")
    labels = np.asarray(labels)
    chosen: list[np.ndarray] = []
    short: dict[str, int] = {}
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        # One order per (seed, class), whatever the budget: budgets are nested.
        order = np.random.default_rng([seed, int(c)]).permutation(members)
        if kind == "shots":
            want = int(value)
        elif kind == "fraction":
            want = max(1, round(float(value) * len(members)))
        else:
            raise ValueError(f"unknown budget {budget!r}")
        if want > len(members):
            short[str(int(c))] = len(members)
        chosen.append(order[:want])
    indices = np.sort(np.concatenate(chosen)) if chosen else np.array([], dtype=np.int64)
    facts = {"budget": budget, "budget_images": len(indices), "short_classes": short}
    return indices, facts


#: the seed of every validation split: one split per dataset, whatever the run's seed, so
#: every trial of every backbone is chosen on the same images.
VALIDATION_SEED = 0


def holdout_name(fraction: float) -> str:
    """The `RunSpec.holdout` of a run chosen on `fraction` of each class: `validation=F`."""
    return f"validation={fraction:g}"


def parse_holdout(holdout: str) -> float:
    """`validation=F` -> F, the fraction of each class held out for validation."""
    kind, _, value = holdout.partition("=")
    if kind != "validation":
        raise ValueError(f"unknown holdout {holdout!r}")
    fraction = float(value)
    if not 0 < fraction < 1:
        raise ValueError(f"a validation fraction must be in (0, 1), not {fraction!r}")
    return fraction


def validation_split(labels: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices `(fit, validation)` of a training split: a stratified validation part.

    Each class gives `round(fraction * n)` of its n images (at least one, and
    never its last one: a class of one image stays in `fit`), in one seeded
    order (`VALIDATION_SEED`) that no budget shares. Tuning trials train on
    `fit` (a budget is then drawn from it) and are chosen on `validation`;
    the test split is never among either.
    """
    labels = np.asarray(labels)
    held: list[np.ndarray] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        order = np.random.default_rng([VALIDATION_SEED, int(c), 0x7A1]).permutation(members)
        want = min(max(1, round(fraction * len(members))), len(members) - 1)
        held.append(order[:want])
    validation = np.sort(np.concatenate(held)) if held else np.array([], dtype=np.int64)
    fit = np.setdiff1d(np.arange(len(labels)), validation)
    return fit, validation
