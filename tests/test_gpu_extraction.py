"""`linear` pays no one-off set-up that `finetune` does not (issue 22.5).

Feature extraction had no warm-up: cuDNN autotuning and first-call set-up of
its batch shapes landed in the compared cost of `linear` runs, while
`train_images` keeps them out of a fine-tune's. A model that pays one second
per new shape, on a clock only that cost moves, shows where they land.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import torch
from torch import nn

from tlbench import extraction
from tlbench.data import ImageTensors
from tlbench.engine import Execution, ImageClassifier, extract_features, warm_up_extraction
from tlbench.plugin_types import Preprocessing

CPU = torch.device("cpu")


class _FirstCallCost(nn.Module):
    def __init__(self, log: list) -> None:
        super().__init__()
        self.log, self.seen = log, set()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.log.append(x.shape[0])
        if x.shape[0] not in self.seen:  # autotuning of a new shape
            self.seen.add(x.shape[0])
            time.sleep(1.0)
        return self.conv(x).mean((2, 3))


def test_extraction_shapes_are_warmed_up_untimed(monkeypatch):
    now = [0.0]
    clock = SimpleNamespace(perf_counter=lambda: now[0])
    monkeypatch.setattr(extraction, "time", clock)
    monkeypatch.setattr(time, "sleep", lambda seconds: now.__setitem__(0, now[0] + seconds))
    log: list = []
    model = ImageClassifier(_FirstCallCost(log), nn.Identity(), Preprocessing(resize=8, crop=8))
    data = ImageTensors(torch.zeros(10, 3, 8, 8, dtype=torch.uint8), torch.zeros(10))
    ex = Execution(CPU)
    assert warm_up_extraction(model, data, 8, 4, ex) == 2.0  # batches of 4 and the last 2
    assert log == [4, 2]
    start = now[0]
    features = extract_features(model, data, 8, 4, ex)
    assert now[0] - start == 0.0  # the timed extraction pays no one-off cost
    assert features.shape == (10, 4) and log[2:] == [4, 4, 2]
    cold = ImageClassifier(_FirstCallCost([]), nn.Identity(), Preprocessing(resize=8, crop=8))
    start = now[0]
    extract_features(cold, data, 8, 4, ex)
    assert now[0] - start == 2.0  # without it, the compared cost holds both shapes' set-up
