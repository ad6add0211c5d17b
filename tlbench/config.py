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

import dataclasses
import difflib
import re
import sys
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlbench.api import Hyperparameters
from tlbench.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: hyperparameters a config file or flag may override, with their types.
HP_FIELDS = {f.name: f.type for f in dataclasses.fields(Hyperparameters)}

#: values the training loop understands; checked up front so a typo fails in
#: a second, not as a failed record for every run of the grid.
CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": ("adamw", "sgd"),
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
}
#: key -> (largest allowed, whether the bound itself is allowed). Far beyond any sane
#: setting, so only typos and overflow (`--lr 1e300`, `--image-size 10000`) are refused
#: before they fail an hour in, or worse, finish "ok" at chance accuracy (`--lr inf`).
UPPER: dict[str, tuple[float, bool]] = {
    "epochs": (100_000, True),
    "batch_size": (65_536, True),
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


@dataclass
class RunConfig:
    # The embedded default: offline, a few minutes on 2 CPU cores. The pretrained
    # EfficientNet-Lite0 against the tutorials' small CNN, every strategy.
    backbones: list[str] = field(default_factory=lambda: ["efficientnet_lite0", "small_cnn"])
    datasets: list[str] = field(default_factory=lambda: ["synthetic"])
    strategies: list[str] = field(default_factory=lambda: ["scratch", "linear", "finetune"])
    seeds: list[int] = field(default_factory=lambda: [0])
    # None: the dataset's native size when it has one, else 128 px (fast on a CPU;
    # pass --image-size 224 for ImageNet-like accuracy on a GPU).
    image_size: int | None = None
    #: hyperparameter overrides for every strategy (None: the strategy's default).
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    #: per-strategy hyperparameter overrides, `[strategy.<name>]` in a config file.
    strategy_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: str = "auto"
    # "auto": bf16 autocast on CUDA, fp32 on a CPU (where bf16 is slower on most chips).
    precision: str = "auto"
    channels_last: bool | None = None  # None: on (Execution.resolve)
    compile: bool = False
    out: str = "results/runs.jsonl"
    data_dir: str | None = None
    cache_dir: str | None = None
    no_cache: bool = False
    val_fraction: float = 0.1
    strict: bool = False
    force: bool = False
    save_models: bool = False
    models_dir: str | None = None
    retry_oom: bool = True
    workers: int | None = None
    #: data budgets: training images per class ("5", or "all" for the whole split) ...
    shots: list[str] = field(default_factory=list)
    #: ... and fractions of each class (0 < F <= 1); neither given: the whole split.
    train_fraction: list[float] = field(default_factory=list)
    #: where the runs execute: inline (this process), process, devices, ray or a plugin's.
    executor: str = "inline"
    #: one worker per entry for `devices` ("cuda:0,cuda:1", "cpu,cpu"); empty: every GPU.
    devices: list[str] = field(default_factory=list)
    #: `ray` joins this cluster ("auto", "HOST:PORT"); None starts a local Ray instance.
    ray_address: str | None = None
    #: experiment trackers that also record every run (mlflow, tensorboard, wandb): opt-in,
    #: since each is an optional dependency and writes beside the results file.
    log_to: list[str] = field(default_factory=list)

    #: the TOML file these settings came from, for messages (not part of any run key).
    source: str | None = None

    def hyperparameters_for(self, strategy: str, defaults: Hyperparameters) -> Hyperparameters:
        """The strategy's defaults, then the grid-wide overrides, then its own table."""
        hp = defaults.replace(**self.hyperparameters)
        return hp.replace(**self.strategy_overrides.get(strategy, {}))


_RUN_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
_FILE_KEYS = {
    k for k in _RUN_FIELDS if k not in ("hyperparameters", "strategy_overrides", "source")
}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """Check a TOML value against a dataclass field type; ints are accepted for floats."""
    if isinstance(tp, str):
        tp = eval(tp, {"Any": Any, "list": list, "dict": dict})  # our own annotations only
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        for option in options:
            try:
                return _check_type(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(
            f"{where}: expected {' or '.join(_type_name(o) for o in options)}, got {value!r}"
        )
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected nothing, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str):  # "a,b" is accepted for a list, like the flags
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]  # `seeds = 0` means one seed
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list of {_type_name(item)}, got {value!r}")
        return [_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
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


def check_value(key: str, value: Any, where: str) -> Any:
    """Reject a value the training loop would refuse (or silently misuse) later."""
    if value is None:
        return value
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"{where}: {key} must be one of {', '.join(CHOICES[key])}, not {value!r}")
    if key == "seeds" and isinstance(value, list):
        low, high = SEED_RANGE
        for seed in value:
            if isinstance(seed, int) and not isinstance(seed, bool) and not low <= seed <= high:
                raise ConfigError(f"{where}: a seed must be between {low} and {high}, not {seed!r}")
    if (
        (key in BOUNDS or key in UPPER)
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
    ):
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
    if key == "device" and isinstance(value, str) and not DEVICE.fullmatch(value):
        raise ConfigError(
            f"{where}: device must be auto, cpu, cuda, cuda:N (e.g. cuda:1) or mps, not {value!r}"
        )
    if key == "val_fraction" and not 0 < value < 1:
        raise ConfigError(f"{where}: val_fraction must be between 0 and 1, not {value!r}")
    return value


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


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read and check a TOML config; returns RunConfig keyword arguments."""
    path = Path(path).expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
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
    out: dict[str, Any] = {"hyperparameters": {}, "strategy_overrides": {}}
    top_level: dict[str, Any] = {}  # hyperparameters given outside [hyperparameters]
    for key, value in data.items():
        if key in ("hyperparameters", "strategy"):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: [{key}] must be a table")
            if key == "hyperparameters":
                out["hyperparameters"] = check_hyperparameters(value, f"{path} [hyperparameters]")
            else:
                for name, table in value.items():
                    if not isinstance(table, dict):
                        raise ConfigError(f"{path}: [strategy.{name}] must be a table")
                    out["strategy_overrides"][name] = check_hyperparameters(
                        table, f"{path} [strategy.{name}]"
                    )
        elif key in HP_FIELDS:
            top_level[key] = value
        elif key in _FILE_KEYS:
            typed = _check_type(value, _RUN_FIELDS[key].type, f"{path}: {key}")
            out[key] = check_value(key, typed, str(path))
        else:
            raise _unknown(
                key, _FILE_KEYS | set(HP_FIELDS) | {"hyperparameters", "strategy"}, str(path)
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
    for key, value in flags.items():
        if value is None:
            continue
        if key in HP_FIELDS:
            check_value(key, value, f"--{key.replace('_', '-')}")
            hyper[key] = value
            # A flag beats the file everywhere, [strategy.<name>] tables included.
            for table in overrides.values():
                table.pop(key, None)
        elif key in _FILE_KEYS:
            values[key] = check_value(key, value, f"--{key.replace('_', '-')}")
        else:
            raise ConfigError(f"unknown setting {key!r}")
    return RunConfig(**values, hyperparameters=hyper, strategy_overrides=overrides)


def check_strategy_tables(config: RunConfig, known: Iterable[str]) -> None:
    """Reject a `[strategy.<name>]` table for a strategy no plugin registered.

    A misspelt table would otherwise be ignored silently; this needs the
    loaded plugins, so the CLI calls it right after loading them.
    """
    known = list(known)
    for name in config.strategy_overrides:
        if name not in known:
            where = config.source or "config"
            raise _unknown(name, set(known), f"{where} [strategy.{name}]", "strategy")
