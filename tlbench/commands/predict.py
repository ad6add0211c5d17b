"""`tlbench predict`: classify images with a checkpoint saved by `run --save-models`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.text import Text

from tlbench.config import device_arg
from tlbench.errors import TlbenchError

EPILOG_PREDICT = """examples:
  tlbench predict results/models/3f2a....safetensors photo.jpg
  tlbench predict model.json ~/data/flowers/test --top-k 3 --grid predictions.png
  tlbench predict old-model.pt photo.jpg         the older one-file format
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    pred = subparsers.add_parser(
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

    return pred


def main(args: argparse.Namespace, console: Console) -> int:
    """Top-k classes of each image from a saved checkpoint; optionally a labelled grid."""
    from tlbench import predict
    from tlbench.devices import resolve_device
    from tlbench.plugins import Plugins

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
