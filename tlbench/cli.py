"""The `tlbench` command: run a grid, list what plugins provide, report results."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from tlbench import report, results
from tlbench.errors import Terminated, TlbenchError

EPILOG_RUN = """examples:
  tlbench run                                   the embedded default: offline, a few minutes on a CPU
  tlbench run --datasets imagefolder:~/data/hymenoptera_data --backbones resnet18 \\
              --strategies scratch,linear,finetune --image-size 224
  tlbench run --datasets cifar10 --backbones efficientnet_lite0 --strategies linear --seeds 0,1,2
  tlbench run --config examples/hymenoptera_resnet18.toml --epochs 3   flags override the file

Rerunning the same command skips the runs already in the results file (--force redoes them);
Ctrl-C keeps every finished run.
"""

EPILOG_REPORT = """examples:
  tlbench report results/runs.jsonl
  tlbench report a.jsonl b.jsonl --format markdown --sort time > comparison.md
  tlbench report results/runs.jsonl --group-by backbone --format csv -o runs.csv
  tlbench report results/runs.jsonl --plot tradeoff.png
"""

EPILOG_PREDICT = """examples:
  tlbench predict results/models/3f2a....pt photo.jpg
  tlbench predict model.pt ~/data/flowers/test --top-k 3 --grid predictions.png
"""


def _csv(kind: type = str):
    def parse(text: str) -> list:
        items = [t.strip() for t in text.split(",") if t.strip()]
        try:
            return [kind(t) for t in items]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {kind.__name__}s, got {text!r}"
            ) from None

    return parse


def _bool_flag(parser: argparse.ArgumentParser, name: str, help: str) -> None:
    parser.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None, help=help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlbench",
        description="Benchmark transfer learning on images: every backbone x dataset x strategy, "
        "accuracy against training cost.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="train every combination and compare them",
        description="Train every backbone x dataset x strategy x seed, append one record per run "
        "to the results file, then print the comparison.",
        epilog=EPILOG_RUN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    grid = run.add_argument_group("what to run")
    grid.add_argument(
        "--config", metavar="FILE.toml", help="read settings from a TOML file; flags override it"
    )
    grid.add_argument(
        "--backbones",
        type=_csv(),
        metavar="A,B",
        help="backbones to compare (default: efficientnet_lite0,small_cnn); see `tlbench list backbones`",
    )
    grid.add_argument(
        "--datasets",
        type=_csv(),
        metavar="A,B",
        help="datasets, e.g. imagefolder:PATH or cifar10 (default: synthetic)",
    )
    grid.add_argument(
        "--strategies",
        type=_csv(),
        metavar="A,B",
        help="how to adapt each backbone (default: scratch,linear,finetune)",
    )
    grid.add_argument(
        "--seeds",
        type=_csv(int),
        metavar="0,1,2",
        help="one run per seed; mean ± std over them (default: 0)",
    )

    train = run.add_argument_group("training (default: each strategy's own, see README)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument(
        "--image-size",
        type=int,
        metavar="PX",
        help="input side in pixels (default: the dataset's native size, else 128)",
    )
    train.add_argument(
        "--lr", type=float, help="learning rate of the new head (all weights for scratch)"
    )
    train.add_argument(
        "--backbone-lr-mult",
        type=float,
        metavar="X",
        help="backbone LR = lr * X (finetune default 0.1)",
    )
    train.add_argument("--weight-decay", type=float)
    train.add_argument("--optimizer", choices=["adamw", "sgd"])
    train.add_argument("--momentum", type=float, help="SGD momentum")
    _bool_flag(train, "nesterov", "SGD: Nesterov momentum (default: plain momentum)")
    train.add_argument("--schedule", choices=["cosine", "step", "constant"])
    train.add_argument("--step-size", type=int, metavar="N", help="step schedule: decay every N epochs")
    train.add_argument("--gamma", type=float, help="step schedule: multiply the LR by this")
    train.add_argument("--warmup-epochs", type=int)
    train.add_argument("--label-smoothing", type=float)
    _bool_flag(train, "augment", "random resized crop + flip while training")

    where = run.add_argument_group("where and how")
    where.add_argument(
        "--out",
        metavar="FILE.jsonl",
        help="results file to append to (default: results/runs.jsonl)",
    )
    where.add_argument(
        "--data-dir",
        metavar="DIR",
        help="where downloadable datasets live (default: ~/.cache/tlbench/data)",
    )
    where.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="decoded-image and feature caches (default: ~/.cache/tlbench, or $TLBENCH_CACHE_DIR)",
    )
    where.add_argument(
        "--no-cache", action="store_true", default=None, help="keep no cache on disk"
    )
    where.add_argument(
        "--val-fraction",
        type=float,
        metavar="F",
        help="held-out fraction for a single-folder imagefolder (default 0.1)",
    )
    where.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], help="default auto: CUDA when available"
    )
    where.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        help="auto: bf16 autocast on CUDA, fp32 on CPU",
    )
    _bool_flag(where, "channels-last", "channels-last memory format (default: on; faster for convnets on CPU and CUDA)")
    where.add_argument(
        "--compile", action="store_true", default=None, help="torch.compile the model"
    )
    where.add_argument("--workers", type=int, help="threads decoding images (default: up to 8)")
    where.add_argument(
        "--strict",
        action="store_true",
        default=None,
        help="fail on unreadable images instead of skipping them",
    )
    where.add_argument(
        "--force", action="store_true", default=None, help="redo runs already in the results file"
    )
    where.add_argument(
        "--save-models", action="store_true", default=None, help="keep each run's best checkpoint"
    )
    where.add_argument(
        "--models-dir",
        metavar="DIR",
        help="where --save-models writes (default: beside --out, models/)",
    )
    where.add_argument(
        "--no-retry",
        dest="retry_oom",
        action="store_false",
        default=None,
        help="on GPU out-of-memory fail instead of retrying at half the batch",
    )
    where.add_argument("--quiet", "-q", action="store_true", help="print only the final table")
    where.add_argument(
        "--plain",
        action="store_true",
        help="one line per epoch instead of live bars (automatic when output is not a terminal)",
    )

    lst = sub.add_parser(
        "list",
        help="list backbones, datasets and strategies",
        description="List what the loaded plugins provide, with wildcards: tlbench list backbones 'resnet*'",
    )
    lst.add_argument("kind", nargs="?", choices=["backbones", "datasets", "strategies"])
    lst.add_argument("pattern", nargs="?", help="shell-style wildcard, e.g. 'resnet*'")

    show = sub.add_parser("show", help="details of one backbone, dataset or strategy")
    show.add_argument("name")

    plug = sub.add_parser("plugins", help="loaded plugins, versions, and what each provides")
    plug.add_argument("--json", action="store_true", help="machine-readable output")

    rep = sub.add_parser(
        "report",
        help="compare the runs of one or more results files",
        description="One row per backbone x strategy (seeds aggregated), accuracy against training "
        "cost, Pareto-optimal rows marked; failed and skipped runs with their reason.",
        epilog=EPILOG_REPORT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rep.add_argument("results", nargs="+", metavar="RESULTS.jsonl")
    rep.add_argument(
        "--format",
        choices=report.FORMATS,
        default="table",
        help="table (terminal), markdown, csv, json, html or latex (default: table)",
    )
    rep.add_argument(
        "--sort",
        choices=report.SORT_KEYS,
        default="accuracy",
        help="row order within each section (default: accuracy, best first)",
    )
    rep.add_argument(
        "--group-by",
        choices=report.GROUP_KEYS,
        default="dataset",
        help="one section per dataset (default), backbone or strategy, or none",
    )
    rep.add_argument(
        "--output", "-o", metavar="FILE", help="write the report to FILE instead of stdout"
    )
    rep.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also draw accuracy against training time (Pareto frontier) and the learning "
        "curves; needs matplotlib (pip install 'tlbench[plot]')",
    )

    pred = sub.add_parser(
        "predict",
        help="classify images with a checkpoint saved by `run --save-models`",
        description="Print the top-k classes of each image (files, or folders searched recursively; "
        "a folder named like a class gives the true label).",
        epilog=EPILOG_PREDICT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pred.add_argument("checkpoint", metavar="CHECKPOINT.pt")
    pred.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    pred.add_argument(
        "--top-k", "-k", type=int, default=5, metavar="K", help="classes per image (default 5)"
    )
    pred.add_argument(
        "--grid",
        metavar="FILE.png",
        help="save the images with predicted and true labels (needs matplotlib)",
    )
    pred.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    pred.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


# --------------------------------------------------------------------------- run


def _config_from_args(args: argparse.Namespace):
    from tlbench.config import make_config

    flags = {
        k: getattr(args, k)
        for k in (
            "backbones",
            "datasets",
            "strategies",
            "seeds",
            "epochs",
            "batch_size",
            "image_size",
            "lr",
            "backbone_lr_mult",
            "weight_decay",
            "optimizer",
            "momentum",
            "nesterov",
            "schedule",
            "warmup_epochs",
            "step_size",
            "gamma",
            "label_smoothing",
            "augment",
            "out",
            "data_dir",
            "cache_dir",
            "no_cache",
            "val_fraction",
            "device",
            "precision",
            "channels_last",
            "compile",
            "workers",
            "strict",
            "force",
            "save_models",
            "models_dir",
            "retry_oom",
        )
    }
    return make_config(args.config, **flags)


def _close(progress: Any) -> None:
    close = getattr(progress, "close", None)
    if close is not None:
        close()


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    raise Terminated


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from tlbench.config import check_strategy_tables
    from tlbench.plugins import Plugins
    from tlbench.progress import make_progress
    from tlbench.runner import Runner

    config = _config_from_args(args)  # a bad config file fails here, before any loading
    plugins = Plugins()
    check_strategy_tables(config, plugins.strategies.names())
    progress = make_progress(console, quiet=args.quiet, plain=args.plain)
    runner = Runner(config, plugins, progress)
    plans = runner.plan()
    # SIGTERM (a CI timeout, `kill`, a scheduler) ends the grid like Ctrl-C:
    # the current run is recorded as interrupted and every finished run is kept.
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        runner.run(plans)
    except KeyboardInterrupt as stop:
        _close(progress)
        keys = {p.spec.key for p in plans}
        latest = results.latest_by_key(results.read(runner.out))
        finished = sum(r["status"] == "ok" for k, r in latest.items() if k in keys)
        console.print(
            f"[yellow]interrupted[/]: {finished} finished run(s) of this grid are kept in "
            f"{escape(str(runner.out))}; "
            "run the same command again to resume.",
            soft_wrap=True,
        )
        return _interrupted_code(stop)
    finally:
        _close(progress)
        signal.signal(signal.SIGTERM, previous)
    records = results.read(runner.out)
    keys = {p.spec.key for p in plans}
    mine = [r for r in records if r["key"] in keys]
    print_comparison(console, mine)
    latest = results.latest_by_key(mine)
    failed = [r for r in latest.values() if r["status"] == "failed"]
    console.print(
        f"results: {runner.out}  (tlbench report {runner.out} --plot tradeoff.png)", soft_wrap=True
    )
    # Exit 1 only when nothing of this grid succeeded: some failures are a
    # finding (a backbone too big for the GPU), not a broken invocation.
    ok = [r for r in latest.values() if r["status"] == "ok"]
    return 1 if failed and not ok else 0


def print_comparison(
    console: Console,
    records: list[dict[str, Any]],
    sort: str = "accuracy",
    group_by: str = "dataset",
) -> None:
    """The comparison as rich tables, one per section."""
    rows = report.sort_rows(report.summarize(records), sort)
    hidden: set[str] = set()
    for title, group in report.group_rows(rows, group_by).items():
        heading = (
            f"{title}: top-1 against training cost"
            if group_by == "dataset"
            else (f"{group_by} {title}" if group_by != "none" else "all runs")
        )
        columns = report.columns(group_by)
        cells = [report.row_cells(row, group_by) for row in group]
        widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
        keep = list(range(len(columns)))
        if console.is_terminal:
            # Too narrow a terminal: drop the least telling columns rather than crush them all.
            for name in _DROPPABLE:
                needed = sum(
                    min(widths[i], 24) if columns[i] == "note" else widths[i] for i in keep
                )
                if needed + 3 * len(keep) + 1 <= console.width:
                    break
                if name in columns:
                    keep.remove(columns.index(name))
                    hidden.add(name)
        table = Table(title=Text(heading), title_justify="left", title_style="bold")
        for i in keep:
            column = columns[i]
            if column == "note":
                # Reasons can be long: they wrap, the numbers never do.
                table.add_column(column, overflow="fold", min_width=min(widths[i], 16))
            else:
                table.add_column(
                    column,
                    justify="left" if column in _LEFT else "right",
                    no_wrap=True,
                    min_width=widths[i],
                )
        for row, row_cells in zip(group, cells, strict=True):
            style = "bold" if row.pareto else None if row.accuracy is not None else "dim"
            # Text, not str: a reason or a name with [brackets] is not markup.
            table.add_row(*(Text(row_cells[i]) for i in keep), style=style)
        _print_wide(console, table)
    if rows:
        _print_wide(console, Text(report.LEGEND), style="dim")
    if hidden:
        console.print(
            f"(hidden to fit the terminal: {', '.join(sorted(hidden))}; "
            "`tlbench report --format markdown` shows every column)",
            style="dim",
        )


#: the columns left out first when the terminal is too narrow for the whole table.
_DROPPABLE = ("trainable / total", "best ep", "peak MB", "img/s", "n", "vs scratch")
_LEFT = {"dataset", "backbone", "strategy", "note"}


def _print_wide(console: Console, renderable: Any, **kwargs: Any) -> None:
    """Print at the terminal's width; in a log or a pipe (no width), as wide as needed."""
    if console.is_terminal:
        console.print(renderable, **kwargs)
        return
    width = console.width
    try:
        console.width = 240  # measure against a wide page, then print at the width needed
        console.width = max(width, console.measure(renderable).maximum)
        console.print(renderable, **kwargs)
    finally:
        console.width = width


# --------------------------------------------------------------------------- list / show / plugins


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    import fnmatch

    from rich.markup import escape

    from tlbench.plugins import Plugins

    plugins = Plugins()
    kinds = [args.kind] if args.kind else ["backbones", "datasets", "strategies"]
    for kind in kinds:
        registry = getattr(plugins, kind)
        table = Table(title=kind, title_justify="left")
        table.add_column("name")
        table.add_column("pretrained" if kind == "backbones" else "", justify="left")
        table.add_column("description")
        table.add_column("plugin", style="dim")
        rows = []
        for name in registry.names(args.pattern):
            family = registry.families.get(name.partition(":")[0])
            if family is not None:
                # Members are resolved only when used: listing 1000 timm models builds none.
                # The family's own row describes them.
                rows.append((name, "", "", registry.provider(name)))
                continue
            item = registry.get(name)
            extra = ""
            if kind == "backbones":
                extra = "yes" if item.has_pretrained else "no"
            elif kind == "datasets" and item.takes_argument:
                name = f"{name}:{item.argument_help or '<arg>'}"
            elif kind == "strategies":
                extra = "frozen" if item.frozen_backbone else ""
            rows.append((name, extra, item.description, registry.provider(item.name)))
        for fname, family in registry.families.items():
            shown = f"{fname}:{family.argument_help}"
            if args.pattern is None or fnmatch.fnmatchcase(shown, args.pattern):
                hint = f"`tlbench list {kind} '{fname}:*'` lists them"
                description = f"{family.description}; {hint}" if family.description else hint
                rows.append((shown, "", description, registry.provider(fname)))
        conflicts = {
            n: owners
            for n, owners in registry.conflicts.items()
            if args.pattern is None or fnmatch.fnmatchcase(n, args.pattern)
        }
        if not rows and not conflicts and args.pattern:
            console.print(f"no {kind} match {args.pattern!r}")
            continue
        for row in sorted(rows):
            # Plugin-supplied text is not rich markup: `timm:<model>[@random]` stays as written.
            table.add_row(*(escape(cell) for cell in row))
        console.print(table)
        for name, owners in conflicts.items():
            console.print(
                f"[red]conflict[/]: {registry.kind} {name!r} is registered by "
                f"{' and '.join(repr(o) for o in owners)}; it cannot be used until one is blocked "
                "(TLBENCH_BLOCK_PLUGINS)"
            )
    # Plugins that failed were already reported once, as a warning, while loading.
    return 0


def cmd_show(args: argparse.Namespace, console: Console) -> int:
    """Everything known about one backbone, dataset or strategy."""
    from tlbench.plugins import Plugins

    plugins = Plugins()
    name = args.name
    base, _, argument = name.partition(":")
    info: dict[str, Any]
    if base in plugins.backbones:
        b = plugins.backbones.get(base)
        p = b.preprocessing
        info = {
            "backbone": b.name,
            "description": b.description,
            "plugin": plugins.provider("backbone", b.name),
            "feature width": b.feature_dim,
            "pretrained weights": b.weights or "none (random init only: scratch)",
            "weights source": b.weights_source or "-",
            "preprocessing": (
                f"resize the shorter side to {p.resize}, centre crop {p.crop} "
                f"({100 * p.crop_pct:.1f}%), {p.interpolation}; normalise with "
                f"mean {tuple(p.mean)}, std {tuple(p.std)}"
            ),
            "input size": f"{b.fixed_image_size} px only"
            if b.fixed_image_size
            else f"any, at least {b.min_image_size} px (the crop fraction is kept)",
        }
        try:
            _, total = _count(b.build(False))  # random init: never downloads
            info["parameters"] = f"{total:,} (backbone, without the new head)"
        except Exception as exc:  # building is best effort for `show`
            info["parameters"] = f"? ({type(exc).__name__}: {exc})"
    elif base in plugins.datasets:
        d = plugins.datasets.get(base)
        info = {
            "dataset": d.name,
            "description": d.description,
            "plugin": plugins.provider("dataset", d.name),
            "argument": d.argument_help if d.takes_argument else "none",
            "native size": f"{d.native_size} px" if d.native_size else "varies",
        }
        if argument and d.takes_argument:
            # An argument names local files (imagefolder:PATH): listing them is cheap.
            from tlbench.api import DatasetRequest
            from tlbench.data import default_cache_dir

            splits = d.load(
                DatasetRequest(argument=argument, data_dir=default_cache_dir() / "data")
            )
            info["classes"] = f"{len(splits.classes)}: {', '.join(splits.classes[:20])}" + (
                ", ..." if len(splits.classes) > 20 else ""
            )
            info["images"] = f"{len(splits.train)} train, {len(splits.eval)} {splits.eval_split}"
    elif base in plugins.strategies:
        s = plugins.strategies.get(base)
        info = {
            "strategy": s.name,
            "description": s.description,
            "plugin": plugins.provider("strategy", s.name),
            "needs pretrained weights": "yes" if s.pretrained else "no",
            "backbone": "frozen: features computed once and cached"
            if s.frozen_backbone
            else "trains",
            "defaults": s.defaults.__dict__,
        }
    else:
        import difflib

        known = plugins.backbones.names() + plugins.datasets.names() + plugins.strategies.names()
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(m) for m in close)}?" if close else ""
        raise TlbenchError(
            f"no backbone, dataset or strategy is called {name!r}.{hint} "
            "Run `tlbench list` to see what is available."
        )
    table = Table.grid(padding=(0, 2))
    table.add_column(justify="right", style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in info.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        table.add_row(key, Text(str(value)))
    console.print(table)
    return 0


def _count(module) -> tuple[int, int]:
    from tlbench.engine import count_parameters

    return count_parameters(module)


def cmd_plugins(args: argparse.Namespace, console: Console) -> int:
    from rich.markup import escape

    from tlbench.plugins import Plugins

    plugins = Plugins()
    infos = list(plugins.info.values())
    conflicts: dict[str, list[str]] = {}
    for registry in (plugins.backbones, plugins.datasets, plugins.strategies):
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
    for column in ("name", "version", "kind", "provides", "status"):
        table.add_column(column)
    colours = {"loaded": "green", "failed": "red"}
    for i in infos:
        # Plugin-supplied text is not rich markup: `timm:<model_name>[@random]` stays as written.
        provides = escape("; ".join(f"{k}: {', '.join(v)}" for k, v in i.provides.items()))
        colour = colours.get(i.status, "yellow")
        status = f"[{colour}]{i.status}[/]" + (f": {escape(i.error)}" if i.error else "")
        kind = "builtin" if i.builtin else f"entry point ({i.distribution or '-'})"
        table.add_row(escape(i.name), i.version, kind, provides, status)
    console.print(table)
    for registry in (plugins.backbones, plugins.datasets, plugins.strategies):
        for name, owners in registry.conflicts.items():
            console.print(
                f"[red]conflict[/]: {registry.kind} {name!r} registered by "
                f"{' and '.join(repr(o) for o in owners)}"
            )
    return 0


# --------------------------------------------------------------------------- report


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    """Compare the runs of results files: a table, a text format, and optionally a plot."""
    missing = [p for p in args.results if not Path(p).exists()]
    if missing:
        raise TlbenchError(f"results file not found: {', '.join(missing)}")
    records = results.read(args.results)
    if not records:
        raise TlbenchError(f"no records in {', '.join(args.results)}")
    rows = report.sort_rows(report.summarize(records), args.sort)
    if args.plot:
        # First, so that a missing matplotlib fails before any output is written.
        from tlbench.plot import plot_comparison

        plotted = plot_comparison(rows, records, args.plot)
    if args.output:
        text = report.render(rows, args.format, args.group_by)  # "table": plain text, no colour
        try:
            Path(args.output).expanduser().write_text(text, encoding="utf-8")
        except OSError as exc:
            raise TlbenchError(f"cannot write {args.output}: {exc.strerror}") from None
        console.print(f"report: {escape(args.output)}")
    elif args.format == "table":
        print_comparison(console, records, args.sort, args.group_by)
    else:
        sys.stdout.write(report.render(rows, args.format, args.group_by))
    if args.plot:
        (console if args.output or args.format == "table" else Console(stderr=True)).print(
            f"plot: {escape(str(plotted))}"
        )
    return 0


def cmd_predict(args: argparse.Namespace, console: Console) -> int:
    """Top-k classes of each image from a saved checkpoint; optionally a labelled grid."""
    from tlbench import predict
    from tlbench.plugins import Plugins
    from tlbench.timing import resolve_device

    if args.top_k < 1:
        raise TlbenchError("--top-k must be at least 1")
    checkpoint = predict.load_checkpoint(args.checkpoint)
    classes = list(checkpoint["classes"])
    inputs = predict.collect_images(args.images, classes)
    model = predict.build_model(checkpoint, Plugins())
    size = int(checkpoint["image_size"])
    preprocessing = predict.checkpoint_preprocessing(checkpoint)
    images, errors = predict.load_images([i.path for i in inputs], size, preprocessing)
    readable = [i for i, e in enumerate(errors) if e is None]
    probs, indices = predict.classify(
        model, images[readable], size, args.top_k, device=resolve_device(args.device)
    )
    top: dict[int, list[tuple[str, float]]] = {
        i: [(classes[int(c)], float(p)) for p, c in zip(probs[j], indices[j], strict=True)]
        for j, i in enumerate(readable)
    }
    out = []
    for i, item in enumerate(inputs):
        out.append(
            {
                "image": item.path,
                "true": item.true_label,
                "error": errors[i],
                "top": [{"class": c, "probability": p} for c, p in top.get(i, [])],
            }
        )
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for entry in out:
            truth = f"  (true: {entry['true']})" if entry["true"] else ""
            console.print(f"[bold]{escape(entry['image'])}[/]{escape(truth)}", highlight=False)
            if entry["error"]:
                console.print(f"    [red]unreadable:[/] {escape(entry['error'])}", highlight=False)
            for t in entry["top"]:
                console.print(
                    f"    {100 * t['probability']:5.1f}%  {escape(t['class'])}", highlight=False
                )
    labelled = [e for e in out if e["true"] and e["top"]]
    if labelled and not args.json:
        right = sum(e["top"][0]["class"] == e["true"] for e in labelled)
        console.print(
            f"top-1 on the {len(labelled)} images with a known label: "
            f"{right}/{len(labelled)} ({100 * right / len(labelled):.1f}%)"
        )
    if args.grid:
        from tlbench.data import center_crop

        crops = (center_crop(images, size) * 255).round().to(images.dtype)
        preds = [top[i][0] if i in top else None for i in range(len(inputs))]
        path = predict.save_grid(args.grid, crops, inputs, preds)
        (Console(stderr=True) if args.json else console).print(f"grid: {escape(str(path))}")
    return 1 if any(errors) else 0


COMMANDS = {
    "run": cmd_run,
    "list": cmd_list,
    "show": cmd_show,
    "plugins": cmd_plugins,
    "report": cmd_report,
    "predict": cmd_predict,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    console = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    warnings.simplefilter("default")
    # Messages name tables like [strategy.finetune] and paths with brackets:
    # escaped, so rich prints them instead of reading them as markup.
    warnings.showwarning = lambda message, *a, **k: err.print(
        f"[yellow]warning:[/] {escape(str(message))}"
    )
    try:
        return COMMANDS[args.command](args, console)
    except TlbenchError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        return 2
    except KeyboardInterrupt as stop:
        err.print("interrupted")
        return _interrupted_code(stop)


def _interrupted_code(stop: KeyboardInterrupt) -> int:
    """The shell's convention, 128 + the signal: 143 for SIGTERM, 130 for Ctrl-C."""
    return 128 + (signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
