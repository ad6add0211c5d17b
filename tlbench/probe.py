"""The probe papers train: multinomial logistic regression on frozen features, by L-BFGS.

Kornblith et al. (2019) and most transfer studies since fit the linear probe
as an L2-regularised multinomial logistic regression with full-batch L-BFGS,
and choose the regularisation on a validation split. On cached features
that costs well under a second, so a sweep of it (`tlbench run --tune`) is
nearly free. The `logreg` strategy trains its head this way: each "epoch" is
`ITERATIONS_PER_EPOCH` L-BFGS iterations over the whole training split,
followed by an evaluation, so the record's curve and timings read like any
other run's. `hp.weight_decay` is the L2 strength on the weights (not the
bias) added to the mean cross-entropy; `hp.lr` is L-BFGS's step (1 with the
strong-Wolfe line search).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn

from tlbench.classifier import FeatureHead
from tlbench.devices import synchronize
from tlbench.evaluation import evaluate_logits
from tlbench.execution import Execution
from tlbench.fitting import Diverged, EpochCallback, FitResult, PhaseCallback, record_epoch
from tlbench.head_fit import HEAD_EVAL_BATCH, one_cpu_thread
from tlbench.optim import LBFGS
from tlbench.plugin_types import Hyperparameters

#: L-BFGS iterations between two evaluations (scikit-learn's default is 100 in all).
ITERATIONS_PER_EPOCH = 25


def fit_logistic_probe(
    head: FeatureHead,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    eval_x: torch.Tensor,
    eval_y: torch.Tensor,
    *,
    num_classes: int,
    hp: Hyperparameters,
    ex: Execution,
    seed: int,
    on_epoch: EpochCallback | None = None,
    on_phase: PhaseCallback | None = None,
) -> FitResult:
    """Fit `head` by full-batch L-BFGS on standardised features (see the module docstring).

    On a CPU on one thread, as `train_head_on_features` does (its matrices are
    too small to gain from more, and a busy machine makes more much slower).
    """
    device = ex.device
    with one_cpu_thread(device):
        torch.manual_seed(seed)  # L-BFGS is deterministic; the seed keeps the contract
        synchronize(device)
        t0 = time.perf_counter()
        train_x, train_y = train_x.to(device).float(), train_y.to(device)
        eval_x, eval_y = eval_x.to(device).float(), eval_y.to(device)
        synchronize(device)
        result = FitResult(batch_size=len(train_x), upload_seconds=time.perf_counter() - t0)
        head.standardise_by(train_x)
        head.to(device)
        x = (train_x - head.mean) / head.std  # standardised once: the head's forward, unrolled
        step, loss = _lbfgs(head, x, train_y, hp)
        for epoch in range(1, hp.epochs + 1):
            if on_phase is not None:
                on_phase("train")
            head.train()
            synchronize(device)
            t0 = time.perf_counter()
            step()
            train_loss = loss()
            elapsed = time.perf_counter() - t0
            result.train_seconds += elapsed
            result.measured_seconds += elapsed
            result.measured_images += len(x)
            result.measured_steps += 1
            result.phase_seconds["compute"] = result.measured_seconds
            if not math.isfinite(train_loss):
                raise Diverged(epoch, train_loss)
            head.eval()
            if on_phase is not None:
                on_phase("eval")
            t0 = time.perf_counter()
            with torch.no_grad():
                evaluation = evaluate_logits(
                    lambda a, b: head(eval_x[a:b]),
                    eval_y,
                    num_classes,
                    HEAD_EVAL_BATCH,
                    device,
                    per_image=epoch == hp.epochs,
                )
            result.eval_seconds += time.perf_counter() - t0
            result.eval_images += len(eval_y)
            record_epoch(result, epoch, train_loss, evaluation, elapsed, len(x), on_epoch)
        return result


def _lbfgs(
    head: FeatureHead, x: torch.Tensor, y: torch.Tensor, hp: Hyperparameters
) -> tuple[Callable[[], None], Callable[[], float]]:
    """`step()`: `ITERATIONS_PER_EPOCH` L-BFGS iterations on the L2-regularised mean
    cross-entropy of `head`'s linear layer on standardised `x`; `loss()`: the
    cross-entropy after them (without the L2 term, as the other fits report it)."""
    optimizer = LBFGS(
        head.linear.parameters(),
        lr=hp.lr,
        max_iter=ITERATIONS_PER_EPOCH,
        history_size=10,
        line_search_fn="strong_wolfe",
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing)

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        loss = criterion(head.linear(x), y)
        loss = loss + 0.5 * hp.weight_decay * head.linear.weight.square().sum()
        loss.backward()
        return loss

    def loss() -> float:
        with torch.no_grad():
            return float(criterion(head.linear(x), y))

    return lambda: optimizer.step(objective), loss
