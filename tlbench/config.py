"""One typed run configuration, from CLI flags and an optional TOML file.

Precedence, lowest first: a strategy's own defaults, the config file's
hyperparameters (top level or `[hyperparameters]`), its `[strategy.<name>]`
tables, then CLI flags. Unknown keys, wrong types and out-of-range values are
rejected with the file and key named, before anything loads or trains; a
`[strategy.<name>]` table naming no registered strategy is rejected once the
plugins are loaded (`check_strategy_tables`).

    # grid.toml
    backbones = ["resnet18"]
    datasets = ["imagefolder:~/data/hymenoptera_data"]
    strategies = ["linear", "finetune"]
    image_size = 224

    [hyperparameters]          # every strategy
    optimizer = "sgd"
    momentum = 0.9

    [strategy.finetune]        # this strategy only
    epochs = 25
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import sys
import types
import typing
import warnings
from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlbench.errors import ConfigError, TlbenchError
from tlbench.plugin_types import Hyperparameters, Strategy

if TYPE_CHECKING:
    from tlbench.tune import TuneSettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: hyperparameters a config file or flag may override, with their types.
HP_FIELDS = {f.name: f.type for f in dataclasses.fields(Hyperparameters)}

#: values the training loop understands; checked up front so a typo fails in
#: a second, not as a failed record for every run of the grid.
CHOICES: dict[str, tuple[str, ...]] = {
    # lbfgs: full-batch logistic regression of a head on features (`logreg`, tlbench.probe).
    "optimizer": ("adamw", "sgd", "lbfgs"),
    "schedule": ("cosine", "step", "constant"),
    # fp32 is true IEEE fp32 (TF32 off); tf32 is fp32 storage with TF32 math (CUDA, Ampere+);
    # bf16 and fp16 are autocast (fp16 with a gradient scaler); auto picks per device.
    "precision": ("auto", "fp32", "tf32", "bf16", "fp16"),
}
#: what `device` may say; whether that device is there is checked when a run resolves it.
DEVICE = re.compile(r"auto|cpu|cuda(?::\d+)?|mps")
#: key -> (smallest allowed, whether the bound itself is allowed).
BOUNDS: dict[str, tuple[float, bool]] = {
    "epochs": (1, True),
    "batch_size": (1, True),
    "lr": (0.0, False),
    "backbone_lr_mult": (0.0, True),
    "weight_decay": (0.0, True),
    "momentum": (0.0, True),
    "warmup_epochs": (0, True),
    "step_size": (1, True),
    "gamma": (0.0, False),
    "label_smoothing": (0.0, True),
    "workers": (1, True),
    "image_size": (1, True),
    "inference_batch": (1, True),
}
#: key -> (largest allowed, whether the bound itself is allowed). Far beyond any sane
#: setting, so only typos and overflow (`--lr 1e300`, `--image-size 10000`) are refused
#: before they fail an hour in, or worse, finish "ok" at chance accuracy (`--lr inf`).
UPPER: dict[str, tuple[float, bool]] = {
    "epochs": (100_000, True),
    "batch_size": (65_536, True),
    "inference_batch": (65_536, True),
    "lr": (10.0, True),  # SGD on a linear head rarely goes above 1
    "backbone_lr_mult": (100.0, True),
    "weight_decay": (10.0, True),
    "momentum": (1.0, False),  # momentum 1 never forgets a gradient: it diverges
    "warmup_epochs": (100_000, True),
    "step_size": (100_000, True),
    "gamma": (10.0, True),
    "label_smoothing": (1.0, False),
    "workers": (1024, True),
    # 2048 px: a decoded 2048 px image is 12.6 MB, so 1000 of them need 12.6 GB.
    "image_size": (2048, True),
}
#: seeds every random generator accepts (numpy's are below 2**32).
SEED_RANGE = (0, 2**32 - 1)


def _range(key: str) -> str:
    """`key`'s valid range as text: "> 0 and <= 10"."""
    parts = []
    if key in BOUNDS:
        low, inclusive = BOUNDS[key]
        parts.append(f"{'>=' if inclusive else '>'} {low:g}")
    if key in UPPER:
        high, inclusive = UPPER[key]
        parts.append(f"{'<=' if inclusive else '<'} {high:g}")
    return " and ".join(parts)


@dataclass(frozen=True)
class Option:
    """How one setting of a grid is offered on the command line.

    Declared once, beside the setting (the `RunConfig` field's metadata, or
    `HYPERPARAMETER_OPTIONS`); its name is the flag (`--batch-size`), the
    config-file key (`batch_size`) and the keyword of `tlbench.run()`. The
    parser of `run` and `select`, the config reader, the help defaults and the
    Python API's keyword check are all made from these (`options()`).
    """

    #: the --help section: a key of `GROUPS`.
    group: str
    help: str = ""
    metavar: str | None = None
    #: the flag when it is not `--<name with dashes>` (`--no-retry` clears retry_oom).
    flag: str | None = None
    #: a bool's flag: "switch" (`--x` sets it), "toggle" (`--x` / `--no-x`) or
    #: "negated" (`flag` clears it).
    toggle: str = "switch"
    #: parses one value on the command line (default: the field's type).
    parse: Callable[[str], Any] | None = None
    #: the flag may be given more than once (each `parse`d value is merged).
    repeat: bool = False


#: the --help sections of a grid's options, in order; "(default: ...)" in a title is the
#: default its options show when they name none.
GROUPS = {
    "grid": "what to run",
    "training": "training (default: each strategy's own, see README)",
    "where": "where and how",
    "fleet": "where the runs execute",
    "tuning": "tuning (each cell searched on a validation split, then reported on test)",
    "inference": "inference cost (measured after training on the run's device; in no run key)",
}


def device_arg(text: str) -> str:
    """A `--device` value: auto, cpu, cuda, cuda:N or mps, case as given (the device
    itself is checked when a run uses it)."""
    if not DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a device: use auto, cpu, cuda, cuda:N (e.g. cuda:1) or mps"
        )
    return text


def export_arg(text: str) -> str:
    """An `--export` value: the formats a trained model can be exported to."""
    if text.lower() != "onnx":
        raise argparse.ArgumentTypeError(f"{text!r} is not an export format: use onnx")
    return text.lower()


def strategy_option_arg(text: str) -> dict[str, dict[str, str]]:
    """A `--strategy-option` value, `llrd.decay=0.5` -> {"llrd": {"decay": "0.5"}}; the value
    is typed by the option's declaration once the strategy is known."""
    target, equals, value = text.partition("=")
    strategy, dot, option = target.strip().rpartition(".")
    if not equals or not dot or not strategy or not option:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not STRATEGY.OPTION=VALUE (e.g. llrd.decay=0.5)"
        )
    return {strategy: {option: value.strip()}}


def merge_strategy_options(*layers: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Per-strategy options, later layers overriding earlier ones option by option."""
    merged: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for strategy, values in (layer or {}).items():
            merged.setdefault(strategy, {}).update(values)
    return merged


def flag(group: str, **option: Any) -> dict[str, Option]:
    """The metadata of a `RunConfig` field offered as a flag, a config key and a keyword."""
    return {"option": Option(group, **option)}


@dataclass
class RunConfig:
    # The embedded default: offline, a few minutes on 2 CPU cores. The pretrained
    # EfficientNet-Lite0 against the tutorials' small CNN, every strategy.
    backbones: list[str] = field(
        default_factory=lambda: ["efficientnet_lite0", "small_cnn"],
        metadata=flag(
            group="grid",
            metavar="A,B",
            help="backbones to compare (default: efficientnet_lite0,small_cnn); "
            "see `tlbench list backbones`",
        ),
    )
    datasets: list[str] = field(
        default_factory=lambda: ["synthetic"],
        metadata=flag(
            group="grid", metavar="A,B", help="datasets, e.g. imagefolder:PATH or cifar10"
        ),
    )
    strategies: list[str] = field(
        default_factory=lambda: ["scratch", "linear", "finetune"],
        metadata=flag(group="grid", metavar="A,B", help="how to adapt each backbone"),
    )
    seeds: list[int] = field(
        default_factory=lambda: [0],
        metadata=flag(group="grid", metavar="0,1,2", help="one run per seed; mean ± std over them"),
    )
    # None: the dataset's native size when it has one, else 128 px (fast on a CPU;
    # pass --image-size 224 for ImageNet-like accuracy on a GPU).
    image_size: int | None = field(
        default=None,
        metadata=flag(
            group="training",
            metavar="PX",
            help="input side in pixels (default: the dataset's native size, else 128)",
        ),
    )
    #: hyperparameter overrides for every strategy (None: the strategy's default).
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    #: per-strategy hyperparameter overrides, `[strategy.<name>]` in a config file.
    strategy_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: per-strategy options (`tlbench.StrategyOption`): the keys of a `[strategy.<name>]`
    #: table that are not hyperparameters, `--strategy-option NAME.OPTION=VALUE` and
    #: `strategy_options={"llrd": {"decay": 0.5}}`; checked against what each strategy
    #: declares once the plugins are loaded (`options_for`, `check_strategy_tables`).
    strategy_options: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata=flag(
            group="training",
            flag="--strategy-option",
            metavar="STRATEGY.OPTION=VALUE",
            parse=strategy_option_arg,
            repeat=True,
            help="set an option a strategy declares, e.g. llrd.decay=0.5 (repeat the flag for "
            "more); `tlbench show NAME` lists a strategy's options (default: each option's own)",
        ),
    )
    device: str = field(
        default="auto",
        metadata=flag(
            group="where",
            metavar="DEVICE",
            parse=device_arg,
            help="auto, cpu, cuda, cuda:N or mps (default auto: CUDA when available)",
        ),
    )
    # "auto": bf16 autocast on CUDA, fp32 on a CPU (where bf16 is slower on most chips).
    precision: str = field(
        default="auto",
        metadata=flag(
            group="where",
            help="fp32 is true fp32 (TF32 off); tf32: TF32 tensor-core math (CUDA 8.0+); "
            "bf16/fp16: autocast (fp16 with a gradient scaler). auto: bf16 on CUDA 8.0+, "
            "fp16 on older GPUs, fp32 on CPU",
        ),
    )
    channels_last: bool | None = field(
        default=None,
        metadata=flag(  # None: on (Execution.resolve)
            group="where",
            toggle="toggle",
            help="channels-last memory format (default: on; faster for convnets on CPU and CUDA)",
        ),
    )
    compile: bool = field(
        default=False, metadata=flag(group="where", help="torch.compile the model")
    )
    out: str = field(
        default="results/runs.jsonl",
        metadata=flag(group="where", metavar="FILE.jsonl", help="results file to append to"),
    )
    data_dir: str | None = field(
        default=None,
        metadata=flag(
            group="where",
            metavar="DIR",
            help="where downloadable datasets live (default: ~/.cache/tlbench/data)",
        ),
    )
    cache_dir: str | None = field(
        default=None,
        metadata=flag(
            group="where",
            metavar="DIR",
            help="decoded-image and feature caches (default: ~/.cache/tlbench, or $TLBENCH_CACHE_DIR)",
        ),
    )
    no_cache: bool = field(
        default=False, metadata=flag(group="where", help="keep no cache on disk")
    )
    #: a single-folder dataset's test split; was `val_fraction`, which still works (`RENAMED`).
    test_fraction: float = field(
        default=0.1,
        metadata=flag(
            group="where",
            metavar="F",
            help="fraction of each class of a single-folder dataset (imagefolder:PATH without "
            "val/ or test/) held out as its TEST split (default 0.1); not tuning's validation "
            "split, which is --validation-fraction",
        ),
    )
    strict: bool = field(
        default=False,
        metadata=flag(group="where", help="fail on unreadable images instead of skipping them"),
    )
    force: bool = field(
        default=False, metadata=flag(group="where", help="redo runs already in the results file")
    )
    save_models: bool = field(
        default=False,
        metadata=flag(
            group="where",
            help="keep each run's trained model, as it ended training (<key>.safetensors + "
            "<key>.json sidecar)",
        ),
    )
    models_dir: str | None = field(
        default=None,
        metadata=flag(
            group="where",
            metavar="DIR",
            help="where --save-models writes (default: beside --out, models/)",
        ),
    )
    retry_oom: bool = field(
        default=True,
        metadata=flag(
            group="where",
            flag="--no-retry",
            toggle="negated",
            help="on GPU out-of-memory fail instead of retrying at half the batch",
        ),
    )
    workers: int | None = field(
        default=None,
        metadata=flag(group="where", help="threads decoding images (default: up to 8)"),
    )
    #: data budgets: training images per class ("5", or "all" for the whole split) ...
    shots: list[str] = field(
        default_factory=list,
        metadata=flag(
            group="grid",
            metavar="K,K",
            help="data budgets: training images per class, e.g. 1,5,10,all; drawn stratified "
            "from each run's seed, nested across budgets (default: all)",
        ),
    )
    #: ... and fractions of each class (0 < F <= 1); neither given: the whole split.
    train_fraction: list[float] = field(
        default_factory=list,
        metadata=flag(
            group="grid",
            metavar="F,F",
            help="data budgets as fractions of each class, e.g. 0.1,0.5 (default: 1, all images)",
        ),
    )
    #: trials per cell of an Optuna search on a validation split (0: no tuning; `tlbench.tune`).
    tune: int = field(
        default=0,
        metadata=flag(
            group="tuning",
            metavar="N",
            help="tune every cell with N trials over its strategy's search space, chosen on a "
            "validation split; the chosen settings then train with every seed and are reported "
            "on the test split (default: 0, no tuning)",
        ),
    )
    #: held out of each class of the training split to choose on (never the test split).
    validation_fraction: float = field(
        default=0.2,
        metadata=flag(
            group="tuning",
            metavar="F",
            help="fraction of each class of the TRAINING split held out as the validation "
            "split that tuning chooses on (default 0.2); never the test split (--test-fraction)",
        ),
    )
    #: trials asked at once: the same for every executor, so every executor chooses alike.
    tune_batch: int = field(
        default=4,
        metadata=flag(
            group="tuning",
            metavar="N",
            help="trials run at once (in parallel under --executor process); the same choices "
            "whatever the executor (default 4)",
        ),
    )
    tune_sampler: str = field(
        default="tpe",
        metadata=flag(group="tuning", metavar="NAME", help="tpe (default) or random"),
    )
    tune_pruner: str = field(
        default="none",
        metadata=flag(
            group="tuning",
            metavar="NAME",
            help="none (default: every trial trains all its epochs) or halving (successive "
            "halving on epochs: a ninth, a third, then all of the schedule, keeping the best third "
            "each time; a promoted trial continues where its last rung stopped)",
        ),
    )
    #: the search's seed: its sampler's, and the seed every trial trains with.
    tune_seed: int = field(
        default=0,
        metadata=flag(
            group="tuning",
            metavar="N",
            help="the search's seed: the sampler draws from it and every trial trains with it "
            "(default 0); the chosen settings then train with each of --seeds",
        ),
    )
    #: where the runs execute: inline (this process), process, devices, ray or a plugin's.
    executor: str = field(
        default="inline",
        metadata=flag(
            group="fleet",
            metavar="NAME",
            help="inline (default: one run after another in this process), process (each run in a "
            "fresh subprocess), devices (one worker per --devices entry), ray (Ray tasks), or a "
            "plugin's; see `tlbench list executors`",
        ),
    )
    #: one worker per entry for `devices` ("cuda:0,cuda:1", "cpu,cpu"); empty: every GPU.
    devices: list[str] = field(
        default_factory=list,
        metadata=flag(
            group="fleet",
            metavar="D,D",
            help="workers of --executor devices, e.g. cuda:0,cuda:1 or cpu,cpu "
            "(default: every visible GPU)",
        ),
    )
    #: `ray` joins this cluster ("auto", "HOST:PORT"); None starts a local Ray instance.
    ray_address: str | None = field(
        default=None,
        metadata=flag(
            group="fleet",
            metavar="ADDRESS",
            help="--executor ray joins this cluster: auto, or HOST:PORT of `ray start --head` "
            "(default: start a local Ray instance)",
        ),
    )
    #: experiment trackers that also record every run (mlflow, tensorboard, wandb): opt-in,
    #: since each is an optional dependency and writes beside the results file.
    log_to: list[str] = field(
        default_factory=list,
        metadata=flag(
            group="where",
            metavar="NAME,NAME",
            help="also record every run in these experiment trackers: mlflow, tensorboard, wandb "
            "(each an extra: pip install 'tlbench[mlflow]'); see docs/trackers.md",
        ),
    )

    inference: bool = field(
        default=True,
        metadata=flag(
            group="inference",
            flag="--no-inference",
            toggle="negated",
            help="skip timing each trained model's inference (latency, throughput, energy)",
        ),
    )
    inference_batch: int | None = field(
        default=None,
        metadata=flag(
            group="inference",
            metavar="N",
            help="batch of the inference throughput figure (default: the run's training batch)",
        ),
    )
    export: str | None = field(
        default=None,
        metadata=flag(
            group="inference",
            metavar="FORMAT",
            parse=export_arg,
            help="onnx: export each trained model with torch.onnx and check its top-1 with "
            "onnxruntime on the test split (pip install 'tlbench[export]')",
        ),
    )

    #: the TOML file these settings came from, for messages (not part of any run key).
    source: str | None = None

    def tune_settings(self) -> TuneSettings | None:
        """How every cell is tuned, or None when `tune` is 0 (`tlbench.tune`)."""
        if not self.tune:
            return None
        from tlbench.tune import TuneSettings

        return TuneSettings(
            trials=self.tune,
            validation=self.validation_fraction,
            batch=self.tune_batch,
            sampler=self.tune_sampler,
            pruner=self.tune_pruner,
            seed=self.tune_seed,
        )

    def options_for(self, strategy: Strategy) -> dict[str, Any]:
        """The strategy's options set to other values than their defaults, typed and checked
        (`ConfigError` names the strategy's options for an unknown one or a wrong type)."""
        given = self.strategy_options.get(strategy.name)
        if given is None:
            return {}
        return strategy.check_options(given, _options_where(self, strategy.name))

    def hyperparameters_for(self, strategy: str, defaults: Hyperparameters) -> Hyperparameters:
        """The strategy's defaults, then the grid-wide overrides, then its own table."""
        hp = defaults.replace(**self.hyperparameters)
        return hp.replace(**self.strategy_overrides.get(strategy, {}))


#: the flags of the hyperparameters (`Hyperparameters` is a plugin type, so they are
#: declared here); a hyperparameter without an entry gets a plain flag of its type.
HYPERPARAMETER_OPTIONS: dict[str, Option] = {
    "epochs": Option("training"),
    "batch_size": Option("training"),
    "lr": Option("training", "learning rate of the new head (all weights for scratch)"),
    "backbone_lr_mult": Option("training", "backbone LR = lr * X (finetune default 0.1)", "X"),
    "weight_decay": Option("training"),
    "optimizer": Option("training"),
    "momentum": Option("training", "SGD momentum"),
    "nesterov": Option(
        "training", "SGD: Nesterov momentum (default: plain momentum)", toggle="toggle"
    ),
    "schedule": Option("training"),
    "step_size": Option("training", "step schedule: decay every N epochs", "N"),
    "gamma": Option("training", "step schedule: multiply the LR by this"),
    "warmup_epochs": Option("training"),
    "label_smoothing": Option("training"),
    "augment": Option("training", "random resized crop + flip while training", toggle="toggle"),
}


@dataclass(frozen=True)
class Setting:
    """One option with what its field says: the (resolved) type and the default."""

    name: str
    option: Option
    type: Any
    #: RunConfig's default; `STRATEGY_DEFAULT` for a hyperparameter.
    default: Any
    hyperparameter: bool = False


#: the default of a hyperparameter: the strategy's own.
STRATEGY_DEFAULT = "each strategy's own"


def options() -> list[Setting]:
    """Every setting of a grid that is a flag, a config key and a keyword, in --help order."""
    found = []
    types_ = typing.get_type_hints(RunConfig)
    for f in dataclasses.fields(RunConfig):
        if "option" in f.metadata:
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            found.append(Setting(f.name, f.metadata["option"], types_[f.name], default))
    hp_types = typing.get_type_hints(Hyperparameters)
    for name in HP_FIELDS:
        option = HYPERPARAMETER_OPTIONS.get(name, Option("training"))
        found.append(Setting(name, option, hp_types[name], STRATEGY_DEFAULT, hyperparameter=True))
    order = list(GROUPS)
    return sorted(found, key=lambda s: order.index(s.option.group))


_RUN_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
#: the settings of RunConfig a config file, a flag and a keyword may give.
SETTINGS = frozenset(f.name for f in dataclasses.fields(RunConfig) if "option" in f.metadata)

#: settings that were renamed, old name -> new name. The old name still works for one release,
#: as a flag, a config key and a keyword, with a DeprecationWarning naming the new one (issue
#: 21: `val_fraction` held out a single-folder dataset's TEST split, not a validation split).
RENAMED = {"val_fraction": "test_fraction"}


def as_flag(name: str) -> str:
    """A setting's name as its flag is typed: `val_fraction` -> `--val-fraction`."""
    return "--" + name.replace("_", "-")


def renamed_settings(
    values: dict[str, Any], spell: Callable[[str], str], where: str = ""
) -> dict[str, Any]:
    """`values` with a setting given by its old name (`RENAMED`) moved to its new one, with a
    DeprecationWarning; both names given is a `ConfigError` naming both. None is 'not given'.

    `spell` writes a name as the user gave it (`as_flag`, `str` for a config key); `where`
    is the file or the call that gave it."""
    out = dict(values)
    at = f"{where}: " if where else ""
    for old, new in RENAMED.items():
        if out.get(old) is None:
            out.pop(old, None)
            continue
        if out.get(new) is not None:
            raise ConfigError(
                f"{at}{spell(old)} and {spell(new)} are the same setting ({spell(old)} is its "
                f"old name), given twice; give only {spell(new)}"
            )
        warnings.warn(
            f"{at}{spell(old)} is renamed {spell(new)}; use {spell(new)}, the old name goes in "
            "the next release",
            DeprecationWarning,
            stacklevel=_outside_tlbench(),
        )
        out[new] = out.pop(old)
    return out


def _outside_tlbench() -> int:
    """The `stacklevel` of the first caller outside tlbench, for a warning issued by our
    caller: Python shows a DeprecationWarning only when it points at `__main__` (a script,
    a notebook), not at the tlbench function that noticed it."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] == "tlbench":
        level, frame = level + 1, frame.f_back
    return level


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """Check a TOML value against a dataclass field type; ints are accepted for floats."""
    if isinstance(tp, str):
        tp = eval(tp, {"Any": Any, "list": list, "dict": dict})  # our own annotations only
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _check_union(value, typing.get_args(tp), where)
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected nothing, got {value!r}")
    if origin is list:
        return _check_list(value, typing.get_args(tp)[0], where)
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{where}: expected a table (a dict by name), got {value!r}")
        item = typing.get_args(tp)[1]
        return {k: _check_type(v, item, f"{where}[{k!r}]") for k, v in value.items()}
    if tp is Any:
        return value
    return _check_scalar(value, tp, where)


def _check_union(value: Any, options: tuple[Any, ...], where: str) -> Any:
    for option in options:
        try:
            return _check_type(value, option, where)
        except ConfigError:
            continue
    raise ConfigError(
        f"{where}: expected {' or '.join(_type_name(o) for o in options)}, got {value!r}"
    )


def _check_list(value: Any, item: Any, where: str) -> list[Any]:
    if isinstance(value, str):  # "a,b" is accepted for a list, like the flags
        value = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]  # `seeds = 0` means one seed
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of {_type_name(item)}, got {value!r}")
    return [_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]


def _check_scalar(value: Any, tp: type, where: str) -> Any:
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # a TOML integer of hundreds of digits
            raise ConfigError(f"{where}: {value} is too large for a number") from None
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected int, got {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(
            f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}"
        )
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_value(key: str, value: Any, where: str) -> Any:
    """Reject a value the training loop would refuse (or silently misuse) later."""
    if value is None:
        return value
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"{where}: {key} must be one of {', '.join(CHOICES[key])}, not {value!r}")
    if key == "seeds" and isinstance(value, list):
        _check_seeds(value, where)
    if (key in BOUNDS or key in UPPER) and _is_number(value):
        _check_bounds(key, value, where)
    if key == "device" and isinstance(value, str) and not DEVICE.fullmatch(value):
        raise ConfigError(
            f"{where}: device must be auto, cpu, cuda, cuda:N (e.g. cuda:1) or mps, not {value!r}"
        )
    if key == "test_fraction" and not 0 < value < 1:
        raise ConfigError(f"{where}: test_fraction must be between 0 and 1, not {value!r}")
    return value


def _check_seeds(seeds: list[Any], where: str) -> None:
    low, high = SEED_RANGE
    for seed in seeds:
        if isinstance(seed, int) and not isinstance(seed, bool) and not low <= seed <= high:
            raise ConfigError(f"{where}: a seed must be between {low} and {high}, not {seed!r}")


def _check_bounds(key: str, value: float, where: str) -> None:
    valid = f"(valid: {_range(key)})"
    if value != value:
        raise ConfigError(f"{where}: {key} must be a number {valid}, not {value!r}")
    if key in BOUNDS:
        low, inclusive = BOUNDS[key]
        if not (value >= low if inclusive else value > low):
            raise ConfigError(
                f"{where}: {key} must be {'>=' if inclusive else '>'} {low}, not {value!r} {valid}"
            )
    if key in UPPER:
        high, inclusive = UPPER[key]
        if not (value <= high if inclusive else value < high):
            raise ConfigError(
                f"{where}: {key} must be {'<=' if inclusive else '<'} {high:g}, not {value!r} {valid}"
            )


def _unknown(
    key: str, known: set[str] | dict[str, Any], where: str, what: str = "key"
) -> ConfigError:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"{where}: unknown {what} {key!r}.{hint} Known: {', '.join(sorted(known))}")


def check_hyperparameters(values: dict[str, Any], where: str) -> dict[str, Any]:
    """Typed and range-checked hyperparameter overrides; unknown names rejected."""
    out = {}
    for key, value in values.items():
        if key not in HP_FIELDS:
            raise _unknown(key, HP_FIELDS, where, "hyperparameter")
        out[key] = check_value(
            key, _check_type(value, HP_FIELDS[key], f"{where}: {key}"), f"{where}"
        )
    return out


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not a UTF-8 text file (byte {exc.start}); a config is TOML text"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def _table(path: Path, key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: [{key}] must be a table")
    return value


def _strategy_tables(
    path: Path, value: Any
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """`[strategy.<name>]` tables as (hyperparameter overrides, strategy options): a key that
    is not a hyperparameter is an option of that strategy, checked once plugins are loaded."""
    overrides: dict[str, dict[str, Any]] = {}
    options: dict[str, dict[str, Any]] = {}
    for name, table in _table(path, "strategy", value).items():
        table = _table(path, f"strategy.{name}", table)
        hyper = {k: v for k, v in table.items() if k in HP_FIELDS}
        overrides[name] = check_hyperparameters(hyper, f"{path} [strategy.{name}]")
        rest = {k: v for k, v in table.items() if k not in HP_FIELDS}
        if rest:
            options[name] = rest
    return overrides, options


#: the keys of a `[tune]` table and the settings they are (`tune = N` alone is `trials`).
TUNE_TABLE = {
    "trials": "tune",
    "validation_fraction": "validation_fraction",
    "batch": "tune_batch",
    "sampler": "tune_sampler",
    "pruner": "tune_pruner",
    "seed": "tune_seed",
}


def _tune_table(path: Path, table: dict[str, Any]) -> dict[str, Any]:
    """`[tune]` (trials, validation_fraction, batch, sampler) as RunConfig settings."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in TUNE_TABLE:
            raise _unknown(key, set(TUNE_TABLE), f"{path} [tune]")
        name = TUNE_TABLE[key]
        typed = _check_type(value, _RUN_FIELDS[name].type, f"{path} [tune]: {key}")
        out[name] = check_value(name, typed, str(path))
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read and check a TOML config; returns RunConfig keyword arguments."""
    path = Path(path).expanduser()
    data = renamed_settings(_read_toml(path), str, str(path))
    out: dict[str, Any] = {"hyperparameters": {}, "strategy_overrides": {}}
    top_level: dict[str, Any] = {}  # hyperparameters given outside [hyperparameters]
    for key, value in data.items():
        if key == "hyperparameters":
            table = _table(path, key, value)
            out["hyperparameters"] = check_hyperparameters(table, f"{path} [hyperparameters]")
        elif key == "strategy":
            out["strategy_overrides"], table_options = _strategy_tables(path, value)
            out["strategy_options"] = merge_strategy_options(
                table_options, out.get("strategy_options")
            )
        elif key == "tune" and isinstance(value, dict):
            out.update(_tune_table(path, value))
        elif key in HP_FIELDS:
            top_level[key] = value
        elif key in SETTINGS:
            typed = _check_type(value, _RUN_FIELDS[key].type, f"{path}: {key}")
            out[key] = check_value(key, typed, str(path))
        else:
            raise _unknown(
                key, SETTINGS | set(HP_FIELDS) | {"hyperparameters", "strategy"}, str(path)
            )
    both = sorted(set(top_level) & set(out["hyperparameters"]))
    if both:
        raise ConfigError(
            f"{path}: {both[0]!r} is set both at the top level and in [hyperparameters]; keep one"
        )
    out["hyperparameters"].update(check_hyperparameters(top_level, str(path)))
    out["source"] = str(path)
    return out


def make_config(file: str | Path | None = None, **flags: Any) -> RunConfig:
    """A RunConfig from an optional file, then flags (None means 'not given')."""
    values: dict[str, Any] = load_config_file(file) if file else {}
    hyper = dict(values.pop("hyperparameters", {}))
    overrides = {k: dict(v) for k, v in values.pop("strategy_overrides", {}).items()}
    for key, value in renamed_settings(flags, as_flag).items():
        if value is None:
            continue
        if key in HP_FIELDS:
            check_value(key, value, as_flag(key))
            hyper[key] = value
            # A flag beats the file everywhere, [strategy.<name>] tables included.
            for table in overrides.values():
                table.pop(key, None)
        elif key == "strategy_options":
            # Option by option: a flag beats the file's `[strategy.<name>]` value.
            layers = value if isinstance(value, list) else [value]
            values[key] = merge_strategy_options(values.get(key), *layers)
        elif key in SETTINGS:
            values[key] = check_value(key, value, as_flag(key))
        else:
            raise ConfigError(f"unknown setting {key!r}")
    return RunConfig(**values, hyperparameters=hyper, strategy_overrides=overrides)


def check_strategy_tables(
    config: RunConfig, known: Iterable[str], get: Callable[[str], Strategy] | None = None
) -> None:
    """Reject a `[strategy.<name>]` table (or option) for a strategy no plugin registered,
    and, given `get` (the strategy registry's), options the strategy does not declare.

    A misspelt table would otherwise be ignored silently; this needs the
    loaded plugins, so the CLI calls it right after loading them. A family
    member (`[strategy."partial:2"]`) is known when `get` resolves it.
    """
    known = list(known)
    where = config.source or "config"
    for name in {**config.strategy_overrides, **config.strategy_options}:
        strategy = None
        if get is not None:
            try:
                strategy = get(name)
            except TlbenchError:
                strategy = None
        if strategy is None and name not in known:
            raise _unknown(name, set(known), f"{where} [strategy.{name}]", "strategy")
        options = config.strategy_options.get(name)
        if strategy is not None and options:
            if config.source:  # a table's key may have meant a hyperparameter
                _check_table_keys(strategy, options, f"{where} [strategy.{name}]")
            strategy.check_options(options, _options_where(config, name))


def _options_where(config: RunConfig, strategy: str) -> str:
    """Where a strategy's options were given, for messages."""
    if config.source:
        return f"{config.source} [strategy.{strategy}]"
    return "strategy options (--strategy-option, strategy_options=)"


def _check_table_keys(strategy: Strategy, options: dict[str, Any], where: str) -> None:
    """A key of a strategy's table that is neither a hyperparameter nor one of its options."""
    declared = {o.name: o for o in strategy.options}
    for key in options:
        if key in declared:
            continue
        what = "hyperparameter or option" if declared else "hyperparameter"
        error = _unknown(key, {**HP_FIELDS, **declared}, where, what)
        listing = "; ".join(o.describe() for o in strategy.options) or "none"
        raise ConfigError(f"{error} Options of strategy {strategy.name!r}: {listing}")
