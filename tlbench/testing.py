"""Contract checks for tlbench plugins, and the pytest plugin that offers them.

The same checks run over every builtin backbone, dataset and strategy in
tlbench's own test suite; a third-party plugin passes them to be treated
like a builtin. Each raises `AssertionError` with a message naming the item
and what is wrong:

    check_backbone(backbone)          output (B, feature_dim), finite; frozen: no graph;
                                      trainable: every parameter gets a gradient
    check_dataset(dataset, request)   classes, labels in range, images decode to RGB,
                                      loads are repeatable, train and eval disjoint
    check_strategy(strategy)          trains what it declares (and nothing else);
                                      the loss falls on a tiny batch
    check_plugin(plugin)              loads alone, registers something, clashes with no builtin

Installing tlbench registers this module with pytest (entry point `pytest11`),
so these fixtures exist in every test session:

    tlbench_plugins        factory: a `Plugins` with only the given plugin objects loaded
    tlbench_request        a `DatasetRequest` for offline tests (tmp data dir, no download)
    tlbench_tiny_backbone  a two-layer CNN backbone (with fixed "pretrained" weights)
    tlbench_tiny_dataset   coloured squares, 3 classes, 48 train / 18 eval images, in memory
    tlbench_run            factory: run a tiny grid through the real runner, return its records

pytest imports this module in every session, so it imports neither torch nor
the builtins until a check or fixture is used.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlbench.hookspecs import hookimpl
from tlbench.plugin_types import (
    Backbone,
    Dataset,
    DatasetRequest,
    DatasetSplits,
    Hyperparameters,
    Preprocessing,
    Strategy,
    StrategyOption,
    call_param_groups,
    stage_parameters,
)

if TYPE_CHECKING:
    from PIL import Image
    from torch import nn

    from tlbench.plugins import Plugins

__all__ = [
    "TINY_PLUGIN",
    "ColourSquares",
    "LyingLabels",
    "TinyPlugin",
    "benchmark_grid",
    "check_accuracy",
    "check_backbone",
    "check_dataset",
    "check_plugin",
    "check_strategy",
    "lying_tiny_dataset",
    "tiny_backbone",
    "tiny_dataset",
]

#: environment variables that change which plugins load; fixtures clear them.
PLUGIN_ENV = ("TLBENCH_LOAD_PLUGINS", "TLBENCH_BLOCK_PLUGINS", "TLBENCH_TRACE_PLUGINS")


# --------------------------------------------------------------------------- tiny test objects

_COLOURS = [(220, 40, 40), (40, 200, 60), (50, 70, 230)]


class ColourSquares:
    """An in-memory `ImageSource`: class k is a square of colour k on noisy grey, anywhere."""

    def __init__(self, n: int, seed: int, size: int = 24):
        self.n, self.seed, self.size = n, seed, size
        self.labels = [i % len(_COLOURS) for i in range(n)]

    def __len__(self) -> int:
        return self.n

    def load(self, index: int) -> Image.Image:
        import numpy as np
        from PIL import Image

        rng = np.random.default_rng((self.seed, index))
        img = rng.integers(90, 160, size=(self.size, self.size, 3), dtype=np.uint8)
        side = int(rng.integers(6, 12))
        x, y = rng.integers(0, self.size - side, size=2)
        img[y : y + side, x : x + side] = _COLOURS[self.labels[index]]
        return Image.fromarray(img)

    def describe(self, index: int) -> str:
        return f"colour-squares[{self.seed}][{index}]"


class LyingLabels:
    """An `ImageSource` with the images of `source` and every label moved to the next
    class: to show that a choice never reads a split (its labels can lie, nothing moves)."""

    def __init__(self, source: Any, classes: int = len(_COLOURS)):
        self.source = source
        self.labels = [(label + 1) % classes for label in source.labels]

    def __len__(self) -> int:
        return len(self.source)

    def load(self, index: int) -> Image.Image:
        return self.source.load(index)

    def describe(self, index: int) -> str:
        return f"{self.source.describe(index)} (label moved)"


def _load_tiny(request: DatasetRequest) -> DatasetSplits:
    return DatasetSplits(
        classes=["red", "green", "blue"],
        train=ColourSquares(48, seed=0),
        eval=ColourSquares(18, seed=1),
        eval_split="test",
        fingerprint="tlbench-testing-colour-squares-v1",
    )


def tiny_dataset(name: str = "tiny_squares") -> Dataset:
    """3 classes of coloured squares, 48 train / 18 eval images of 24 px, in memory."""
    return Dataset(name, _load_tiny, description="coloured squares, 3 classes", native_size=16)


def lying_tiny_dataset(name: str = "tiny_squares_lying") -> Dataset:
    """`tiny_dataset` with every test label moved to the next class (`LyingLabels`) and a
    fingerprint of its own: a choice that never reads the test split does not move on it."""

    def load(request: DatasetRequest) -> DatasetSplits:
        splits = _load_tiny(request)
        return dataclasses.replace(
            splits, eval=LyingLabels(splits.eval), fingerprint=splits.fingerprint + "-lying"
        )

    return Dataset(name, load, description="coloured squares, test labels moved", native_size=16)


def _tiny_net(width: int = 8) -> nn.Module:
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def _build_tiny(pretrained: bool) -> nn.Module:
    import torch

    if pretrained:
        # "Pretrained" weights: a fixed initialisation, the same on every build.
        with torch.random.fork_rng():
            torch.manual_seed(1234)
            return _tiny_net()
    return _tiny_net()


def _tiny_stages(module: nn.Module) -> list[tuple[str, list[str]]]:
    return [("conv1", ["0", "1"]), ("conv2", ["4"])]


def tiny_backbone(name: str = "tiny_cnn", *, weights: bool = True) -> Backbone:
    """A two-conv CNN with 16 features in two stages; `weights=True` gives it fixed
    "pretrained" weights."""
    return Backbone(
        name,
        _build_tiny,
        16,
        Preprocessing(resize=18, crop=16),
        weights="tiny-fixed-init" if weights else None,
        description="a two-layer test CNN",
        min_image_size=8,
        stages=_tiny_stages,
    )


# --------------------------------------------------------------------------- backbones


def _check_static_backbone(b: Backbone) -> None:
    assert isinstance(b, Backbone), f"expected a tlbench.Backbone, got {type(b).__name__}"
    who = f"backbone {b.name!r}"
    assert isinstance(b.feature_dim, int) and b.feature_dim > 0, (
        f"{who}: feature_dim must be a positive int, got {b.feature_dim!r}"
    )
    assert callable(b.build), f"{who}: build is not callable"
    p = b.preprocessing
    assert isinstance(p, Preprocessing), f"{who}: preprocessing must be a tlbench.Preprocessing"
    assert len(p.mean) == 3 and len(p.std) == 3, f"{who}: mean and std need 3 values (RGB)"
    assert all(s > 0 for s in p.std), f"{who}: std must be positive, got {p.std}"
    assert 0 < p.crop <= p.resize, f"{who}: need 0 < crop <= resize, got {p.crop}/{p.resize}"
    assert isinstance(p.interpolation, str) and p.interpolation, f"{who}: interpolation missing"
    assert b.min_image_size >= 1, f"{who}: min_image_size must be >= 1"
    if b.fixed_image_size is not None:
        assert b.fixed_image_size >= b.min_image_size, (
            f"{who}: fixed_image_size {b.fixed_image_size} < min_image_size {b.min_image_size}"
        )
    assert b.weights is None or (isinstance(b.weights, str) and b.weights), (
        f"{who}: weights must be None or a non-empty identifier, got {b.weights!r}"
    )


def _reachable_parameters(output: Any) -> set[int]:
    """ids of the leaf tensors `output`'s autograd graph reaches: who a backward would update.

    Walking the graph answers "does every parameter get a gradient" without
    paying for the backward pass (most of the cost on a CPU).
    """
    found: set[int] = set()
    seen: set[Any] = set()
    stack = [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)  # AccumulateGrad: a leaf
        if variable is not None:
            found.add(id(variable))
        stack.extend(child for child, _ in node.next_functions)
    return found


def check_backbone(
    backbone: Backbone,
    image_size: int | None = None,
    *,
    pretrained: bool = False,
    batch_size: int = 2,
    all_parameters_train: bool = True,
) -> nn.Module:
    """Build `backbone` and check what the core relies on; returns the built module (eval mode).

    - static fields: positive `feature_dim`, a `Preprocessing` with RGB mean/std
      and crop <= resize, consistent image-size limits;
    - `build(pretrained)` returns an `nn.Module`; frozen as `linear` freezes it
      (every `requires_grad` off, eval mode) it maps `(B, 3, S, S)` to a finite
      `(B, feature_dim)` tensor, builds no autograd graph and turns no parameter
      back on; S is `image_size` (default: its fixed size, else
      max(min_image_size, 32));
    - trainable (train mode), the output's graph reaches every parameter
      (`all_parameters_train=False` skips that for models with unused ones).

    With `pretrained=True` a backbone without `weights` fails the check, and
    `WeightsUnavailableError` from `build` propagates (the offline case).
    """
    import torch

    _check_static_backbone(backbone)
    who = f"backbone {backbone.name!r}"
    size = backbone.fixed_image_size or image_size or max(backbone.min_image_size, 32)
    assert size >= backbone.min_image_size, f"{who}: {size} px is below its min_image_size"
    if pretrained:
        assert backbone.weights is not None, f"{who} declares no weights; build(True) is not used"
    module = backbone.build(pretrained)
    assert isinstance(module, torch.nn.Module), (
        f"{who}: build() must return an nn.Module, got {type(module).__name__}"
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        x = torch.rand(batch_size, 3, size, size)
    params = dict(module.named_parameters())

    for p in params.values():
        p.requires_grad_(False)
    module.eval()
    out = module(x)
    expected = (batch_size, backbone.feature_dim)
    assert isinstance(out, torch.Tensor), f"{who}: forward must return a tensor, got {type(out)}"
    assert tuple(out.shape) == expected, (
        f"{who}: output shape {tuple(out.shape)} at {size} px, expected {expected} "
        "(batch, feature_dim): pooled and flattened features"
    )
    assert out.is_floating_point() and bool(torch.isfinite(out).all()), f"{who}: non-finite output"
    turned_on = [n for n, p in module.named_parameters() if p.requires_grad]
    assert not turned_on, f"{who}: frozen, but forward re-enabled gradients of {turned_on[:5]}"
    assert not out.requires_grad and out.grad_fn is None, (
        f"{who}: frozen, but forward built an autograd graph (it would compute gradients)"
    )

    for p in params.values():
        p.requires_grad_(True)
    module.train()
    out = module(x)
    assert tuple(out.shape) == expected, f"{who}: train-mode output shape {tuple(out.shape)}"
    assert out.requires_grad, f"{who}: trainable, but its output does not require grad"
    if all_parameters_train:
        reached = _reachable_parameters(out)
        missing = [n for n, p in params.items() if id(p) not in reached]
        assert not missing, (
            f"{who}: {len(missing)} parameter(s) get no gradient, e.g. {missing[:5]}; "
            "a feature extractor should not carry unused layers (a classifier left in place?)"
        )
    del out
    if backbone.stages is not None:
        _check_stages(backbone, module)
    return module.eval()


def _check_stages(backbone: Backbone, module: nn.Module) -> None:
    """Declared stages: every parameter in exactly one, none empty, at least two."""
    who = f"backbone {backbone.name!r}"
    try:
        stages = stage_parameters(backbone, module)
    except ValueError as error:
        raise AssertionError(f"{who}: its stages are wrong: {error}") from None
    assert len(stages) >= 2, f"{who}: declares {len(stages)} stage; stages split it stem to head"


# --------------------------------------------------------------------------- datasets


def _sample(n: int, k: int) -> list[int]:
    """Up to k indices spread over range(n), first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def check_dataset(
    dataset: Dataset, request: DatasetRequest | None = None, *, samples: int = 4
) -> DatasetSplits:
    """Load `dataset` with `request` and check what the core relies on; returns the splits.

    Class names unique strings; every label an int in range and known without
    decoding; every class has training images; sampled images decode to RGB
    PIL images, identically on a second load; no item (by `describe`) in both
    splits; a non-empty fingerprint that a second `load` reproduces.
    """
    from PIL import Image

    assert isinstance(dataset, Dataset), f"expected a tlbench.Dataset, got {type(dataset).__name__}"
    who = f"dataset {dataset.name!r}"
    request = request or DatasetRequest(argument=None, data_dir=Path("."), download=False)
    if dataset.takes_argument:
        assert request.argument, f"{who} takes an argument ({dataset.argument_help}); pass one"
    splits = dataset.load(request)
    assert isinstance(splits, DatasetSplits), f"{who}: load() must return tlbench.DatasetSplits"

    classes = splits.classes
    assert isinstance(classes, list) and classes, f"{who}: classes must be a non-empty list"
    assert all(isinstance(c, str) and c for c in classes), f"{who}: class names must be strings"
    assert len(set(classes)) == len(classes), f"{who}: duplicate class names"
    assert isinstance(splits.fingerprint, str) and splits.fingerprint, (
        f"{who}: an empty fingerprint would let the decode and feature caches mix datasets"
    )
    assert isinstance(splits.eval_split, str) and splits.eval_split, f"{who}: eval_split missing"

    names: dict[str, set[str]] = {}
    for split, source in (("train", splits.train), ("eval", splits.eval)):
        where = f"{who} {split} split"
        for attr in ("labels", "load", "describe", "__len__"):
            assert hasattr(source, attr), f"{where}: an ImageSource needs {attr}"
        n = len(source)
        assert n > 0, f"{where} is empty"
        labels = list(source.labels)
        assert len(labels) == n, f"{where}: {len(labels)} labels for {n} images"
        bad = [
            (i, y)
            for i, y in enumerate(labels)
            if not isinstance(y, numbers.Integral) or not 0 <= int(y) < len(classes)
        ]
        assert not bad, f"{where}: labels outside 0..{len(classes) - 1}, e.g. {bad[:3]}"
        if split == "train":
            unseen = sorted(set(range(len(classes))) - {int(y) for y in labels})
            assert not unseen, (
                f"{where}: classes without training images: {[classes[i] for i in unseen][:5]}"
            )
        for k, i in enumerate(_sample(n, samples)):
            image = source.load(i)
            assert isinstance(image, Image.Image), (
                f"{where}: load({i}) must return a PIL image, got {type(image).__name__}"
            )
            assert image.mode == "RGB", f"{where}: load({i}) gave mode {image.mode!r}, not RGB"
            assert image.width > 0 and image.height > 0, f"{where}: load({i}) is empty"
            if k == 0:
                # The decode cache stores each image once: loading must be repeatable.
                again = source.load(i)
                assert again.tobytes() == image.tobytes(), f"{where}: load({i}) is not repeatable"
        described = [source.describe(i) for i in range(n)]
        assert all(isinstance(d, str) and d for d in described), (
            f"{where}: describe() must name items"
        )
        names[split] = set(described)
    shared = names["train"] & names["eval"]
    assert not shared, (
        f"{who}: {len(shared)} item(s) in both train and eval, e.g. {sorted(shared)[:3]}; "
        "evaluation on training images overstates accuracy"
    )
    assert dataset.load(request).fingerprint == splits.fingerprint, (
        f"{who}: the fingerprint changes between two loads of the same data (caches never hit)"
    )
    return splits


# --------------------------------------------------------------------------- strategies


def check_strategy(
    strategy: Strategy,
    backbone: Backbone | None = None,
    *,
    steps: int = 10,
    image_size: int | None = None,
    num_classes: int = 3,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Check `strategy` on `backbone` (default: `tiny_backbone()`, two stages) with a tiny
    batch, its options at their defaults or as `options` sets them.

    - declared fields: `Hyperparameters` defaults the engine accepts; a
      `pretrained` strategy is skipped on a backbone without weights;
    - `param_groups` (not for `frozen_backbone`): dicts with params and a
      positive lr, no parameter twice, the new head included, exactly the
      parameters with `requires_grad` listed;
    - `steps` optimiser steps on 8 images: parameters outside the groups stay
      bit-identical (BatchNorm running statistics are buffers, not parameters),
      and the training loss falls.

    Returns `{"trainable", "total", "loss_before", "loss_after"}`.
    """
    import torch

    from tlbench.classifier import ImageClassifier

    assert isinstance(strategy, Strategy), (
        f"expected a tlbench.Strategy, got {type(strategy).__name__}"
    )
    who = f"strategy {strategy.name!r}"
    hp = _check_strategy_fields(strategy, who)
    options = strategy.check_options(options, who)
    backbone = backbone or tiny_backbone()
    _check_static_backbone(backbone)
    _check_weights_rule(strategy, backbone, who)

    size = backbone.fixed_image_size or image_size or max(backbone.min_image_size, 32)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = backbone.build(strategy.pretrained)
        head = torch.nn.Linear(backbone.feature_dim, num_classes)
        x = torch.rand(8, 3, size, size)
        y = torch.arange(8) % num_classes
    model = ImageClassifier(module, head, backbone.preprocessing)

    if strategy.frozen_backbone:
        # What the runner does: the backbone is frozen and the head alone trains.
        for p in module.parameters():
            p.requires_grad_(False)
        if hp.optimizer == "lbfgs":
            # A full-batch L-BFGS head (`logreg`, tlbench.probe) steps by closure: its
            # group and its falling loss are checked here with AdamW instead.
            hp = hp.replace(optimizer="adamw", lr=1e-2)
        groups = [{"params": list(head.parameters()), "lr": hp.lr, "name": "head"}]
    else:
        groups = _checked_groups(strategy, backbone, model, hp, options, who)

    declared = {id(p) for g in groups for p in g["params"]}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss_before, loss_after = _train_tiny(model, groups, hp, x, y, steps, strategy)
    changed_undeclared = [
        n
        for n, p in model.named_parameters()
        if id(p) not in declared and not torch.equal(p, before[n])
    ]
    assert not changed_undeclared, (
        f"{who}: parameters outside its groups changed: {changed_undeclared[:5]}"
    )
    assert loss_after < loss_before, (
        f"{who}: training loss did not fall on a tiny batch in {steps} steps at lr {hp.lr} "
        f"({loss_before:.4f} -> {loss_after:.4f})"
    )
    return {
        "trainable": sum(p.numel() for p in model.parameters() if id(p) in declared),
        "total": sum(p.numel() for p in model.parameters()),
        "loss_before": loss_before,
        "loss_after": loss_after,
    }


def _check_strategy_fields(strategy: Strategy, who: str) -> Hyperparameters:
    """A strategy's declared fields and options: its defaults, checked."""
    assert isinstance(strategy.description, str) and strategy.description, f"{who}: no description"
    hp = strategy.defaults
    assert isinstance(hp, Hyperparameters), f"{who}: defaults must be tlbench.Hyperparameters"
    assert hp.epochs >= 1 and hp.batch_size >= 1, f"{who}: epochs and batch_size must be >= 1"
    assert hp.lr > 0 and math.isfinite(hp.lr), f"{who}: lr must be positive, got {hp.lr}"
    assert hp.backbone_lr_mult >= 0, f"{who}: backbone_lr_mult must be >= 0"
    names = [o.name for o in strategy.options]
    assert len(set(names)) == len(names), f"{who}: two options have the same name"
    for option in strategy.options:
        assert isinstance(option, StrategyOption), f"{who}: options must be StrategyOptions"
        assert option.check(option.default, who) == option.default, (
            f"{who}: option {option.name!r}'s default is not a valid value"
        )
    return hp


def _check_weights_rule(strategy: Strategy, backbone: Backbone, who: str) -> None:
    """A `pretrained` strategy skips a backbone without weights; any other runs on it."""
    reason = strategy.skip_reason(tiny_backbone("no_weights", weights=False))
    if strategy.pretrained:
        assert reason, f"{who} needs pretrained weights but runs on a backbone without them"
        assert backbone.has_pretrained, f"{who} needs a backbone with weights to be checked"
    else:
        assert reason is None, f"{who} needs no weights but skips a backbone without: {reason}"


def _checked_groups(
    strategy: Strategy,
    backbone: Backbone,
    model: Any,
    hp: Hyperparameters,
    options: dict[str, Any],
    who: str,
) -> list[dict]:
    """The strategy's parameter groups, checked: each a dict of Parameters with a positive
    lr, none twice, every parameter that requires grad in one, the new head in one."""
    import torch

    module, head = model.backbone, model.head
    stages = stage_parameters(backbone, module) if backbone.stages is not None else None
    assert stages is not None or not strategy.needs_stages, (
        f"{who} trains by stage: check it with a backbone that declares stages"
    )
    groups = call_param_groups(strategy, module, head, hp, stages=stages, options=options)
    assert isinstance(groups, list) and groups, f"{who}: param_groups must return a list"
    seen: dict[int, str] = {}
    for g in groups:
        assert isinstance(g, dict) and "params" in g, f"{who}: each group is a dict with params"
        lr = g.get("lr")
        assert isinstance(lr, (int, float)) and lr > 0, f"{who}: group lr must be > 0: {lr!r}"
        for p in g["params"]:
            assert isinstance(p, torch.nn.Parameter), f"{who}: groups must hold Parameters"
            assert id(p) not in seen, f"{who}: a parameter is in two groups"
            seen[id(p)] = g.get("name", "?")
    names = {id(p): n for n, p in model.named_parameters()}
    not_listed = [names[id(p)] for p in model.parameters() if p.requires_grad and id(p) not in seen]
    assert not not_listed, (
        f"{who}: parameters require grad but are in no group (counted as trainable, never "
        f"updated): {not_listed[:5]}"
    )
    frozen = [names.get(id(p), "?") for g in groups for p in g["params"] if not p.requires_grad]
    assert not frozen, f"{who}: grouped parameters have requires_grad off: {frozen[:5]}"
    missing_head = [n for n, p in head.named_parameters() if id(p) not in seen]
    assert not missing_head, f"{who}: the new head must train (missing {missing_head})"
    return groups


def _train_tiny(
    model: Any,
    groups: list[dict],
    hp: Hyperparameters,
    x: Any,
    y: Any,
    steps: int,
    strategy: Strategy,
) -> tuple[float, float]:
    """`steps` optimiser steps of the groups on one tiny batch: (loss before, loss after)."""
    import torch
    import torch.nn.functional as F

    from tlbench.optim import make_optimizer, make_schedule

    optimizer = make_optimizer(groups, hp.replace(epochs=1))
    schedule = make_schedule(
        optimizer, hp.replace(epochs=1, warmup_epochs=0, schedule="constant"), steps
    )
    model.train()
    if strategy.frozen_backbone:
        model.backbone.eval()

    def loss_now() -> float:
        # The same dropout masks for both measurements: only the parameters differ.
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(1)
            return float(F.cross_entropy(model(x), y))

    loss_before = loss_now()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        schedule.step()
    return loss_before, loss_now()


class TinyPlugin:
    """Registers `tiny` (fixed "pretrained" weights), `tiny_random` and `tinyset`.

    Importable as `tlbench.testing:TINY_PLUGIN`, so worker processes (the
    `process`, `devices` and `ray` executors) load it the way the driver did.
    """

    @hookimpl
    def tlbench_register_backbones(self, register: Callable[[Backbone], None]) -> None:
        register(tiny_backbone("tiny"))
        register(tiny_backbone("tiny_random", weights=False))

    @hookimpl
    def tlbench_register_datasets(self, register: Callable[[Dataset], None]) -> None:
        register(tiny_dataset("tinyset"))


TINY_PLUGIN = TinyPlugin()


# --------------------------------------------------------------------------- whole plugins


def load_plugins(
    plugins: Iterable[object | tuple[str, object]], *, builtins: bool = False
) -> Plugins:
    """A `Plugins` with exactly these plugin objects (modules or instances), entry points off."""
    from tlbench.plugins import Plugins

    extra = []
    for i, plugin in enumerate(plugins):
        if isinstance(plugin, tuple):
            extra.append(plugin)
        else:
            name = getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{i}"
            extra.append((name, plugin))
    return Plugins(builtins=builtins, entry_points=False, extra=extra)


def check_plugin(plugin: object, name: str = "plugin_under_test") -> Plugins:
    """Load `plugin` beside the builtins: it must load, register something and clash with nothing."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # failures are asserted below instead
        loaded = load_plugins([(name, plugin)], builtins=True)
    info = loaded.info[name]
    assert info.status == "loaded", f"plugin {name!r} did not load: {info.error}"
    assert info.provides, f"plugin {name!r} registers no backbone, dataset or strategy"
    for registry in (loaded.backbones, loaded.datasets, loaded.strategies):
        clashes = {n: o for n, o in registry.conflicts.items() if name in o}
        assert not clashes, f"plugin {name!r} registers names already taken: {clashes}"
    return loaded


# --------------------------------------------------------------------------- your grid as a benchmark


def benchmark_grid(benchmark: Any, **run_options: Any) -> Any:
    """Benchmark a grid of your own with pytest-benchmark, accuracy included.

    Runs `tlbench.run(**run_options)` once under `benchmark.pedantic` (one round:
    a grid takes seconds to hours, and each record times its own runs) and
    keeps in `benchmark.extra_info`:

    - `"tlbench_cells"`: per report row (`"backbone / strategy / dataset"`), its
      top-1 (`top1`, a fraction) and training seconds (`train_seconds`, the
      report's "train s");
    - `"tlbench_records"`: the records themselves (per-image results included),
      so that `tlbench compare OLD.json NEW.json` of two saved sessions
      (`--benchmark-autosave`) or `check_accuracy` compares accuracy cell by cell,
      paired, where `--benchmark-compare-fail` compares only time.

    A run that did not finish fails the test (AssertionError with its reason).
    Returns the `Results`. Keywords are `tlbench.run`'s (`plugins=` included).
    """
    from tlbench.comparison import BENCHMARK_RECORDS
    from tlbench.python_api import run

    found: list[Any] = []
    benchmark.pedantic(lambda: found.append(run(**run_options)), rounds=1, iterations=1)
    (results,) = found
    bad = [r for r in results if r.get("status") not in ("ok", "skipped")]
    assert not bad, "runs did not finish: " + "; ".join(
        f"{r['config']['backbone']} / {r['config']['strategy']}: {r.get('status')}: "
        f"{r.get('reason')}"
        for r in bad
    )
    benchmark.extra_info["tlbench_cells"] = {
        f"{row.label} / {row.dataset_name or row.dataset}": {
            "top1": row.accuracy,
            "train_seconds": row.train_seconds,
        }
        for row in results.rows()
        if row.accuracy is not None
    }
    benchmark.extra_info[BENCHMARK_RECORDS] = list(results)
    return results


def check_accuracy(baseline: Any, current: Any, *, fail_if_worse: float = 1.0) -> Any:
    """Assert that no cell of `current` is worse than in `baseline` by more than
    `fail_if_worse` points of top-1, as `tlbench compare` judges it (paired, 95%).

    Each is what `tlbench.compare` takes: a results file, a pytest-benchmark JSON file
    saved from `benchmark_grid`, a `Results` or records. Raises AssertionError with the
    comparison's table; returns the `Comparison` otherwise.
    """
    from tlbench.comparison import render
    from tlbench.python_api import compare

    found = compare(baseline, current, fail_if_worse=fail_if_worse)
    assert found.ok, "accuracy got worse:\n" + render(found, "table")
    return found


# --------------------------------------------------------------------------- pytest fixtures

try:
    import pytest
except ImportError:  # the checks above work without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def tlbench_plugins(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Plugins]:
        """Factory: `tlbench_plugins(my_plugin, builtins=False)` loads only what it is given.

        The TLBENCH_*_PLUGINS variables of the calling environment are cleared,
        so a developer's settings do not change test results.
        """
        for var in PLUGIN_ENV:
            monkeypatch.delenv(var, raising=False)

        def make(*plugins: object, builtins: bool = False) -> Plugins:
            return load_plugins(plugins, builtins=builtins)

        return make

    @pytest.fixture
    def tlbench_request(tmp_path: Path) -> DatasetRequest:
        """A `DatasetRequest` that never downloads; use `dataclasses.replace` to set `argument`."""
        return DatasetRequest(argument=None, data_dir=tmp_path / "data", download=False)

    @pytest.fixture
    def tlbench_tiny_backbone() -> Backbone:
        return tiny_backbone()

    @pytest.fixture
    def tlbench_tiny_dataset() -> Dataset:
        return tiny_dataset()

    @pytest.fixture
    def tlbench_run(tmp_path: Path) -> Callable[..., list[dict[str, Any]]]:
        """Factory: `tlbench_run(plugins, backbones=[...], datasets=[...], strategies=[...])`.

        Runs the grid through the real runner on the CPU with a results file and
        caches in `tmp_path`; one epoch, 16 px, batch 16 unless overridden
        (`epochs=`, `image_size=`, `batch_size=`, any other `RunConfig` field).
        Returns the records of this invocation.
        """
        from tlbench.config import RunConfig
        from tlbench.runner import Runner

        def run(
            plugins: Plugins,
            *,
            backbones: Sequence[str],
            datasets: Sequence[str],
            strategies: Sequence[str],
            epochs: int = 1,
            image_size: int = 16,
            batch_size: int = 16,
            **config: Any,
        ) -> list[dict[str, Any]]:
            cfg = RunConfig(
                backbones=list(backbones),
                datasets=list(datasets),
                strategies=list(strategies),
                seeds=[0],
                image_size=image_size,
                hyperparameters={"epochs": epochs, "batch_size": batch_size},
                out=str(tmp_path / "results.jsonl"),
                cache_dir=str(tmp_path / "cache"),
                device="cpu",
                **config,
            )
            return Runner(cfg, plugins).run()

        return run
