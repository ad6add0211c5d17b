"""One trial: one run spec in, one run record out, in whatever process runs it.

`run_trial(spec, workspace, ...)` loads the plugins it needs where it runs,
loads and decodes the dataset (through the caches), builds the backbone,
trains it the way the strategy says, evaluates it every epoch and returns
the record: "ok", or "failed" with the reason. It writes no results file and
calls nothing back: events for the live display (phases, epochs; the
`tlbench.events` dataclasses) are handed to `notify(event)`, which the
executor carries to the process that drives the grid. An interruption
(Ctrl-C, SIGTERM) becomes `RunInterrupted`, which carries the "interrupted"
record with the epochs the run finished.

A `ProcessCache` is what the trials of one process share and keep: the
loaded plugins, the loaded datasets, the decoded images, the feature store
and the FLOP, score and inference figures of the models built so far; its
`run(spec)` runs one trial with them. The inline executor keeps one for the
whole grid; a worker process keeps one for its life; `run_trial` keeps one
per process and workspace (`cache_for`).
"""

from __future__ import annotations

import gc
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tlbench.budget import budget_indices, parse_holdout, validation_split
from tlbench.classifier import count_parameters
from tlbench.clocks import Stopwatch
from tlbench.data import DecodeCache, ImageTensors, UnreadableImagesError
from tlbench.devices import device_identity
from tlbench.energy import EnergyMeter, meter_for
from tlbench.errors import DatasetError, TlbenchError, interruption
from tlbench.events import LegacyEvents, Notify, RunPhase, RunStarted, as_legacy, ignore
from tlbench.execution import Execution
from tlbench.features import FeatureStore
from tlbench.fitting import Diverged
from tlbench.flops import FlopCount, forward_flops, training_flops
from tlbench.memory import PeakMemory
from tlbench.peaks import mfu
from tlbench.plugin_types import Backbone, DatasetRequest, DatasetSplits, RunSpec, Workspace
from tlbench.plugins import Plugins, PluginSet
from tlbench.provenance import environment
from tlbench.record import RunRecord, new_record, run_accuracy, run_cost, run_data
from tlbench.regimes import Outcome, TrialContext, regime_for, with_oom_retry
from tlbench.rungs import rung_for
from tlbench.scores import ScoreStore


class RunInterrupted(KeyboardInterrupt):
    """A run was interrupted; `record` says how far it got, `original` is the interruption."""

    def __init__(self, record: RunRecord, original: KeyboardInterrupt):
        super().__init__(record.get("reason"))
        self.record, self.original = record, original


class ProcessCache:
    """The plugins, datasets and caches that the trials of one process share (`run` runs one)."""

    def __init__(self, plugins: Plugins | PluginSet, workspace: Workspace):
        self.plugins = plugins.load() if isinstance(plugins, PluginSet) else plugins
        self.workspace = workspace
        self.decode = DecodeCache(workspace.cache_dir, workers=workspace.decode_workers)
        self.features = FeatureStore(workspace.cache_dir)
        self.score_store = ScoreStore(workspace.cache_dir)
        self._datasets: dict[str, DatasetSplits] = {}
        #: FLOPs per image of a (backbone, image size); only successful counts are kept.
        self._flops: dict[tuple[str, int], int] = {}
        #: FLOPs of a training image of a (backbone, image size, strategy); counts only.
        self._train_flops: dict[tuple[str, int, str], FlopCount] = {}
        #: transferability scores of the features a run trained on.
        self._score_memo: dict[tuple[Any, ...], dict[str, Any]] = {}
        #: inference cost of a (backbone, size, classes, execution, batch): weights do not
        #: change it, so the runs of one model share one measurement.
        self._inference: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._meters: dict[str, EnergyMeter] = {}

    # ------------------------------------------------------------------ data

    def dataset(self, name: str) -> DatasetSplits:
        """The dataset's splits, loaded once per process; errors name the path and the host."""
        if name not in self._datasets:
            dataset, argument = self.plugins.dataset(name)
            request = DatasetRequest(
                argument=argument,
                data_dir=self.workspace.data_dir,
                test_fraction=self.workspace.test_fraction,
                split_seed=0,
            )
            splits = dataset.load(request)
            if not splits.classes:
                raise DatasetError(f"dataset {name!r} has no classes")
            if len(splits.classes) < 2:
                raise DatasetError(
                    f"dataset {name!r} has only one class ({splits.classes[0]!r}); a classifier "
                    "needs at least two. For imagefolder, point at the folder that holds the "
                    "class folders."
                )
            self._datasets[name] = splits
        return self._datasets[name]

    def adopt(self, name: str, splits: DatasetSplits) -> None:
        """Know `splits` under another name too (a dataset's canonical name)."""
        self._datasets[name] = splits

    def _decoded(
        self, spec: RunSpec, splits: DatasetSplits, store_size: int, notify: Notify
    ) -> tuple[ImageTensors, ImageTensors | None]:
        """The training and evaluation splits decoded at `store_size` px (through the decode cache).

        A tuning trial (`spec.holdout`) evaluates on part of the training
        split: the test split is not even decoded.
        """
        out: list[ImageTensors | None] = []
        for split, source in (("train", splits.train), (splits.eval_split, splits.eval)):
            if spec.holdout is not None and split != "train":
                out.append(None)
                continue
            notify(RunPhase(spec, f"decode {split}"))
            out.append(
                self.decode.get(
                    source,
                    fingerprint=splits.fingerprint,
                    split=split,
                    size=store_size,
                    strict=self.workspace.strict,
                    dataset=spec.dataset,
                    progress=lambda d, t: notify(RunPhase(spec, "decode", d, t)),
                )
            )
        assert out[0] is not None
        return out[0], out[1]

    # ------------------------------------------------------------------ the trial

    def run(
        self,
        spec: RunSpec,
        *,
        device: str | None = None,
        notify: Notify | None = None,
        events: LegacyEvents | None = None,
    ) -> RunRecord:
        """Train and evaluate `spec` on `device` (default: the spec's); return its record.

        Its progress events go to `notify(event)`; `events(hook, kwargs)` is the
        older shape of the same callable, still accepted (`tlbench.events.as_legacy`).
        """
        notify = _notify(notify, events)
        started = time.time()
        finished_epochs: list[dict[str, Any]] = []
        ex = _execution(spec, device)
        notify(RunStarted(spec))
        try:
            record = self._train(spec, ex, notify, finished_epochs)
        except KeyboardInterrupt as stop:
            record = self.record(
                spec,
                "interrupted",
                ex,
                reason=interruption(stop),
                started=started,
                epochs_completed=len(finished_epochs),
                partial_curve=finished_epochs,
            )
            raise RunInterrupted(record, stop) from None
        except UnreadableImagesError:
            # About the dataset, not this run: every run on it would fail the same
            # way, so it stops the grid (an executor carries it to the driver).
            raise
        except Diverged as exc:
            record = self.record(
                spec, "failed", ex, reason=str(exc), started=started, failed_epoch=exc.epoch
            )
        except TlbenchError as exc:
            record = self.record(spec, "failed", ex, reason=str(exc), started=started)
        except Exception as exc:
            last = traceback.extract_tb(exc.__traceback__)[-1]
            reason = f"{type(exc).__name__}: {exc} (at {Path(last.filename).name}:{last.lineno})"
            record = self.record(spec, "failed", ex, reason=reason, started=started)
        if record["status"] != "ok":
            # A failure's traceback can keep the run's model alive in a reference
            # cycle; a finished run leaves no tensor in cycles, and a full
            # collection costs ~0.12 s: a quarter of a cached `linear` run.
            gc.collect()
        if ex.device.type == "cuda":
            torch.cuda.empty_cache()
        return record

    def _train(
        self, spec: RunSpec, ex: Execution, notify: Notify, finished: list[dict[str, Any]]
    ) -> RunRecord:
        ctx = self._context(spec, ex, notify, finished)
        meter = self.meter(ex.device)
        with meter.span() as energy:
            outcome = with_oom_retry(ctx, regime_for(ctx.strategy), retry=self.workspace.retry_oom)
        record = self._ok_record(ctx, outcome)
        record["cost"].update(meter.facts(), energy_joules=energy.joules)
        if self.workspace.inference and spec.holdout is None:  # not for a search's trials
            ctx.phase("inference")
            record["inference"] = self._inference_cost(ctx, outcome, record["cost"])
        return record

    def meter(self, device: torch.device) -> EnergyMeter:
        """The device's energy meter, found once per process."""
        if str(device) not in self._meters:
            self._meters[str(device)] = meter_for(device)
        return self._meters[str(device)]

    def _inference_cost(
        self, ctx: TrialContext, outcome: Outcome, cost: dict[str, Any]
    ) -> dict[str, Any]:
        """What the trained model costs to run (`tlbench.inference`), and its export's parity.

        Measured once per (backbone, size, classes, execution, batch) in this
        process: the figure of a model's architecture, whatever its weights.
        """
        from tlbench import inference

        settings = inference.InferenceSettings(
            batch=self.workspace.inference_batch, export=self.workspace.export
        )
        batch = settings.batch or ctx.hp.batch_size
        key = (
            ctx.backbone.name,
            ctx.spec.image_size,
            ctx.num_classes,
            tuple(sorted(ctx.ex.to_dict().items())),
            batch,
        )
        model = None
        if key in self._inference:
            result = {**self._inference[key], "reused": True, "latency_reused": True}
        else:
            # Batch-1 latency does not depend on the serving batch: one figure per model.
            latency = next((v for k, v in self._inference.items() if k[:-1] == key[:-1]), None)
            model = self._served_model(ctx, outcome)
            result = inference.measure(
                model,
                ctx.evalset.images,
                image_size=ctx.spec.image_size,
                ex=ctx.ex,
                settings=settings,
                batch=batch,
                meter=self.meter(ctx.ex.device),
                latency=latency,
            )
            self._inference[key] = result
            result = {**result, "reused": False, "latency_reused": latency is not None}
        result["params"] = cost.get("total_params")
        result["flops_per_image"] = cost.get("forward_flops_per_image")
        if settings.export == "onnx":
            ctx.phase("export")
            result["onnx"] = inference.onnx_parity(
                model or self._served_model(ctx, outcome),
                ctx.evalset.images,
                ctx.evalset.labels,
                image_size=ctx.spec.image_size,
                ex=ctx.ex,
                settings=settings,
                batch=batch,
                path=self._export_path(ctx),
            )
        return result

    def _served_model(self, ctx: TrialContext, outcome: Outcome) -> nn.Module:
        """The trained classifier as it would be served: backbone and head, on the device
        (built once per run when only a head trained: a feature-cache hit built no backbone)."""
        if outcome.model is not None:
            return outcome.model
        if outcome.served is None:
            model = ctx.frozen_model()
            model.head = outcome.head
            outcome.served = ctx.ex.place(model)
        return outcome.served

    def _export_path(self, ctx: TrialContext) -> Path | None:
        """Where an exported model is kept: beside the checkpoints (`--save-models`), else nowhere."""
        if self.workspace.models_dir is None:
            return None
        self.workspace.models_dir.mkdir(parents=True, exist_ok=True)
        return self.workspace.models_dir / f"{ctx.spec.key}.onnx"

    def _context(
        self, spec: RunSpec, ex: Execution, notify: Notify, finished: list[dict[str, Any]]
    ) -> TrialContext:
        """The run's parts and its decoded data (timed as data preparation)."""
        splits = self.dataset(spec.dataset)
        if splits.fingerprint != spec.dataset_fingerprint:
            raise DatasetError(
                f"dataset {spec.dataset!r} changed since the grid was planned (its fingerprint "
                "differs); run the command again to plan it afresh"
            )
        backbone = self.plugins.backbones.get(spec.backbone)
        strategy = self.plugins.strategies.get(spec.strategy)
        memory = PeakMemory(ex.device)
        memory.reset()
        watch = Stopwatch(ex.device)
        with watch.section("data_prep"):
            store_size = backbone.preprocessing.resize_for(spec.image_size)
            full_train, evalset = self._decoded(spec, splits, store_size, notify)
            fit_idx, eval_idx = _holdout(spec, full_train)
            if eval_idx is not None:
                evalset = _subset(full_train, eval_idx, skipped=False)
            # A data budget trains on a seeded, stratified subset; features and
            # decoded images stay cached for the whole split.
            subset, budget_facts, train = fit_idx, {}, full_train
            if spec.budget is not None:
                pool = fit_idx if fit_idx is not None else np.arange(len(full_train))
                chosen, budget_facts = budget_indices(
                    full_train.labels.numpy()[pool], spec.budget, spec.seed
                )
                subset = pool[chosen]
            if subset is not None:
                train = _subset(full_train, subset)
        return TrialContext(
            spec=spec,
            ex=ex,
            backbone=backbone,
            strategy=strategy,
            splits=splits,
            full_train=full_train,
            train=train,
            evalset=evalset,
            store_size=store_size,
            subset=subset,
            eval_subset=eval_idx,
            budget_facts=budget_facts,
            watch=watch,
            memory=memory,
            feature_store=self.features,
            score=self._scores,
            count_flops=lambda model: self._forward_flops(backbone, model, spec.image_size, ex),
            notify=notify,
            hp=spec.hp,
            finished=finished,
            rung=rung_for(spec, self.workspace.rung_states),
        )

    def _ok_record(self, ctx: TrialContext, outcome: Outcome) -> RunRecord:
        """The record of a run that trained: what it reached, what it cost, what it saw."""
        spec, ex, fit, features = ctx.spec, ctx.ex, outcome.fit, outcome.features
        frozen = ctx.strategy.frozen_backbone
        if frozen:
            assert features is not None
            # From the feature store on a hit: the backbone is not even built.
            trainable, head_total = count_parameters(outcome.head)
            total = features.facts["backbone_params"] + head_total
            flops = features.facts["forward_flops_per_image"]
        else:
            assert outcome.model is not None
            trainable, total = count_parameters(outcome.model)
            counted = self._training_flops(ctx, outcome.model)
            # placed by training
            flops = counted.forward if counted else ctx.count_flops(outcome.model)
        measured: dict[str, Any] = {
            # The model's peak apart from the dataset kept on the device (where it fits).
            **ctx.memory.read(resident_bytes=fit.resident_data_bytes),
            "trainable_params": trainable,
            "total_params": total,
            "forward_flops_per_image": flops,
            "decode_cache": ctx.train.cache_hit,
            "feature_cache": features.cache_hit if features is not None else None,
            "batch_sizes_tried": ctx.batch_history,
            **ex.to_dict(),
        }
        if not ctx.data_on_device:
            measured["data_on_host_after_oom"] = True
        if features is not None:
            measured["feature_warmup_seconds"] = ctx.extraction_warmup_seconds
            measured["features_device"] = features.facts.get("device")
            # From an empty cache a run pays the extraction, wherever its features came from.
            measured["feature_extract_seconds"] = features.extract_seconds
        cost = run_cost(fit, outcome.probe_fit, seconds=ctx.watch.seconds, measured=measured)
        if not frozen:
            # Against the peak of this device model at this precision, or none, with why;
            # from the FLOPs of what trained (a frozen part has no backward) where counted.
            cost.update(
                mfu(
                    flops,
                    cost.get("train_images_per_s"),
                    device_identity(ex.device),
                    ex.precision,
                    train_flops_per_image=counted.train if counted else None,
                )
            )
        if self.workspace.models_dir is not None:
            cost["checkpoint"] = str(self._checkpoint(ctx, outcome))
        parts: dict[str, Any] = {
            "accuracy": run_accuracy(fit, outcome.probe_fit),
            "cost": cost,
            "data": run_data(ctx.splits, ctx.train, ctx.evalset, ctx.store_size),
        }
        if spec.budget is not None:
            parts["data"].update(ctx.budget_facts, train_images_available=len(ctx.full_train))
        if spec.holdout is not None:
            parts["data"].update(
                eval_split=spec.holdout, train_images_available=len(ctx.full_train)
            )
        if features is not None:
            parts["scores"] = features.scores
        if spec.stop_epoch is not None and ctx.rung is not None:
            parts["rung"] = ctx.rung.facts(spec.hp.epochs)
        return self.record(spec, "ok", ex, hp_used=ctx.hp, **parts)

    def _checkpoint(self, ctx: TrialContext, outcome: Outcome) -> Path:
        from tlbench.checkpoint import save_checkpoint

        """The trained model as it ended: the weights whose top-1 the record reports.

        Not the epoch that scored best on the evaluation split: that would be a
        choice made on the test split, and the checkpoint's accuracy would be
        the optimistic pick of several (the record's `best` stays a fact about
        the curve, chosen nothing).
        """
        fit = outcome.fit
        assert self.workspace.models_dir is not None
        return save_checkpoint(
            self.workspace.models_dir,
            ctx.spec,
            ctx.backbone,
            self._served_model(ctx, outcome),
            head_only=ctx.strategy.frozen_backbone,
            classes=list(ctx.splits.classes),
            epoch=len(fit.curve),
            accuracy=fit.final_accuracy,
        )

    def _scores(self, spec: RunSpec, train_x: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
        """Transferability scores of the training features (free with every feature run).

        LogME, leave-one-out k-NN accuracy (k=5, cosine) and the Ledoit-Wolf
        H-score (`tlbench.scores`): the same features give the same scores, so
        they are kept for the next run of this process that uses them, and on
        disk beside the features for the next process.
        """
        key = (
            spec.backbone,
            spec.weights,
            spec.dataset_fingerprint,
            spec.image_size,
            spec.execution.get("precision"),
            spec.budget,
            spec.seed if spec.budget else None,
            spec.holdout,  # a tuning trial scores the training split less its validation part
        )
        if key not in self._score_memo:
            about = {
                "dataset": spec.dataset,
                "fingerprint": spec.dataset_fingerprint,
                "split": "train",
                "image_size": spec.image_size,
                "backbone": spec.backbone,
                "weights": spec.weights,
            }
            self._score_memo[key] = self.score_store.get_or_make(
                train_x.numpy(), labels.numpy(), about
            )
        return dict(self._score_memo[key])

    def _training_flops(self, ctx: TrialContext, model: nn.Module) -> FlopCount | None:
        """FLOPs of a training image under the run's `requires_grad` flags, counted once per
        (backbone, image size, strategy) in this process; a failed count is not kept."""
        key = (ctx.backbone.name, ctx.spec.image_size, ctx.spec.strategy)
        if key not in self._train_flops:
            counted = training_flops(model, ctx.spec.image_size)
            if counted is None:
                return None
            self._train_flops[key] = counted
        return self._train_flops[key]

    def _forward_flops(
        self, backbone: Backbone, model: nn.Module, image_size: int, ex: Execution
    ) -> int | None:
        """FLOPs per image of the model as placed on the run's device; a failed count is not kept."""
        key = (backbone.name, image_size)
        if key not in self._flops:
            flops = forward_flops(model, image_size, ex.device)
            if flops is None:
                return None
            self._flops[key] = flops
        return self._flops[key]

    # ------------------------------------------------------------------ records

    def record(
        self,
        spec: RunSpec,
        status: str,
        ex: Execution | None,
        *,
        reason: str = "",
        started: float | None = None,
        hp_used: Any = None,
        **parts: Any,
    ) -> RunRecord:
        """A record of `spec` with `status`; `parts` are its accuracy, cost, data and extras."""
        return make_record(
            spec,
            status,
            self.plugins,
            ex.device if ex else None,
            reason=reason,
            started=started,
            hp_used=hp_used,
            **parts,
        )


def make_record(
    spec: RunSpec,
    status: str,
    plugins: Plugins,
    device: Any = None,
    *,
    reason: str = "",
    started: float | None = None,
    hp_used: Any = None,
    **parts: Any,
) -> RunRecord:
    """The record of one run (skipped ones included, which never reach a trial).

    `device`: where it ran, for the record's environment (none for a run that
    never reached a device).
    """
    providers = {
        "backbone": plugins.provider("backbone", spec.backbone),
        "strategy": plugins.provider("strategy", spec.strategy),
        "dataset": plugins.provider("dataset", spec.dataset.partition(":")[0]),
    }
    return new_record(
        spec,
        status,
        providers=providers,
        environment=environment(device, plugins.versions()) if device is not None else None,
        reason=reason,
        started=started,
        hp_used=hp_used,
        **parts,
    )


def _execution(spec: RunSpec, device: str | None) -> Execution:
    """The spec's execution settings on `device` (an executor's choice of index) or the spec's."""
    from tlbench.devices import resolve_device

    settings = spec.execution
    return Execution.resolve(
        resolve_device(device or settings["device"]),
        settings["precision"],
        settings["memory_format"] == "channels_last",
        settings["compile"],
    )


# --------------------------------------------------------------------------- anywhere

#: the caches of this process, most recently used last (a driver plans and runs with one).
_CACHES: dict[tuple[Any, Workspace], ProcessCache] = {}
_MAX_CACHES = 2


def cache_for(plugins: Plugins | PluginSet, workspace: Workspace) -> ProcessCache:
    """This process's cache for these plugins and workspace, made on first use."""
    key = (plugins, workspace)
    cache = _CACHES.pop(key, None) or ProcessCache(plugins, workspace)
    _CACHES[key] = cache
    while len(_CACHES) > _MAX_CACHES:
        _CACHES.pop(next(iter(_CACHES)))
    return cache


#: the old names (a "host" of trials, which is a per-process cache), kept for one release.
TrialHost = ProcessCache
host_for = cache_for


def run_trial(
    spec: RunSpec,
    workspace: Workspace,
    *,
    plugins: Plugins | PluginSet | None = None,
    device: str | None = None,
    notify: Notify | None = None,
    events: LegacyEvents | None = None,
) -> RunRecord:
    """Run one spec in this process and return its record (see the module docstring).

    `plugins` defaults to every installed plugin, loaded here; a `PluginSet`
    loads the same plugins the driver had. The process's cache (plugins,
    datasets, decoded images, features) is kept for the next trial of this
    process with the same plugins and workspace. The run's progress events go to `notify(event)` (`tlbench.events`);
    `events(hook, kwargs)`, the older shape, is still accepted for one release.
    """
    cache = cache_for(plugins or PluginSet(), workspace)
    return cache.run(spec, device=device, notify=notify, events=events)


def _notify(notify: Notify | None, events: LegacyEvents | None) -> Notify:
    """Where a trial's events go: `notify`, else an old-style `events`, else nowhere."""
    if notify is not None:
        return notify
    return as_legacy(events) if events is not None else ignore


def _holdout(spec: RunSpec, train: ImageTensors) -> tuple[np.ndarray | None, np.ndarray | None]:
    """`(fit, validation)` indices of a tuning trial's training split; `(None, None)` otherwise."""
    if spec.holdout is None:
        return None, None
    return validation_split(train.labels.numpy(), parse_holdout(spec.holdout))


def _subset(data: ImageTensors, indices: np.ndarray, *, skipped: bool = True) -> ImageTensors:
    """The images and labels at `indices` (a data budget): gathered, so never a memory map.

    `skipped=False`: the split's unreadable files are counted with the other subset.
    """
    index = torch.from_numpy(indices)
    return ImageTensors(
        images=data.images[index],
        labels=data.labels[index],
        skipped=data.skipped if skipped else [],
        cache_hit=data.cache_hit,
        seconds=data.seconds,
        skip_reasons=data.skip_reasons if skipped else [],
    )
