"""One typed run configuration, from CLI flags and an optional TOML file.

Precedence, lowest first: a strategy's own defaults, the config file's
top-level hyperparameters, its `[strategy.<name>]` tables, then CLI flags.
Unknown keys and wrong types are rejected with the file and key named.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
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
    channels_last: bool | None = None  # None: on for CUDA, where it is faster for convnets
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

    def hyperparameters_for(self, strategy: str, defaults: Hyperparameters) -> Hyperparameters:
        hp = defaults.replace(**self.strategy_overrides.get(strategy, {}))
        return hp.replace(**self.hyperparameters)


_RUN_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
_FILE_KEYS = {k for k in _RUN_FIELDS if k not in ("hyperparameters", "strategy_overrides")}


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
        raise ConfigError(f"{where}: expected {' or '.join(_type_name(o) for o in options)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected nothing, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str):  # "a,b" is accepted for a list, like the flags
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list of {_type_name(item)}, got {value!r}")
        return [_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected int, got {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return value


def check_hyperparameters(values: dict[str, Any], where: str) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if key not in HP_FIELDS:
            raise ConfigError(
                f"{where}: unknown hyperparameter {key!r}; known: {', '.join(sorted(HP_FIELDS))}"
            )
        out[key] = _check_type(value, HP_FIELDS[key], f"{where}: {key}")
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
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    out: dict[str, Any] = {"hyperparameters": {}, "strategy_overrides": {}}
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
            out["hyperparameters"][key] = _check_type(value, HP_FIELDS[key], f"{path}: {key}")
        elif key in _FILE_KEYS:
            out[key] = _check_type(value, _RUN_FIELDS[key].type, f"{path}: {key}")
        else:
            known = sorted(_FILE_KEYS | set(HP_FIELDS) | {"hyperparameters", "strategy"})
            import difflib

            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{path}: unknown key {key!r}.{hint} Known keys: {', '.join(known)}")
    return out


def make_config(file: str | Path | None = None, **flags: Any) -> RunConfig:
    """A RunConfig from an optional file, then flags (None means 'not given')."""
    values: dict[str, Any] = load_config_file(file) if file else {}
    hyper = dict(values.pop("hyperparameters", {}))
    overrides = values.pop("strategy_overrides", {})
    for key, value in flags.items():
        if value is None:
            continue
        if key in HP_FIELDS:
            hyper[key] = value
        elif key in _RUN_FIELDS:
            values[key] = value
        else:
            raise ConfigError(f"unknown setting {key!r}")
    return RunConfig(**values, hyperparameters=hyper, strategy_overrides=overrides)
