"""`tlbench run`: train every combination of a grid and compare them.

The flags of a grid are not listed here: each is declared once beside its
setting (`tlbench.config.RunConfig`'s field metadata and
`HYPERPARAMETER_OPTIONS`), and `add_grid_options` makes the parser's from
them; `select` shares them.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from tlbench import config as run_config
from tlbench.commands import interrupted_code
from tlbench.commands.list import completer
from tlbench.commands.output import add_column_options
from tlbench.errors import TlbenchError

EPILOG_RUN = """examples:
  tlbench run                                   the embedded default: offline, a few minutes on a CPU
  tlbench run --datasets imagefolder:~/data/hymenoptera_data --backbones resnet18 \\
              --strategies scratch,linear,finetune --image-size 224
  tlbench run --datasets cifar10 --backbones efficientnet_lite0 --strategies linear --seeds 0,1,2
  tlbench run --config examples/hymenoptera_resnet18.toml --epochs 3   flags override the file

Rerunning the same command skips the runs already in the results file (--force redoes them);
Ctrl-C keeps every finished run.
"""

#: tab completion of registered names, per option.
COMPLETERS = {
    "backbones": ("backbones", True),
    "datasets": ("datasets", True),
    "strategies": ("strategies", True),
    "executor": ("executors", False),
}


def _csv(kind: type = str):
    """A comma-separated list; `\\,` is a comma inside an item (`imagefolder:/data/a\\,b`)."""

    def parse(text: str) -> list:
        items = [t.replace("\\,", ",").strip() for t in re.split(r"(?<!\\),", text)]
        items = [t for t in items if t]
        _check_split_path(text, items)
        try:
            return [kind(t) for t in items]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {kind.__name__}s, got {text!r}"
            ) from None

    return parse


def _check_split_path(text: str, items: list[str]) -> None:
    """`imagefolder:/data/a,b` where the folder `a,b` exists: say how to pass it."""
    for i, item in enumerate(items[:-1]):
        name, colon, argument = item.partition(":")
        if not colon or not argument or Path(argument).expanduser().exists():
            continue
        for end in range(len(items), i + 1, -1):
            candidate = ",".join([argument, *items[i + 1 : end]])
            if Path(candidate).expanduser().exists():
                escaped = candidate.replace(",", "\\,")
                raise argparse.ArgumentTypeError(
                    f"{text!r} is read as a comma-separated list, but {candidate!r} is one "
                    f"path with a comma in it: write '{name}:{escaped}' (quoted, so the shell "
                    "keeps the backslash), or list it in a --config file"
                )


def _shown_default(setting: run_config.Setting) -> str:
    """The "(default: ...)" of a setting whose help names none: from its field's default."""
    value = setting.default
    if setting.option.toggle == "negated" or value is False:
        return "off"
    if value is True:
        return "on"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    return "none" if value is None else str(value)


def _help(setting: run_config.Setting) -> str:
    text = setting.option.help
    if "default" in text:
        return text
    # `%` is argparse's format character in help strings.
    return f"{text} (default: {_shown_default(setting).replace('%', '%%')})".lstrip()


def _item_type(tp: Any) -> tuple[Any, bool]:
    """(the type of one value, whether the setting is a list) of a field's type."""
    args = [a for a in getattr(tp, "__args__", ()) if a is not type(None)]
    if getattr(tp, "__origin__", None) is list:
        return args[0], True
    return (args[0] if args else tp), False


def _argument(setting: run_config.Setting) -> tuple[str, dict[str, Any]]:
    """The flag and the `add_argument` keywords of one setting."""
    option = setting.option
    flag = option.flag or run_config.as_flag(setting.name)
    kwargs: dict[str, Any] = {"dest": setting.name, "default": None, "help": _help(setting)}
    if option.metavar:
        kwargs["metavar"] = option.metavar
    item, is_list = _item_type(setting.type)
    if item is bool:
        actions = {
            "switch": "store_true",
            "toggle": argparse.BooleanOptionalAction,
            "negated": "store_false",
        }
        kwargs["action"] = actions[option.toggle]
    elif is_list:
        kwargs["type"] = _csv(item)
    elif setting.name in run_config.CHOICES:
        kwargs["choices"] = run_config.CHOICES[setting.name]
    elif option.parse or item is not str:
        kwargs["type"] = option.parse or item
    if option.repeat:
        kwargs["action"] = "append"
    return flag, kwargs


def add_grid_options(parser: argparse.ArgumentParser) -> None:
    """The flags of a grid, shared by `run` and `select`, made from the settings' declarations."""
    groups = {key: parser.add_argument_group(title) for key, title in run_config.GROUPS.items()}
    groups["grid"].add_argument(
        "--config", metavar="FILE.toml", help="read settings from a TOML file; flags override it"
    )
    settings = {s.name: s for s in run_config.options()}
    for setting in settings.values():
        flag, kwargs = _argument(setting)
        action = groups[setting.option.group].add_argument(flag, **kwargs)
        if setting.name in COMPLETERS and parser.prog.split()[-1] == "run":
            kind, comma_separated = COMPLETERS[setting.name]
            action.completer = completer(kind, comma_separated=comma_separated)  # type: ignore[attr-defined]
    for old, new in run_config.RENAMED.items():
        # Still parsed for one release (make_config warns and moves it), no longer shown.
        _, kwargs = _argument(settings[new])
        kwargs.update(dest=old, help=argparse.SUPPRESS)
        groups[settings[new].option.group].add_argument(run_config.as_flag(old), **kwargs)
    where = groups["where"]
    where.add_argument("--quiet", "-q", action="store_true", help="print only the final table")
    where.add_argument(
        "--plain",
        action="store_true",
        help="one line per epoch instead of live bars (automatic when output is not a terminal)",
    )


def config_from_args(args: argparse.Namespace) -> run_config.RunConfig:
    """The run config of the flags (and the --config file they name)."""
    flags = {s.name: getattr(args, s.name) for s in run_config.options()}
    flags.update({old: getattr(args, old) for old in run_config.RENAMED})
    return run_config.make_config(args.config, **flags)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    run = subparsers.add_parser(
        "run",
        help="train every combination and compare them",
        description="Train every backbone x dataset x strategy x seed, append one record per run "
        "to the results file, then print the comparison.",
        epilog=EPILOG_RUN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_grid_options(run)
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (what would train, what is done, what is skipped and why) "
        "and train nothing",
    )
    add_column_options(run)
    return run


def progress_factory(args: argparse.Namespace, console: Console) -> Any:
    """The observer of each grid the command runs, as the flags ask."""
    from tlbench import console as display

    return lambda: display.make_progress(console, quiet=args.quiet, plain=args.plain)


def interrupted(console: Console, grid: Any, stop: KeyboardInterrupt) -> int:
    """Say what an interrupted grid kept; the exit code of the interruption."""
    finished = sum(r["status"] == "ok" for r in grid.current.answers())
    out = escape(str(grid.current.out))
    console.print(
        f"[yellow]interrupted[/]: {finished} finished run(s) of this grid are kept in {out}; "
        "run the same command again to resume.",
        soft_wrap=True,
    )
    return interrupted_code(stop)


def say_if_output_closed(outcome: Any) -> None:
    """The reader of the output went away while the grid ran: say where its records are."""
    if getattr(outcome.observer, "output_closed", False):
        out = escape(str(outcome.out))
        Console(stderr=True).print(
            f"output closed while the grid ran; it finished, and its records are in "
            f"{out} (tlbench report {out})",
            soft_wrap=True,
            highlight=False,
        )


def print_choices(console: Console, records: Iterable[dict[str, Any]]) -> None:
    """What each tuned cell chose, on how many trials, at what validation accuracy and cost."""
    from tlbench.console import describe_run
    from tlbench.tune import chosen_line

    seen: set[str] = set()
    for r in records:
        tuning = r.get("tuning")
        if not tuning or tuning.get("chosen") is None or tuning["study"] in seen:
            continue
        seen.add(tuning["study"])
        c = r["config"]
        cell = describe_run(c["backbone"], c["strategy"], c["dataset"], c["seed"])
        cell = cell.rpartition(" / seed")[0]
        console.print(f"tuned {escape(cell)}: {escape(chosen_line(tuning))}", soft_wrap=True)


def write_page(outcome: Any) -> Path | None:
    """The report page of the results file, beside it (`runs.jsonl` -> `runs.html`), without
    the figure (seconds of matplotlib; `tlbench report --html` draws it). None, with a
    warning, when it cannot be written: the records are what matters."""
    import warnings

    from tlbench import report
    from tlbench.htmlreport import write_html_report

    out = Path(outcome.out)
    page = out.with_suffix(".html")
    if page == out:  # a results file named *.html: never write over it
        page = out.with_name(out.name + ".page.html")
    records = outcome.runner.results.records
    try:
        rows = report.sort_rows(report.summarize(records))
        note = (
            "The figure (accuracy against training time, learning curves) is drawn on "
            f"request: tlbench report {out} --html {page.name} (needs matplotlib)."
        )
        return write_html_report(page, rows, records, sources=[out], figure_note=note)
    except (OSError, TlbenchError) as exc:
        warnings.warn(f"the report page was not written: {exc}", RuntimeWarning, stacklevel=1)
        return None


def print_plan(console: Console, config: Any) -> int:
    """`--dry-run`: plan the grid (names resolved, datasets loaded, the results file read) and
    say what would train, what is done and what is skipped, and why; nothing trains."""
    from tlbench.console import describe_spec
    from tlbench.grid import Grid
    from tlbench.runner import Runner

    with Grid(config) as grid:
        plans = Runner(config, grid.plugins, None, log=grid.log).plan()
    counts = {s: sum(p.status == s for p in plans) for s in ("pending", "done", "skipped")}
    console.print(
        f"plan: {len(plans)} runs — {counts['pending']} to train, {counts['done']} already "
        f"done, {counts['skipped']} skipped (--dry-run: nothing is trained)",
        soft_wrap=True,
        highlight=False,
    )
    words = {"pending": "train", "done": "done ", "skipped": "skip "}
    for p in plans:
        why = f": {p.reason}" if p.reason else ""
        what = f"{describe_spec(p.spec)} at {p.spec.image_size} px{why}"
        line = f"  {words.get(p.status, p.status)}  {what}"
        console.print(Text(line), soft_wrap=True)
    if config.tune_settings() is not None:
        console.print(
            f"--tune: each cell to train is searched first ({config.tune} trials on a "
            "validation split), then its seeds train at the chosen settings",
            soft_wrap=True,
        )
    console.print(f"results: {escape(str(config.out))}", soft_wrap=True)
    return 0


def main(args: argparse.Namespace, console: Console) -> int:
    from tlbench import results
    from tlbench.commands.output import print_comparison
    from tlbench.grid import Grid, signals_as_interrupt

    config = config_from_args(args)  # a bad config file fails here, before any loading
    if getattr(args, "dry_run", False):
        return print_plan(console, config)
    with Grid(config, progress=progress_factory(args, console)) as grid:
        try:
            outcome = grid.run(during=signals_as_interrupt)
        except KeyboardInterrupt as stop:
            if grid.current is None:
                raise  # while planning: nothing of this grid ran
            return interrupted(console, grid, stop)
    say_if_output_closed(outcome)
    mine = outcome.records()
    print_comparison(console, mine, columns=args.columns, wide=args.wide)
    latest = results.answer_by_key(mine)
    print_choices(console, latest.values())
    out = escape(str(outcome.out))
    console.print(f"results: {out}  (tlbench report {out} --plot tradeoff.png)", soft_wrap=True)
    page = write_page(outcome)
    if page is not None:
        console.print(f"page: {escape(str(page))}", soft_wrap=True)
    # Exit 1 only when nothing of this grid succeeded: some failures are a
    # finding (a backbone too big for the GPU), not a broken invocation.
    failed = [r for r in latest.values() if r["status"] == "failed"]
    ok = [r for r in latest.values() if r["status"] == "ok"]
    return 1 if failed and not ok else 0
