"""Invariants of the data path and the statistics, over generated inputs (Hypothesis).

A property checked on one hand-made input can hold by chance: the budget
nesting test passed with independent orders per budget because its classes
had 10, 6 and 3 images. Here each invariant is checked for any input of its
kind, Hypothesis generating them (and shrinking a failure to its smallest
example):

- image-folder splits are disjoint, cover every file and hold out a stratified
  share of each class, for any class sizes, fraction and seed;
- data budgets are nested (a smaller budget's images are among a larger one's)
  and stratified, for any class sizes, seeds and budgets; a tuning trial's
  validation split is disjoint from what it trains on, and stratified;
- one class-to-index mapping serves every split, for any class names
  (Unicode, case, digits, NFC and NFD forms of one name);
- every image a decoded split keeps is paired with its own label, whatever
  set of images could not be read (each image's pixels carry its index);
- `stats`' intervals and ties agree with scipy on generated accuracies, and
  the report's own faster computation of them agrees with `stats`;
- the report's Pareto marks are the non-dominated rows of a brute-force check,
  and each gain over scratch is against the one like-for-like scratch row.

Examples are few (`max_examples`) and derandomised, so a run takes seconds
and a failure reproduces; the filesystem tests write 8 x 8 PNGs.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import Phase, assume, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import stats as sps

from tlbench import report, stats
from tlbench.budget import budget_indices, validation_split
from tlbench.builtin.imagefolder import load_imagefolder
from tlbench.data import DecodeCache, UnreadableImagesError
from tlbench.images import FileImages
from tlbench.plugin_types import DatasetRequest
from tlbench.record import encode_correct


def examples(n: int, *, shrink: bool = True) -> settings:
    """Few, reproducible examples: no deadline (a cold import is slow), no example database.

    `shrink=False` reports the first failing example as found: for tests whose examples
    cost tens of milliseconds, shrinking one takes minutes (a planted bug, a mutant).
    """
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else [])
    return settings(max_examples=n, deadline=None, derandomize=True, database=None, phases=phases)


def _touch(path: Path, data: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# --------------------------------------------------------------------------- image-folder splits


@examples(25)
@given(
    sizes=st.lists(st.integers(1, 12), min_size=2, max_size=5),
    fraction=st.sampled_from([0.05, 0.1, 0.2, 1 / 3, 0.5, 0.9]),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_held_out_split_is_disjoint_complete_and_stratified(sizes, fraction, seed):
    assume(max(sizes) >= 2)  # else nothing can be held out (a clear error, tested elsewhere)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for c, n in enumerate(sizes):
            for i in range(n):
                _touch(root / f"class{c}" / f"img{i}.png")  # never decoded by the split
        splits = load_imagefolder(DatasetRequest(str(root), root, fraction, seed))
        train, held = splits.train, splits.eval
        assert not set(train.paths) & set(held.paths)
        assert sorted(train.paths + held.paths) == sorted(str(p) for p in root.rglob("*.png"))
        for c, n in enumerate(sizes):
            kept = sum(1 for label in held.labels if label == c)
            # At least one held out and one kept for training, from a class of two or more.
            assert kept == (0 if n < 2 else min(n - 1, max(1, round(n * fraction))))
        # The same seed holds out the same files; the labels are their folders'.
        again = load_imagefolder(DatasetRequest(str(root), root, fraction, seed))
        assert again.eval.paths == held.paths
        for files in (train, held):
            for path, label in zip(files.paths, files.labels, strict=True):
                assert Path(path).parent.name == f"class{label}"


# --------------------------------------------------------------------------- budgets

budgets = st.one_of(
    st.integers(1, 25).map(lambda k: f"shots={k}"),
    st.sampled_from([0.01, 0.1, 0.25, 0.5, 0.75, 1.0]).map(lambda f: f"fraction={f:g}"),
)


@examples(60)
@given(
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=6),
    seed=st.integers(0, 2**32 - 1),
    small=budgets,
    large=budgets,
    shuffle=st.randoms(use_true_random=False),
)
def test_budgets_are_nested_and_stratified_for_any_class_sizes_and_seeds(
    sizes, seed, small, large, shuffle
):
    labels = np.array([c for c, n in enumerate(sizes) for _ in range(n)])
    shuffle.shuffle(labels)  # classes interleaved, as files of several folders are
    chosen: dict[str, dict[int, set[int]]] = {}
    for budget in (small, large):
        indices, facts = budget_indices(labels, budget, seed)
        assert indices.tolist() == sorted(set(indices.tolist()))
        kind, _, value = budget.partition("=")
        per_class: dict[int, set[int]] = {}
        for c, n in enumerate(sizes):
            mine = {int(i) for i in indices if labels[i] == c}
            want = int(value) if kind == "shots" else max(1, round(float(value) * n))
            assert len(mine) == min(want, n)  # stratified: each class its own share
            assert (str(c) in facts["short_classes"]) == (want > n)
            per_class[c] = mine
        assert facts["budget_images"] == len(indices)
        chosen[budget] = per_class
    for c in range(len(sizes)):
        a, b = chosen[small][c], chosen[large][c]
        # Nested: the budget with fewer images of a class holds a subset of the other's.
        assert a <= b or b <= a, (c, sorted(a), sorted(b))


@examples(20)
@given(sizes=st.lists(st.integers(2, 30), min_size=2, max_size=4), seed=st.integers(0, 2**32 - 1))
def test_a_budget_of_a_seed_is_the_same_draw_every_time_and_seeds_vary_it(sizes, seed):
    labels = np.repeat(np.arange(len(sizes)), sizes)
    first, _ = budget_indices(labels, "shots=1", seed)
    assert budget_indices(labels, "shots=1", seed)[0].tolist() == first.tolist()
    # Not a fixed pick: some seed draws another first image (the seeds vary the subset).
    others = {
        tuple(budget_indices(labels, "shots=1", s)[0].tolist()) for s in range(seed, seed + 8)
    }
    assert len(others) > 1


@examples(40)
@given(
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=6),
    fraction=st.sampled_from([0.05, 0.1, 0.2, 0.25, 0.5, 0.9]),
    shuffle=st.randoms(use_true_random=False),
)
def test_a_validation_split_is_disjoint_complete_and_stratified(sizes, fraction, shuffle):
    labels = np.array([c for c, n in enumerate(sizes) for _ in range(n)])
    shuffle.shuffle(labels)
    fit, validation = validation_split(labels, fraction)
    assert fit.tolist() == sorted(set(fit.tolist()))
    assert validation.tolist() == sorted(set(validation.tolist()))
    assert not set(fit.tolist()) & set(validation.tolist())
    assert sorted(fit.tolist() + validation.tolist()) == list(range(len(labels)))
    for c, n in enumerate(sizes):
        held = int(np.sum(labels[validation] == c))
        # At least one image of a class to validate on, never its last training image.
        assert held == min(max(1, round(fraction * n)), n - 1)
    # One split per dataset: the same whatever else varies (the run's seed is not an input).
    assert validation_split(labels, fraction)[1].tolist() == validation.tolist()


# --------------------------------------------------------------------------- class names

#: pieces of class names: ASCII of both cases, digits, accents (composed and not),
#: other scripts, a space; "\u00e9" (NFC) and "e\u0301" (NFD) are two names on Linux.
name_chars = st.sampled_from([*"aAbBzZ019 _-", "\u00e9", "e\u0301", "ß", "Ω", "ж", "猫", "ǅ"])
class_names = (
    st.lists(name_chars, min_size=1, max_size=4)
    .map("".join)
    .filter(lambda s: s.strip() == s and s not in (".", ".."))
)


def _png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(out, format="PNG")
    return out.getvalue()


@examples(20)
@given(
    names=st.lists(class_names, min_size=2, max_size=6, unique=True),
    layout=st.sampled_from(["train/ and val/", "class folders"]),
)
def test_one_class_index_per_name_in_every_split(names, layout):
    # Both normalisation forms of one name, when drawn, are two folders: keep both.
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in names:
            if layout == "train/ and val/":
                _touch(root / "train" / name / "a.png")
                _touch(root / "train" / name / "b.png")
                _touch(root / "val" / name / "c.png")
            else:
                for f in ("a.png", "b.png", "c.png"):
                    _touch(root / name / f)
        splits = load_imagefolder(DatasetRequest(str(root), root, 0.34, 0))
        assert splits.classes == sorted(names)  # code-point order, as `sorted(os.listdir())`
        assert len(set(splits.classes)) == len(names)
        for files in (splits.train, splits.eval):
            assert sorted(set(files.labels)) == list(range(len(names)))  # every class, both splits
            for path, label in zip(files.paths, files.labels, strict=True):
                folder = Path(path).parent.name
                # The name as the file system holds it, not renormalised nor case-folded.
                assert splits.classes[label] == folder


# --------------------------------------------------------------------------- unreadable images


class Numbered:
    """An in-memory `ImageSource` whose image i is one flat colour that spells i.

    Red and green hold i (i = red + 256 * green), blue holds the label times 40:
    a kept row whose pixels say another index is an image paired with a wrong label.
    """

    def __init__(self, labels: list[int], broken: set[int], size: int = 12):
        self.labels, self.broken, self.size = labels, broken, size

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int) -> Image.Image:
        if index in self.broken:
            raise OSError(f"cannot identify image file {index}")
        colour = (index % 256, index // 256, 40 * self.labels[index])
        return Image.new("RGB", (self.size, self.size + 3), colour)

    def describe(self, index: int) -> str:
        return f"numbered[{index}]"


def _check_pairs(data, source, broken: set[int]) -> None:
    kept = [i for i in range(len(source)) if i not in broken]
    images = data.images.numpy()
    assert images.shape[0] == len(kept) == len(data.labels)
    # Each row is one flat colour: the index it spells is the image it holds.
    index = images[:, 0, 0, 0].astype(int) + 256 * images[:, 1, 0, 0].astype(int)
    assert index.tolist() == kept
    assert (images == images[:, :, :1, :1]).all()
    assert data.labels.tolist() == [source.labels[i] for i in kept]
    assert (images[:, 2, 0, 0] == 40 * data.labels.numpy()).all()
    assert data.skipped == [source.describe(i) for i in sorted(broken)]


@pytest.mark.parametrize("on_disk", [False, True], ids=["in memory", "disk cache"])
@examples(25)
@given(images=st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=1, max_size=300))
def test_every_kept_image_keeps_its_own_label_whatever_could_not_be_read(on_disk, images):
    labels = [label for label, _ in images]
    broken = {i for i, (_, unreadable) in enumerate(images) if unreadable}
    source = Numbered(labels, broken)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "skipped N unreadable image(s)"
        cache = DecodeCache(Path(tmp) if on_disk else None, workers=2)
        if len(broken) == len(images):
            with pytest.raises(UnreadableImagesError, match="none of the"):
                cache.get(source, fingerprint="fp", split="train", size=8)
            return
        first = cache.get(source, fingerprint="fp", split="train", size=8)
        assert first.cache_hit == "none" and first.mapped == on_disk
        _check_pairs(first, source, broken)
        if on_disk:
            # Read back as another process would: the entry on disk, mapped.
            again = DecodeCache(Path(tmp)).get(source, fingerprint="fp", split="train", size=8)
            assert again.cache_hit == "disk"
            _check_pairs(again, source, broken)


@examples(8)
@given(
    sizes=st.lists(st.integers(1, 5), min_size=2, max_size=3),
    data=st.data(),
)
def test_an_image_folder_with_unreadable_files_keeps_each_image_with_its_label(sizes, data):
    total = sum(sizes)
    broken = data.draw(st.sets(st.integers(0, total - 1), max_size=total - 1), label="broken")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "flowers"
        i = 0
        for c, n in enumerate(sizes):
            for _ in range(n):
                bad = b"not a png at all" if i in broken else _png((i, 0, 40 * c))
                _touch(root / "train" / f"c{c}" / f"{i:03d}.png", bad)
                i += 1
            _touch(root / "val" / f"c{c}" / "v.png", _png((0, 0, 0)))
        splits = load_imagefolder(DatasetRequest(str(root), root, 0.1, 0))
        source = splits.train
        assert isinstance(source, FileImages)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            got = DecodeCache(Path(tmp) / "cache").get(
                source, fingerprint=splits.fingerprint, split="train", size=8
            )
        kept = [j for j in range(total) if j not in broken]
        assert got.images[:, 0, 0, 0].tolist() == kept  # file j is the j-th by name
        assert got.labels.tolist() == [source.labels[j] for j in kept]
        assert (got.images[:, 2, 0, 0] == 40 * got.labels).all()
        assert got.skipped == [os.fspath(source.paths[j]) for j in sorted(broken)]


# --------------------------------------------------------------------------- statistics

#: accuracies as a results file holds them: fractions of a thousand evaluation images.
accuracies = st.integers(0, 1000).map(lambda k: k / 1000)


@examples(60)
@given(values=st.lists(accuracies, min_size=2, max_size=12))
def test_the_t_interval_is_scipys(values):
    assume(len(set(values)) > 1)  # scipy has no interval of a zero spread (tested by hand)
    got = stats.t_interval(values)
    low, high = sps.ttest_1samp(values, 0.0).confidence_interval(0.95)
    assert got.n == len(values) and got.estimate == pytest.approx(np.mean(values), abs=1e-12)
    assert (got.lower, got.upper) == pytest.approx((low, high), rel=1e-9, abs=1e-12)


@examples(80)
@given(
    pairs=st.lists(st.tuples(accuracies, accuracies), min_size=2, max_size=10),
    seeds=st.permutations(range(10)),
)
def test_paired_differences_pair_each_seed_with_itself_as_scipy_does(pairs, seeds):
    # The rows list their seeds in any order; a[s] is compared with b[s], never by rank.
    a = {seeds[i]: x for i, (x, _) in enumerate(pairs)}
    b = {seeds[i]: y for i, (_, y) in enumerate(pairs)}
    x, y = zip(*pairs, strict=True)
    diff = np.subtract(x, y)
    assume(np.ptp(diff) > 0)
    got = stats.paired_t(a, b)
    test = sps.ttest_rel(x, y)
    low, high = test.confidence_interval(0.95)
    assert got.estimate == pytest.approx(diff.mean(), abs=1e-12)
    assert (got.lower, got.upper) == pytest.approx((low, high), rel=1e-9, abs=1e-12)
    # The tie rule is scipy's test at 5%: tied exactly when the difference is not significant.
    best, other = stats.Row("best", a), stats.Row("other", b)
    verdict = stats.compare(best, other)
    assert verdict.method == "paired-t"
    if abs(test.pvalue - 0.05) > 1e-9:
        assert verdict.tied == (test.pvalue > 0.05)


@examples(40)
@given(
    correct=st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=400),
    seed=st.integers(0, 2**16),
)
def test_the_paired_bootstrap_estimates_the_difference_and_brackets_it(correct, seed):
    a = np.array([p for p, _ in correct], dtype=int)
    b = np.array([q for _, q in correct], dtype=int)
    got = stats.paired_bootstrap(a, b, resamples=2000, seed=seed)
    assert got.estimate == pytest.approx(a.mean() - b.mean(), abs=1e-12)
    assert got.lower <= got.estimate + 1e-12 and got.estimate - 1e-12 <= got.upper
    # Only disagreements move the difference: images both got right or wrong add nothing.
    disagree = int(np.sum(a != b))
    if disagree == 0:
        assert (got.lower, got.upper) == (0.0, 0.0)
    assert got.lower >= -1.0 and got.upper <= 1.0
    # Its width against scipy's percentile bootstrap of the paired differences: same method.
    if disagree >= 20:
        ref = sps.bootstrap(
            (a - b,),
            np.mean,
            n_resamples=4000,
            method="percentile",
            rng=np.random.default_rng(seed),
        ).confidence_interval
        # Two Monte-Carlo runs: within a few tenths of the spread, plus the 1/n steps.
        slack = 0.3 * np.std(a - b) / np.sqrt(len(a)) + 2 / len(a)
        assert got.lower == pytest.approx(ref.low, abs=slack)
        assert got.upper == pytest.approx(ref.high, abs=slack)


@examples(60)
@given(
    items=st.lists(st.tuples(st.integers(0, 4), accuracies), min_size=1, max_size=8),
    k=st.integers(1, 3),
)
def test_regret_is_the_accuracy_lost_by_fine_tuning_only_the_top_k(items, k):
    score = [s for s, _ in items]
    acc = [a for _, a in items]
    # By hand: the k highest scores; among equal scores at the cut, the worst accuracies.
    ranked = sorted(range(len(items)), key=lambda i: (-score[i], acc[i]))
    expected = max(acc) - max(acc[i] for i in ranked[:k])
    assert stats.regret(score, acc, k=k) == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------------------- Pareto


def _dominates(o: report.Row, r: report.Row) -> bool:
    """o is at least as good on both axes (accuracy up, cost down) and better on one."""
    mine = np.array([r.accuracy, -(r.train_seconds or 0.0)])
    theirs = np.array([o.accuracy, -(o.train_seconds or 0.0)])
    return bool(np.all(theirs >= mine) and np.any(theirs > mine))


rows = st.lists(
    st.tuples(
        st.sampled_from(["flowers", "pets"]),
        st.one_of(st.none(), st.integers(0, 5).map(lambda k: k / 5)),
        st.one_of(st.none(), st.sampled_from([0.0, 0.5, 1.0, 2.0, 10.0])),
        st.sampled_from(["scratch", "linear", "finetune"]),
        st.sampled_from(["resnet18", "vit"]),
        st.sampled_from([32, 64]),
    ),
    min_size=1,
    max_size=9,
)


@examples(80)
@given(rows=rows)
def test_the_pareto_marks_are_the_rows_no_other_row_of_their_dataset_dominates(rows):
    made = [
        report.Row(
            dataset,
            backbone,
            strategy,
            "ok" if acc is not None else "failed",
            accuracy=acc,
            train_seconds=seconds,
            image_size=size,
            device="cpu",
        )
        for dataset, acc, seconds, strategy, backbone, size in rows
    ]
    report._mark_gain_and_pareto(made, "train+search", "train")
    for r in made:
        # The gain over scratch: the one scratch run of its backbone, dataset and size.
        like = [
            o
            for o in made
            if o.strategy == "scratch"
            and (o.dataset, o.backbone, o.image_size) == (r.dataset, r.backbone, r.image_size)
            and o.accuracy is not None
        ]
        if r.strategy == "scratch" or r.accuracy is None or len(like) != 1:
            assert r.gain_over_scratch is None, r
        else:
            assert r.gain_over_scratch == r.accuracy - like[0].accuracy, r
    for r in made:
        if r.accuracy is None:
            assert not r.pareto  # no result: on no front
            continue
        rivals = [
            o for o in made if o is not r and o.dataset == r.dataset and o.accuracy is not None
        ]
        assert r.pareto == (not any(_dominates(o, r) for o in rivals)), r
    # Every dataset with a result has a front, and its most accurate, cheapest row is on it.
    for dataset in {r.dataset for r in made if r.accuracy is not None}:
        mine = [r for r in made if r.dataset == dataset and r.accuracy is not None]
        top = min(mine, key=lambda r: (-r.accuracy, r.train_seconds or 0.0))
        assert top.pareto


# --------------------------------------------------------------------------- the report's marks


def _record(backbone: str, seed: int, correct: list[bool]) -> dict:
    """An ok record of one run: its final evaluation image by image (all else fixed)."""
    return {
        "schema": 2,
        "key": f"{backbone}-{seed}",
        "status": "ok",
        "time": "2026-01-01T00:00:00+00:00",
        "config": {
            "backbone": backbone,
            "weights": None,
            "dataset": "flowers",
            "strategy": "linear",
            "seed": seed,
            "image_size": 32,
            "hyperparameters": {"epochs": 1},
            "device": "cpu",
            "precision": "fp32",
            "dataset_fingerprint": "fp",
        },
        "accuracy": {
            "final": float(np.mean(correct)),
            "best": float(np.mean(correct)),
            "curve": [],
            "final_correct": encode_correct(correct),
        },
        "cost": {"train_seconds": 1.0},
        "data": {"eval_images": len(correct), "eval_split": "test", "num_classes": 2},
    }


@st.composite
def grids(draw):
    """Rows of one dataset, each with one to three seeds, each seed's per-image results."""
    n = draw(st.integers(4, 60), label="images")
    made = []
    for b in range(draw(st.integers(2, 5), label="rows")):
        skill = draw(st.sampled_from([0.3, 0.6, 0.9]))
        for seed in sorted(draw(st.sets(st.sampled_from([0, 1, 2]), min_size=1))):
            flips = draw(st.lists(st.floats(0, 1), min_size=n, max_size=n))
            made.append((f"b{b}", seed, [f < skill for f in flips]))
    return made


@examples(40, shrink=False)
@given(grid=grids())
# 15 of 22 right: 15 / 22 * 22 is 14.999...; the single run's bootstrap must count 15 hits.
@example(grid=[("b0", 0, [True] * 15 + [False] * 7), ("b1", 0, [True] * 9 + [False] * 13)])
def test_the_reports_intervals_and_ties_are_the_stats_modules(grid):
    # The report computes them its own, faster way (cached quantiles, rows at once);
    # whatever the seeds and per-image results, the figures must be `tlbench.stats`'s.
    found = report.summarize([_record(*run) for run in grid])
    correct = {(b, seed): c for b, seed, c in grid}
    expected_rows = [
        stats.Row(
            r.backbone,
            dict(r.seed_accuracy),
            {s: np.asarray(correct[r.backbone, s], dtype=int) for s in r.seed_accuracy},
        )
        for r in found
    ]
    ties = stats.compare_to_best(expected_rows)
    for r, row in zip(found, expected_rows, strict=True):
        seeds = list(row.accuracy)
        interval = stats.accuracy_interval(
            [row.accuracy[s] for s in seeds], row.correct[seeds[0]] if len(seeds) == 1 else None
        )
        assert (r.ci_low, r.ci_high) == pytest.approx(
            (max(0.0, interval.lower), min(1.0, interval.upper)), abs=1e-12
        )
        assert r.tie == ties[r.backbone].tied, (r.backbone, ties[r.backbone])
