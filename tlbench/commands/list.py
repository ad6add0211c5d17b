"""`tlbench list`: what the loaded plugins provide, with wildcards; and tab completion of names."""

from __future__ import annotations

import argparse
import fnmatch
import json
import warnings
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from tlbench.commands.output import print_wide

#: what `tlbench list KIND` accepts: one per registry of `Plugins`.
LIST_KINDS = ("backbones", "datasets", "strategies", "executors")


def registries(plugins: Any) -> dict[str, Any]:
    """Kind ("backbones") -> registry, for the kinds this tlbench's `Plugins` has."""
    return {k: getattr(plugins, k) for k in LIST_KINDS if hasattr(plugins, k)}


def list_rows(plugins: Any, kind: str, pattern: str | None) -> list[dict[str, Any]]:
    """One dict per name `tlbench list` shows; `name` is exactly what `show` and `run` accept."""
    registry = registries(plugins)[kind]
    rows: list[dict[str, Any]] = []
    for name in registry.names(pattern):
        row: dict[str, Any] = {"kind": registry.kind, "name": name}
        family = registry.families.get(name.partition(":")[0])
        if family is not None:
            # Members are resolved only when used: listing 1000 timm models builds none.
            # The family's own row describes them.
            row.update(description="", plugin=registry.provider(name), family=family.name)
            rows.append(row)
            continue
        item = registry.get(name)
        if kind == "backbones":
            row["pretrained"] = item.has_pretrained
        elif kind == "datasets" and item.takes_argument:
            row["name"] = f"{name}:{item.argument_help or '<arg>'}"
            row["takes_argument"] = True
        elif kind == "strategies":
            row["frozen_backbone"] = item.frozen_backbone
        row.update(description=item.description, plugin=registry.provider(item.name))
        rows.append(row)
    for fname, family in registry.families.items():
        shown = f"{fname}:{family.argument_help}"
        if pattern is None or fnmatch.fnmatchcase(shown, pattern):
            hint = f"`tlbench list {kind} '{fname}:*'` lists them"
            rows.append(
                {
                    "kind": registry.kind,
                    "name": shown,
                    "description": f"{family.description}; {hint}" if family.description else hint,
                    "plugin": registry.provider(fname),
                    "family": fname,
                    "takes_argument": True,
                }
            )
    return sorted(rows, key=lambda r: r["name"])


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    lst = subparsers.add_parser(
        "list",
        help="list backbones, datasets, strategies and executors",
        description="List what the loaded plugins provide, with wildcards: tlbench list backbones 'resnet*'",
    )
    lst.add_argument(
        "kind", nargs="?", choices=LIST_KINDS, help="list one kind only (default: every kind)"
    )
    lst.add_argument(
        "pattern",
        nargs="?",
        help="shell-style wildcard, e.g. 'resnet*' or 'timm:*' (default: every name, and the "
        "featured members of each family)",
    )
    lst.add_argument(
        "--json", action="store_true", help="machine-readable output (default: tables)"
    )
    return lst


def main(args: argparse.Namespace, console: Console) -> int:
    """Print what the plugins provide: one table per kind, or JSON."""
    from tlbench.plugins import Plugins

    plugins = Plugins()
    by_kind = registries(plugins)
    kinds = [args.kind] if args.kind else list(by_kind)
    if args.json:
        print(
            json.dumps(
                [row for k in kinds for row in list_rows(plugins, k, args.pattern)], indent=2
            )
        )
        return 0
    for kind in kinds:
        registry = by_kind[kind]
        rows = list_rows(plugins, kind, args.pattern)
        conflicts = {
            n: owners
            for n, owners in registry.conflicts.items()
            if args.pattern is None or fnmatch.fnmatchcase(n, args.pattern)
        }
        if not rows and not conflicts and args.pattern:
            console.print(Text(f"no {kind} match {args.pattern!r}"))
            continue
        table = Table(title=kind, title_justify="left")
        # Names are never cut or folded: they are what the user copies into `run` and `show`.
        table.add_column(
            "name", no_wrap=True, min_width=max((len(r["name"]) for r in rows), default=4)
        )
        extra = {"backbones": "pretrained", "strategies": "backbone"}.get(kind, "")
        table.add_column(extra, justify="left", no_wrap=True)
        table.add_column("description", overflow="fold")
        table.add_column("plugin", style="dim", no_wrap=True)
        for row in rows:
            if "pretrained" in row:
                cell = "yes" if row["pretrained"] else "no"
            elif "frozen_backbone" in row:
                cell = "frozen" if row["frozen_backbone"] else ""
            else:
                cell = ""
            # Text, not markup: `timm:<model>[@random]` stays as written.
            table.add_row(
                *(Text(c) for c in (row["name"], cell, row["description"], row["plugin"]))
            )
        print_wide(console, table)
        for name, owners in conflicts.items():
            console.print(
                Text.assemble(
                    ("conflict", "red"),
                    f": {registry.kind} {name!r} is registered by "
                    f"{' and '.join(repr(o) for o in owners)}; it cannot be used until one is "
                    "blocked (TLBENCH_BLOCK_PLUGINS)",
                ),
                soft_wrap=True,
            )
    # Plugins that failed were already reported once, as a warning, while loading.
    return 0


def _names(kind: str, prefix: str) -> list[str]:
    """Registered names of `kind` ("backbones") that complete `prefix` (tab completion)."""
    from tlbench.plugins import Plugins

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a broken plugin must not spoil the shell's line
        plugins = Plugins()
        by_kind = registries(plugins)
        kinds = [kind] if kind in by_kind else list(by_kind)
        names: list[str] = []
        for k in kinds:
            # With "family:" typed, every member the family knows; else what `list` shows.
            pattern = f"{prefix}*" if ":" in prefix else None
            names += [row["name"] for row in list_rows(plugins, k, pattern)]
    return [n for n in names if n.startswith(prefix)]


def completer(kind: str, *, comma_separated: bool = False) -> Any:
    """An argcomplete completer of registered names; for `--backbones a,b,` the last item."""

    def complete(prefix: str, **kwargs: Any) -> list[str]:
        head, _, last = prefix.rpartition(",") if comma_separated else ("", "", prefix)
        lead = f"{head}," if head else ""
        return [lead + name for name in _names(kind, last)]

    return complete
