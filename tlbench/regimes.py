"""How a run trains, one function per regime, on a `TrialContext`.

A strategy picks one of three regimes (`regime_for`):

- `frozen_head`: the backbone never changes, so its features are computed
  once (or read from the feature store) and only a linear head trains on them;
- `probe_then_all` (LP-FT): a linear probe on those features first, then
  everything fine-tunes starting from the probe's head;
- `end_to_end`: the backbone and a new head train together on the images.

A regime reads everything it needs from the context and returns an
`Outcome`; it writes no record. `with_oom_retry` runs a regime again at half
the batch when the device runs out of memory.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from tlbench.classifier import FeatureHead, ImageClassifier, count_parameters
from tlbench.clocks import Stopwatch
from tlbench.data import ImageTensors, mapped_tensor
from tlbench.errors import TlbenchError
from tlbench.events import EpochEnded, Notify, RunPhase
from tlbench.execution import Execution
from tlbench.extraction import extract_features, warm_up_extraction
from tlbench.features import FeatureStore, feature_key
from tlbench.fitting import FitResult
from tlbench.head_fit import train_head_on_features
from tlbench.image_fit import train_images
from tlbench.memory import Attempt, PeakMemory, is_out_of_memory, next_attempt_after_oom
from tlbench.plugin_types import (
    Backbone,
    DatasetSplits,
    Hyperparameters,
    RunSpec,
    Strategy,
    call_param_groups,
    stage_parameters,
)
from tlbench.rungs import Rung


@dataclass
class TrialContext:
    """What one run's regime needs: the spec, its data, its parts and where to report.

    `hp` is the current attempt's hyperparameters (an out-of-memory retry
    halves its batch); `finished` holds the epochs of the current attempt.
    """

    spec: RunSpec
    ex: Execution
    backbone: Backbone
    strategy: Strategy
    splits: DatasetSplits
    #: the whole training split, the images this run trains on (a budget's subset) and
    #: the evaluation split, decoded at `store_size` px.
    full_train: ImageTensors
    train: ImageTensors
    evalset: ImageTensors
    #: the side, in px, the images are decoded and kept at (`Preprocessing.resize_for`).
    store_size: int
    #: the budget's indices into `full_train`, or None when the run trains on all of it.
    subset: np.ndarray | None
    #: a tuning trial's validation images (indices into `full_train`, which `evalset`
    #: holds); None when the run evaluates on the evaluation split.
    eval_subset: np.ndarray | None
    #: what the budget drew (shots or fraction, images per class), for the record.
    budget_facts: dict[str, Any]
    watch: Stopwatch
    memory: PeakMemory
    feature_store: FeatureStore
    #: the transferability scores of a run's training features (kept per process).
    score: Callable[[RunSpec, torch.Tensor, torch.Tensor], dict[str, Any]]
    #: forward FLOPs per image of a model placed on the run's device (kept per process).
    count_flops: Callable[[nn.Module], int | None]
    #: where the run's progress events go (`tlbench.events`).
    notify: Notify
    hp: Hyperparameters
    finished: list[dict[str, Any]] = field(default_factory=list)
    batch_history: list[int] = field(default_factory=list)
    #: whether a fit may keep its data on the device (an out-of-memory retry first moves
    #: it to the host, at the same batch, before it halves the batch).
    data_on_device: bool = True
    #: untimed warm-up of the feature extraction's batch shapes, seconds (recorded apart).
    extraction_warmup_seconds: float = 0.0
    #: the epochs of its schedule the run trains (a tuning rung: some of them, `tlbench.rungs`).
    rung: Rung | None = None
    _module: nn.Module | None = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.splits.classes)

    def phase(self, name: str) -> None:
        self.notify(RunPhase(self.spec, name))

    def on_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        self.finished.append(metrics)
        self.notify(EpochEnded(self.spec, epoch, {**metrics, "epochs": self.hp.epochs}))

    def build(self) -> nn.Module:
        """The backbone, built once per attempt (seeded first, so every attempt draws alike)."""
        if self._module is None:
            torch.manual_seed(self.spec.seed)
            self.phase("build")
            self._module = self.backbone.build(self.strategy.pretrained)
        return self._module

    def frozen_model(self) -> ImageClassifier:
        """The backbone frozen, with a new linear head: what makes and serves features."""
        frozen = self.build().requires_grad_(False)
        return ImageClassifier(
            frozen,
            FeatureHead(self.backbone.feature_dim, self.num_classes),
            self.backbone.preprocessing,
        )

    def forget_model(self) -> None:
        """Drop a failed attempt's model and what it held on the device."""
        self._module = None
        gc.collect()
        if self.ex.device.type == "cuda":
            torch.cuda.empty_cache()
        self.memory.reset()


@dataclass
class Features:
    """The frozen backbone's features of the training subset and the evaluation split."""

    train: torch.Tensor
    eval: torch.Tensor
    #: "none" (computed here), "memory", "disk" or "partial".
    cache_hit: str
    #: what the model that made them is: backbone_params, forward_flops_per_image, device.
    facts: dict[str, Any]
    scores: dict[str, Any]
    #: what extracting them cost when they were made, here or by an earlier run (None:
    #: an entry made before this was kept): what a run is charged from an empty cache.
    extract_seconds: float | None = None


@dataclass
class Outcome:
    """What a regime produced: its fit (and the probe's, for LP-FT) and the trained parts."""

    fit: FitResult
    head: nn.Module
    #: the whole classifier that trained; None when only a head trained on features.
    model: ImageClassifier | None = None
    probe_fit: FitResult | None = None
    features: Features | None = None
    #: the frozen backbone with the trained head, built once for whatever serves it
    #: (inference timing, export, checkpoint) when only a head trained.
    served: ImageClassifier | None = None


Regime = Callable[[TrialContext], Outcome]


# --------------------------------------------------------------------------- regimes


def frozen_head(ctx: TrialContext) -> Outcome:
    """A linear head on the frozen backbone's cached features."""
    features = frozen_features(ctx)
    head = FeatureHead(ctx.backbone.feature_dim, ctx.num_classes)
    ctx.phase("train")
    fit = _fit_head(ctx, head, features, ctx.hp, follow=True)
    return Outcome(fit=fit, head=head, features=features)


def probe_then_all(ctx: TrialContext) -> Outcome:
    """LP-FT: a linear probe on the frozen features, then everything from the probe's head."""
    assert ctx.strategy.probe is not None
    features = frozen_features(ctx)
    probe_head = FeatureHead(ctx.backbone.feature_dim, ctx.num_classes)
    ctx.phase("probe")
    probe_fit = _fit_head(ctx, probe_head, features, ctx.strategy.probe, follow=False)
    outcome = _fine_tune(ctx, ctx.build(), probe_head.cpu())
    outcome.probe_fit, outcome.features = probe_fit, features
    return outcome


def _fit_head(
    ctx: TrialContext, head: FeatureHead, features: Features, hp: Hyperparameters, *, follow: bool
) -> FitResult:
    """Train `head` on the features with `hp`: full-batch L-BFGS logistic regression when its
    optimizer is "lbfgs" (`tlbench.probe`), else mini-batches. `follow`: its epochs are the
    run's (reported), not a first stage's, and it trains the run's rung (`ctx.rung`): L-BFGS,
    which has no schedule, its first epochs from the start."""
    following: dict[str, Any] = {}
    if follow:
        following = {"on_epoch": ctx.on_epoch, "on_phase": ctx.phase}
    if hp.optimizer == "lbfgs":
        from tlbench.probe import fit_logistic_probe as fit

        if follow and ctx.rung is not None:
            hp = hp.replace(epochs=ctx.rung.stop)
    else:
        fit = train_head_on_features
        if follow:
            following["rung"] = ctx.rung
    return fit(
        head,
        features.train,
        ctx.train.labels,
        features.eval,
        ctx.evalset.labels,
        num_classes=ctx.num_classes,
        hp=hp,
        ex=ctx.ex,
        seed=ctx.spec.seed,
        **following,
    )


def end_to_end(ctx: TrialContext) -> Outcome:
    """The backbone and a new linear head trained together on the images."""
    module = ctx.build()  # seeds, then builds: before the head takes its draws
    return _fine_tune(ctx, module, nn.Linear(ctx.backbone.feature_dim, ctx.num_classes))


def regime_for(strategy: Strategy) -> Regime:
    """The regime a strategy trains with."""
    if strategy.frozen_backbone:
        return frozen_head
    if strategy.probe is not None:
        return probe_then_all
    return end_to_end


def _fine_tune(ctx: TrialContext, module: nn.Module, head: nn.Module) -> Outcome:
    groups = strategy_groups(ctx.strategy, ctx.backbone, module, head, ctx.hp, ctx.spec.options)
    model = ImageClassifier(module, head, ctx.backbone.preprocessing)
    ctx.phase("train")
    fit = train_images(
        model,
        groups,
        ctx.train,
        ctx.evalset,
        num_classes=ctx.num_classes,
        image_size=ctx.spec.image_size,
        hp=ctx.hp,
        ex=ctx.ex,
        seed=ctx.spec.seed,
        on_epoch=ctx.on_epoch,
        on_phase=ctx.phase,
        data_on_device=ctx.data_on_device,
        rung=ctx.rung,
    )
    return Outcome(fit=fit, head=head, model=model)


def strategy_groups(
    strategy: Strategy,
    backbone: Backbone,
    module: nn.Module,
    head: nn.Module,
    hp: Hyperparameters,
    options: dict[str, Any] | None = None,
) -> list[dict]:
    """The strategy's parameter groups for `module`, given the backbone's stages (when it
    declares them) and the strategy's option values (`options`: those set by the run)."""
    stages = stage_parameters(backbone, module) if backbone.stages is not None else None
    if strategy.needs_stages and stages is None:
        raise TlbenchError(f"{backbone.name} declares no stages; {strategy.name} trains by stage")
    return call_param_groups(strategy, module, head, hp, stages=stages, options=options)


# --------------------------------------------------------------------------- out of memory


def with_oom_retry(ctx: TrialContext, regime: Regime, *, retry: bool) -> Outcome:
    """Run `regime`; on a device out-of-memory, again (`engine.next_attempt_after_oom`).

    With its data on the device a fit first tries again at the same batch with
    the data on the host; then at half the batch, like timm's benchmark. Each
    attempt starts from fresh weights and an empty curve; the batch sizes
    tried are kept in `ctx.batch_history`. `retry=False` fails at once.
    """
    while True:
        tried = min(ctx.hp.batch_size, len(ctx.train))
        ctx.batch_history.append(tried)
        ctx.finished.clear()
        try:
            return regime(ctx)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if not retry:
                raise TlbenchError(
                    f"GPU out of memory at batch size {tried} (--no-retry); "
                    "lower --batch-size or --image-size, or drop --no-retry to retry at half the batch"
                ) from None
            following = next_attempt_after_oom(exc, Attempt(tried, ctx.data_on_device))
            if following is None:
                raise TlbenchError(
                    f"GPU out of memory even at batch size 1 (tried {ctx.batch_history}); "
                    "lower --image-size or use a smaller backbone"
                ) from None
            ctx.hp = ctx.hp.replace(batch_size=following.batch_size)
            ctx.data_on_device = following.data_on_device
        # Outside the except block, so that the failed attempt's frames (and the
        # activations they hold) are gone before the retry.
        ctx.forget_model()


# --------------------------------------------------------------------------- features


def frozen_features(ctx: TrialContext) -> Features:
    """Both splits' features, from the feature store or extracted once and stored.

    The "features" section of `ctx.watch` times reading, or extracting and
    saving, the features; building the backbone and counting its FLOPs are
    not that cost. With this attempt's batch size: an out-of-memory retry
    extracts in smaller batches too.
    """
    ctx.phase("features")
    out, hits, made = [], [], []
    maker = _Extractor(ctx)
    sources = [("train", ctx.full_train)]
    if ctx.eval_subset is None:  # a tuning trial's validation images are training images
        sources.append(("eval", ctx.evalset))
    for split, data in sources:
        key = feature_key(
            ctx.backbone,
            fingerprint=ctx.spec.dataset_fingerprint,
            split=split,
            image_size=ctx.spec.image_size,
            store_size=ctx.store_size,
            precision=ctx.ex.precision,
            count=len(data),
        )
        array, facts, hit = ctx.feature_store.get_or_make(
            key,
            ctx.backbone.feature_dim,
            len(data),
            make=lambda split=split, data=data: maker(split, data),
            timed=lambda: ctx.watch.section("features"),
        )
        out.append(mapped_tensor(array) if hit != "none" else torch.from_numpy(array))
        hits.append(hit)
        made.append(facts.get("extract_seconds"))
    if "none" in hits:
        # The run's own peak is then the training's, whether the cache hit or missed.
        ctx.memory.close_phase("extraction")
    train_x = out[0]
    eval_x = out[1] if ctx.eval_subset is None else train_x[torch.from_numpy(ctx.eval_subset)]
    if ctx.subset is not None:
        train_x = train_x[torch.from_numpy(ctx.subset)]
    scores = ctx.score(ctx.spec, train_x, ctx.train.labels)
    torch.manual_seed(ctx.spec.seed)
    hit = hits[0] if len(set(hits)) == 1 else "partial"
    extract = None if None in made else float(sum(made))
    return Features(train_x, eval_x, hit, facts, scores, extract)


class _Extractor:
    """Makes one split's features on a miss, with the frozen model built once for both splits."""

    def __init__(self, ctx: TrialContext):
        self.ctx = ctx
        self.model: ImageClassifier | None = None
        self.facts: dict[str, Any] = {}

    def __call__(
        self, split: str, data: ImageTensors
    ) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
        ctx = self.ctx
        if self.model is None:
            self.model = ctx.ex.place(ctx.frozen_model())  # FLOPs are counted where it runs
            ctx.phase("features")  # again: building showed "build"
            self.facts = {
                "backbone_params": count_parameters(self.model.backbone)[1],
                "forward_flops_per_image": ctx.count_flops(self.model),
                "device": device_label(ctx.ex),
            }
        # Each batch shape once, untimed: autotuning and first-call set-up are one-off
        # costs, kept out of the compared extraction as `train_images` keeps them out.
        ctx.extraction_warmup_seconds += warm_up_extraction(
            self.model, data, ctx.spec.image_size, 2 * ctx.hp.batch_size, ctx.ex
        )
        with ctx.watch.section("features"):  # extracting; not building, not counting
            started = time.perf_counter()
            feats = extract_features(
                self.model, data, ctx.spec.image_size, 2 * ctx.hp.batch_size, ctx.ex
            )
            seconds = time.perf_counter() - started  # on the host: the features are there
        meta = {
            "backbone": ctx.backbone.name,
            "weights": ctx.backbone.weights,
            "dataset": ctx.spec.dataset,
            "fingerprint": ctx.spec.dataset_fingerprint,
            "split": split,
            "image_size": ctx.spec.image_size,
            "size": ctx.store_size,
        }
        return feats.numpy(), {**self.facts, "extract_seconds": seconds}, meta


def device_label(ex: Execution) -> str:
    """ "cpu: <model>" or "cuda: <model>": where features or a run were computed."""
    from tlbench.devices import device_name

    return f"{ex.device.type}: {device_name(ex.device)}"
