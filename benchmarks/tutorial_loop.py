"""The baseline `linear` is measured against: a tutorial's fixed-feature-extractor loop.

This is the loop of the PyTorch "Transfer learning for computer vision"
tutorial (ConvNet as fixed feature extractor) and of most blog posts that copy
it: torchvision `ImageFolder` + `transforms` + `DataLoader`, so every JPEG is
decoded, resized and normalised again every epoch, and the frozen backbone
runs forward on every batch of every epoch, for training and for the
evaluation that follows each epoch.

Kept identical to tlbench's `linear` wherever the two need not differ, so the
comparison isolates "features once" from "features every epoch":

- the same backbone and weights, input normalisation, resize (shorter side to
  `preprocessing.resize_for(size)`, bilinear) and centre crop; the training
  split also gets the centre crop, as the harness computes its features from it
  (with random crops a tutorial could not cache features at all);
- the backbone in eval mode (the tutorial's `model.train()` would put its
  BatchNorm layers in training mode and change the frozen features each batch);
- the head trains like the harness's: a linear layer, AdamW at the strategy's
  learning rate and weight decay, batch size, per-step cosine schedule, epochs;
  it is a plain `nn.Linear` on raw features, as a tutorial writes it, where the
  harness standardises the features first;
- the same seed for the head's initialisation and the shuffling;
- with `execution`, the same precision and memory format as the harness (the
  frozen backbone's forward under its autocast, model and batches in its memory
  format; the head in fp32, as the harness trains it), so a comparison on a GPU
  (bf16, channels-last) is like with like. Without it: fp32, contiguous, as a
  tutorial runs; `benchmarks/test_speed.py` reports that one beside it.

Run it alone: `python benchmarks/tutorial_loop.py ../shared/data/flowers12 --image-size 128`
(`--device cuda --precision bf16 --channels-last` for the harness's CUDA settings).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from tlbench.engine import Execution
from tlbench.plugin_types import Backbone, Hyperparameters


@dataclass
class TutorialResult:
    seconds: float
    final_accuracy: float
    best_accuracy: float
    curve: list[float]
    train_images: int
    eval_images: int


def tutorial_linear_probe(
    root: Path,
    backbone: Backbone,
    *,
    image_size: int,
    hp: Hyperparameters,
    seed: int = 0,
    num_workers: int = 2,
    device: torch.device | None = None,
    execution: Execution | None = None,
) -> TutorialResult:
    """Train a linear head on a frozen `backbone` the tutorial way; wall time from the first line.

    `root` is an ImageFolder tree with `train/` and `test/`. `num_workers`
    decoding processes (the tutorial uses 4; 2 on a 2-core machine) overlap
    JPEG decoding with the forward pass. `execution` (its device wins over
    `device`): the backbone's forward in its precision and memory format.
    """
    ex = execution or Execution(device or torch.device("cpu"))
    device = ex.device
    ex.apply_backends()
    t0 = time.perf_counter()
    pre = backbone.preprocessing
    transform = transforms.Compose(
        [
            transforms.Resize(pre.resize_for(image_size)),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(pre.mean, pre.std),
        ]
    )
    train_set = datasets.ImageFolder(str(root / "train"), transform)
    test_set = datasets.ImageFolder(str(root / "test"), transform)
    pin = device.type == "cuda"
    train_loader = DataLoader(
        train_set,
        batch_size=hp.batch_size,
        shuffle=True,
        num_workers=num_workers,
        pin_memory=pin,
        generator=torch.Generator().manual_seed(seed),
    )
    test_loader = DataLoader(
        test_set, batch_size=2 * hp.batch_size, num_workers=num_workers, pin_memory=pin
    )

    model = ex.place(backbone.build(True)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    torch.manual_seed(seed)
    head = nn.Linear(backbone.feature_dim, len(train_set.classes)).to(device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=hp.epochs * len(train_loader)
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing)

    curve: list[float] = []
    for _epoch in range(hp.epochs):
        head.train()
        for x, y in train_loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.no_grad(), ex.autocast:
                features = model(ex.to_input(x))  # the frozen backbone, again, every epoch
            loss = criterion(head(features.float()), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        head.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test_loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with ex.autocast:
                    features = model(ex.to_input(x))
                correct += int((head(features.float()).argmax(1) == y).sum())
        curve.append(correct / len(test_set))
    seconds = time.perf_counter() - t0
    return TutorialResult(seconds, curve[-1], max(curve), curve, len(train_set), len(test_set))


def main() -> None:
    from tlbench.plugins import Plugins

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", help="fp32, tf32, bf16 or fp16")
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    plugins = Plugins()
    backbone = plugins.backbones.get(args.backbone)
    hp = plugins.strategies.get("linear").defaults.replace(epochs=args.epochs)
    from tlbench.timing import resolve_device

    ex = Execution.resolve(resolve_device(args.device), args.precision, args.channels_last)
    out = tutorial_linear_probe(
        args.root, backbone, image_size=args.image_size, hp=hp, num_workers=args.workers,
        execution=ex,
    )  # fmt: skip
    print(
        f"{out.seconds:.1f} s, final top-1 {out.final_accuracy:.4f}, best {out.best_accuracy:.4f}"
    )


if __name__ == "__main__":
    main()
