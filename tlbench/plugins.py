"""Plugin loading and the registries: the one typed facade over pluggy.

Core code calls `Plugins` methods, never `pm.hook.*`. Builtins are loaded
from `BUILTIN_PLUGINS` exactly like third-party plugins from the `tlbench`
entry-point group. Loading is controlled by environment variables:

    TLBENCH_LOAD_PLUGINS=a,b   load only these third-party plugins ("" loads none)
    TLBENCH_BLOCK_PLUGINS=a,b  never load these (builtins too, by short name)
    TLBENCH_TRACE_PLUGINS=1    print every load, registered name and hook call to stderr

A third-party plugin is named by its entry-point name or its distribution
name (`timm` or `tlbench-timm`). Blocking uses pluggy's own `set_blocked`. A plugin that fails to import, or raises
while registering, is reported once (a `RuntimeWarning` naming it and the
error) and skipped as a whole; the rest load. Two plugins registering the
same name make that name unusable until one is blocked: using it raises a
`DuplicateNameError` naming both.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import hashlib
import importlib
import importlib.metadata
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import pluggy

from tlbench import hookspecs
from tlbench.errors import DuplicateNameError, TlbenchError, UnknownNameError, plural
from tlbench.events import (
    KINDS,
    Event,
    GridFinished,
    GridStarted,
    RunFinished,
    arguments,
    from_legacy,
)
from tlbench.plugin_types import Backbone, Dataset, ExecutorKind, Family, Strategy

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
    "executors": "tlbench.executors",
}

T = TypeVar("T", Backbone, Dataset, Strategy, ExecutorKind)

#: discovery hook -> the registry (attribute of `Plugins`) its `register` fills.
DISCOVERY_HOOKS = {
    "tlbench_register_backbones": "backbones",
    "tlbench_register_datasets": "datasets",
    "tlbench_register_strategies": "strategies",
    "tlbench_register_executors": "executors",
}

#: hooks that follow a grid; each implementation is guarded (see `Plugins._guard`).
OBSERVER_HOOKS = tuple(KINDS)


def _env_list(name: str) -> list[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _normalize(name: str) -> str:
    # Distribution names compare the way pip compares them (PEP 503).
    return re.sub(r"[-_.]+", "-", name).lower()


def _plugin_message(exc: LookupError, argument: str) -> str:
    """What a family's `LookupError` says, when it says more than the name it was given."""
    text = exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)
    return "" if text.strip("'\"") in ("", argument) else text


def _could_match(pattern: str, prefix: str) -> bool:
    """Whether `pattern` can match some name starting with `prefix` (wildcards after the literal part)."""
    literal = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
    return literal.startswith(prefix) or prefix.startswith(literal)


class Registry(Generic[T]):
    """Names of one kind (backbone, dataset or strategy) and the plugin behind each.

    A name is either one item or a `Family` (`timm`), which makes
    `family:<argument>` names valid. Invariant: every name `names()` returns
    can be passed to `get()`.
    """

    def __init__(self, kind: str, item_type: type | None = None, *, families: bool = True):
        self.kind = kind
        self.item_type = item_type
        self.allows_families = families
        self._items: dict[str, Any] = {}
        self._provider: dict[str, str] = {}
        self._conflicts: dict[str, list[str]] = {}
        self._resolved: dict[str, T] = {}
        self._members_failed: set[str] = set()

    # ------------------------------------------------------------------ adding

    def check(self, item: object) -> None:
        """Raise `TlbenchError` if `item` cannot be registered here (wrong type, bad name)."""
        if isinstance(item, Family):
            if not self.allows_families:
                raise TlbenchError(f"a {self.kind} cannot be a Family (got {item.name!r})")
            if not callable(item.resolve):
                raise TlbenchError(f"{self.kind} family {item.name!r}: resolve is not callable")
        elif self.item_type is not None and not isinstance(item, self.item_type):
            expected = self.item_type.__name__ + (" or Family" if self.allows_families else "")
            raise TlbenchError(
                f"register() for {self.kind}s expects a tlbench.{expected}, got {type(item).__name__}"
            )
        name = getattr(item, "name", None)
        if not isinstance(name, str) or not name or ":" in name or name != name.strip():
            raise TlbenchError(
                f"{self.kind} name {name!r} must be a non-empty string without ':' "
                "(a name that takes an argument is a Family)"
            )

    def add(self, item: T | Family, plugin: str) -> None:
        self.check(item)
        name = item.name
        if name in self._conflicts:
            self._conflicts[name].append(plugin)
        elif name in self._items:
            self._conflicts[name] = [self._provider.pop(name), plugin]
            del self._items[name]
        else:
            self._items[name] = item
            self._provider[name] = plugin

    # ------------------------------------------------------------------ lookups

    def _entry(self, base: str, name: str) -> Any:
        if base in self._conflicts:
            plugins = " and ".join(repr(p) for p in self._conflicts[base])
            raise DuplicateNameError(
                f"{self.kind} {base!r} is registered by both {plugins}; block one with "
                f"TLBENCH_BLOCK_PLUGINS=<name> or uninstall it."
            )
        try:
            return self._items[base]
        except KeyError:
            raise UnknownNameError(self.kind, name, self.names()) from None

    def get(self, name: str) -> T:
        """The item called `name`; `family:<argument>` resolves through the family (once)."""
        base, sep, argument = name.partition(":")
        entry = self._entry(base, name)
        if isinstance(entry, Family):
            if not argument:
                raise TlbenchError(
                    f"{self.kind} {base!r} needs an argument: {base}:{entry.argument_help} "
                    f"(`tlbench list {plural(self.kind)} '{base}:*'` lists them)"
                )
            return self._resolve(entry, name, argument)
        if sep:
            raise TlbenchError(f"{self.kind} {base!r} takes no argument (got {name!r})")
        return entry

    def _resolve(self, family: Family, name: str, argument: str) -> T:
        cached = self._resolved.get(name)
        if cached is not None:
            return cached
        plugin = self._provider[family.name]
        try:
            item = family.resolve(argument)
        except TlbenchError:
            raise
        except LookupError as exc:
            known = [f"{family.name}:{m}" for m in self._members(family)]
            raise UnknownNameError(self.kind, name, known, _plugin_message(exc, argument)) from None
        except Exception as exc:  # a plugin's bug is reported as its own, not as ours
            raise TlbenchError(
                f"{self.kind} {name!r}: plugin {plugin!r} failed to resolve it: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if self.item_type is not None and not isinstance(item, self.item_type):
            raise TlbenchError(
                f"{self.kind} family {family.name!r} (plugin {plugin!r}) resolved {name!r} to a "
                f"{type(item).__name__}, not a {self.item_type.__name__}"
            )
        if getattr(item, "name", name) != name and dataclasses.is_dataclass(item):
            # Results record the name the user asked for, whatever the plugin called it.
            item = dataclasses.replace(item, name=name)
        self._resolved[name] = item
        return item

    def _members(self, family: Family) -> list[str]:
        try:
            return [str(m) for m in family.members()]
        except Exception as exc:  # one family failing to list must not break `tlbench list`
            if family.name not in self._members_failed:
                self._members_failed.add(family.name)
                warnings.warn(
                    f"tlbench plugin {self._provider.get(family.name)!r} could not list its "
                    f"{self.kind} family {family.name!r}: {type(exc).__name__}: {exc}",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return []

    def provider(self, name: str) -> str:
        """The plugin that registered `name` (for `family:<argument>`, the family's plugin)."""
        return self._provider[name.partition(":")[0]]

    def names(self, pattern: str | None = None) -> list[str]:
        """Sorted names, filtered by a shell-style wildcard.

        Without a pattern, a family contributes its `featured` members; with
        one, every member it knows that matches (`'timm:*'`, `'*resnet*'`).
        """
        found = {n for n, e in self._items.items() if not isinstance(e, Family)}
        for family in self.families.values():
            if pattern is None:
                found.update(f"{family.name}:{m}" for m in family.featured)
            elif _could_match(pattern, family.name + ":"):
                found.update(f"{family.name}:{m}" for m in self._members(family))
        names = sorted(found)
        if pattern:
            names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        return names

    @property
    def families(self) -> dict[str, Family]:
        return {n: e for n, e in sorted(self._items.items()) if isinstance(e, Family)}

    @property
    def conflicts(self) -> dict[str, list[str]]:
        return {name: list(owners) for name, owners in self._conflicts.items()}

    def __contains__(self, name: object) -> bool:
        """True when `get(name)` succeeds (a family member is resolved to find out)."""
        if not isinstance(name, str) or name.partition(":")[0] not in self._items:
            return False
        try:
            self.get(name)
        except TlbenchError:
            return False
        return True

    def __iter__(self) -> Iterator[T]:
        """The single items, sorted by name; families are in `families`."""
        return iter(e for _, e in sorted(self._items.items()) if not isinstance(e, Family))

    def __len__(self) -> int:
        return sum(not isinstance(e, Family) for e in self._items.values())


@dataclass
class PluginInfo:
    """What `tlbench plugins` shows about one plugin."""

    name: str
    module: str
    version: str
    builtin: bool
    provides: dict[str, list[str]] = field(default_factory=dict)
    #: "loaded", "failed", "blocked" (TLBENCH_BLOCK_PLUGINS) or "not allowed" (TLBENCH_LOAD_PLUGINS).
    status: str = "loaded"
    #: why it failed ("ImportError: ...") or was not loaded.
    error: str | None = None
    distribution: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "version": self.version,
            "builtin": self.builtin,
            "distribution": self.distribution,
            "status": self.status,
            "provides": self.provides,
            "error": self.error,
        }


def _import_path(obj: object) -> str | None:
    """`module` or `module:attribute` that names `obj`, so another process can import it."""
    if isinstance(obj, type(sys)):
        return obj.__name__
    module = sys.modules.get(getattr(obj, "__module__", None) or type(obj).__module__)
    if module is None or module.__name__ == "__main__":
        return None
    for attribute, value in vars(module).items():
        if value is obj:
            return f"{module.__name__}:{attribute}"
    return None


def _import_object(path: str) -> object:
    module_name, _, attribute = path.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module


@dataclass(frozen=True)
class PluginSet:
    """How to load the same plugins again in another process: plain and picklable.

    The `TLBENCH_*_PLUGINS` variables travel with the environment; extra
    plugins travel as import paths (`module` or `module:attribute`).
    """

    builtins: bool = True
    entry_points: bool = True
    extra: tuple[tuple[str, str], ...] = ()

    def load(self) -> Plugins:
        return Plugins(
            builtins=self.builtins,
            entry_points=self.entry_points,
            extra=[(name, path) for name, path in self.extra],
        )


class Plugins:
    """Loads plugins, owns the registries and calls the observer hooks.

    `extra` plugins are `(name, object)` pairs, where the object is a module,
    a class or an instance with hook implementations, or an import path
    (`"package.module:attribute"`).
    """

    def __init__(
        self,
        *,
        builtins: bool = True,
        entry_points: bool = True,
        extra: Iterable[tuple[str, object]] = (),
    ):
        self.pm = pluggy.PluginManager("tlbench")
        self.pm.add_hookspecs(hookspecs)
        self.backbones: Registry[Backbone] = Registry("backbone", Backbone)
        self.datasets: Registry[Dataset] = Registry("dataset", Dataset, families=False)
        self.strategies: Registry[Strategy] = Registry("strategy", Strategy)
        self.executors: Registry[ExecutorKind] = Registry("executor", ExecutorKind, families=False)
        self.info: dict[str, PluginInfo] = {}
        self._trace = os.environ.get("TLBENCH_TRACE_PLUGINS", "") not in ("", "0")
        self._blocked = set(_env_list("TLBENCH_BLOCK_PLUGINS") or ())
        self._reported: set[str] = set()
        self._code: dict[tuple[str, str], dict[str, str] | None] = {}
        extra = list(extra)
        paths = [(n, o if isinstance(o, str) else _import_path(o)) for n, o in extra]
        #: how a worker process loads these plugins; None names what cannot travel.
        self.plugin_set = PluginSet(builtins, entry_points, tuple((n, p) for n, p in paths if p))
        self.unshippable = [n for n, p in paths if p is None]
        if self._trace:
            self.pm.add_hookcall_monitoring(self._trace_call, lambda *a: None)

        if builtins:
            for short, module in BUILTIN_PLUGINS.items():
                self._load(short, module, lambda m=module: importlib.import_module(m), builtin=True)
        if entry_points:
            allowed = _env_list("TLBENCH_LOAD_PLUGINS")
            installed: set[str] = set()
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                dist = ep.dist.name if ep.dist is not None else None
                version = ep.dist.version if ep.dist is not None else "?"
                aliases = {ep.name} | ({_normalize(dist)} if dist else set())
                installed |= aliases
                if allowed is not None and not aliases & {*allowed, *map(_normalize, allowed)}:
                    self._skip(
                        ep.name,
                        ep.value,
                        version,
                        dist,
                        "not allowed",
                        "not in TLBENCH_LOAD_PLUGINS",
                    )
                    continue
                self._load(
                    ep.name, ep.value, ep.load, builtin=False, version=version, distribution=dist
                )
            unknown = [a for a in allowed or () if not {a, _normalize(a)} & installed]
            if unknown:
                # A typo in the allow-list would otherwise silently load nothing.
                warnings.warn(
                    f"TLBENCH_LOAD_PLUGINS names {', '.join(map(repr, unknown))}, but no installed "
                    f"tlbench plugin is called that (installed: {', '.join(sorted(installed)) or 'none'})",
                    RuntimeWarning,
                    stacklevel=2,
                )
        for name, obj in extra:
            if isinstance(obj, str):
                self._load(name, obj, lambda p=obj: _import_object(p), builtin=False)
                continue
            self._load(
                name, getattr(obj, "__name__", type(obj).__name__), lambda o=obj: o, builtin=False
            )

    # ------------------------------------------------------------------ loading

    def _log(self, message: str) -> None:
        if self._trace:
            print(f"[tlbench plugins] {message}", file=sys.stderr)

    def _trace_call(self, hook: str, impls: list, kwargs: dict[str, Any]) -> None:
        if hook in OBSERVER_HOOKS:
            for impl in impls:
                self._log(f"calling {hook} of {impl.plugin_name!r}")

    def _info(
        self, name: str, module: str, version: str, builtin: bool, dist: str | None
    ) -> PluginInfo:
        key = name
        if key in self.info:
            # Two distributions may use the same entry-point name; keep both visible.
            key = f"{name} ({module})"
        info = self.info[key] = PluginInfo(name, module, version, builtin, distribution=dist)
        return info

    def _skip(
        self, name: str, module: str, version: str, dist: str | None, status: str, why: str
    ) -> None:
        info = self._info(name, module, version, False, dist)
        info.status, info.error = status, why
        self._log(f"not loading {name!r}: {why}")

    def _fail(self, info: PluginInfo, error: BaseException) -> None:
        info.status = "failed"
        info.error = f"{type(error).__name__}: {error}"
        info.provides = {}
        self._log(f"{info.name!r} failed: {info.error}")
        key = f"{info.name}|{info.module}"
        if key not in self._reported:
            self._reported.add(key)
            warnings.warn(
                f"tlbench plugin {info.name!r} failed and was skipped: {info.error}",
                RuntimeWarning,
                stacklevel=4,
            )

    def _load(
        self,
        name: str,
        module: str,
        load: Callable[[], object],
        *,
        builtin: bool,
        version: str | None = None,
        distribution: str | None = None,
    ) -> None:
        if version is None:
            version = _tlbench_version() if builtin else "?"
        info = self._info(name, module, version, builtin, distribution)
        aliases = {name} | ({_normalize(distribution)} if distribution else set())
        if aliases & {*self._blocked, *map(_normalize, self._blocked)}:
            self.pm.set_blocked(name)
        if self.pm.is_blocked(name):
            info.status, info.error = "blocked", "blocked by TLBENCH_BLOCK_PLUGINS"
            self._log(f"blocked {name!r}")
            return
        if self.pm.has_plugin(name):
            self._fail(
                info,
                TlbenchError(
                    f"another plugin is already loaded under the name {name!r} "
                    f"({self.pm.get_plugin(name)!r}); uninstall one of them"
                ),
            )
            return
        try:
            plugin = load()
            self.pm.register(plugin, name=name)
        # Whatever a plugin raises while importing is its own failure; SystemExit too,
        # since a plugin calling sys.exit() must not end the user's command.
        except (Exception, SystemExit) as exc:
            self._fail(info, exc)
            return
        try:
            # A misspelled hook (`tlbench_register_backbone`) would otherwise be
            # silently ignored; only the plugin just added can be pending.
            self.pm.check_pending()
            self._log(f"loaded {name!r} from {module}")
            self._discover(name, info)
            self._guard(name)
        except (Exception, SystemExit) as exc:
            self.pm.unregister(name=name)
            self._fail(info, exc)

    def _discover(self, name: str, info: PluginInfo) -> None:
        # Each plugin's discovery hooks are called on their own so that the names
        # are attributed to it, and staged so that a failing plugin adds nothing.
        staged: list[tuple[str, Registry, Any]] = []
        for hook, attribute in DISCOVERY_HOOKS.items():
            registry: Registry = getattr(self, attribute)
            for impl in getattr(self.pm.hook, hook).get_hookimpls():
                if impl.plugin_name != name:
                    continue

                def register(
                    item: Any, attribute: str = attribute, registry: Registry = registry
                ) -> None:
                    registry.check(item)  # raises at the plugin's own call
                    staged.append((attribute, registry, item))

                self._log(f"calling {hook} of {name!r}")
                impl.function(*[{"register": register}[a] for a in impl.argnames])
        seen: set[tuple[str, str]] = set()
        for _, registry, item in staged:
            if (registry.kind, item.name) in seen:
                raise TlbenchError(f"it registers the {registry.kind} {item.name!r} twice")
            seen.add((registry.kind, item.name))
        for attribute, registry, item in staged:
            registry.add(item, name)
            takes_argument = isinstance(item, Family) or getattr(item, "takes_argument", False)
            shown = f"{item.name}:{item.argument_help or '<arg>'}" if takes_argument else item.name
            info.provides.setdefault(attribute, []).append(shown)
            self._log(f"{name!r} registered {registry.kind} {shown!r}")

    @property
    def failures(self) -> list[PluginInfo]:
        """Plugins that failed to import or register (not the blocked or not allowed ones)."""
        return [i for i in self.info.values() if i.status == "failed"]

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
        """The plugin behind a backbone, dataset or strategy name (`timm:x`: the family's)."""
        registries = {
            "backbone": self.backbones,
            "dataset": self.datasets,
            "strategy": self.strategies,
            "executor": self.executors,
        }
        return registries[kind].provider(name)

    def code_identity(self, kind: str, name: str) -> dict[str, str] | None:
        """What the code behind a backbone, dataset or strategy is, for its runs' keys.

        A third-party plugin's distribution and version, and a fingerprint of
        its own source files (`source_fingerprint`): editing an editable or
        unpackaged plugin changes the keys of the runs that use what it
        provides, so they train again. None for a builtin, which is tlbench's
        own code, versioned with tlbench (so builtin-only keys never change).
        """
        base = name.partition(":")[0]
        cache_key = (kind, base if kind == "dataset" else name)
        if cache_key in self._code:
            return self._code[cache_key]
        plugin = self.provider(kind, base if kind == "dataset" else name)
        info = self.info.get(plugin)
        facts: dict[str, str] = {}
        if info is not None and not info.builtin:
            if info.distribution:
                facts["distribution"] = info.distribution
                facts["version"] = info.version
            registry = {"backbone": self.backbones, "dataset": self.datasets}.get(
                kind, self.strategies
            )
            entry = registry._items.get(base)
            item = registry.get(base if kind == "dataset" else name)
            parts = [self.pm.get_plugin(plugin), entry, *_callables(item)]
            source = source_fingerprint(parts)
            if source:
                facts["source"] = source
        self._code[cache_key] = facts or None
        return self._code[cache_key]

    def versions(self) -> dict[str, str]:
        """Versions of the loaded third-party plugins, for result records."""
        return {
            i.name: i.version for i in self.info.values() if i.status == "loaded" and not i.builtin
        }

    # ------------------------------------------------------------------ observers

    def register_observer(self, plugin: object, name: str) -> None:
        """Add an observer after loading (the console, a tracker), like any other plugin."""
        self.pm.register(plugin, name=name)
        self.pm.check_pending()
        self._guard(name)

    def unregister(self, name: str) -> None:
        if self.pm.has_plugin(name):
            self.pm.unregister(name=name)

    def _guard(self, name: str) -> None:
        """Make each of plugin `name`'s observer implementations report, not raise.

        Hooks are called through `pm.hook`, so pluggy's ordering (`tryfirst`,
        `trylast`) and wrappers (`wrapper=True`, which see the results) work as
        documented; a plain implementation that raises is reported once per
        plugin and hook, and the call goes on to the next one as if it had
        returned None. Wrappers are left as written: they own their errors.
        """
        for hook in OBSERVER_HOOKS:
            for impl in getattr(self.pm.hook, hook).get_hookimpls():
                if impl.plugin_name != name or impl.wrapper or impl.hookwrapper:
                    continue
                impl.function = self._guarded(impl.function, name, hook)

    def _guarded(self, function: Callable[..., Any], plugin: str, hook: str) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            try:
                return function(*args)
            except Exception as exc:
                key = f"{plugin}.{hook}"
                if key not in self._reported:
                    self._reported.add(key)
                    warnings.warn(
                        f"tlbench plugin {plugin!r} raised in {hook}: {type(exc).__name__}: {exc}",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                return None

        return call

    def notify(self, event: Event | str, kwargs: dict[str, Any] | None = None) -> None:
        """Tell the observers of `event`: the hook it names, with its fields as arguments.

        The one way events reach observers: the trial's (carried from whatever
        process ran it by the executor) and the grid's own. `notify(hook, kwargs)`
        is the older call of executors written against `events(hook, kwargs)`,
        accepted for one release (`tlbench.events.from_legacy`).
        """
        if isinstance(event, str):
            event = from_legacy(event, kwargs or {})
        getattr(self.pm.hook, event.hook)(**arguments(event))

    # Shorthands for `notify`, for callers that hold no event object.

    def grid_started(self, plan: list[Any]) -> None:
        self.notify(GridStarted(plan))

    def run_finished(self, run: Any, record: dict[str, Any]) -> None:
        self.notify(RunFinished(run, record))  # type: ignore[arg-type]

    def grid_finished(self, records: list[dict[str, Any]]) -> None:
        self.notify(GridFinished(records))  # type: ignore[arg-type]


def _callables(item: object) -> list[object]:
    """The code an item runs: a backbone's build and stages, a dataset's load, a strategy's groups."""
    names = ("build", "stages", "load", "param_groups", "resolve")
    return [getattr(item, n) for n in names if callable(getattr(item, n, None))]


def _module_of(obj: object) -> str | None:
    while isinstance(obj, functools.partial):
        obj = obj.func
    if isinstance(obj, type(sys)):
        return obj.__name__
    obj = getattr(obj, "__func__", obj)  # a bound method: its function's module
    return getattr(obj, "__module__", None) or type(obj).__module__


def _source_files(module_name: str) -> list[Path]:
    """The files of a module's code: a package's every .py file, or the module's own file."""
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    if not file:
        return []  # built in memory (exec'd): no file to fingerprint
    path = Path(file)
    if path.name == "__init__.py":
        return sorted(path.parent.rglob("*.py"))[:_MAX_SOURCE_FILES]
    return [path]


#: a plugin package's files read for its fingerprint, at most (a runaway package is cut short).
_MAX_SOURCE_FILES = 500


def source_fingerprint(objects: Iterable[object]) -> str | None:
    """A hash of the source files of the modules that define `objects` (tlbench's own left
    out: it is versioned with tlbench); None when there is no such file."""
    modules = {_module_of(o) for o in objects if o is not None}
    own = {m for m in modules if m and not (m == "tlbench" or m.startswith("tlbench."))}
    files: dict[Path, None] = {}
    for module in sorted(own):
        files.update(dict.fromkeys(_source_files(module)))
    if not files:
        return None
    digest = hashlib.sha256()
    for path in sorted(files):
        try:
            content = path.read_bytes()
        except OSError:
            continue
        digest.update(f"{path.name}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()[:16]


def describe_code_change(kind: str, name: str, old: dict | None, new: dict | None) -> str:
    """Why a run trains again although its settings did not change: `strategy bitfit's code
    changed (tlbench-example 0.1.0 -> 0.2.0)`."""
    old, new = old or {}, new or {}
    if old.get("version") != new.get("version") and old.get("distribution"):
        how = f"{old['distribution']} {old.get('version')} -> {new.get('version', 'unpackaged')}"
    elif old.get("source") != new.get("source") and old.get("source"):
        how = "its source was edited"
    else:
        how = "it was not part of the key before"
    return f"{kind} {name}'s code changed ({how})"


def _tlbench_version() -> str:
    from tlbench.version import __version__

    return __version__
