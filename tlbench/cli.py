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
from rich.table import Table

from tlbench import report, results
from tlbench.errors import TlbenchError

EPILOG_RUN = """examples:
  tlbench run                                   the embedded default: offline, a few minutes on a CPU
  tlbench run --datasets imagefolder:~/data/hymenoptera_data --backbones resnet18 \\
              --strategies scratch,linear,finetune --image-size 224
  tlbench run --datasets cifar10 --backbones efficientnet_lite0 --strategies linear --seeds 0,1,2

Rerunning the same command skips the runs already in the results file (--force redoes them).
"""


def _csv(kind: type = str):
    def parse(text: str) -> list:
        items = [t.strip() for t in text.split(",") if t.strip()]
        try:
            return [kind(t) for t in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None

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
        "run", help="train every combination and compare them",
        description="Train every backbone x dataset x strategy x seed, append one record per run "
        "to the results file, then print the comparison.",
        epilog=EPILOG_RUN, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    grid = run.add_argument_group("what to run")
    grid.add_argument("--config", metavar="FILE.toml", help="read settings from a TOML file; flags override it")
    grid.add_argument("--backbones", type=_csv(), metavar="A,B", help="backbones to compare (default: efficientnet_lite0,small_cnn); see `tlbench list backbones`")
    grid.add_argument("--datasets", type=_csv(), metavar="A,B", help="datasets, e.g. imagefolder:PATH or cifar10 (default: synthetic)")
    grid.add_argument("--strategies", type=_csv(), metavar="A,B", help="how to adapt each backbone (default: scratch,linear,finetune)")
    grid.add_argument("--seeds", type=_csv(int), metavar="0,1,2", help="one run per seed; mean ± std over them (default: 0)")

    train = run.add_argument_group("training (default: each strategy's own, see README)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--image-size", type=int, metavar="PX", help="input side in pixels (default: the dataset's native size, else 128)")
    train.add_argument("--lr", type=float, help="learning rate of the new head (all weights for scratch)")
    train.add_argument("--backbone-lr-mult", type=float, metavar="X", help="backbone LR = lr * X (finetune default 0.1)")
    train.add_argument("--weight-decay", type=float)
    train.add_argument("--optimizer", choices=["adamw", "sgd"])
    train.add_argument("--momentum", type=float, help="SGD momentum")
    train.add_argument("--schedule", choices=["cosine", "step", "constant"])
    train.add_argument("--warmup-epochs", type=int)
    train.add_argument("--label-smoothing", type=float)
    _bool_flag(train, "augment", "random resized crop + flip while training")

    where = run.add_argument_group("where and how")
    where.add_argument("--out", metavar="FILE.jsonl", help="results file to append to (default: results/runs.jsonl)")
    where.add_argument("--data-dir", metavar="DIR", help="where downloadable datasets live (default: ~/.cache/tlbench/data)")
    where.add_argument("--cache-dir", metavar="DIR", help="decoded-image and feature caches (default: ~/.cache/tlbench, or $TLBENCH_CACHE_DIR)")
    where.add_argument("--no-cache", action="store_true", default=None, help="keep no cache on disk")
    where.add_argument("--val-fraction", type=float, metavar="F", help="held-out fraction for a single-folder imagefolder (default 0.1)")
    where.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto: CUDA when available")
    where.add_argument("--precision", choices=["auto", "fp32", "bf16"], help="auto: bf16 autocast on CUDA, fp32 on CPU")
    _bool_flag(where, "channels-last", "channels-last memory format (default: on for CUDA)")
    where.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    where.add_argument("--workers", type=int, help="threads decoding images (default: up to 8)")
    where.add_argument("--strict", action="store_true", default=None, help="fail on unreadable images instead of skipping them")
    where.add_argument("--force", action="store_true", default=None, help="redo runs already in the results file")
    where.add_argument("--save-models", action="store_true", default=None, help="keep each run's best checkpoint")
    where.add_argument("--models-dir", metavar="DIR", help="where --save-models writes (default: beside --out, models/)")
    where.add_argument("--no-retry", dest="retry_oom", action="store_false", default=None, help="on GPU out-of-memory fail instead of retrying at half the batch")
    where.add_argument("--quiet", "-q", action="store_true", help="print only the final table")

    lst = sub.add_parser("list", help="list backbones, datasets and strategies",
                         description="List what the loaded plugins provide, with wildcards: tlbench list backbones 'resnet*'")
    lst.add_argument("kind", nargs="?", choices=["backbones", "datasets", "strategies"])
    lst.add_argument("pattern", nargs="?", help="shell-style wildcard, e.g. 'resnet*'")

    show = sub.add_parser("show", help="details of one backbone, dataset or strategy")
    show.add_argument("name")

    plug = sub.add_parser("plugins", help="loaded plugins, versions, and what each provides")
    plug.add_argument("--json", action="store_true", help="machine-readable output")

    rep = sub.add_parser("report", help="compare the runs of one or more results files")
    rep.add_argument("results", nargs="+", metavar="RESULTS.jsonl")
    rep.add_argument("--format", choices=report.FORMATS, default="table")
    rep.add_argument("--sort", choices=report.SORT_KEYS, default="accuracy")
    return parser


# --------------------------------------------------------------------------- run


def _config_from_args(args: argparse.Namespace):
    from tlbench.config import make_config

    flags = {
        k: getattr(args, k)
        for k in (
            "backbones", "datasets", "strategies", "seeds", "epochs", "batch_size", "image_size", "lr",
            "backbone_lr_mult", "weight_decay", "optimizer", "momentum", "schedule", "warmup_epochs",
            "label_smoothing", "augment", "out", "data_dir", "cache_dir", "no_cache", "val_fraction",
            "device", "precision", "channels_last", "compile", "workers", "strict", "force",
            "save_models", "models_dir", "retry_oom",
        )
    }
    return make_config(args.config, **flags)


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from tlbench.plugins import Plugins
    from tlbench.progress import make_progress
    from tlbench.runner import Runner

    config = _config_from_args(args)
    plugins = Plugins()
    progress = make_progress(console, quiet=args.quiet)
    runner = Runner(config, plugins, progress)
    plans = runner.plan()
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        runner.run(plans)
    except KeyboardInterrupt:
        console.print(
            f"[yellow]interrupted[/]: finished runs are kept in {runner.out}; "
            "run the same command again to resume."
        )
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    records = results.read(runner.out)
    keys = {p.spec.key for p in plans}
    print_comparison(console, [r for r in records if r["key"] in keys])
    failed = [r for r in records if r["key"] in keys and r["status"] == "failed"]
    for r in failed:
        console.print(f"[red]failed[/] {r['config']['backbone']} / {r['config']['strategy']}: {r['reason']}")
    console.print(f"results: {runner.out}")
    return 1 if failed and len(failed) == sum(p.status == "pending" for p in plans) else 0


def print_comparison(console: Console, records: list[dict[str, Any]], sort: str = "accuracy") -> None:
    rows = report.sort_rows(report.summarize(records), sort)
    for dataset, group in report.by_dataset(rows).items():
        table = Table(title=f"{dataset}: top-1 on the held-out split against training cost",
                      title_justify="left", show_lines=False)
        for column in report.COLUMNS:
            table.add_column(column, justify="right" if column not in ("backbone", "strategy", "note") else "left",
                             overflow="fold")
        for row in group:
            cells = report.row_cells(row)
            style = None if row.accuracy is not None else "dim"
            table.add_row(*cells, style=style)
        console.print(table)
    if rows:
        console.print("top-1: final epoch, mean ± std over seeds. train s: feature extraction + training "
                      "(no eval). pareto *: no other row is both more accurate and cheaper.", style="dim")


# --------------------------------------------------------------------------- list / show / plugins


def cmd_list(args: argparse.Namespace, console: Console) -> int:
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
        names = registry.names(args.pattern)
        for name in names:
            item = registry.get(name)
            extra = ""
            if kind == "backbones":
                extra = "yes" if item.has_pretrained else "no"
            elif kind == "datasets" and item.takes_argument:
                name = f"{name}:{item.argument_help or '<arg>'}"
            elif kind == "strategies":
                extra = "frozen" if item.frozen_backbone else ""
            table.add_row(name, extra, item.description, registry.provider(item.name))
        if not names and args.pattern:
            console.print(f"no {kind} match {args.pattern!r}")
            continue
        console.print(table)
    for info in plugins.failures:
        if info.error and not info.error.startswith("blocked"):
            console.print(f"[yellow]plugin {info.name!r} failed to load:[/] {info.error}")
    return 0


def cmd_show(args: argparse.Namespace, console: Console) -> int:
    from tlbench.plugins import Plugins

    plugins = Plugins()
    name = args.name
    base = name.partition(":")[0]
    if base in plugins.backbones:
        b = plugins.backbones.get(base)
        info = {
            "backbone": b.name, "description": b.description, "plugin": plugins.provider("backbone", b.name),
            "feature width": b.feature_dim, "pretrained weights": b.weights or "none (random init only)",
            "weights source": b.weights_source or "-", "preprocessing": b.preprocessing.to_dict(),
            "min image size": b.min_image_size, "fixed image size": b.fixed_image_size,
        }
        try:
            _, total = _count(b.build(False))
            info["parameters"] = f"{total:,}"
        except Exception as exc:  # building is best effort for `show`
            info["parameters"] = f"? ({exc})"
    elif base in plugins.datasets:
        d = plugins.datasets.get(base)
        info = {"dataset": d.name, "description": d.description, "plugin": plugins.provider("dataset", d.name),
                "argument": d.argument_help if d.takes_argument else None, "native size": d.native_size}
    elif base in plugins.strategies:
        s = plugins.strategies.get(base)
        info = {"strategy": s.name, "description": s.description, "plugin": plugins.provider("strategy", s.name),
                "needs pretrained weights": s.pretrained, "frozen backbone (cached features)": s.frozen_backbone,
                "defaults": s.defaults.__dict__}
    else:
        from tlbench.errors import UnknownNameError

        known = plugins.backbones.names() + plugins.datasets.names() + plugins.strategies.names()
        raise UnknownNameError("name", name, known)
    for key, value in info.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        console.print(f"[bold]{key:>34}[/]  {value}")
    return 0


def _count(module) -> tuple[int, int]:
    from tlbench.engine import count_parameters

    return count_parameters(module)


def cmd_plugins(args: argparse.Namespace, console: Console) -> int:
    from tlbench.plugins import Plugins

    plugins = Plugins()
    infos = list(plugins.info.values())
    if args.json:
        print(json.dumps([i.to_dict() for i in infos], indent=2))
        return 0
    table = Table(title="plugins", title_justify="left")
    for column in ("name", "version", "kind", "provides", "status"):
        table.add_column(column)
    for i in infos:
        provides = "; ".join(f"{k}: {', '.join(v)}" for k, v in i.provides.items())
        status = "[green]loaded[/]" if not i.error else f"[red]{i.error}[/]"
        table.add_row(i.name, i.version, "builtin" if i.builtin else "entry point", provides, status)
    console.print(table)
    for registry in (plugins.backbones, plugins.datasets, plugins.strategies):
        for name, owners in registry.conflicts.items():
            console.print(f"[red]conflict[/]: {registry.kind} {name!r} registered by {' and '.join(owners)}")
    return 0


# --------------------------------------------------------------------------- report


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    missing = [p for p in args.results if not Path(p).exists()]
    if missing:
        raise TlbenchError(f"results file not found: {', '.join(missing)}")
    records = results.read(args.results)
    if not records:
        raise TlbenchError(f"no records in {', '.join(args.results)}")
    if args.format == "table":
        print_comparison(console, records, args.sort)
    else:
        sys.stdout.write(report.render(report.sort_rows(report.summarize(records), args.sort), args.format))
    return 0


COMMANDS = {"run": cmd_run, "list": cmd_list, "show": cmd_show, "plugins": cmd_plugins, "report": cmd_report}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    console = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    warnings.simplefilter("default")
    warnings.showwarning = lambda message, *a, **k: err.print(f"[yellow]warning:[/] {message}")
    try:
        return COMMANDS[args.command](args, console)
    except TlbenchError as exc:
        err.print(f"[red]error:[/] {exc}")
        return 2
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
