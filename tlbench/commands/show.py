"""`tlbench show NAME`: everything known about one backbone, dataset, strategy or executor."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from tlbench.commands.list import completer, list_rows, registries
from tlbench.commands.output import print_wide
from tlbench.errors import TlbenchError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    show = subparsers.add_parser(
        "show",
        help="details of one backbone, dataset, strategy or executor",
        description="Everything known about one name, without building or downloading anything.",
    )
    name = show.add_argument(
        "name",
        help="any name `tlbench list` prints: resnet18, timm:resnet18, partial:2, imagefolder:PATH",
    )
    name.completer = completer("all")  # type: ignore[attr-defined]
    show.add_argument("--json", action="store_true", help="machine-readable output (default: text)")
    return show


def main(args: argparse.Namespace, console: Console) -> int:
    """Everything known about one backbone, dataset, strategy or executor."""
    from tlbench.plugins import Plugins

    info = describe(Plugins(), args.name)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    table = Table.grid(padding=(0, 2))
    table.add_column(justify="right", style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in _show_rows(info):
        table.add_row(key, Text(value))
    print_wide(console, table)
    return 0


def describe(plugins: Any, name: str) -> dict[str, Any]:
    """Everything known about one name `tlbench list` prints, as plain data (`show --json`).

    Nothing is built and nothing is downloaded: a backbone's parameter count is
    the one its plugin declares. A family member (`timm:resnet18`, `partial:2`)
    is resolved by its plugin, which may import its own library to do so; the
    placeholder `list` prints (`timm:<model_name>[@random]`, `imagefolder:<path>`)
    describes the family or dataset itself; `imagefolder:PATH` lists the folder.
    """
    base, sep, argument = name.partition(":")
    for kind, registry in registries(plugins).items():
        family = registry.families.get(base)
        if family is not None:
            if not argument or argument == family.argument_help:
                return {
                    "kind": f"{registry.kind} family",
                    "name": f"{base}:{family.argument_help}",
                    "description": family.description,
                    "plugin": registry.provider(base),
                    "featured": [f"{base}:{m}" for m in family.featured],
                    "members": f"`tlbench list {kind} '{base}:*'` lists them",
                }
            return _describe_item(plugins, kind, registry, registry.get(name), name)
        if base in registry:
            item = registry.get(base)
            if kind == "datasets":
                return _describe_dataset(registry, item, argument if sep else None)
            if sep:
                registry.get(name)  # raises: "... takes no argument"
            return _describe_item(plugins, kind, registry, item, base)
    import difflib

    known = [row["name"] for k in registries(plugins) for row in list_rows(plugins, k, None)]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(m) for m in close)}?" if close else ""
    raise TlbenchError(
        f"nothing is called {name!r}.{hint} Run `tlbench list` to see what is available."
    )


def _describe_item(plugins: Any, kind: str, registry: Any, item: Any, name: str) -> dict[str, Any]:
    info: dict[str, Any] = {"kind": registry.kind, "name": name}
    info["description"] = getattr(item, "description", "")
    info["plugin"] = registry.provider(name)
    if kind == "backbones":
        p = item.preprocessing
        info.update(
            feature_dim=item.feature_dim,
            weights=item.weights,
            weights_source=item.weights_source or None,
            preprocessing={**p.to_dict(), "crop_pct": round(p.crop_pct, 4)},
            min_image_size=item.min_image_size,
            fixed_image_size=item.fixed_image_size,
            num_params=item.num_params,
            stages=item.stages is not None,
        )
    elif kind == "strategies":
        import dataclasses

        info.update(
            pretrained=item.pretrained,
            frozen_backbone=item.frozen_backbone,
            defaults=dataclasses.asdict(item.defaults),
            options={o.name: {"default": o.default, "help": o.help} for o in item.options},
        )
    return info


def _describe_dataset(registry: Any, d: Any, argument: str | None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "kind": "dataset",
        "name": d.name,
        "description": d.description,
        "plugin": registry.provider(d.name),
        "argument": (d.argument_help or "<arg>") if d.takes_argument else None,
        "native_size": d.native_size,
    }
    if argument is not None and not d.takes_argument:
        raise TlbenchError(f"dataset {d.name!r} takes no argument (got {d.name}:{argument})")
    if argument and argument != info["argument"]:
        # An argument names local files (imagefolder:PATH): listing them is cheap.
        from tlbench.cache import default_cache_dir
        from tlbench.plugin_types import DatasetRequest

        splits = d.load(DatasetRequest(argument=argument, data_dir=default_cache_dir() / "data"))
        info.update(
            name=f"{d.name}:{argument}",
            classes=list(splits.classes),
            train_images=len(splits.train),
            eval_images=len(splits.eval),
            eval_split=splits.eval_split,
            fingerprint=splits.fingerprint,
        )
    return info


def _show_rows(info: dict[str, Any]) -> list[tuple[str, str]]:
    """`show`'s human-readable lines for `_describe`'s data."""
    rows = [(info["kind"], info["name"]), ("description", info["description"] or "-")]
    rows.append(("plugin", info["plugin"]))
    if "feature_dim" in info:
        p = info["preprocessing"]
        n = info["num_params"]
        rows += [
            ("feature width", str(info["feature_dim"])),
            ("pretrained weights", info["weights"] or "none (random init only: scratch)"),
            ("weights source", info["weights_source"] or "-"),
            (
                "preprocessing",
                f"resize the shorter side to {p['resize']}, centre crop {p['crop']} "
                f"({100 * p['crop_pct']:.1f}%), {p['interpolation']}; normalise with "
                f"mean {tuple(p['mean'])}, std {tuple(p['std'])}",
            ),
            (
                "input size",
                f"{info['fixed_image_size']} px only"
                if info["fixed_image_size"]
                else f"any, at least {info['min_image_size']} px (the crop fraction is kept)",
            ),
            (
                "parameters",
                f"{n:,} (backbone, without the new head)"
                if n is not None
                else "not declared by its plugin; computed at run time",
            ),
            ("stages", "declared (laststages, llrd)" if info["stages"] else "none declared"),
        ]
    if "frozen_backbone" in info:
        rows += [
            ("needs pretrained weights", "yes" if info["pretrained"] else "no"),
            (
                "backbone",
                "frozen: features computed once and cached"
                if info["frozen_backbone"]
                else "trains",
            ),
            ("defaults", ", ".join(f"{k}={v}" for k, v in info["defaults"].items())),
            (
                "options",
                "; ".join(f"{k}={o['default']!r}: {o['help']}" for k, o in info["options"].items())
                or "none",
            ),
        ]
    if "native_size" in info:
        rows += [
            ("argument", info["argument"] or "none"),
            ("native size", f"{info['native_size']} px" if info["native_size"] else "varies"),
        ]
    if "classes" in info:
        classes = info["classes"]
        shown = ", ".join(classes[:20]) + (", ..." if len(classes) > 20 else "")
        rows += [
            ("classes", f"{len(classes)}: {shown}"),
            ("images", f"{info['train_images']} train, {info['eval_images']} {info['eval_split']}"),
        ]
    if "featured" in info:
        rows += [("featured", ", ".join(info["featured"]) or "-"), ("members", info["members"])]
    return rows
