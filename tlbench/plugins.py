"""Plugin loading and the registries: the one typed facade over pluggy.

Core code calls `Plugins` methods, never `pm.hook.*`. Builtins are loaded
from `BUILTIN_PLUGINS` exactly like third-party plugins from the `tlbench`
entry-point group. Loading is controlled by environment variables:

    TLBENCH_LOAD_PLUGINS=a,b   load only these third-party plugins ("" loads none)
    TLBENCH_BLOCK_PLUGINS=a,b  never load these (builtins too, by short name)
    TLBENCH_TRACE_PLUGINS=1    print every load and hook call to stderr

A plugin that fails to import, or raises while registering, is reported once
and skipped; the rest load.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.metadata
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import pluggy

from tlbench import hookspecs
from tlbench.api import Backbone, Dataset, Strategy
from tlbench.errors import DuplicateNameError, TlbenchError, UnknownNameError

ENTRY_POINT_GROUP = "tlbench"

#: short name -> module; block one with TLBENCH_BLOCK_PLUGINS=<short name>.
BUILTIN_PLUGINS: dict[str, str] = {
    "torchvision_backbones": "tlbench.builtin.torchvision_backbones",
    "efficientnet_lite": "tlbench.builtin.efficientnet_lite",
    "small_cnn": "tlbench.builtin.small_cnn",
    "imagefolder": "tlbench.builtin.imagefolder",
    "torchvision_datasets": "tlbench.builtin.torchvision_datasets",
    "synthetic": "tlbench.builtin.synthetic",
    "strategies": "tlbench.builtin.strategies",
}

T = TypeVar("T", Backbone, Dataset, Strategy)


def _env_list(name: str) -> list[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


class Registry(Generic[T]):
    """Names of one kind (backbone, dataset or strategy) and the plugin behind each."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._provider: dict[str, str] = {}
        self._conflicts: dict[str, list[str]] = {}

    def add(self, item: T, plugin: str) -> None:
        name = item.name
        if not isinstance(name, str) or not name or ":" in name:
            raise TlbenchError(f"{self.kind} name {name!r} must be a non-empty string without ':'")
        if name in self._conflicts:
            self._conflicts[name].append(plugin)
        elif name in self._items:
            self._conflicts[name] = [self._provider.pop(name), plugin]
            del self._items[name]
        else:
            self._items[name] = item
            self._provider[name] = plugin

    def get(self, name: str) -> T:
        if name in self._conflicts:
            plugins = " and ".join(repr(p) for p in self._conflicts[name])
            raise DuplicateNameError(
                f"{self.kind} {name!r} is registered by both {plugins}; block one with "
                f"TLBENCH_BLOCK_PLUGINS=<name> or uninstall it."
            )
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._items) from None

    def provider(self, name: str) -> str:
        return self._provider[name]

    def names(self, pattern: str | None = None) -> list[str]:
        names = sorted(self._items)
        if pattern:
            names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        return names

    @property
    def conflicts(self) -> dict[str, list[str]]:
        return dict(self._conflicts)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[T]:
        return iter(self._items[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class PluginInfo:
    name: str
    module: str
    version: str
    builtin: bool
    provides: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "version": self.version,
            "builtin": self.builtin,
            "provides": self.provides,
            "error": self.error,
        }


class Plugins:
    """Loads plugins, owns the registries and calls the observer hooks."""

    def __init__(
        self,
        *,
        builtins: bool = True,
        entry_points: bool = True,
        extra: Iterable[tuple[str, object]] = (),
    ):
        self.pm = pluggy.PluginManager("tlbench")
        self.pm.add_hookspecs(hookspecs)
        self.backbones: Registry[Backbone] = Registry("backbone")
        self.datasets: Registry[Dataset] = Registry("dataset")
        self.strategies: Registry[Strategy] = Registry("strategy")
        self.info: dict[str, PluginInfo] = {}
        self._trace = os.environ.get("TLBENCH_TRACE_PLUGINS", "") not in ("", "0")
        self._blocked = set(_env_list("TLBENCH_BLOCK_PLUGINS") or ())
        self._reported: set[str] = set()
        if self._trace:
            self.pm.trace.root.setwriter(lambda s: sys.stderr.write(f"[tlbench plugins] {s}"))
            self.pm.enable_tracing()

        if builtins:
            for short, module in BUILTIN_PLUGINS.items():
                self._load(short, module, lambda m=module: importlib.import_module(m), builtin=True)
        if entry_points:
            allowed = _env_list("TLBENCH_LOAD_PLUGINS")
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                if allowed is not None and ep.name not in allowed:
                    self._log(f"not loading {ep.name!r}: not in TLBENCH_LOAD_PLUGINS")
                    continue
                version = ep.dist.version if ep.dist is not None else "?"
                self._load(ep.name, ep.value, ep.load, builtin=False, version=version)
        for name, obj in extra:
            self._load(name, getattr(obj, "__name__", repr(obj)), lambda o=obj: o, builtin=False)
        self.pm.check_pending()

    # ------------------------------------------------------------------ loading

    def _log(self, message: str) -> None:
        if self._trace:
            print(f"[tlbench plugins] {message}", file=sys.stderr)

    def _fail(self, info: PluginInfo, error: BaseException) -> None:
        info.error = f"{type(error).__name__}: {error}"
        if info.name not in self._reported:
            self._reported.add(info.name)
            warnings.warn(
                f"tlbench plugin {info.name!r} failed and was skipped: {info.error}",
                RuntimeWarning,
                stacklevel=3,
            )

    def _load(
        self,
        name: str,
        module: str,
        load: Callable[[], object],
        *,
        builtin: bool,
        version: str | None = None,
    ) -> None:
        if version is None:
            version = _tlbench_version() if builtin else "?"
        info = self.info[name] = PluginInfo(name, module, version, builtin)
        if name in self._blocked:
            info.error = "blocked by TLBENCH_BLOCK_PLUGINS"
            self._log(f"blocked {name!r}")
            return
        try:
            plugin = load()
            self.pm.register(plugin, name=name)
        except Exception as exc:  # any import-time error of a plugin is its own
            self._fail(info, exc)
            return
        self._log(f"loaded {name!r} from {module}")
        try:
            self._discover(name, info)
        except Exception as exc:
            self.pm.unregister(name=name)
            self._fail(info, exc)

    def _discover(self, name: str, info: PluginInfo) -> None:
        # Each plugin's discovery hooks are called on their own so that the
        # names are attributed to it and a failing plugin adds nothing.
        staged: list[tuple[Registry, Any]] = []
        for hook, registry in (
            ("tlbench_register_backbones", self.backbones),
            ("tlbench_register_datasets", self.datasets),
            ("tlbench_register_strategies", self.strategies),
        ):
            for impl in getattr(self.pm.hook, hook).get_hookimpls():
                if impl.plugin_name != name:
                    continue
                items: list = []
                impl.function(*[{"register": items.append}[a] for a in impl.argnames])
                staged.extend((registry, item) for item in items)
        for registry, item in staged:
            registry.add(item, name)
            info.provides.setdefault(registry.kind + "s", []).append(item.name)

    @property
    def failures(self) -> list[PluginInfo]:
        return [i for i in self.info.values() if i.error]

    # ------------------------------------------------------------------ lookups

    def dataset(self, spec: str) -> tuple[Dataset, str | None]:
        """Resolve `name` or `name:argument` to the dataset and its argument."""
        name, sep, argument = spec.partition(":")
        dataset = self.datasets.get(name)
        if dataset.takes_argument and not argument:
            raise TlbenchError(
                f"dataset {name!r} needs an argument: {name}:{dataset.argument_help or '<value>'}"
            )
        if sep and not dataset.takes_argument:
            raise TlbenchError(f"dataset {name!r} takes no argument (got {spec!r})")
        return dataset, (argument or None)

    def provider(self, kind: str, name: str) -> str:
        return {"backbone": self.backbones, "dataset": self.datasets, "strategy": self.strategies}[
            kind
        ].provider(name)

    def versions(self) -> dict[str, str]:
        return {i.name: i.version for i in self.info.values() if not i.error and not i.builtin}

    # ------------------------------------------------------------------ observers

    def _notify(self, hook: str, **kwargs: Any) -> None:
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            try:
                impl.function(*[kwargs[a] for a in impl.argnames])
            except Exception as exc:
                key = f"{impl.plugin_name}.{hook}"
                if key not in self._reported:
                    self._reported.add(key)
                    warnings.warn(
                        f"tlbench plugin {impl.plugin_name!r} raised in {hook}: "
                        f"{type(exc).__name__}: {exc}",
                        RuntimeWarning,
                        stacklevel=2,
                    )

    def run_started(self, run: Any) -> None:
        self._notify("tlbench_run_started", run=run)

    def epoch_ended(self, run: Any, epoch: int, metrics: dict[str, Any]) -> None:
        self._notify("tlbench_epoch_ended", run=run, epoch=epoch, metrics=metrics)

    def run_finished(self, run: Any, record: dict[str, Any]) -> None:
        self._notify("tlbench_run_finished", run=run, record=record)

    def grid_finished(self, records: list[dict[str, Any]]) -> None:
        self._notify("tlbench_grid_finished", records=records)


def _tlbench_version() -> str:
    from tlbench import __version__

    return __version__
