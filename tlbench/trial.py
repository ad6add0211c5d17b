"""One trial: one run spec in, one run record out, in whatever process runs it.

`run_trial(spec, workspace, ...)` loads the plugins it needs where it runs,
loads and decodes the dataset (through the caches), builds the backbone,
trains it the way the strategy says, evaluates it every epoch and returns
the record: "ok", or "failed" with the reason. It writes no results file and
calls nothing back: events for the live display (phases, epochs) are handed
to `events(hook, kwargs)`, which the executor carries to the process that
drives the grid. An interruption (Ctrl-C, SIGTERM) becomes `RunInterrupted`,
which carries the "interrupted" record with the epochs the run finished.

A `TrialHost` is what the trials of one process share: the loaded plugins,
the loaded datasets, the decoded images and the feature store. The inline
executor keeps one for the whole grid; a worker process keeps one for its
life; `run_trial` keeps one per process and workspace.
"""

from __future__ import annotations

import datetime as _dt
import gc
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tlbench.api import Backbone, DatasetRequest, DatasetSplits, RunSpec, Workspace
from tlbench.budget import budget_indices
from tlbench.data import DecodeCache, ImageTensors, UnreadableImagesError, mapped_tensor
from tlbench.engine import (
    Diverged,
    Execution,
    FeatureHead,
    ImageClassifier,
    count_parameters,
    extract_features,
    train_head_on_features,
    train_images,
)
from tlbench.errors import DatasetError, Terminated, TlbenchError
from tlbench.features import FeatureStore, feature_key
from tlbench.plugins import Plugins, PluginSet
from tlbench.record import SCHEMA_VERSION, RunRecord, encode_correct
from tlbench.timing import (
    PeakMemory,
    Stopwatch,
    device_identity,
    environment,
    forward_flops,
    mfu,
)

Events = Callable[[str, dict[str, Any]], None]


def _no_events(hook: str, kwargs: dict[str, Any]) -> None:
    pass


class RunInterrupted(KeyboardInterrupt):
    """A run was interrupted; `record` says how far it got, `original` is the interruption."""

    def __init__(self, record: RunRecord, original: KeyboardInterrupt):
        super().__init__(record.get("reason"))
        self.record, self.original = record, original


class TrialHost:
    """The plugins, datasets and caches that the trials of one process share."""

    def __init__(self, plugins: Plugins | PluginSet, workspace: Workspace):
        self.plugins = plugins.load() if isinstance(plugins, PluginSet) else plugins
        self.workspace = workspace
        self.decode = DecodeCache(workspace.cache_dir, workers=workspace.decode_workers)
        self.features = FeatureStore(workspace.cache_dir)
        self._datasets: dict[str, DatasetSplits] = {}
        #: FLOPs per image of a (backbone, image size); only successful counts are kept.
        self._flops: dict[tuple[str, int], int] = {}
        #: transferability scores of the features a run trained on.
        self._score_memo: dict[tuple[Any, ...], dict[str, Any]] = {}

    # ------------------------------------------------------------------ data

    def dataset(self, name: str) -> DatasetSplits:
        """The dataset's splits, loaded once per process; errors name the path and the host."""
        if name not in self._datasets:
            dataset, argument = self.plugins.dataset(name)
            request = DatasetRequest(
                argument=argument,
                data_dir=self.workspace.data_dir,
                val_fraction=self.workspace.val_fraction,
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
        self, spec: RunSpec, splits: DatasetSplits, store: int, emit: Events
    ) -> tuple[ImageTensors, ImageTensors]:
        out = []
        for split, source in (("train", splits.train), (splits.eval_split, splits.eval)):
            emit(
                "run_phase", {"run": spec, "phase": f"decode {split}", "done": None, "total": None}
            )
            out.append(
                self.decode.get(
                    source,
                    fingerprint=splits.fingerprint,
                    split=split,
                    size=store,
                    strict=self.workspace.strict,
                    dataset=spec.dataset,
                    progress=lambda d, t: emit(
                        "run_phase", {"run": spec, "phase": "decode", "done": d, "total": t}
                    ),
                )
            )
        return out[0], out[1]

    # ------------------------------------------------------------------ the trial

    def run(
        self, spec: RunSpec, *, device: str | None = None, events: Events | None = None
    ) -> RunRecord:
        """Train and evaluate `spec` on `device` (default: the spec's); return its record."""
        emit = events or _no_events
        started = time.time()
        finished_epochs: list[dict[str, Any]] = []
        ex = _execution(spec, device)
        emit("run_started", {"run": spec})
        try:
            record = self._train(spec, ex, emit, finished_epochs)
        except KeyboardInterrupt as stop:
            how = "SIGTERM" if isinstance(stop, Terminated) else "Ctrl-C"
            record = self.record(
                spec,
                "interrupted",
                ex,
                reason=f"interrupted ({how})",
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
        self, spec: RunSpec, ex: Execution, emit: Events, finished: list[dict[str, Any]]
    ) -> RunRecord:
        plugins, workspace = self.plugins, self.workspace
        splits = self.dataset(spec.dataset)
        if splits.fingerprint != spec.dataset_fingerprint:
            raise DatasetError(
                f"dataset {spec.dataset!r} changed since the grid was planned (its fingerprint "
                "differs); run the command again to plan it afresh"
            )
        backbone = plugins.backbones.get(spec.backbone)
        strategy = plugins.strategies.get(spec.strategy)
        num_classes = len(splits.classes)
        memory = PeakMemory(ex.device)
        memory.reset()
        watch = Stopwatch(ex.device)

        with watch.section("data_prep"):
            store = backbone.preprocessing.resize_for(spec.image_size)
            full_train, evalset = self._decoded(spec, splits, store, emit)
            # A data budget trains on a seeded, stratified subset; features and
            # decoded images stay cached for the whole split.
            subset, budget_facts = None, {}
            train = full_train
            if spec.budget is not None:
                subset, budget_facts = budget_indices(
                    full_train.labels.numpy(), spec.budget, spec.seed
                )
                train = _subset(full_train, subset)

        def phase(name: str) -> None:
            emit("run_phase", {"run": spec, "phase": name, "done": None, "total": None})

        hp, batch_history = spec.hp, []
        fit, cache_hit, facts, head, model = None, "none", {}, None, None
        probe_fit, scores = None, None
        module: nn.Module | None = None

        def build() -> nn.Module:
            nonlocal module
            if module is None:
                torch.manual_seed(spec.seed)
                phase("build")
                module = backbone.build(strategy.pretrained)
            return module

        def frozen_model() -> ImageClassifier:
            frozen = build().requires_grad_(False)
            return ImageClassifier(
                frozen, FeatureHead(backbone.feature_dim, num_classes), backbone.preprocessing
            )

        def on_epoch(epoch: int, metrics: dict[str, Any]) -> None:
            finished.append(metrics)
            emit(
                "epoch_ended",
                {"run": spec, "epoch": epoch, "metrics": {**metrics, "epochs": hp.epochs}},
            )

        while fit is None:
            batch_history.append(min(hp.batch_size, len(train)))  # the batch actually tried
            finished.clear()  # an out-of-memory retry starts its curve again
            try:
                if strategy.frozen_backbone or strategy.probe is not None:
                    phase("features")
                    # With this attempt's batch size: an OOM retry extracts in smaller batches too.
                    (train_x, eval_x), cache_hit, facts = self._features(
                        spec,
                        hp,
                        ex,
                        backbone,
                        frozen_model,
                        full_train,
                        evalset,
                        store,
                        watch,
                        phase,
                    )
                    if subset is not None:
                        train_x = train_x[torch.from_numpy(subset)]
                    scores = self._scores(spec, train_x, train.labels)
                    torch.manual_seed(spec.seed)
                if strategy.frozen_backbone:
                    head = FeatureHead(backbone.feature_dim, num_classes)
                    phase("train")
                    fit = train_head_on_features(
                        head,
                        train_x,
                        train.labels,
                        eval_x,
                        evalset.labels,
                        num_classes=num_classes,
                        hp=hp,
                        ex=ex,
                        seed=spec.seed,
                        on_epoch=on_epoch,
                        on_phase=phase,
                        keep_best=workspace.models_dir is not None,
                    )
                else:
                    if strategy.probe is not None:
                        # LP-FT: first the linear probe on the frozen features...
                        probe_head = FeatureHead(backbone.feature_dim, num_classes)
                        phase("probe")
                        probe_fit = train_head_on_features(
                            probe_head,
                            train_x,
                            train.labels,
                            eval_x,
                            evalset.labels,
                            num_classes=num_classes,
                            hp=strategy.probe,
                            ex=ex,
                            seed=spec.seed,
                        )
                        # ... then everything fine-tunes, starting from the probe's head.
                        module = build()
                        head = probe_head.cpu()
                    else:
                        module = build()  # seeds, then builds: before the head takes its draws
                        head = nn.Linear(backbone.feature_dim, num_classes)
                    groups = strategy.param_groups(module, head, hp)
                    model = ImageClassifier(module, head, backbone.preprocessing)
                    phase("train")
                    fit = train_images(
                        model,
                        groups,
                        train,
                        evalset,
                        num_classes=num_classes,
                        image_size=spec.image_size,
                        hp=hp,
                        ex=ex,
                        seed=spec.seed,
                        on_epoch=on_epoch,
                        on_phase=phase,
                        keep_best=workspace.models_dir is not None,
                    )
            except Exception as exc:
                if not _is_out_of_memory(exc):
                    raise
                tried = min(hp.batch_size, len(train))
                if not workspace.retry_oom:
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
                if ex.device.type == "cuda":
                    torch.cuda.empty_cache()
                memory.reset()

        if strategy.frozen_backbone:
            # From the feature store on a hit: the backbone is not even built.
            trainable, head_total = count_parameters(head)
            total = facts["backbone_params"] + head_total
            flops = facts["forward_flops_per_image"]
        else:
            trainable, total = count_parameters(model)
            flops = self._forward_flops(backbone, model, spec.image_size, ex)  # placed by training
        cost: dict[str, Any] = {
            "data_prep_seconds": watch.seconds.get("data_prep", 0.0),
            "feature_seconds": watch.seconds.get("features", 0.0),
            **fit.cost(),
            # The model's peak apart from the dataset kept on the device (where it fits).
            **memory.read(resident_bytes=fit.resident_data_bytes),
            "trainable_params": trainable,
            "total_params": total,
            "forward_flops_per_image": flops,
            "decode_cache": train.cache_hit,
            "feature_cache": cache_hit if scores is not None else None,
            "batch_sizes_tried": batch_history,
            **ex.to_dict(),
        }
        if scores is not None:
            cost["features_device"] = facts.get("device")
        if probe_fit is not None:
            # LP-FT's adaptation cost is both stages: the probe, then the fine-tune.
            cost["probe_train_seconds"] = probe_fit.train_seconds
            cost["train_seconds"] = probe_fit.train_seconds + fit.train_seconds
            cost["eval_seconds"] = probe_fit.eval_seconds + fit.eval_seconds
        # Everything the run took, its one-off costs (warm-up, uploads) included; the
        # compared training time (`train_seconds`) leaves them out.
        one_off = [f for f in (probe_fit, fit) if f is not None]
        cost["wall_seconds"] = (
            cost["data_prep_seconds"]
            + cost["feature_seconds"]
            + cost["train_seconds"]
            + cost["eval_seconds"]
            + sum(f.warmup_seconds + f.upload_seconds for f in one_off)
        )
        if not strategy.frozen_backbone:
            # Against the peak of this device model at this precision, or none, with why.
            cost.update(
                mfu(flops, cost.get("train_images_per_s"), device_identity(ex.device), ex.precision)
            )
        if workspace.models_dir is not None and fit.best_state is not None:
            from tlbench.checkpoint import save_checkpoint

            if strategy.frozen_backbone:
                model = frozen_model()  # a cache hit built no backbone; the checkpoint holds one
                model.head = head
            cost["checkpoint"] = str(
                save_checkpoint(
                    workspace.models_dir,
                    spec,
                    backbone,
                    model,
                    fit.best_state,
                    head_only=strategy.frozen_backbone,
                    classes=list(splits.classes),
                    best_epoch=fit.best_epoch,
                    best_accuracy=fit.best_accuracy,
                )
            )
        accuracy = {
            "best": fit.best_accuracy,
            "best_epoch": fit.best_epoch,
            "final": fit.final_accuracy,
            "final_balanced": fit.curve[-1]["eval_balanced_accuracy"] if fit.curve else None,
            "curve": fit.curve,
            "final_correct": fit.final_correct,
        }
        if probe_fit is not None:
            accuracy["probe"] = {
                "final": probe_fit.final_accuracy,
                "best": probe_fit.best_accuracy,
                "epochs": len(probe_fit.curve),
            }
        data = {
            "num_classes": num_classes,
            "classes": splits.classes,
            "train_images": len(train),
            "eval_images": len(evalset),
            "eval_split": splits.eval_split,
            "skipped_images": len(train.skipped) + len(evalset.skipped),
            "skipped_files": (train.skipped + evalset.skipped)[:50],
            "store_size": store,
            **splits.info,
        }
        if spec.budget is not None:
            data.update(budget_facts, train_images_available=len(full_train))
        parts: dict[str, Any] = {"accuracy": accuracy, "cost": cost, "data": data}
        if scores is not None:
            parts["scores"] = scores
        return self.record(spec, "ok", ex, hp_used=hp, **parts)

    def _scores(self, spec: RunSpec, train_x: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
        """Transferability scores of the training features (free with every feature run).

        LogME, leave-one-out k-NN accuracy (k=5, cosine) and the Ledoit-Wolf
        H-score; the same features give the same scores, so they are kept
        for the next run of this process that uses them.
        """
        from tlbench import transferability as tr

        key = (
            spec.backbone,
            spec.weights,
            spec.dataset_fingerprint,
            spec.image_size,
            spec.execution.get("precision"),
            spec.budget,
            spec.seed if spec.budget else None,
        )
        if key not in self._score_memo:
            t0 = time.perf_counter()
            x = train_x.double().numpy()
            y = labels.numpy()
            found: dict[str, Any] = {}
            for name, score in (
                ("logme", lambda: tr.logme(x, y)),
                ("knn_accuracy", lambda: tr.knn_accuracy(x, y, k=5, metric="cosine")),
                ("h_score", lambda: tr.h_score(x, y, shrinkage="ledoit-wolf")),
            ):
                try:
                    found[name] = float(score())
                except (ValueError, np.linalg.LinAlgError) as exc:  # too few images of a class
                    found[name] = None
                    found.setdefault("errors", {})[name] = str(exc)
            found["seconds"] = time.perf_counter() - t0
            self._score_memo[key] = found
        return dict(self._score_memo[key])

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

    def _features(
        self,
        spec: RunSpec,
        hp: Any,
        ex: Execution,
        backbone: Backbone,
        frozen_model: Callable[[], ImageClassifier],
        train: ImageTensors,
        evalset: ImageTensors,
        store: int,
        watch: Stopwatch,
        phase: Callable[[str], None],
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], str, dict[str, Any]]:
        """Backbone features of both splits, from the store or computed once and stored.

        `frozen_model` is called only on a miss. `watch`'s "features" section
        times reading, or extracting and saving, the features; building the
        backbone and counting its FLOPs are not that cost.
        """
        out, hits, facts = [], [], {}
        model: ImageClassifier | None = None
        for split, data in (("train", train), ("eval", evalset)):
            key = feature_key(
                backbone,
                fingerprint=spec.dataset_fingerprint,
                split=split,
                image_size=spec.image_size,
                store_size=store,
                precision=ex.precision,
                count=len(data),
            )
            with watch.section("features"):
                found = self.features.get(key, backbone.feature_dim, len(data))
            if found is None:
                # Another worker may be making this very entry: wait for it, then look again.
                with self.features.lock(key):
                    with watch.section("features"):
                        found = self.features.get(key, backbone.feature_dim, len(data))
                    if found is None:
                        feats, facts, model = self._extract(
                            spec,
                            hp,
                            ex,
                            backbone,
                            frozen_model,
                            model,
                            data,
                            key,
                            split,
                            store,
                            phase,
                            facts,
                            watch,
                        )
                        hits.append("none")
                        out.append(feats)
                        continue
            array, facts, hit = found
            out.append(mapped_tensor(array))
            hits.append(hit)
        hit = hits[0] if len(set(hits)) == 1 else "partial"
        return (out[0], out[1]), hit, facts

    def _extract(
        self,
        spec: RunSpec,
        hp: Any,
        ex: Execution,
        backbone: Backbone,
        frozen_model: Callable[[], ImageClassifier],
        model: ImageClassifier | None,
        data: ImageTensors,
        key: str,
        split: str,
        store: int,
        phase: Callable[[str], None],
        facts: dict[str, Any],
        watch: Stopwatch,
    ) -> tuple[torch.Tensor, dict[str, Any], ImageClassifier]:
        """Compute one split's features with the frozen model (built once) and store them."""
        if model is None:
            model = ex.place(frozen_model())  # FLOPs are counted where the model runs
            phase("features")  # again: building showed "build"
            facts = {
                "backbone_params": count_parameters(model.backbone)[1],
                "forward_flops_per_image": self._forward_flops(
                    backbone, model, spec.image_size, ex
                ),
                "device": _device_label(ex),
            }
        with watch.section("features"):  # extracting and saving; not building, not counting
            feats = extract_features(model, data, spec.image_size, 2 * hp.batch_size, ex)
        meta = {
            "backbone": backbone.name,
            "weights": backbone.weights,
            "dataset": spec.dataset,
            "fingerprint": spec.dataset_fingerprint,
            "split": split,
            "image_size": spec.image_size,
            "size": store,
        }
        with watch.section("features"):
            self.features.put(key, feats.numpy(), facts, meta)
        return feats, facts, model

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
    """The record of one run (skipped ones included, which never reach a trial)."""
    config = spec.config()
    config["dataset_fingerprint"] = spec.dataset_fingerprint
    if hp_used is not None and hp_used != spec.hp:
        config["hyperparameters_used"] = {**hp_used.__dict__}
    record: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "key": spec.key,
        "status": status,
        "reason": reason or None,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"),
        "config": config,
        "providers": {
            "backbone": plugins.provider("backbone", spec.backbone),
            "strategy": plugins.provider("strategy", spec.strategy),
            "dataset": plugins.provider("dataset", spec.dataset.partition(":")[0]),
        },
    }
    if "failed_epoch" in parts:
        record["failed_epoch"] = parts.pop("failed_epoch")
    accuracy = parts.get("accuracy")
    if isinstance(accuracy, dict) and "final_correct" in accuracy:
        # The final evaluation image by image, as a compact bitset (`record.encode_correct`).
        accuracy = dict(accuracy)
        correct = accuracy.pop("final_correct")
        if correct is not None:
            accuracy["final_correct"] = (
                correct if isinstance(correct, dict) else encode_correct(correct)
            )
        parts["accuracy"] = accuracy
    if started is not None:
        record["elapsed_seconds"] = time.time() - started
    record.update(parts)
    if device is not None:
        record["environment"] = environment(device, plugins.versions())
    return record  # type: ignore[return-value]


def _execution(spec: RunSpec, device: str | None) -> Execution:
    """The spec's execution settings on `device` (an executor's choice of index) or the spec's."""
    from tlbench.timing import resolve_device

    settings = spec.execution
    return Execution.resolve(
        resolve_device(device or settings["device"]),
        settings["precision"],
        settings["memory_format"] == "channels_last",
        settings["compile"],
    )


def _device_label(ex: Execution) -> str:
    from tlbench.timing import device_name

    return f"{ex.device.type}: {device_name(ex.device)}"


def _is_out_of_memory(exc: BaseException) -> bool:
    """Every form an out-of-memory takes on a GPU (see `tlbench.engine.is_out_of_memory`)."""
    from tlbench import engine

    classify = getattr(engine, "is_out_of_memory", None)
    if classify is not None:
        return bool(classify(exc))
    return isinstance(exc, torch.cuda.OutOfMemoryError)


# --------------------------------------------------------------------------- anywhere

#: the hosts of this process, most recently used last (a driver plans and runs with one).
_HOSTS: dict[tuple[Any, Workspace], TrialHost] = {}
_MAX_HOSTS = 2


def host_for(plugins: Plugins | PluginSet, workspace: Workspace) -> TrialHost:
    """This process's host for these plugins and workspace, made on first use."""
    key = (plugins, workspace)
    host = _HOSTS.pop(key, None) or TrialHost(plugins, workspace)
    _HOSTS[key] = host
    while len(_HOSTS) > _MAX_HOSTS:
        _HOSTS.pop(next(iter(_HOSTS)))
    return host


def run_trial(
    spec: RunSpec,
    workspace: Workspace,
    *,
    plugins: Plugins | PluginSet | None = None,
    device: str | None = None,
    events: Events | None = None,
) -> RunRecord:
    """Run one spec in this process and return its record (see the module docstring).

    `plugins` defaults to every installed plugin, loaded here; a `PluginSet`
    loads the same plugins the driver had. The host (plugins, datasets,
    caches) is kept for the next trial of this process with the same plugins
    and workspace.
    """
    host = host_for(plugins or PluginSet(), workspace)
    return host.run(spec, device=device, events=events)


def _subset(data: ImageTensors, indices: np.ndarray) -> ImageTensors:
    """The images and labels at `indices` (a data budget): gathered, so never a memory map."""
    index = torch.from_numpy(indices)
    return ImageTensors(
        images=data.images[index],
        labels=data.labels[index],
        skipped=data.skipped,
        cache_hit=data.cache_hit,
        seconds=data.seconds,
        skip_reasons=data.skip_reasons,
    )
