"""Channels-last against contiguous memory format on this machine: the measurement
behind `Execution.resolve` turning channels-last on by default (CPU included).

For each backbone and image size: random-init weights, a new 10-class head,
batch 32, AdamW; a training step (forward, loss, backward, step) or an inference
forward. Two untimed steps, then the best of `steps` timed ones (the work is
fixed, so noise only adds time). Run on a quiet machine:

    python benchmarks/measure_memory_format.py
"""

from __future__ import annotations

import time

import torch
from torch import nn

import tlbench

CASES = [
    # (backbone, image size, training?, timed steps)
    ("small_cnn", 32, True, 20),
    ("efficientnet_lite0", 96, True, 4),
    ("efficientnet_lite0", 160, True, 4),
    ("efficientnet_lite0", 160, False, 4),
    ("resnet18", 128, True, 4),
    ("mobilenet_v3_small", 128, True, 4),
    ("resnet50", 128, True, 2),
]


def images_per_second(
    plugins: tlbench.Plugins, name: str, size: int, train: bool, steps: int, channels_last: bool
) -> float:
    torch.manual_seed(0)
    backbone = plugins.backbones.get(name)
    model = nn.Sequential(backbone.build(False), nn.Linear(backbone.feature_dim, 10))
    x, y = torch.rand(32, 3, size, size), torch.randint(0, 10, (32,))
    if channels_last:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters())
    model.train(train)

    def step() -> None:
        if train:
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        else:
            with torch.inference_mode():
                model(x)

    step()
    step()
    best = float("inf")
    for _ in range(steps):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return len(x) / best


def main() -> None:
    plugins = tlbench.Plugins()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| backbone | px | pass | contiguous img/s | channels-last img/s | ratio |")
    print("|---|---|---|---|---|---|")
    for name, size, train, steps in CASES:
        contiguous, last = (
            images_per_second(plugins, name, size, train, steps, channels_last)
            for channels_last in (False, True)
        )
        kind = "train" if train else "inference"
        print(
            f"| {name} | {size} | {kind} | {contiguous:.1f} | {last:.1f} | {last / contiguous:.2f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
