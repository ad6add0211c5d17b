"""`tlbench bench BACKBONE...`: what each backbone costs to run, without training it."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from tlbench.commands.output import print_wide
from tlbench.config import device_arg
from tlbench.errors import TlbenchError

EPILOG = """examples:
  tlbench bench efficientnet_lite0 efficientnet_lite1 resnet18
  tlbench bench timm:convnext_atto --image-size 224 --batch 32 --device cuda --precision bf16
  tlbench bench efficientnet_lite0 --format json > lite0-cpu.json
"""

#: the columns of the table: (heading, field, format).
COLUMNS = [
    ("backbone", "backbone", "{}"),
    ("px", "image_size", "{}"),
    ("params", "params", "{:,}"),
    ("GFLOPs", "flops_per_image", None),
    ("latency ms p50", "latency_ms_p50", "{:.2f}"),
    ("p90", "latency_ms_p90", "{:.2f}"),
    ("img/s", "throughput_images_per_s", "{:,.0f}"),
    ("batch", "throughput_batch", "{}"),
    ("peak MB", "peak_memory_bytes", None),
    ("J / 1k img", "energy_joules_per_1000", "{:.1f}"),
]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    bench = subparsers.add_parser(
        "bench",
        help="inference latency and throughput of backbones, without training",
        description="Latency at batch 1 (p50, p90), throughput at --batch, peak memory, "
        "parameters, FLOPs and (where the hardware tells it) energy of each backbone with a "
        "--num-classes head, timed as trained models are: warm-up untimed, the device "
        "synchronised, the median of repeated calls. Built without pretrained weights "
        "(they do not change the cost); random images.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument("backbones", nargs="+", metavar="BACKBONE", help="see `tlbench list`")
    bench.add_argument("--image-size", type=int, default=224, metavar="PX", help="default 224")
    bench.add_argument(
        "--batch", type=int, default=64, metavar="N", help="throughput batch (default 64)"
    )
    bench.add_argument(
        "--num-classes", type=int, default=1000, metavar="N", help="head outputs (default 1000)"
    )
    bench.add_argument(
        "--device", type=device_arg, default="auto", help="auto (default), cpu, cuda[:N], mps"
    )
    bench.add_argument(
        "--precision",
        default="auto",
        help="auto (default: bf16/fp16 autocast on CUDA, fp32 elsewhere), fp32, tf32, bf16, fp16",
    )
    bench.add_argument(
        "--repeats", type=int, default=30, metavar="N", help="timed calls at most (default 30)"
    )
    bench.add_argument(
        "--format", choices=("table", "markdown", "json"), default="table", help="default table"
    )
    return bench


def main(args: argparse.Namespace, console: Console) -> int:
    """Time each backbone's inference and print one row per backbone."""
    for flag in ("image_size", "batch", "num_classes", "repeats"):
        if getattr(args, flag) < 1:
            raise TlbenchError(f"--{flag.replace('_', '-')} must be at least 1")
    from tlbench.devices import resolve_device
    from tlbench.execution import Execution
    from tlbench.inference import InferenceSettings, bench_backbone
    from tlbench.plugins import Plugins

    plugins = Plugins()
    backbones = [plugins.backbones.get(name) for name in args.backbones]  # every name first
    try:
        ex = Execution.resolve(resolve_device(args.device), args.precision)
    except ValueError as exc:
        raise TlbenchError(str(exc)) from None
    settings = InferenceSettings(repeats=args.repeats, min_repeats=min(5, args.repeats))
    found = []
    for backbone in backbones:
        if args.format == "table":
            console.print(f"timing {backbone.name} ...", style="dim")
        found.append(
            bench_backbone(
                backbone,
                image_size=args.image_size,
                batch=args.batch,
                ex=ex,
                num_classes=args.num_classes,
                settings=settings,
            )
        )
    if args.format == "json":
        sys.stdout.write(json.dumps(found, indent=2) + "\n")
    elif args.format == "markdown":
        sys.stdout.write(markdown(found))
    else:
        table = Table(title=_title(found), title_justify="left")
        for heading, *_ in COLUMNS:
            table.add_column(heading, justify="left" if heading == "backbone" else "right")
        for row in found:
            table.add_row(*(Text(c) for c in cells(row)))
        print_wide(console, table)
    return 0


def _title(found: list[dict[str, Any]]) -> str:
    first = found[0]
    return f"inference on {first['device']}, {first['precision']}"


def cells(row: dict[str, Any]) -> list[str]:
    """One row of the table as text ("" where a figure is missing)."""
    out = []
    for _, field, fmt in COLUMNS:
        value = row.get(field)
        if value is None:
            out.append("")
        elif field == "flops_per_image":
            out.append(f"{value / 1e9:.2f}")
        elif field == "peak_memory_bytes":
            out.append(f"{value / 1e6:,.0f}")
        else:
            out.append(fmt.format(value))
    return out


def markdown(found: list[dict[str, Any]]) -> str:
    head = [h for h, *_ in COLUMNS]
    lines = [
        f"{_title(found)}\n",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(":---" if h == "backbone" else "---:" for h in head) + "|",
    ]
    lines += ["| " + " | ".join(cells(row)) + " |" for row in found]
    return "\n".join(lines) + "\n"
