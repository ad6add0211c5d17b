"""`tlbench select`: pick a backbone in two stages, probing every one and training the top k.

The algorithm is `tlbench.select` (also `tlbench.select()` from Python); this
module declares the command's flags and prints what it found.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.markup import escape

from tlbench.commands.run import (
    add_grid_options,
    config_from_args,
    interrupted,
    progress_factory,
    say_if_output_closed,
)
from tlbench.errors import TlbenchError
from tlbench.select import RANK_BY

EPILOG_SELECT = """examples:
  tlbench select --backbones efficientnet_lite0,efficientnet_lite1,efficientnet_lite2 \\
                 --datasets imagefolder:~/data/flowers --top-k 1
  tlbench select --backbones resnet18,resnet50,convnext_tiny --datasets cifar10 --rank-by logme \\
                 --finalist lp-ft --seeds 0,1,2
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    select = subparsers.add_parser(
        "select",
        help="pick a backbone in two stages: probe every one, fine-tune the top k",
        description="Stage 1 probes every backbone (linear on cached features, plus LogME, "
        "k-NN and H-score); stage 2 fine-tunes the --top-k by --rank-by. Prints the pick with "
        "its interval, the compute spent and what the full grid would cost. Both stages append "
        "ordinary records to --out.",
        epilog=EPILOG_SELECT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_grid_options(select)
    pick = select.add_argument_group("selection")
    pick.add_argument(
        "--top-k", type=int, default=1, metavar="K", help="backbones stage 2 trains (default: 1)"
    )
    pick.add_argument(
        "--rank-by",
        choices=RANK_BY,
        default="probe",
        help="what stage 1 ranks by: the probe's top-1, a transferability score, or "
        "parameter count (default: probe)",
    )
    pick.add_argument(
        "--max-latency-ms",
        type=float,
        metavar="MS",
        help="only backbones whose batch-1 inference latency (measured with the probe, on the "
        "run's device) is at most MS milliseconds are ranked and trained (default: no budget)",
    )
    pick.add_argument(
        "--finalist",
        default="finetune",
        metavar="STRATEGY",
        help="the strategy of stage 2, e.g. finetune or lp-ft (default: finetune)",
    )
    return select


def main(args: argparse.Namespace, console: Console) -> int:
    """Two stages: probe every backbone, fine-tune the top k; say what it spent and saved."""
    from tlbench.commands.output import print_ranking_checks, print_selection
    from tlbench.grid import Grid, signals_as_interrupt
    from tlbench.identity import short_names
    from tlbench.select import two_stages

    if args.strategies:
        raise TlbenchError(
            "select picks its own strategies (linear, then --finalist); drop --strategies"
        )
    if args.top_k < 1:
        raise TlbenchError(f"--top-k must be at least 1, not {args.top_k}")
    if args.max_latency_ms is not None and not args.max_latency_ms > 0:
        raise TlbenchError(f"--max-latency-ms must be above 0, not {args.max_latency_ms:g}")
    config = config_from_args(args)
    if args.max_latency_ms is not None and not config.inference:
        raise TlbenchError("--max-latency-ms needs the latency measured: drop --no-inference")
    progress = progress_factory(args, console)
    with Grid(config, progress=progress, finalists=[args.finalist]) as grid:
        try:
            stages = two_stages(
                grid,
                rank_by=args.rank_by,
                top_k=args.top_k,
                finalist=args.finalist,
                during=signals_as_interrupt,
                max_latency_ms=args.max_latency_ms,
            )
        except KeyboardInterrupt as stop:
            if grid.current is None:
                raise
            return interrupted(console, grid, stop)
    for outcome in (stages.probes, stages.finals):
        say_if_output_closed(outcome)
    names = short_names(s.dataset for s in stages.selections)
    for selection in stages.selections:
        print_selection(console, selection, names[selection.dataset])
    print_ranking_checks(console, stages.checks)
    console.print(f"results: {escape(str(stages.finals.out))}", soft_wrap=True)
    return 0 if any(s.pick for s in stages.selections) else 1
