"""`tlbench examples`: the example config files shipped inside the package."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from tlbench.commands.output import print_wide
from tlbench.errors import TlbenchError

EPILOG_EXAMPLES = """examples:
  tlbench examples                               name and summary of each
  tlbench examples show flowers12_quick          print one
  tlbench examples copy hymenoptera_resnet18 .   copy one here, then edit it and
  tlbench run --config hymenoptera_resnet18.toml run it
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    examples = subparsers.add_parser(
        "examples",
        help="example config files shipped with tlbench: list, show or copy one out",
        description="Example grids as TOML config files, shipped inside the package. Copy one out, "
        "edit it, and run it with `tlbench run --config FILE.toml`.",
        epilog=EPILOG_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    examples.add_argument(
        "--json", action="store_true", help="list as machine-readable output (default: a table)"
    )
    actions = examples.add_subparsers(dest="examples_command", metavar="ACTION")
    actions.add_parser("list", help="name and summary of each example (the default action)")
    ex_show = actions.add_parser("show", help="print one example to stdout")
    name = ex_show.add_argument("name", help="an example's name, as `tlbench examples` lists it")
    name.completer = _example_completer  # type: ignore[attr-defined]
    ex_copy = actions.add_parser("copy", help="copy one example into a folder or to a file")
    name = ex_copy.add_argument("name", help="an example's name, as `tlbench examples` lists it")
    name.completer = _example_completer  # type: ignore[attr-defined]
    ex_copy.add_argument(
        "dest", nargs="?", default=".", help="folder or file to write (default: the current folder)"
    )
    ex_copy.add_argument(
        "--force", action="store_true", help="overwrite an existing file (default: refuse)"
    )
    return examples


def _example_completer(prefix: str, **kwargs: Any) -> list[str]:
    return [n for n in _examples() if n.startswith(prefix)]


def _examples() -> dict[str, Any]:
    """Name -> the example config file shipped inside the package (an importlib resource)."""
    from importlib.resources import files

    folder = files("tlbench") / "examples"
    return {
        f.name.removesuffix(".toml"): f
        for f in sorted(folder.iterdir(), key=lambda f: f.name)
        if f.name.endswith(".toml")
    }


def _example(name: str) -> Any:
    examples = _examples()
    found = examples.get(name.removesuffix(".toml"))
    if found is None:
        import difflib

        close = difflib.get_close_matches(name, list(examples), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(m) for m in close)}?" if close else ""
        raise TlbenchError(
            f"no example is called {name!r}.{hint} Run `tlbench examples` to list them."
        )
    return found


def _summary(text: str) -> str:
    """The first paragraph of an example's leading comment, as one line (up to an indented command)."""
    words: list[str] = []
    for line in text.splitlines():
        if not line.startswith("#") or not line.strip("# ") or line.startswith("#  "):
            break
        words.append(line.lstrip("#").strip())
    return " ".join(words)


def main(args: argparse.Namespace, console: Console) -> int:
    """List the shipped example configs, print one, or copy one out to edit and run."""
    action = args.examples_command or "list"
    if action == "list":
        examples = _examples()
        if args.json:
            print(
                json.dumps(
                    [
                        {"name": n, "summary": _summary(f.read_text(encoding="utf-8"))}
                        for n, f in examples.items()
                    ],
                    indent=2,
                )
            )
            return 0
        table = Table(title="examples", title_justify="left")
        table.add_column("name", no_wrap=True)
        table.add_column("summary", overflow="fold")
        for name, f in examples.items():
            table.add_row(Text(name), Text(_summary(f.read_text(encoding="utf-8"))))
        print_wide(console, table)
        console.print(
            Text(
                "`tlbench examples copy NAME [DEST]` copies one out to edit; "
                "`tlbench run --config NAME.toml` then runs it."
            ),
            soft_wrap=True,
        )
        return 0
    source = _example(args.name)
    text = source.read_text(encoding="utf-8")
    if action == "show":
        sys.stdout.write(text)
        return 0
    dest = Path(args.dest).expanduser()
    if dest.is_dir():
        dest = dest / source.name
    if dest.exists() and not args.force:
        raise TlbenchError(f"{dest} exists; pass --force to overwrite it, or another DEST.")
    try:
        dest.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise TlbenchError(f"cannot write {dest}: {exc.strerror or exc}") from None
    console.print(Text(f"wrote {dest}; run it with: tlbench run --config {dest}"), soft_wrap=True)
    return 0
