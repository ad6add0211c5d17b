"""Expand backbones x datasets x strategies x seeds, train each, append one record per run.

Everything that can be checked before training is checked first (names,
datasets, image sizes), so bad input fails in seconds, not after an hour.
Each run then ends in exactly one record: "ok", "failed" (with the reason;
the grid goes on), "skipped" (with the reason) or "interrupted" (Ctrl-C or
SIGTERM: the record is written, then the interruption propagates). Rerunning
the same command skips every run whose key already has an "ok" record.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import gc
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tlbench import results
from tlbench.api import Backbone, Dataset, DatasetRequest, DatasetSplits, Hyperparameters, Strategy
from tlbench.cache import ArrayStore, cache_key
from tlbench.config import RunConfig
from tlbench.data import DecodeCache, ImageTensors, UnreadableImagesError, default_cache_dir
from tlbench.engine import (
    Diverged,
    Execution,
    FeatureHead,
    FitResult,
    ImageClassifier,
    count_parameters,
    extract_features,
    train_head_on_features,
    train_images,
)
from tlbench.errors import DatasetError, Terminated, TlbenchError
from tlbench.plugins import Plugins
from tlbench.timing import (
    PeakMemory,
    Stopwatch,
    environment,
    forward_flops,
    peak_tflops,
    resolve_device,
)

#: bumped when a change makes old results incomparable (it is part of every key).
RESULTS_VERSION = 1
FEATURES_VERSION = 1
#: What a feature cache entry records of the model that made it (see `Runner._features`).
_MODEL_FACTS = frozenset({"backbone_params", "forward_flops_per_image"})
#: image size used when neither the flag nor the dataset gives one (fast on a CPU).
FALLBACK_IMAGE_SIZE = 128


@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid: everything that determines its result."""

    backbone: str
    dataset: str
    strategy: str
    seed: int
    image_size: int
    hp: Hyperparameters
    execution: Execution
    weights: str | None
    dataset_fingerprint: str

    def config(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone,
            "weights": self.weights,
            "dataset": self.dataset,
            "strategy": self.strategy,
            "seed": self.seed,
            "image_size": self.image_size,
            "hyperparameters": {**self.hp.__dict__},
            **self.execution.to_dict(),
        }

    @property
    def key(self) -> str:
        return cache_key("run", RESULTS_VERSION, self.config(), self.dataset_fingerprint)

    @property
    def label(self) -> str:
        return f"{self.backbone} / {self.strategy} / {self.dataset} / seed {self.seed}"


@dataclass
class PlannedRun:
    spec: RunSpec
    status: str = "pending"  # "pending", "skipped" or "done"
    reason: str = ""


class Progress:
    """What the runner tells a live display; every method is optional to override."""

    def grid_started(self, plans: list[PlannedRun]) -> None: ...
    def run_started(self, plan: PlannedRun, index: int, total: int) -> None: ...
    def phase(self, name: str, done: int | None = None, total: int | None = None) -> None: ...
    def epoch(self, metrics: dict[str, Any], epochs: int) -> None: ...
    def run_finished(self, record: dict[str, Any]) -> None: ...
    def grid_finished(self, records: list[dict[str, Any]]) -> None: ...


@dataclass
class _LoadedDataset:
    spec: str
    dataset: Dataset
    splits: DatasetSplits
    image_size: int


@dataclass
class Runner:
    config: RunConfig
    plugins: Plugins
    progress: Progress = field(default_factory=Progress)

    def __post_init__(self) -> None:
        cfg = self.config
        self.device = resolve_device(cfg.device)
        try:
            self.execution = Execution.resolve(self.device, cfg.precision, cfg.channels_last, cfg.compile)
        except ValueError as error:
            raise TlbenchError(f"--{error}") from None
        cache_dir = None if cfg.no_cache else Path(cfg.cache_dir or default_cache_dir()).expanduser()
        self.decode = DecodeCache(cache_dir, workers=cfg.workers)
        self.features = ArrayStore(cache_dir / "features" if cache_dir else None)
        self.data_dir = Path(cfg.data_dir or default_cache_dir() / "data").expanduser()
        self.out = Path(cfg.out).expanduser()
        self._flops: dict[tuple[str, int], int | None] = {}
        self._datasets: dict[str, _LoadedDataset] = {}
        self._feature_memory: dict[str, tuple[torch.Tensor, dict[str, Any]]] = {}
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    # ------------------------------------------------------------------ planning

    def plan(self) -> list[PlannedRun]:
        """Resolve every name and load every dataset; raise before any training."""
        cfg = self.config
        if not (cfg.backbones and cfg.datasets and cfg.strategies and cfg.seeds):
            raise TlbenchError("nothing to run: give at least one backbone, dataset, strategy and seed")
        results.check_writable(self.out)
        backbones = [self.plugins.backbones.get(n) for n in cfg.backbones]
        strategies = [self.plugins.strategies.get(n) for n in cfg.strategies]
        for name in cfg.datasets:
            self.plugins.dataset(name)  # unknown names fail before any dataset loads
        for name in cfg.datasets:
            self._datasets[name] = self._load_dataset(name)
        done = {
            key
            for key, r in results.latest_by_key(results.read(self.out)).items()
            if r.get("status") == "ok"
        } if not cfg.force else set()
        plans = []
        for dname in cfg.datasets:
            loaded = self._datasets[dname]
            for backbone in backbones:
                for strategy in strategies:
                    for seed in cfg.seeds:
                        plan = self._plan_one(loaded, backbone, strategy, seed)
                        if plan.status == "pending" and plan.spec.key in done:
                            plan.status, plan.reason = "done", "already in the results file"
                        plans.append(plan)
        return plans

    def _load_dataset(self, name: str) -> _LoadedDataset:
        dataset, argument = self.plugins.dataset(name)
        request = DatasetRequest(
            argument=argument,
            data_dir=self.data_dir,
            val_fraction=self.config.val_fraction,
            split_seed=0,
        )
        splits = dataset.load(request)
        if not splits.classes:
            raise TlbenchError(f"dataset {name!r} has no classes")
        if len(splits.classes) < 2:
            raise DatasetError(
                f"dataset {name!r} has only one class ({splits.classes[0]!r}); a classifier needs "
                "at least two. For imagefolder, point at the folder that holds the class folders."
            )
        size = self.config.image_size or dataset.native_size or FALLBACK_IMAGE_SIZE
        return _LoadedDataset(name, dataset, splits, size)

    def _plan_one(
        self, loaded: _LoadedDataset, backbone: Backbone, strategy: Strategy, seed: int
    ) -> PlannedRun:
        size = loaded.image_size
        if backbone.fixed_image_size and self.config.image_size is None:
            size = backbone.fixed_image_size
        hp = self.config.hyperparameters_for(strategy.name, strategy.defaults)
        spec = RunSpec(
            backbone=backbone.name,
            dataset=loaded.spec,
            strategy=strategy.name,
            seed=seed,
            image_size=size,
            hp=hp,
            execution=self.execution,
            weights=backbone.weights if strategy.pretrained else None,
            dataset_fingerprint=loaded.splits.fingerprint,
        )
        reason = strategy.skip_reason(backbone)
        if reason is None and backbone.fixed_image_size and size != backbone.fixed_image_size:
            reason = f"{backbone.name} takes only {backbone.fixed_image_size} px input (asked {size})"
        if reason is None and size < backbone.min_image_size:
            reason = f"{backbone.name} needs at least {backbone.min_image_size} px input (asked {size})"
        return PlannedRun(spec, "skipped" if reason else "pending", reason or "")

    # ------------------------------------------------------------------ running

    def run(self, plans: list[PlannedRun] | None = None) -> list[dict[str, Any]]:
        """Run the plan; returns this invocation's records (skipped ones included)."""
        plans = self.plan() if plans is None else plans
        self.progress.grid_started(plans)
        records: list[dict[str, Any]] = []
        todo = [p for p in plans if p.status != "done"]
        existing = results.latest_by_key(results.read(self.out))
        for index, plan in enumerate(todo, start=1):
            if plan.status == "skipped":
                record = self._record(plan.spec, "skipped", reason=plan.reason)
                previous = existing.get(plan.spec.key)
                if previous is None or previous.get("status") != "skipped":
                    results.append(self.out, record)
                records.append(record)
                self.progress.run_finished(record)
                continue
            self.progress.run_started(plan, index, len(todo))
            record = self._run_one(plan.spec)
            records.append(record)
        self.plugins.grid_finished(records)
        self.progress.grid_finished(records)
        return records

    def _run_one(self, spec: RunSpec) -> dict[str, Any]:
        started = time.time()
        epochs: list[dict[str, Any]] = []  # the epochs this run finished, for an interruption
        try:
            record = self._train(spec, epochs)
        except KeyboardInterrupt as stop:
            how = "SIGTERM" if isinstance(stop, Terminated) else "Ctrl-C"
            record = self._record(
                spec, "interrupted", reason=f"interrupted ({how})", started=started,
                epochs_completed=len(epochs), partial_curve=epochs,
            )  # fmt: skip
            results.append(self.out, record)
            self.plugins.run_finished(spec, record)
            self.progress.run_finished(record)
            raise
        except UnreadableImagesError:
            # About the dataset, not this run: every run on it would fail the same way.
            raise
        except Diverged as exc:
            record = self._record(spec, "failed", reason=str(exc), started=started, failed_epoch=exc.epoch)
        except TlbenchError as exc:
            record = self._record(spec, "failed", reason=str(exc), started=started)
        except Exception as exc:
            last = traceback.extract_tb(exc.__traceback__)[-1]
            reason = f"{type(exc).__name__}: {exc} (at {Path(last.filename).name}:{last.lineno})"
            record = self._record(spec, "failed", reason=reason, started=started)
        # The record first, the clean-up after: an interruption during
        # gc.collect() must not lose a finished run.
        results.append(self.out, record)
        if record["status"] != "ok":
            # A failure's traceback can keep the run's model alive in a reference
            # cycle. A finished run leaves only a few hundred small objects in
            # cycles (typing and dynamo internals, no tensor), and a full
            # collection costs ~0.12 s: a quarter of a cached `linear` run.
            gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.plugins.run_finished(spec, record)
        self.progress.run_finished(record)
        return record

    def _decoded(self, loaded: _LoadedDataset, store: int) -> tuple[ImageTensors, ImageTensors]:
        splits = loaded.splits
        out = []
        for split, source in (("train", splits.train), (splits.eval_split, splits.eval)):
            self.progress.phase(f"decode {split}")
            out.append(
                self.decode.get(
                    source,
                    fingerprint=splits.fingerprint,
                    split=split,
                    size=store,
                    strict=self.config.strict,
                    progress=lambda d, t: self.progress.phase("decode", d, t),
                )
            )
        return out[0], out[1]

    def _train(self, spec: RunSpec, epochs: list[dict[str, Any]]) -> dict[str, Any]:
        loaded = self._datasets[spec.dataset]
        backbone = self.plugins.backbones.get(spec.backbone)
        strategy = self.plugins.strategies.get(spec.strategy)
        num_classes = len(loaded.splits.classes)
        memory = PeakMemory(self.device)
        memory.reset()
        watch = Stopwatch(self.device)

        with watch.section("data_prep"):
            store = backbone.preprocessing.resize_for(spec.image_size)
            train, evalset = self._decoded(loaded, store)

        hp, batch_history, fit, cache_hit = spec.hp, [], None, "none"
        module: nn.Module | None = None
        self.plugins.run_started(spec)

        def build() -> nn.Module:
            nonlocal module
            if module is None:
                torch.manual_seed(spec.seed)
                self.progress.phase("build")
                module = backbone.build(strategy.pretrained)
            return module

        def frozen_model() -> ImageClassifier:
            frozen = build().requires_grad_(False)
            head = FeatureHead(backbone.feature_dim, num_classes)
            return ImageClassifier(frozen, head, backbone.preprocessing)

        def on_epoch(epoch: int, metrics: dict[str, Any]) -> None:
            epochs.append(metrics)
            self.plugins.epoch_ended(spec, epoch, metrics)
            self.progress.epoch(metrics, hp.epochs)

        while fit is None:
            batch_history.append(min(hp.batch_size, len(train)))  # the batch actually tried
            epochs.clear()  # an out-of-memory retry starts its curve again
            try:
                if strategy.frozen_backbone:
                    self.progress.phase("features")
                    # With this attempt's batch size: an OOM retry extracts in smaller batches too.
                    attempt = dataclasses.replace(spec, hp=hp)
                    (train_x, eval_x), cache_hit, facts = self._features(
                        attempt, backbone, frozen_model, train, evalset, store, watch
                    )
                    torch.manual_seed(spec.seed)
                    head = FeatureHead(backbone.feature_dim, num_classes)
                    self.progress.phase("train")
                    fit = train_head_on_features(
                        head, train_x, train.labels, eval_x, evalset.labels,
                        num_classes=num_classes, hp=hp, ex=self.execution, seed=spec.seed,
                        on_epoch=on_epoch, on_phase=self.progress.phase, keep_best=self.config.save_models,
                    )
                else:
                    module = build()  # seeds, then builds: before the head takes its draws
                    head = nn.Linear(backbone.feature_dim, num_classes)
                    groups = strategy.param_groups(module, head, hp)
                    model = ImageClassifier(module, head, backbone.preprocessing)
                    self.progress.phase("train")
                    fit = train_images(
                        model, groups, train, evalset, num_classes=num_classes,
                        image_size=spec.image_size, hp=hp, ex=self.execution, seed=spec.seed,
                        on_epoch=on_epoch, on_phase=self.progress.phase, keep_best=self.config.save_models,
                    )
            except torch.cuda.OutOfMemoryError:
                tried = min(hp.batch_size, len(train))
                if not self.config.retry_oom:
                    raise TlbenchError(
                        f"GPU out of memory at batch size {tried} (--no-retry); "
                        "lower --batch-size or --image-size, or drop --no-retry to retry at half the batch"
                    ) from None
                if tried <= 1:
                    raise TlbenchError(
                        f"GPU out of memory even at batch size 1 (tried {batch_history}); "
                        "lower --image-size or use a smaller backbone"
                    ) from None
                # Like timm's benchmark: halve the batch and try again from fresh weights.
                hp = hp.replace(batch_size=tried // 2)
            if fit is None:
                # Outside the except block, so that the failed attempt's frames
                # (and the activations they hold) are gone before the retry.
                model = module = None
                gc.collect()
                torch.cuda.empty_cache()
                memory.reset()

        if strategy.frozen_backbone:
            # From the feature cache's sidecar on a hit: the backbone is not even built.
            trainable, head_total = count_parameters(head)
            total = facts["backbone_params"] + head_total
            flops = facts["forward_flops_per_image"]
        else:
            trainable, total = count_parameters(model)
            flops = self._forward_flops(backbone, model, spec.image_size)
        cost = {
            "data_prep_seconds": watch.seconds.get("data_prep", 0.0),
            "feature_seconds": watch.seconds.get("features", 0.0),
            **fit.cost(),
            **memory.read(),
            "trainable_params": trainable,
            "total_params": total,
            "forward_flops_per_image": flops,
            "decode_cache": train.cache_hit,
            "feature_cache": cache_hit if strategy.frozen_backbone else None,
            "batch_sizes_tried": batch_history,
            **self.execution.to_dict(),
        }
        cost["wall_seconds"] = (
            cost["data_prep_seconds"] + cost["feature_seconds"] + fit.train_seconds + fit.eval_seconds
        )
        peak = peak_tflops(self.device, self.execution.precision)
        if peak and flops and cost.get("train_images_per_s") and not strategy.frozen_backbone:
            # Training costs about 3x the forward pass (forward + two backward matmuls).
            cost["mfu"] = 3 * flops * cost["train_images_per_s"] / (peak * 1e12)
        if self.config.save_models and fit.best_state is not None:
            if strategy.frozen_backbone:
                model = frozen_model()  # a cache hit built no backbone; the checkpoint holds one
                model.head = head
            cost["checkpoint"] = str(
                self._save_model(spec, backbone, model, fit, loaded, head_only=strategy.frozen_backbone)
            )
        accuracy = {
            "best": fit.best_accuracy,
            "best_epoch": fit.best_epoch,
            "final": fit.final_accuracy,
            "final_balanced": fit.curve[-1]["eval_balanced_accuracy"] if fit.curve else None,
            "curve": fit.curve,
        }
        data = {
            "num_classes": num_classes,
            "classes": loaded.splits.classes,
            "train_images": len(train),
            "eval_images": len(evalset),
            "eval_split": loaded.splits.eval_split,
            "skipped_images": len(train.skipped) + len(evalset.skipped),
            "skipped_files": (train.skipped + evalset.skipped)[:50],
            "store_size": store,
            **loaded.splits.info,
        }
        hp_used = hp
        return self._record(spec, "ok", accuracy=accuracy, cost=cost, data=data, hp_used=hp_used)

    def _forward_flops(self, backbone: Backbone, model: nn.Module, image_size: int) -> int | None:
        key = (backbone.name, image_size)
        if key not in self._flops:
            self._flops[key] = forward_flops(model, image_size, self.device)
        return self._flops[key]

    def _features(
        self, spec: RunSpec, backbone: Backbone, frozen_model: Callable[[], ImageClassifier],
        train: ImageTensors, evalset: ImageTensors, store: int, watch: Stopwatch,
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], str, dict[str, Any]]:
        """Backbone features of both splits, from the cache or computed once and cached.

        Beside the features, the cache keeps what the record says of the model
        that made them (`backbone_params`, `forward_flops_per_image`), so a hit
        needs no backbone at all: `frozen_model` is called only on a miss.
        `watch`'s "features" section times reading or extracting and saving
        them; building the backbone and counting its FLOPs are not that cost.
        """
        out, hits, facts = [], [], {}
        model: ImageClassifier | None = None
        for split, data in (("train", train), ("eval", evalset)):
            key = cache_key(
                "features", FEATURES_VERSION, backbone.name, backbone.weights,
                spec.dataset_fingerprint, split, spec.image_size, store,
                backbone.preprocessing.to_dict(), self.execution.precision, len(data),
            )
            entry = self._feature_memory.get(key)
            if entry is not None:
                feats, facts = entry
                out.append(feats)
                hits.append("memory")
                continue
            with watch.section("features"):
                stored = self.features.load(key, dtype="float32")
            if (
                stored is not None
                and stored[0].shape == (len(data), backbone.feature_dim)
                and stored[1].keys() >= _MODEL_FACTS
            ):
                feats = torch.from_numpy(stored[0])
                facts = {k: stored[1][k] for k in _MODEL_FACTS}
                hits.append("disk")
            else:
                if model is None:
                    model = frozen_model()
                    self.progress.phase("features")  # again: building showed "build"
                    facts = {
                        "backbone_params": count_parameters(model.backbone)[1],
                        "forward_flops_per_image": self._forward_flops(backbone, model, spec.image_size),
                    }
                with watch.section("features"):
                    feats = extract_features(model, data, spec.image_size, 2 * spec.hp.batch_size, self.execution)
                    self.features.save(key, feats.numpy(), {"backbone": backbone.name, "split": split, **facts})
                hits.append("none")
            self._feature_memory[key] = (feats, facts)
            out.append(feats)
        hit = hits[0] if len(set(hits)) == 1 else "partial"
        return (out[0], out[1]), hit, facts

    def _save_model(
        self, spec: RunSpec, backbone: Backbone, model: ImageClassifier, fit: FitResult,
        loaded: _LoadedDataset, *, head_only: bool,
    ) -> Path:
        """The best epoch's weights with everything `tlbench predict` needs to use them."""
        folder = Path(self.config.models_dir or self.out.parent / "models").expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.cpu() for k, v in model.state_dict().items()}
        # best_state holds the head alone (cached features) or the whole model.
        prefix = "head." if head_only else ""
        state.update({prefix + k: v for k, v in fit.best_state.items()})
        path = folder / f"{spec.key}.pt"
        checkpoint = {
            "format": "tlbench-checkpoint-1",
            "state_dict": state,
            "backbone": backbone.name,
            "strategy": spec.strategy,
            "head": "feature" if head_only else "linear",
            "num_classes": len(loaded.splits.classes),
            "classes": list(loaded.splits.classes),
            "image_size": spec.image_size,
            "preprocessing": backbone.preprocessing.to_dict(),
            "best_epoch": fit.best_epoch,
            "best_accuracy": fit.best_accuracy,
            # Provenance, so a checkpoint found alone can be traced to its record.
            "key": spec.key,
            "dataset": spec.dataset,
            "seed": spec.seed,
            "weights": spec.weights,
            "tlbench_version": _tlbench_version(),
        }
        tmp = path.with_suffix(".tmp")
        torch.save(checkpoint, tmp)
        tmp.replace(path)
        return path

    # ------------------------------------------------------------------ records

    def _record(self, spec: RunSpec, status: str, *, reason: str = "", started: float | None = None,
                hp_used: Hyperparameters | None = None, **parts: Any) -> dict[str, Any]:
        config = spec.config()
        if hp_used is not None and hp_used != spec.hp:
            config["hyperparameters_used"] = {**hp_used.__dict__}
        record: dict[str, Any] = {
            "schema": results.SCHEMA_VERSION,
            "key": spec.key,
            "status": status,
            "reason": reason or None,
            "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "config": config,
            "providers": {
                "backbone": self.plugins.provider("backbone", spec.backbone),
                "strategy": self.plugins.provider("strategy", spec.strategy),
                "dataset": self.plugins.provider("dataset", spec.dataset.partition(":")[0]),
            },
        }
        if "failed_epoch" in parts:
            record["failed_epoch"] = parts.pop("failed_epoch")
        if started is not None:
            record["elapsed_seconds"] = time.time() - started
        record.update(parts)
        record["environment"] = environment(self.device, self.plugins.versions())
        return record


def _tlbench_version() -> str:
    from tlbench import __version__

    return __version__
