"""The types plugins see: what they register, and what the core hands their hooks.

A plugin builds `Backbone`, `Dataset`, `Strategy` and `Executor` objects and
hands them to the `register` callable of a discovery hook (see
`tlbench.hookspecs`); the core never imports a builtin by name. Observer hooks
receive a `RunSpec` (one cell of the grid) and a run record
(`tlbench.record.RunRecord`). Everything here is plain, picklable and free
of torch, so a run spec travels to a subprocess or another machine as it is.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from tlbench.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from PIL import Image
    from torch import nn

    from tlbench.events import Notify
    from tlbench.record import RunRecord

_T = TypeVar("_T")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- backbones


@dataclass(frozen=True)
class Preprocessing:
    """How a backbone expects its input: normalisation and the evaluation resize/crop.

    Images are resized so the shorter side is `resize`, then centre-cropped to
    `crop` (torchvision's and timm's evaluation transform). At another image
    size the same crop fraction is kept: `resize_for(size)`.
    """

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: int = 256
    crop: int = 224
    interpolation: str = "bilinear"

    @property
    def crop_pct(self) -> float:
        return self.crop / self.resize

    def resize_for(self, image_size: int) -> int:
        """The shorter-side resize that, centre-cropped to `image_size`, keeps `crop_pct`."""
        return max(image_size, round(image_size / self.crop_pct))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Backbone:
    """A feature extractor a strategy can adapt.

    `build(pretrained)` returns an `nn.Module` that maps a float batch
    `(B, 3, H, W)`, already normalised with `preprocessing.mean/std`, to
    features `(B, feature_dim)`. With `pretrained=True` it loads `weights` and
    raises `tlbench.errors.WeightsUnavailableError` (saying where to put the
    file) when they cannot be had; with `pretrained=False` it never touches
    the network.
    """

    name: str
    build: Callable[[bool], nn.Module]
    feature_dim: int
    preprocessing: Preprocessing = Preprocessing()
    #: identifier of the pretrained weights (e.g. "IMAGENET1K_V1"); None: random init only.
    weights: str | None = None
    #: where the weights come from: a URL, a PyPI package, a cache path.
    weights_source: str = ""
    description: str = ""
    #: smallest input side the architecture accepts (ViT needs its patch grid).
    min_image_size: int = 32
    #: the only input side the architecture accepts, if it has one (ViT-B/16: 224).
    fixed_image_size: int | None = None
    #: parameters of the network `build` returns (no classification head), when known
    #: without building it: `tlbench show` prints it and never imports torch.
    num_params: int | None = None
    #: the network's stages from stem to head, as timm's `group_matcher` groups them:
    #: `stages(module)` returns `[(stage name, [module or parameter names]), ...]` for the
    #: module `build` returned; a name claims the parameter of that name and every
    #: parameter under the module of that name. Every parameter is in exactly one stage
    #: (`stage_parameters` checks). None: the backbone declares none, and strategies that
    #: need them (`laststages`, `llrd`) skip it.
    stages: Callable[[nn.Module], Sequence[tuple[str, Sequence[str]]]] | None = None

    @property
    def has_pretrained(self) -> bool:
        return self.weights is not None


def stage_parameters(backbone: Backbone, module: nn.Module) -> list[tuple[str, list[Any]]]:
    """`backbone.stages(module)` as `[(stage name, [nn.Parameter, ...]), ...]`, stem first.

    Raises `ValueError` naming what is wrong when the backbone declares no
    stages, a stage claims no parameter, a parameter is in two stages, or one
    is in none.
    """
    if backbone.stages is None:
        raise ValueError(f"backbone {backbone.name!r} declares no stages")
    declared = [(str(name), list(prefixes)) for name, prefixes in backbone.stages(module)]
    owner: dict[str, str] = {}
    found: dict[str, list[Any]] = {name: [] for name, _ in declared}
    if len(found) != len(declared):
        raise ValueError(f"backbone {backbone.name!r}: two stages have the same name")
    for pname, param in module.named_parameters():
        claims = [
            name
            for name, prefixes in declared
            if any(pname == p or pname.startswith(p + ".") for p in prefixes)
        ]
        if len(claims) > 1:
            raise ValueError(
                f"backbone {backbone.name!r}: parameter {pname!r} is in stages {claims}"
            )
        if claims:
            owner[pname] = claims[0]
            found[claims[0]].append(param)
    missing = [n for n, _ in module.named_parameters() if n not in owner]
    if missing:
        raise ValueError(
            f"backbone {backbone.name!r}: {len(missing)} parameter(s) are in no stage, "
            f"e.g. {missing[:3]}"
        )
    empty = [name for name, params in found.items() if not params]
    if empty:
        raise ValueError(f"backbone {backbone.name!r}: stage(s) {empty} hold no parameter")
    return [(name, found[name]) for name, _ in declared]


# --------------------------------------------------------------------------- families


def _no_members() -> list[str]:
    return []


@dataclass(frozen=True)
class Family:
    """Many backbones (or strategies) under one name, picked by an argument: `timm:<model>`.

    Register it with the same `register` callable as a single backbone or
    strategy. `name` is registered like any other name (no ':'); the core then
    accepts `name:<argument>` wherever a backbone (strategy) name is accepted
    and calls `resolve(argument)` once per distinct name, caching the result.

    `resolve` returns a `Backbone` (a `Strategy` when registered as a
    strategy); the core renames it to `name:<argument>` if it is called
    anything else, so results always record the name the user asked for. For
    an argument it does not know it raises `LookupError` (or `KeyError`); the
    core turns that into an "unknown backbone ... did you mean" error using
    `members()`. It is not called when plugins load, only when a name is
    used, so a family may import heavy libraries lazily.

    `members()` lists the arguments it knows, for wildcards (`tlbench list
    backbones 'timm:*'`) and close-match suggestions; `featured` is the short
    list shown by `tlbench list` without a pattern.
    """

    name: str
    resolve: Callable[[str], Any]
    members: Callable[[], Iterable[str]] = _no_members
    featured: tuple[str, ...] = ()
    description: str = ""
    #: how to write the argument, for listings: `timm:<model>`.
    argument_help: str = "<name>"


# --------------------------------------------------------------------------- datasets


@runtime_checkable
class ImageSource(Protocol):
    """One split of a dataset: labelled images, readable by index.

    `labels` must be known without decoding any image. `load(i)` returns an
    RGB PIL image (or raises on an unreadable file, which the decode cache
    counts and skips). `describe(i)` names the item in messages (its path).
    """

    labels: Sequence[int]

    def __len__(self) -> int: ...

    def load(self, index: int) -> Image.Image: ...

    def describe(self, index: int) -> str: ...


@dataclass
class DatasetSplits:
    """What a dataset plugin's `load` returns."""

    classes: list[str]
    train: ImageSource
    eval: ImageSource
    #: what the evaluation split is called on disk or in the source ("val", "test").
    eval_split: str = "test"
    #: changes whenever the images change; keys the decode and feature caches.
    fingerprint: str = ""
    #: free-form facts worth recording with each result (root folder, split rule).
    info: dict[str, Any] = field(default_factory=dict)


def _renamed_field(old: str, new: str, *, warn: bool) -> Callable[[type[_T]], type[_T]]:
    """A dataclass decorator: field `new` still answers to `old`, its name before the rename,
    for one release, as a constructor keyword and as a read-only attribute (each use warns
    with a DeprecationWarning when `warn`). Giving both keywords is a TypeError."""

    def decorate(cls: type[_T]) -> type[_T]:
        init = cls.__init__

        def deprecated(use: str) -> None:
            if warn:
                warnings.warn(
                    f"{cls.__name__}{use} is renamed {new}; use {new}, the old name goes in the "
                    "next release",
                    DeprecationWarning,
                    stacklevel=3,
                )

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            if old in kwargs:
                if new in kwargs:
                    raise TypeError(
                        f"{cls.__name__}() got {new}= and {old}=, its old name; give only {new}="
                    )
                deprecated(f"({old}=)")
                kwargs[new] = kwargs.pop(old)
            init(self, *args, **kwargs)

        def read(self: Any) -> Any:
            deprecated(f".{old}")
            return getattr(self, new)

        cls.__init__ = __init__  # type: ignore[method-assign]
        setattr(cls, old, property(read, doc=f"The old name of `{new}`, for one release."))
        return cls

    return decorate


# `val_fraction` was the old name: plugins written before it was renamed read it (or pass
# it), and get a DeprecationWarning.
@_renamed_field("val_fraction", "test_fraction", warn=True)
@dataclass(frozen=True)
class DatasetRequest:
    """What the core passes to a dataset plugin's `load`."""

    #: the part after ':' in `imagefolder:<path>`; None when the name has no argument.
    argument: str | None
    #: where downloadable datasets live (`--data-dir`).
    data_dir: Path
    #: fraction of each class held out as the TEST split when a source has none of its own
    #: (`--test-fraction`; was `val_fraction`, still readable for one release).
    test_fraction: float = 0.1
    #: seeds the held-out split so every run of a grid sees the same one.
    split_seed: int = 0
    #: allow downloads (torchvision datasets).
    download: bool = True


@dataclass(frozen=True)
class Dataset:
    """A named source of train and evaluation images."""

    name: str
    load: Callable[[DatasetRequest], DatasetSplits]
    description: str = ""
    #: "imagefolder" takes an argument: `imagefolder:<path>`.
    takes_argument: bool = False
    argument_help: str = ""
    #: native resolution, shown by `tlbench show` (None: varies).
    native_size: int | None = None


# --------------------------------------------------------------------------- strategies


@dataclass(frozen=True)
class Hyperparameters:
    """Training settings of a strategy; CLI flags and config files override them."""

    epochs: int = 10
    batch_size: int = 32
    #: learning rate of the new head (and of everything in `scratch`).
    lr: float = 1e-3
    #: backbone learning rate = lr * backbone_lr_mult (fine-tuning keeps it small).
    backbone_lr_mult: float = 1.0
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # "adamw" or "sgd"
    momentum: float = 0.9  # sgd only
    #: sgd only: Nesterov momentum (off: plain momentum, as the PyTorch tutorials use).
    nesterov: bool = False
    schedule: str = "cosine"  # "cosine", "step" or "constant"
    warmup_epochs: int = 0
    step_size: int = 7  # "step" schedule: decay every step_size epochs...
    gamma: float = 0.1  # ...by this factor (the torchvision fine-tuning tutorial's 7 / 0.1)
    label_smoothing: float = 0.0
    #: random resized crop + horizontal flip while training (not for cached features).
    augment: bool = True

    def replace(self, **changes: Any) -> Hyperparameters:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def all_trainable(backbone: nn.Module, head: nn.Module, hp: Hyperparameters) -> list[dict]:
    """Every parameter trains; the backbone at `lr * backbone_lr_mult`."""
    for p in backbone.parameters():
        p.requires_grad_(True)
    groups = [{"params": list(head.parameters()), "lr": hp.lr, "name": "head"}]
    backbone_params = list(backbone.parameters())
    if backbone_params:
        groups.append(
            {"params": backbone_params, "lr": hp.lr * hp.backbone_lr_mult, "name": "backbone"}
        )
    return groups


@dataclass(frozen=True)
class SearchDim:
    """One hyperparameter a tuner searches (`tlbench run --tune`).

    A float range, sampled log-uniformly when `log` (learning rates, weight
    decay), or a tuple of `choices`. `name` is a `Hyperparameters` field.
    """

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.name not in {f.name for f in dataclasses.fields(Hyperparameters)}:
            raise ValueError(f"search dimension {self.name!r} is not a hyperparameter")
        if not self.choices and (self.low is None or self.high is None or self.low > self.high):
            raise ValueError(f"search dimension {self.name!r} needs low <= high, or choices")
        if self.log and not self.choices and self.low is not None and self.low <= 0:
            raise ValueError(f"search dimension {self.name!r} is log-scaled: low must be > 0")

    def describe(self) -> str:
        if self.choices:
            return f"{self.name} in {list(self.choices)}"
        return f"{self.name} in [{self.low:g}, {self.high:g}]{' (log)' if self.log else ''}"


@dataclass(frozen=True)
class StrategyOption:
    """A setting of one strategy beyond the hyperparameters: `decay` of `llrd`.

    Its type is the default's (bool, int, float or str; an int is accepted for
    a float). Users set it in a config file (`[strategy.llrd] decay = 0.5`), on
    the command line (`--strategy-option llrd.decay=0.5`) or from Python
    (`tlbench.run(strategy_options={"llrd": {"decay": 0.5}})`); the strategy's
    `param_groups` receives every option's value as `options`. A value other
    than the default is part of the run's key and its record.
    """

    name: str
    default: bool | int | float | str
    help: str = ""
    #: the values allowed, when only some are (empty: any of the type).
    choices: tuple[Any, ...] = ()
    #: inclusive bounds of a number (None: unbounded).
    low: float | None = None
    high: float | None = None

    @property
    def type(self) -> type:
        return type(self.default)

    def describe(self) -> str:
        """`decay (float, default 0.75): ...`, for messages and listings."""
        text = f"{self.name} ({self.type.__name__}, default {self.default!r})"
        return f"{text}: {self.help}" if self.help else text

    def check(self, value: Any, where: str) -> Any:
        """`value` typed as this option's (a string from the command line is parsed)."""
        typed = _typed_option(value, self.type)
        if typed is None:
            raise ConfigError(
                f"{where}: option {self.name!r} takes {_KINDS[self.type]}, "
                f"not {type(value).__name__} {value!r}"
            )
        if self.choices and typed not in self.choices:
            allowed = ", ".join(map(repr, self.choices))
            raise ConfigError(
                f"{where}: option {self.name!r} must be one of {allowed}, not {typed!r}"
            )
        if (self.low is not None and typed < self.low) or (
            self.high is not None and typed > self.high
        ):
            raise ConfigError(
                f"{where}: option {self.name!r} must be in [{self.low}, {self.high}], not {typed!r}"
            )
        return typed


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
#: what an option of each type takes, in messages.
_KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def _typed_option(value: Any, kind: type) -> Any:
    """`value` as a `kind` (None when it is not one); strings are parsed as a flag's text."""
    if isinstance(value, str) and kind is not str:
        text = value.strip().lower()
        if kind is bool:
            return True if text in _TRUE else False if text in _FALSE else None
        try:
            return kind(text)
        except ValueError:
            return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and kind is not bool:
        return None
    return value if isinstance(value, kind) else None


@dataclass(frozen=True)
class Strategy:
    """How a backbone is adapted to a dataset.

    `frozen_backbone=True` means the backbone never changes, so the core
    computes its features once, caches them and trains only the head on them.
    Otherwise `param_groups(backbone, head, hp)` sets `requires_grad` and
    returns the optimiser's parameter groups (each with its "lr"). A
    `param_groups` that also names the keyword `stages` gets the backbone's
    stages (`stage_parameters`: `[(name, [parameters])]`, stem first; None when
    it declares none), and one that names `options` gets the value of each of
    the strategy's `options` (`call_param_groups`).
    """

    name: str
    description: str
    defaults: Hyperparameters
    #: start from pretrained weights; a backbone without them is skipped with a reason.
    pretrained: bool
    frozen_backbone: bool = False
    param_groups: Callable[[nn.Module, nn.Module, Hyperparameters], list[dict]] = all_trainable
    #: LP-FT: train a linear probe on the frozen (cached) features with these settings
    #: first, then fine-tune everything (with `defaults`) starting from the probe's head.
    probe: Hyperparameters | None = None
    #: what `--tune` searches for this strategy (empty: nothing, the strategy is not tuned).
    search_space: tuple[SearchDim, ...] = ()
    #: settings of this strategy beyond the hyperparameters, each with its default.
    options: tuple[StrategyOption, ...] = ()
    #: reads the backbone's stages: a backbone that declares none is skipped with a reason.
    needs_stages: bool = False

    def skip_reason(self, backbone: Backbone) -> str | None:
        """Why this strategy cannot run on `backbone`, or None when it can."""
        if self.pretrained and not backbone.has_pretrained:
            return f"{backbone.name} has no pretrained weights; {self.name} needs them"
        if self.needs_stages and backbone.stages is None:
            return f"{backbone.name} declares no stages; {self.name} trains by stage"
        return None

    def check_options(self, given: Mapping[str, Any] | None, where: str = "") -> dict[str, Any]:
        """The options in `given` that differ from their defaults, typed; raises `ConfigError`
        naming the strategy's options for an unknown name or a value of the wrong type."""
        where = where or f"strategy {self.name!r}"
        known = {o.name: o for o in self.options}
        changed: dict[str, Any] = {}
        for name, value in (given or {}).items():
            if name not in known:
                close = difflib.get_close_matches(name, list(known), n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                listing = (
                    "its options: " + "; ".join(o.describe() for o in self.options)
                    if self.options
                    else "it has no options"
                )
                raise ConfigError(
                    f"{where}: strategy {self.name!r} has no option {name!r}.{hint} "
                    f"{listing[0].upper()}{listing[1:]}"
                )
            typed = known[name].check(value, where)
            if typed != known[name].default:
                changed[name] = typed
        return dict(sorted(changed.items()))

    def option_values(self, changed: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Every option's value: its default, or `changed`'s (a spec's `options`)."""
        return {o.name: (changed or {}).get(o.name, o.default) for o in self.options}


def call_param_groups(
    strategy: Strategy,
    backbone: nn.Module,
    head: nn.Module,
    hp: Hyperparameters,
    *,
    stages: list[tuple[str, list[Any]]] | None = None,
    options: Mapping[str, Any] | None = None,
) -> list[dict]:
    """`strategy.param_groups(backbone, head, hp)`, with `stages` and `options` passed as
    keywords to an implementation that names them (as a hook takes only what it names)."""
    extra: dict[str, Any] = {}
    try:
        accepted = inspect.signature(strategy.param_groups).parameters
    except (TypeError, ValueError):  # a builtin or C callable: the three arguments only
        accepted = {}
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    if "stages" in accepted or takes_all:
        extra["stages"] = stages
    if "options" in accepted or takes_all:
        extra["options"] = dict(strategy.option_values(options))
    return strategy.param_groups(backbone, head, hp, **extra)


# --------------------------------------------------------------------------- runs

#: bumped when a change makes old results incomparable (it is part of every run key).
RESULTS_VERSION = 1


@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid: everything that determines its result, and nothing else.

    `key` hashes all of it, so a run is done once per key: a results file
    resumes whatever executor or machine ran it. `execution` holds the
    device type and its model, precision, memory format and compile mode as
    plain values; which device index runs it is the executor's choice and
    not part of the result.
    """

    backbone: str
    dataset: str
    strategy: str
    seed: int
    image_size: int
    hp: Hyperparameters
    execution: dict[str, Any]
    weights: str | None
    dataset_fingerprint: str
    #: the training images used: None for all, `shots=K` per class, or `fraction=F`
    #: (see `tlbench.budget`); in the key only when set, so full-data keys stay as they were.
    budget: str | None = None
    #: None: train on the training split, evaluate on the test split. `validation=F`: a
    #: tuning trial, which trains on the training split less a stratified fraction F of each
    #: class and evaluates on that fraction (see `tlbench.budget.validation_split`); the
    #: test split is never read. In the key only when set.
    holdout: str | None = None
    #: a tuned run's search (`tlbench.tune`): its study, chosen settings and cost. Not part
    #: of the key (the chosen settings are, in `hp`); the record carries it as `tuning`.
    tuning: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    #: the strategy's options set to other values than their defaults (`StrategyOption`);
    #: in the key only when some are, so a strategy gaining an option keeps its keys.
    options: dict[str, Any] | None = None
    #: what the third-party code behind the backbone, dataset and strategy is: per role,
    #: its distribution, version and source fingerprint (`Plugins.code_identity`). Builtins
    #: are tlbench's own code and add nothing; in the key only when set.
    code: dict[str, dict[str, str]] | None = None
    #: a successive-halving rung of a tuning trial (`tlbench.rungs`): train the first
    #: `stop_epoch` epochs of the `hp.epochs`-epoch schedule, then stop. In the key only
    #: when set.
    stop_epoch: int | None = None

    def config(self) -> dict[str, Any]:
        """The settings a record stores (its `config`), the fingerprint aside."""
        config = {
            "backbone": self.backbone,
            "weights": self.weights,
            "dataset": self.dataset,
            "strategy": self.strategy,
            "seed": self.seed,
            "image_size": self.image_size,
            "hyperparameters": {**self.hp.__dict__},
            **self.execution,
        }
        if self.budget is not None:
            config["budget"] = self.budget
        if self.holdout is not None:
            config["holdout"] = self.holdout
        if self.stop_epoch is not None:
            config["stop_epoch"] = self.stop_epoch
        if self.options:
            config["options"] = dict(self.options)
        if self.code:
            config["code"] = {role: dict(facts) for role, facts in self.code.items()}
        return config

    @property
    def key(self) -> str:
        from tlbench.cache import cache_key

        return cache_key("run", RESULTS_VERSION, self.config(), self.dataset_fingerprint)

    @property
    def label(self) -> str:
        budget = f" / {self.budget}" if self.budget else ""
        trial = " / tuning trial" if self.holdout else ""
        if self.stop_epoch is not None:
            trial += f" (epochs to {self.stop_epoch} of {self.hp.epochs})"
        return (
            f"{self.backbone} / {self.strategy} / {self.dataset}{budget} / seed {self.seed}{trial}"
        )


@dataclass(frozen=True)
class PlannedRun:
    """A run spec and what the plan decided for it."""

    spec: RunSpec
    #: "pending" (to train), "skipped" (cannot run here, `reason` says why) or
    #: "done" (an ok record for its key is already in the results file).
    status: str = "pending"
    reason: str = ""


# The old name, for an executor plugin that reads it: a DeprecationWarning.
@_renamed_field("val_fraction", "test_fraction", warn=True)
@dataclass(frozen=True)
class Workspace:
    """Where a trial reads and writes, and the settings that shape how, not what, it runs.

    None of this is part of a run's key: the same spec gives the same result
    from any cache folder. Paths are absolute by the time a trial sees them,
    so a worker started in another folder finds the same files.
    """

    #: decoded-image and feature caches; None keeps nothing on disk.
    cache_dir: Path | None
    #: where downloadable datasets live.
    data_dir: Path
    #: where `--save-models` writes checkpoints; None saves none.
    models_dir: Path | None = None
    #: `DatasetRequest.test_fraction` (`--test-fraction`).
    test_fraction: float = 0.1
    strict: bool = False
    retry_oom: bool = True
    #: threads decoding images (None: up to 8).
    decode_workers: int | None = None
    #: measure each trained model's inference cost (`tlbench.inference`); part of no key.
    inference: bool = True
    #: the batch of the inference throughput figure; None: the run's training batch.
    inference_batch: int | None = None
    #: "onnx": export each trained model and check its accuracy with onnxruntime.
    export: str | None = None
    #: where successive-halving rungs leave the training state their next rung continues
    #: from (`tlbench.rungs`); None: every rung trains from epoch 1.
    rung_states: Path | None = None


# --------------------------------------------------------------------------- executors


class Executor(Protocol):
    """Runs trials somewhere: in this process, in subprocesses, on a cluster.

    `run` starts every spec (in any order, as many at once as it can) and
    yields each run's record as soon as that run ends, whatever its status;
    the caller appends it to the results file and tells the observers. Per-run
    events (phases, epochs: the `tlbench.events` dataclasses, which pickle) go
    to `notify(event)` in the caller's process, from whichever process runs the
    trial. (`notify` still accepts the older `notify(hook_name, kwargs)` call of
    executors written against `events(hook, kwargs)`.) On `KeyboardInterrupt`
    the executor cancels what has not started, yields an "interrupted" record
    for each run under way, then re-raises. A run whose worker dies is retried
    once, then yields a "failed" record naming the exit status.
    """

    def run(
        self,
        specs: list[RunSpec],
        workspace: Workspace,
        notify: Notify,
    ) -> Iterator[RunRecord]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ExecutorOptions:
    """What the user asked of the executor (`--devices`, `--ray-address`)."""

    #: one worker per entry: "cuda:0,cuda:1", "cpu,cpu"; empty: the executor's default.
    devices: tuple[str, ...] = ()
    #: the device the grid was planned for ("cpu", "cuda", "cuda:1", "mps").
    device: str = "cpu"
    ray_address: str | None = None
    #: the driver's loaded plugins (`tlbench.plugins.Plugins`); workers in other
    #: processes load the same ones through its `plugin_set`.
    plugins: Any = None
    #: the driver's `tlbench.trial.ProcessCache` (loaded datasets, caches), for an
    #: executor that runs trials in the driver's own process.
    host: Any = None


@dataclass(frozen=True)
class ExecutorKind:
    """An executor plugins register: `--executor NAME` calls `create(options)`."""

    name: str
    description: str
    create: Callable[[ExecutorOptions], Executor]
