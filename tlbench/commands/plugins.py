"""`tlbench plugins`: the loaded plugins, their versions and what each provides."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from tlbench.commands.list import registries
from tlbench.commands.output import print_wide


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    plug = subparsers.add_parser("plugins", help="loaded plugins, versions, and what each provides")
    plug.add_argument(
        "--json", action="store_true", help="machine-readable output (default: a table)"
    )
    return plug


def main(args: argparse.Namespace, console: Console) -> int:
    from tlbench.plugins import Plugins

    plugins = Plugins()
    infos = list(plugins.info.values())
    conflicts: dict[str, list[str]] = {}
    for registry in registries(plugins).values():
        for name, owners in registry.conflicts.items():
            for owner in owners:
                conflicts.setdefault(owner, []).append(f"{registry.kind} {name}")
    if args.json:
        print(
            json.dumps(
                [{**i.to_dict(), "conflicts": conflicts.get(i.name, [])} for i in infos], indent=2
            )
        )
        return 0
    table = Table(title="plugins", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("version", no_wrap=True)
    table.add_column("kind")
    table.add_column("provides", overflow="fold")
    table.add_column("status", overflow="fold")
    colours = {"loaded": "green", "failed": "red"}
    for i in infos:
        # Text, not markup: `timm:<model_name>[@random]` stays as written.
        provides = "; ".join(f"{k}: {', '.join(v)}" for k, v in i.provides.items())
        status = Text(i.status, style=colours.get(i.status, "yellow"))
        if i.error:
            status.append(f": {i.error}")
        kind = "builtin" if i.builtin else f"entry point ({i.distribution or '-'})"
        table.add_row(Text(i.name), Text(i.version), Text(kind), Text(provides), status)
    print_wide(console, table)
    for registry in registries(plugins).values():
        for name, owners in registry.conflicts.items():
            console.print(
                Text.assemble(
                    ("conflict", "red"),
                    f": {registry.kind} {name!r} registered by "
                    f"{' and '.join(repr(o) for o in owners)}",
                ),
                soft_wrap=True,
            )
    return 0
