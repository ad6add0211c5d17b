"""The `tlbench` command: run a grid, list what plugins provide, report results."""

# PYTHON_ARGCOMPLETE_OK (tab completion: `eval "$(register-python-argcomplete tlbench)"`)

from __future__ import annotations

import argparse
import json
import os
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

EPILOG_SELECT = """examples:
  tlbench select --backbones efficientnet_lite0,efficientnet_lite1,efficientnet_lite2 \\
                 --datasets imagefolder:~/data/flowers --top-k 1
  tlbench select --backbones resnet18,resnet50,convnext_tiny --datasets cifar10 --rank-by logme \\
                 --finalist lp-ft --seeds 0,1,2
"""

EPILOG_REPORT = """examples:
  tlbench report results/runs.jsonl
  tlbench report a.jsonl b.jsonl --format markdown --sort time > comparison.md
  tlbench report results/runs.jsonl --group-by backbone --format csv -o runs.csv
  tlbench report results/runs.jsonl --plot tradeoff.png
"""

EPILOG_EXAMPLES = """examples:
  tlbench examples                               name and summary of each
  tlbench examples show flowers12_quick          print one
  tlbench examples copy hymenoptera_resnet18 .   copy one here, then edit it and
  tlbench run --config hymenoptera_resnet18.toml run it
"""

EPILOG_PREDICT = """examples:
  tlbench predict results/models/3f2a....safetensors photo.jpg
  tlbench predict model.json ~/data/flowers/test --top-k 3 --grid predictions.png
  tlbench predict old-model.pt photo.jpg         the older one-file format
"""


def _csv(kind: type = str):
    """A comma-separated list; `\\,` is a comma inside an item (`imagefolder:/data/a\\,b`)."""

    def parse(text: str) -> list:
        import re

        items = [t.replace("\\,", ",").strip() for t in re.split(r"(?<!\\),", text)]
        items = [t for t in items if t]
        for i, item in enumerate(items[:-1]):
            # `imagefolder:/data/a,b` where the folder `a,b` exists: say how to pass it.
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
        try:
            return [kind(t) for t in items]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {kind.__name__}s, got {text!r}"
            ) from None

    return parse


def _bool_flag(parser: argparse.ArgumentParser, name: str, help: str) -> None:
    parser.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None, help=help)


def _add_run_options(run: argparse.ArgumentParser) -> None:
    """The flags of a grid, shared by `run` and `select`."""
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
    train.add_argument(
        "--step-size", type=int, metavar="N", help="step schedule: decay every N epochs"
    )
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
        "--device",
        type=device_arg,
        metavar="DEVICE",
        help="auto, cpu, cuda, cuda:N or mps (default auto: CUDA when available)",
    )
    where.add_argument(
        "--precision",
        choices=["auto", "fp32", "tf32", "bf16", "fp16"],
        help="fp32 is true fp32 (TF32 off); tf32: TF32 tensor-core math (CUDA 8.0+); "
        "bf16/fp16: autocast (fp16 with a gradient scaler). auto: bf16 on CUDA 8.0+, "
        "fp16 on older GPUs, fp32 on CPU",
    )
    _bool_flag(
        where,
        "channels-last",
        "channels-last memory format (default: on; faster for convnets on CPU and CUDA)",
    )
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
        "--save-models",
        action="store_true",
        default=None,
        help="keep each run's best checkpoint (<key>.safetensors + <key>.json sidecar)",
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
    where.add_argument(
        "--log-to",
        type=_csv(),
        metavar="NAME,NAME",
        help="also record every run in these experiment trackers: mlflow, tensorboard, wandb "
        "(each an extra: pip install 'tlbench[mlflow]'); see docs/trackers.md",
    )
    grid.add_argument(
        "--shots",
        type=_csv(),
        metavar="K,K",
        help="data budgets: training images per class, e.g. 1,5,10,all; drawn stratified "
        "from each run's seed, nested across budgets (default: all)",
    )
    grid.add_argument(
        "--train-fraction",
        type=_csv(float),
        metavar="F,F",
        help="data budgets as fractions of each class, e.g. 0.1,0.5 (default: 1, all images)",
    )
    fleet = run.add_argument_group("where the runs execute")
    fleet.add_argument(
        "--executor",
        metavar="NAME",
        help="inline (default: one run after another in this process), process (each run in a "
        "fresh subprocess), devices (one worker per --devices entry), ray (Ray tasks), or a "
        "plugin's; see `tlbench list executors`",
    )
    fleet.add_argument(
        "--devices",
        type=_csv(),
        metavar="D,D",
        help="workers of --executor devices, e.g. cuda:0,cuda:1 or cpu,cpu "
        "(default: every visible GPU)",
    )
    fleet.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="--executor ray joins this cluster: auto, or HOST:PORT of `ray start --head` "
        "(default: start a local Ray instance)",
    )
    where.add_argument("--quiet", "-q", action="store_true", help="print only the final table")
    where.add_argument(
        "--plain",
        action="store_true",
        help="one line per epoch instead of live bars (automatic when output is not a terminal)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlbench",
        description="Benchmark transfer learning on images: every backbone x dataset x strategy, "
        "accuracy against training cost.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="train every combination and compare them",
        description="Train every backbone x dataset x strategy x seed, append one record per run "
        "to the results file, then print the comparison.",
        epilog=EPILOG_RUN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_options(run)

    select = sub.add_parser(
        "select",
        help="pick a backbone in two stages: probe every one, fine-tune the top k",
        description="Stage 1 probes every backbone (linear on cached features, plus LogME, "
        "k-NN and H-score); stage 2 fine-tunes the --top-k by --rank-by. Prints the pick with "
        "its interval, the compute spent and what the full grid would cost. Both stages append "
        "ordinary records to --out.",
        epilog=EPILOG_SELECT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_options(select)
    pick = select.add_argument_group("selection")
    pick.add_argument(
        "--top-k", type=int, default=1, metavar="K", help="backbones stage 2 trains (default: 1)"
    )
    pick.add_argument(
        "--rank-by",
        choices=["probe", "logme", "knn_accuracy", "h_score", "params"],
        default="probe",
        help="what stage 1 ranks by: the probe's top-1, a transferability score, or "
        "parameter count (default: probe)",
    )
    pick.add_argument(
        "--finalist",
        default="finetune",
        metavar="STRATEGY",
        help="the strategy of stage 2, e.g. finetune or lp-ft (default: finetune)",
    )

    lst = sub.add_parser(
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

    show = sub.add_parser(
        "show",
        help="details of one backbone, dataset, strategy or executor",
        description="Everything known about one name, without building or downloading anything.",
    )
    show.add_argument(
        "name",
        help="any name `tlbench list` prints: resnet18, timm:resnet18, partial:2, imagefolder:PATH",
    )
    show.add_argument("--json", action="store_true", help="machine-readable output (default: text)")

    plug = sub.add_parser("plugins", help="loaded plugins, versions, and what each provides")
    plug.add_argument(
        "--json", action="store_true", help="machine-readable output (default: a table)"
    )

    examples = sub.add_parser(
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
    ex_show.add_argument("name", help="an example's name, as `tlbench examples` lists it")
    ex_copy = actions.add_parser("copy", help="copy one example into a folder or to a file")
    ex_copy.add_argument("name", help="an example's name, as `tlbench examples` lists it")
    ex_copy.add_argument(
        "dest", nargs="?", default=".", help="folder or file to write (default: the current folder)"
    )
    ex_copy.add_argument(
        "--force", action="store_true", help="overwrite an existing file (default: refuse)"
    )

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
    rep.add_argument(
        "--html",
        metavar="FILE.html",
        help="also write one standalone page (no server, no network): the tables with "
        "intervals and marks, the --plot figure (when matplotlib is installed) and the "
        "environment of the runs",
    )

    pred = sub.add_parser(
        "predict",
        help="classify images with a checkpoint saved by `run --save-models`",
        description="Print the top-k classes of each image (files, or folders searched recursively; "
        "a folder named like a class gives the true label).",
        epilog=EPILOG_PREDICT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pred.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help="<key>.safetensors or its <key>.json sidecar (or an older <key>.pt)",
    )
    pred.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    pred.add_argument(
        "--top-k", "-k", type=int, default=5, metavar="K", help="classes per image (default 5)"
    )
    pred.add_argument(
        "--grid",
        metavar="FILE.png",
        help="save the images with predicted and true labels (needs matplotlib)",
    )
    pred.add_argument(
        "--device",
        type=device_arg,
        default="cpu",
        metavar="DEVICE",
        help="auto, cpu, cuda, cuda:N or mps (default: cpu)",
    )
    pred.add_argument("--json", action="store_true", help="machine-readable output (default: text)")

    # `tlbench cache`: its options live beside its logic, which imports no torch.
    from tlbench import cachecmd

    cachecmd.add_arguments(
        sub.add_parser(
            "cache",
            help="what the decoded-image and feature caches hold; prune or clear them",
            description="List, prune or clear the decoded-image and feature caches.",
        )
    )
    _document_defaults(parser)
    _add_completers(parser)
    return parser


def _version() -> str:
    from tlbench import __version__

    return __version__


#: a `--device` value: auto, cpu, cuda, cuda:N or mps (the device itself is checked when used).
DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?|mps"


def device_arg(text: str) -> str:
    """argparse type of `--device`: any of `DEVICE_PATTERN`, case as given."""
    import re

    if not re.fullmatch(DEVICE_PATTERN, text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a device: use auto, cpu, cuda, cuda:N (e.g. cuda:1) or mps"
        )
    return text


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """`parser` and every subcommand's parser below it, depth first."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += _subparsers(child)
    return found


def _document_defaults(parser: argparse.ArgumentParser) -> None:
    """Every option's help ends with its default, unless it already names it.

    The default shown is the option's own, or for options left unset so that
    something else decides (a strategy's hyperparameters) what the option's
    group title says: "training (default: each strategy's own, ...)".
    """
    import re

    for sub in _subparsers(parser):
        for group in sub._action_groups:
            said = re.search(r"\(default: ([^,)]+)", group.title or "")
            for action in group._group_actions:
                if (
                    not action.option_strings
                    or action.help == argparse.SUPPRESS
                    or isinstance(action, (argparse._HelpAction, argparse._VersionAction))
                    or "default" in (action.help or "")
                ):
                    continue
                if action.default not in (None, False, argparse.SUPPRESS):
                    default = str(action.default)
                elif said:
                    default = said.group(1)
                elif action.nargs == 0 or isinstance(action, argparse.BooleanOptionalAction):
                    default = "off"
                elif action.choices and "auto" in action.choices:
                    default = "auto"
                else:
                    default = "none"
                # `%` is argparse's format character in help strings.
                action.help = (
                    f"{action.help or ''} (default: {default.replace('%', '%%')})".lstrip()
                )


def _names(kind: str, prefix: str) -> list[str]:
    """Registered names of `kind` ("backbones") that complete `prefix` (tab completion)."""
    import warnings as _warnings

    from tlbench.plugins import Plugins

    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")  # a broken plugin must not spoil the shell's line
        plugins = Plugins()
        registries = _registries(plugins)
        kinds = [kind] if kind in registries else list(registries)
        names: list[str] = []
        for k in kinds:
            # With "family:" typed, every member the family knows; else what `list` shows.
            pattern = f"{prefix}*" if ":" in prefix else None
            names += [row["name"] for row in _list_rows(plugins, k, pattern)]
    return [n for n in names if n.startswith(prefix)]


def _completer(kind: str, *, comma_separated: bool = False) -> Any:
    """An argcomplete completer of registered names; for `--backbones a,b,` the last item."""

    def complete(prefix: str, **kwargs: Any) -> list[str]:
        head, _, last = prefix.rpartition(",") if comma_separated else ("", "", prefix)
        lead = f"{head}," if head else ""
        return [lead + name for name in _names(kind, last)]

    return complete


def _example_completer(prefix: str, **kwargs: Any) -> list[str]:
    return [n for n in _examples() if n.startswith(prefix)]


def _add_completers(parser: argparse.ArgumentParser) -> None:
    """Tab completion of registered names (argcomplete reads `action.completer`)."""
    completers = {
        ("show", "name"): _completer("all"),
        ("run", "backbones"): _completer("backbones", comma_separated=True),
        ("run", "datasets"): _completer("datasets", comma_separated=True),
        ("run", "strategies"): _completer("strategies", comma_separated=True),
        ("run", "executor"): _completer("executors"),
        ("copy", "name"): _example_completer,
        ("show:examples", "name"): _example_completer,
    }
    for sub in _subparsers(parser):
        command = sub.prog.split()[-1]
        if sub.prog.split()[-2:] == ["examples", "show"]:
            command = "show:examples"
        for action in sub._actions:
            completer = completers.get((command, action.dest))
            if completer is not None:
                action.completer = completer  # type: ignore[attr-defined]


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
            "executor",
            "devices",
            "ray_address",
            "log_to",
            "shots",
            "train_fraction",
        )
    }
    return make_config(args.config, **flags)


def _close(progress: Any) -> None:
    close = getattr(progress, "close", None)
    if close is not None:
        close()


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    raise Terminated


def _run_grid(args: argparse.Namespace, console: Console, config: Any, plugins: Any) -> Any:
    """Plan and run one grid with the console: `(runner, plans)`, or an interruption's exit code."""
    from tlbench.console import make_progress
    from tlbench.runner import Runner

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
        latest = results.answer_by_key(results.read(runner.out))
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
    if getattr(progress, "output_closed", False):
        Console(stderr=True).print(
            f"output closed while the grid ran; it finished, and its records are in "
            f"{escape(str(runner.out))} (tlbench report {escape(str(runner.out))})",
            soft_wrap=True,
            highlight=False,
        )
    return runner, plans


def _grid_records(runner: Any, plans: list[Any]) -> list[dict[str, Any]]:
    keys = {p.spec.key for p in plans}
    return [r for r in results.read(runner.out) if r["key"] in keys]


def _grid_plugins(config: Any, finalist: str | None = None) -> Any:
    """The plugins a grid runs with, its trackers registered; bad names fail before any training."""
    from tlbench.config import check_strategy_tables
    from tlbench.plugins import Plugins
    from tlbench.trackers import register_trackers

    plugins = Plugins()
    if finalist is not None:
        plugins.strategies.get(finalist)  # an unknown finalist fails before stage 1
    check_strategy_tables(config, plugins.strategies.names())
    register_trackers(plugins, config.log_to, config.out)  # unknown names fail here
    return plugins


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    config = _config_from_args(args)  # a bad config file fails here, before any loading
    plugins = _grid_plugins(config)
    ran = _run_grid(args, console, config, plugins)
    if isinstance(ran, int):
        return ran
    runner, plans = ran
    mine = _grid_records(runner, plans)
    print_comparison(console, mine)
    latest = results.answer_by_key(mine)
    failed = [r for r in latest.values() if r["status"] == "failed"]
    console.print(
        f"results: {escape(str(runner.out))}  "
        f"(tlbench report {escape(str(runner.out))} --plot tradeoff.png)",
        soft_wrap=True,
    )
    # Exit 1 only when nothing of this grid succeeded: some failures are a
    # finding (a backbone too big for the GPU), not a broken invocation.
    ok = [r for r in latest.values() if r["status"] == "ok"]
    return 1 if failed and not ok else 0


def cmd_select(args: argparse.Namespace, console: Console) -> int:
    """Two stages: probe every backbone, fine-tune the top k; say what it spent and saved."""
    import dataclasses

    from tlbench import select

    if args.strategies:
        raise TlbenchError(
            "select picks its own strategies (linear, then --finalist); drop --strategies"
        )
    if args.top_k < 1:
        raise TlbenchError(f"--top-k must be at least 1, not {args.top_k}")
    config = _config_from_args(args)
    plugins = _grid_plugins(config, args.finalist)
    stage1 = dataclasses.replace(config, strategies=["linear"])
    ran = _run_grid(args, console, stage1, plugins)
    if isinstance(ran, int):
        return ran
    probes = results.answer_by_key(_grid_records(*ran)).values()
    finalists: list[str] = []
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in probes:
        if r["status"] == "ok":
            groups.setdefault(select._group(r), []).append(r)
    for group in groups.values():
        for name, _ in select.rank(group, args.rank_by)[: args.top_k]:
            if name not in finalists:
                finalists.append(name)
    if not finalists:
        raise TlbenchError("no backbone finished stage 1 (the probes); see the table above")
    stage2 = dataclasses.replace(config, strategies=[args.finalist], backbones=finalists)
    ran = _run_grid(args, console, stage2, plugins)
    if isinstance(ran, int):
        return ran
    answers = list(results.answer_by_key(results.read(ran[0].out)).values())
    found = select.summarize(
        answers,
        backbones=list(dict.fromkeys(config.backbones)),
        finalist_strategy=args.finalist,
        rank_by=args.rank_by,
        top_k=args.top_k,
    )
    from tlbench.identity import short_names

    names = short_names(s.dataset for s in found)
    for selection in found:
        print_selection(console, selection, names[selection.dataset])
    print_ranking_checks(console, select.check(answers, args.finalist))
    console.print(f"results: {escape(str(ran[0].out))}", soft_wrap=True)
    return 0 if any(s.pick for s in found) else 1


def print_selection(console: Console, s: Any, dataset: str) -> None:
    """One dataset's selection (`dataset`: its short name): the ranking, the pick, the compute."""
    from tlbench.console import format_duration

    table = Table(title=Text(f"{dataset}: stage 1 ranked by {s.rank_by}"), title_justify="left")
    for column in ("backbone", s.rank_by, "stage 2", f"{(s.finalists and 'top-1') or ''}"):
        table.add_column(column)
    for name, value in s.ranking:
        shown = (
            f"{value:,.0f}"
            if s.rank_by == "params"
            else (
                f"{100 * value:.1f}%" if s.rank_by in ("probe", "knn_accuracy") else f"{value:.4g}"
            )
        )
        tuned = s.accuracy.get(name)
        table.add_row(
            escape(name),
            shown,
            "yes" if name in s.finalists else "",
            f"{100 * tuned:.1f}%" if tuned is not None else "",
        )
    _print_wide(console, table)
    if s.pick is None:
        console.print("no finalist finished stage 2", soft_wrap=True)
        return
    interval = s.interval
    shown = (
        f" (95% CI {100 * interval.lower:.1f} to {100 * interval.upper:.1f}, "
        f"{interval.method} over {interval.n} {'seeds' if interval.method == 't' else 'images'})"
        if interval
        else ""
    )
    console.print(
        f"[bold]pick: {escape(s.pick)}[/], top-1 {100 * s.accuracy[s.pick]:.1f}%{shown}",
        soft_wrap=True,
    )
    if s.full_grid_seconds:
        console.print(
            f"compute: {format_duration(s.spent_seconds)} of training for the two stages; the "
            f"full grid ({s.full_grid_basis}) {format_duration(s.full_grid_seconds)}: "
            f"{100 * s.spent_seconds / s.full_grid_seconds:.0f}% of it",
            soft_wrap=True,
        )
    else:
        console.print(
            f"compute: {format_duration(s.spent_seconds)} of training for the two stages",
            soft_wrap=True,
        )


def print_ranking_checks(console: Console, checks: list[Any]) -> None:
    """The ranking check as `tlbench report` and `tlbench select` print it (none: nothing)."""
    if checks:
        from tlbench.select import render_checks

        console.print(Text(render_checks(checks, "table").rstrip("\n")))


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
            "`tlbench report RESULTS.jsonl --format markdown` shows every column)",
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

#: what `tlbench list KIND` accepts: one per registry of `Plugins`.
LIST_KINDS = ("backbones", "datasets", "strategies", "executors")


def _registries(plugins: Any) -> dict[str, Any]:
    """Kind ("backbones") -> registry, for the kinds this tlbench's `Plugins` has."""
    return {k: getattr(plugins, k) for k in LIST_KINDS if hasattr(plugins, k)}


def _list_rows(plugins: Any, kind: str, pattern: str | None) -> list[dict[str, Any]]:
    """One dict per name `tlbench list` shows; `name` is exactly what `show` and `run` accept."""
    import fnmatch

    registry = _registries(plugins)[kind]
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


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    import fnmatch

    from tlbench.plugins import Plugins

    plugins = Plugins()
    registries = _registries(plugins)
    kinds = [args.kind] if args.kind else list(registries)
    if args.json:
        print(
            json.dumps(
                [row for k in kinds for row in _list_rows(plugins, k, args.pattern)], indent=2
            )
        )
        return 0
    for kind in kinds:
        registry = registries[kind]
        rows = _list_rows(plugins, kind, args.pattern)
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
        _print_wide(console, table)
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


def _describe(plugins: Any, name: str) -> dict[str, Any]:
    """Everything known about one name `tlbench list` prints, as plain data (`show --json`).

    Nothing is built and nothing is downloaded: a backbone's parameter count is
    the one its plugin declares. A family member (`timm:resnet18`, `partial:2`)
    is resolved by its plugin, which may import its own library to do so; the
    placeholder `list` prints (`timm:<model_name>[@random]`, `imagefolder:<path>`)
    describes the family or dataset itself; `imagefolder:PATH` lists the folder.
    """
    base, sep, argument = name.partition(":")
    for kind, registry in _registries(plugins).items():
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

    known = [row["name"] for k in _registries(plugins) for row in _list_rows(plugins, k, None)]
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
        )
    elif kind == "strategies":
        import dataclasses

        info.update(
            pretrained=item.pretrained,
            frozen_backbone=item.frozen_backbone,
            defaults=dataclasses.asdict(item.defaults),
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
        from tlbench.api import DatasetRequest
        from tlbench.cache import default_cache_dir

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


def cmd_show(args: argparse.Namespace, console: Console) -> int:
    """Everything known about one backbone, dataset, strategy or executor."""
    from tlbench.plugins import Plugins

    info = _describe(Plugins(), args.name)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    table = Table.grid(padding=(0, 2))
    table.add_column(justify="right", style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in _show_rows(info):
        table.add_row(key, Text(value))
    _print_wide(console, table)
    return 0


def cmd_plugins(args: argparse.Namespace, console: Console) -> int:
    from tlbench.plugins import Plugins

    plugins = Plugins()
    infos = list(plugins.info.values())
    conflicts: dict[str, list[str]] = {}
    for registry in _registries(plugins).values():
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
    _print_wide(console, table)
    for registry in _registries(plugins).values():
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


# --------------------------------------------------------------------------- examples


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


def cmd_examples(args: argparse.Namespace, console: Console) -> int:
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
        _print_wide(console, table)
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


# --------------------------------------------------------------------------- report


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    """Compare the runs of results files: a table, a text format, and optionally a plot."""
    missing = [p for p in args.results if not Path(p).expanduser().exists()]
    if missing:
        raise TlbenchError(f"results file not found: {', '.join(missing)}")
    inputs = [Path(p).expanduser() for p in args.results]
    # Every output location is checked before any work, and the paths printed are the files written.
    plot_path = None
    if args.plot:
        from tlbench.plot import _figure_class, check_image_path

        _figure_class()  # a missing matplotlib fails before any output is written
        plot_path = check_image_path(args.plot, "tradeoff.png", "--plot")
    output = results.check_report_output(args.output, inputs) if args.output else None
    if output is not None and plot_path is not None and output.absolute() == plot_path.absolute():
        raise TlbenchError(f"--output and --plot name the same file, {output}; choose two")
    page = None
    if args.html:
        from tlbench.htmlreport import check_html_output

        page = check_html_output(args.html, inputs)
        for flag, other in (("--output", output), ("--plot", plot_path)):
            if other is not None and other.absolute() == page.absolute():
                raise TlbenchError(f"--html and {flag} name the same file, {page}; choose two")
    records = results.read(inputs)
    if not records:
        raise TlbenchError(f"no records in {', '.join(args.results)}")
    rows = report.sort_rows(report.summarize(records), args.sort)
    if not rows:
        raise TlbenchError(
            f"none of the {len(records)} record(s) in {', '.join(args.results)} can be shown "
            "(the warnings above say what they lack)"
        )
    from tlbench.select import report_checks

    # Where the results hold a full grid: how well each score ranked the fine-tuned backbones.
    checks = report_checks(records)
    if plot_path is not None:
        from tlbench.plot import plot_comparison

        plot_path = plot_comparison(rows, records, plot_path)
    if output is not None:
        text = report.render(rows, args.format, args.group_by, checks)  # "table": plain, no colour
        try:
            results.write_text_atomic(output, text)
        except OSError as exc:
            raise TlbenchError(
                f"cannot write the report to {output}: {exc.strerror or exc}. Choose another --output."
            ) from None
        console.print(Text.assemble("report: ", str(output)), soft_wrap=True)
    elif args.format == "table":
        print_comparison(console, records, args.sort, args.group_by)
        print_ranking_checks(console, checks)
    else:
        sys.stdout.write(report.render(rows, args.format, args.group_by, checks))
    if page is not None:
        from tlbench.htmlreport import write_html_report

        write_html_report(
            page, rows, records, sources=args.results, group_by=args.group_by, checks=checks
        )
    where = console if output is not None or args.format == "table" else Console(stderr=True)
    if plot_path is not None:
        where.print(Text.assemble("plot: ", str(plot_path)), soft_wrap=True)
    if page is not None:
        where.print(Text.assemble("html: ", str(page)), soft_wrap=True)
    return 0


def cmd_predict(args: argparse.Namespace, console: Console) -> int:
    """Top-k classes of each image from a saved checkpoint; optionally a labelled grid."""
    from tlbench import predict
    from tlbench.plugins import Plugins
    from tlbench.timing import resolve_device

    if args.top_k < 1:
        raise TlbenchError("--top-k must be at least 1")
    if args.grid:
        from tlbench.plot import _figure_class, check_image_path

        # Before any work: matplotlib present, and the grid's place writable (a folder or a
        # name without a suffix resolves to the file really written, which is printed).
        _figure_class()
        args.grid = str(check_image_path(args.grid, "predictions.png", "--grid"))
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
            # Text, not markup: names and paths with [brackets] or a trailing \ print as they are.
            truth = f"  (true: {entry['true']})" if entry["true"] else ""
            console.print(Text.assemble((entry["image"], "bold"), truth), highlight=False)
            if entry["error"]:
                console.print(Text.assemble("    ", ("unreadable:", "red"), " ", entry["error"]))
            for t in entry["top"]:
                console.print(
                    Text(f"    {100 * t['probability']:5.1f}%  {t['class']}"), highlight=False
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
        (Console(stderr=True) if args.json else console).print(Text.assemble("grid: ", str(path)))
    return 1 if any(errors) else 0


COMMANDS = {
    "run": cmd_run,
    "select": cmd_select,
    "list": cmd_list,
    "show": cmd_show,
    "plugins": cmd_plugins,
    "report": cmd_report,
    "predict": cmd_predict,
    "examples": cmd_examples,
    "cache": lambda args, console: __import__("tlbench.cachecmd", fromlist=["main"]).main(
        args, console
    ),
}


def _autocomplete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell's tab completion (argcomplete, optional: `pip install 'tlbench[completion]'`)."""
    try:
        import argcomplete
    except ImportError:
        return
    argcomplete.autocomplete(parser)  # exits when it has answered


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # set only while the shell asks for completions
        _autocomplete(parser)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from tlbench.console import PipeSafeConsole

    console = PipeSafeConsole(highlight=False)
    # Messages are never hard-wrapped: a terminal wraps them itself, a log keeps one line each.
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    warnings.simplefilter("default")
    # Messages name tables like [strategy.finetune] and paths with brackets or a
    # trailing backslash: printed as plain text, never read as markup.
    warnings.showwarning = lambda message, *a, **k: err.print(
        Text.assemble(("warning:", "yellow"), " ", str(message))
    )
    try:
        return COMMANDS[args.command](args, console)
    except TlbenchError as exc:
        err.print(Text.assemble(("error:", "red"), " ", str(exc)))
        return 2
    except KeyboardInterrupt as stop:
        err.print("interrupted")
        return _interrupted_code(stop)
    except BrokenPipeError:
        # `tlbench list | head`: the reader has gone; say nothing more, exit as a shell would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _interrupted_code(stop: KeyboardInterrupt) -> int:
    """The shell's convention, 128 + the signal: 143 for SIGTERM, 130 for Ctrl-C."""
    return 128 + (signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
