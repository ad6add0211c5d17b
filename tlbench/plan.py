"""Planning: a run configuration becomes the list of runs to do, before any training.

Every name is resolved (an unknown one fails with its close matches), every
dataset is loaded and checked, the image size of each run is decided by one
policy, runs a backbone cannot do are marked skipped with the reason, runs
already finished in the results file are marked done (resume), and a run
asked for twice is kept once. Whatever can be wrong with the input fails
here, in seconds, not after the first hour of training.

Image size policy: `--image-size` when given (a backbone that takes only one
size is then skipped at any other); else the backbone's only size when it
has one; else the dataset's native size; else `FALLBACK_IMAGE_SIZE`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlbench import results
from tlbench.budget import parse_budgets
from tlbench.config import RunConfig
from tlbench.data import default_cache_dir
from tlbench.errors import TlbenchError
from tlbench.identity import dataset_identity
from tlbench.outputs import check_output_locations
from tlbench.plugin_types import Backbone, DatasetSplits, PlannedRun, RunSpec, Strategy, Workspace
from tlbench.plugins import Plugins, describe_code_change
from tlbench.tune import rung_states_for

#: image size used when neither the flag nor the dataset gives one (fast on a CPU).
FALLBACK_IMAGE_SIZE = 128


@dataclass
class Plan:
    """The runs of a grid in order, and where they read and write."""

    runs: list[PlannedRun]
    workspace: Workspace
    out: Path
    #: what planning dropped or changed, said once to the user (duplicates).
    notes: list[str] = field(default_factory=list)
    #: each dataset's canonical name (in the specs) -> the name it was given as.
    datasets: dict[str, str] = field(default_factory=dict)

    @property
    def keys(self) -> set[str]:
        return {p.spec.key for p in self.runs}


def workspace_for(config: RunConfig) -> Workspace:
    """The absolute locations and run settings a trial needs, from the config."""
    cache_dir = None if config.no_cache else Path(config.cache_dir or default_cache_dir())
    out = Path(config.out).expanduser().absolute()
    models_dir = None
    if config.save_models:
        models_dir = Path(config.models_dir or out.parent / "models").expanduser().absolute()
    return Workspace(
        cache_dir=cache_dir.expanduser().absolute() if cache_dir else None,
        data_dir=Path(config.data_dir or default_cache_dir() / "data").expanduser().absolute(),
        models_dir=models_dir,
        test_fraction=config.test_fraction,
        strict=config.strict,
        retry_oom=config.retry_oom,
        decode_workers=config.workers,
        inference=config.inference,
        inference_batch=config.inference_batch,
        export=config.export,
        rung_states=rung_states_for(out, config.tune_pruner) if config.tune else None,
    )


def worker_devices(config: RunConfig) -> list[str]:
    """The devices the runs of `config` will train on, as the builtin executors choose them.

    `devices` and `process` run on the `--devices` entries (`devices` by
    default on every visible GPU); every other executor on `--device`.
    """
    if config.executor in ("devices", "process") and config.devices:
        return list(config.devices)
    if config.executor == "devices":
        import torch

        gpus = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        return gpus or [config.device]
    return [config.device]


def execution_settings(config: RunConfig) -> dict[str, Any]:
    """The spec's execution facts: device type (not index), precision, memory format, compile.

    Planned for the devices the runs train on (`worker_devices`), not the
    driver's: `--devices cpu,cpu` on a GPU machine plans CPU runs. Workers on
    different device models are refused (a run's key, precision and label
    must say where it trained: run one grid per model). A GPU that several
    workers share is marked (`device_shared_by`, in the key): each run gets a
    fraction of it, so its timings are not those of a run that had it alone.
    """
    from tlbench.devices import resolve_device
    from tlbench.execution import Execution

    devices = [resolve_device(name) for name in worker_devices(config)]
    per_device: list[dict[str, Any]] = []
    for device in devices:
        try:
            ex = Execution.resolve(device, config.precision, config.channels_last, config.compile)
        except ValueError as error:
            raise TlbenchError(f"--{error}") from None
        per_device.append(_settings(ex))
    if any(s != per_device[0] for s in per_device[1:]):
        models = sorted({s.get("device_model", s["device"]) for s in per_device})
        raise TlbenchError(
            f"the workers' devices are of different models ({', '.join(models)}): a run's key, "
            "precision and timings must say where it trained, so one grid runs on one model; "
            "run a grid per model (name its GPUs with --devices)"
        )
    settings = per_device[0]
    shared = _workers_per_gpu(devices)
    if shared > 1:
        settings["device_shared_by"] = shared
    _warn_emulated_bf16(devices[0], settings["precision"])
    return settings


def _settings(ex: Any) -> dict[str, Any]:
    # Which GPU index runs a spec is the executor's choice, not part of its result;
    # which GPU model runs it is: an H100's timings are not an A100's. (On a CPU the
    # keys stay as they were; the record names the CPU model.)
    settings = {**ex.to_dict(), "device": ex.device.type}
    if ex.device.type != "cpu":
        from tlbench.devices import device_identity

        settings["device_model"] = device_identity(ex.device)["key"]
    return settings


def _workers_per_gpu(devices: list[Any]) -> int:
    """How many workers share each GPU (1: each has its own); uneven sharing is refused.

    CPU workers split the CPU's threads between them (recorded as each run's
    `cpu_threads`) and are not counted here.
    """
    import collections

    import torch

    counts = collections.Counter(
        d.index if d.index is not None else torch.cuda.current_device()
        for d in devices
        if d.type == "cuda"
    )
    if not counts:
        return 1
    if len(set(counts.values())) > 1:
        raise TlbenchError(
            "--devices puts more workers on some GPUs than on others "
            f"({', '.join(f'cuda:{i} x{n}' for i, n in sorted(counts.items()))}): their runs' "
            "timings would differ by where each ran; give every GPU the same number of workers"
        )
    return next(iter(counts.values()))


def _warn_emulated_bf16(device: Any, precision: str) -> None:
    """bf16 below compute capability 8.0 runs emulated, far slower than fp16: say so before any run."""
    if device.type != "cuda" or precision != "bf16":
        return
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 0):
        warnings.warn(
            f"--precision bf16 on a GPU of compute capability {major}.{minor}: it has no bf16 "
            "tensor cores, so bf16 runs emulated (slower than fp32) and has no MFU; "
            "fp16 (or auto) is this GPU's fast precision",
            UserWarning,
            stacklevel=3,
        )


def make_plan(
    config: RunConfig,
    plugins: Plugins,
    dataset: Callable[[str], DatasetSplits],
    execution: dict[str, Any] | None = None,
    read: Callable[[], list[dict[str, Any]]] | None = None,
) -> Plan:
    """Resolve, load and check everything; raise before any training.

    `dataset(name)` loads a dataset's splits (the driver's trial host, so the
    inline executor does not load them twice); `read()` the results file's
    records (the driver's, which reads the file once for the whole command).
    """
    if not (config.backbones and config.datasets and config.strategies and config.seeds):
        raise TlbenchError("nothing to run: give at least one backbone, dataset, strategy and seed")
    workspace = workspace_for(config)
    out = Path(config.out).expanduser().absolute()
    # Every output location, before any work: a bad --models-dir must not cost a trained run.
    check_output_locations(results=config.out, models_dir=workspace.models_dir)
    grid = _Grid(
        config=config,
        plugins=plugins,
        execution=execution if execution is not None else execution_settings(config),
        budgets=parse_budgets(config.shots, config.train_fraction),
        backbones=[plugins.backbones.get(n) for n in config.backbones],
        strategies=[plugins.strategies.get(n) for n in config.strategies],
    )
    # A strategy's options, checked against what it declares, before any dataset loads.
    grid.options = {s.name: config.options_for(s) for s in grid.strategies}
    loaded, given = _load_datasets(config, plugins, dataset)
    _check_out_beside_images(out, loaded)
    grid.read_answers(read or (lambda: results.read(out)))
    for name, splits in loaded.items():
        size = config.image_size or plugins.datasets.get(name.partition(":")[0]).native_size
        grid.add_dataset(name, splits, size)
    notes = grid.notes()
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    return Plan(grid.runs, workspace, out, notes, given)


def _load_datasets(
    config: RunConfig, plugins: Plugins, dataset: Callable[[str], DatasetSplits]
) -> tuple[dict[str, DatasetSplits], dict[str, str]]:
    """Each dataset once, by its canonical name, and the name it was given by.

    Unknown names fail before any dataset loads. A relative path, an absolute
    one and a symlink to the same folder are one dataset (keyed by the resolved
    path and the fingerprint).
    """
    for name in config.datasets:
        plugins.dataset(name)
    loaded: dict[str, DatasetSplits] = {}
    given: dict[str, str] = {}
    for name in dict.fromkeys(config.datasets):
        splits = dataset(name)
        canonical, _ = dataset_identity(name, splits)
        if canonical not in loaded:
            loaded[canonical], given[canonical] = splits, name
    return loaded, given


@dataclass
class _Grid:
    """The runs of a plan as they are made: each spec once, each marked pending, done or
    skipped, and why a done-looking one trains again (`make_plan`)."""

    config: RunConfig
    plugins: Plugins
    execution: dict[str, Any]
    budgets: list[str | None]
    backbones: list[Backbone]
    strategies: list[Strategy]
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the results file's answer of each key; the keys done, and those to train again.
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)
    rerun: dict[str, str] = field(default_factory=dict)
    runs: list[PlannedRun] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    again: list[str] = field(default_factory=list)
    duplicates: int = 0
    #: the ok answers by their settings without the code (`settings_index`).
    _by_settings: dict[str, list[dict[str, Any]]] | None = None

    def read_answers(self, read: Callable[[], list[dict[str, Any]]]) -> None:
        """An ok record stays the answer until a newer ok replaces it; it is "done" only
        if it also gives what this command asks (a checkpoint, --strict)."""
        self.answers = {} if self.config.force else results.answer_by_key(read())
        for key, record in self.answers.items():
            if record.get("status") == "ok":
                reason = results.needs_rerun(record, self.config)
                if reason:
                    self.rerun[key] = reason
        self.done = {
            k for k, r in self.answers.items() if r.get("status") == "ok" and k not in self.rerun
        }

    def add_dataset(self, name: str, splits: DatasetSplits, size: int | None) -> None:
        """Every backbone x strategy x seed x budget of one dataset."""
        for backbone in self.backbones:
            for strategy in self.strategies:
                code = _code(self.plugins, name, backbone.name, strategy.name)
                for seed, budget in itertools.product(self.config.seeds, self.budgets):
                    run = _plan_one(
                        self.config, name, splits, size, backbone, strategy, seed, self.execution
                    )
                    self._add(self._with_extras(run, code, strategy, budget))

    def _with_extras(
        self,
        run: PlannedRun,
        code: dict[str, dict[str, str]] | None,
        strategy: Strategy,
        budget: str | None,
    ) -> PlannedRun:
        """The run with its strategy's options, the third-party `code` and the budget."""
        options = self.options[strategy.name]
        spec = run.spec
        if code or options:
            spec = dataclasses.replace(spec, options=options or None, code=code)
        if budget is not None:
            spec = dataclasses.replace(spec, budget=budget)
        return PlannedRun(spec, run.status, run.reason)

    def _add(self, run: PlannedRun) -> None:
        key = run.spec.key
        if key in self.seen:
            self.duplicates += 1
            return
        self.seen.add(key)
        if run.status == "pending" and key in self.done:
            run = PlannedRun(run.spec, "done", "already in the results file")
        elif run.status == "pending" and key in self.rerun:
            self.again.append(f"{run.spec.label}: {self.rerun[key]}")
        elif run.status == "pending" and run.spec.code:
            if self._by_settings is None:  # built once, when a plugin's run first needs it
                self._by_settings = settings_index(self.answers.values())
            changed = code_changed(run.spec, self._by_settings)
            if changed:
                self.again.append(f"{run.spec.label}: {changed}")
        self.runs.append(run)

    def notes(self) -> list[str]:
        """What the plan says beside its runs: what trains again and why, duplicates."""
        notes = [f"trained again: {line}" for line in self.again[:5]]
        if len(self.again) > 5:
            notes.append(
                f"... and {len(self.again) - 5} more run(s) trained again for the same reasons"
            )
        if self.duplicates:
            notes.append(
                f"dropped {self.duplicates} duplicate run(s): the grid names the same backbone, "
                "dataset, strategy and seed more than once"
            )
        return notes


def _check_out_beside_images(out: Path, loaded: dict[str, DatasetSplits]) -> None:
    """Refuse a results file inside a dataset read from one folder of class folders.

    Beside the results file tlbench writes its claims (`.tlbench-claims/`),
    the report page and, with --save-models, `models/`: among a single-folder
    dataset's images, where its classes are read from (a dataset of train/ and
    val/ folders has room beside them). Its root and split rule are in
    `DatasetSplits.info` ("root"; "split" when the evaluation split is carved).
    """
    where = out.parent.resolve()
    for name, splits in loaded.items():
        root = splits.info.get("root")
        if not isinstance(root, str) or "split" not in splits.info:
            continue
        root_path = Path(root).resolve()
        if where == root_path or root_path in where.parents:
            raise TlbenchError(
                f"--out {out} is inside the dataset folder {root_path} ({name}), whose class "
                "folders tlbench reads: its claims, report page and checkpoints would be written "
                f"among the images. Put --out outside {root_path}."
            )


def _code(
    plugins: Plugins, dataset: str, backbone: str, strategy: str
) -> dict[str, dict[str, str]] | None:
    """The third-party code behind a run, per role (`Plugins.code_identity`); None: builtins."""
    roles = {
        "backbone": plugins.code_identity("backbone", backbone),
        "dataset": plugins.code_identity("dataset", dataset),
        "strategy": plugins.code_identity("strategy", strategy),
    }
    return {role: facts for role, facts in roles.items() if facts} or None


#: record config fields that are not the spec's own settings (added beside them).
_NOT_SETTINGS = ("code", "dataset_fingerprint", "hyperparameters_used")


def _settings_text(config: dict[str, Any], fingerprint: Any) -> str:
    """A run's settings and data as one text, its code and what is not a setting left out."""
    kept = {k: v for k, v in config.items() if k not in _NOT_SETTINGS}
    return json.dumps([kept, fingerprint], sort_keys=True, default=str)


def settings_index(records: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The ok records by their settings (`_settings_text`), in order: what `code_changed` looks in."""
    index: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        config = record.get("config")
        if record.get("status") == "ok" and isinstance(config, dict):
            key = _settings_text(config, config.get("dataset_fingerprint"))
            index.setdefault(key, []).append(record)
    return index


def code_changed(spec: RunSpec, index: dict[str, list[dict[str, Any]]]) -> str | None:
    """Why `spec` trains again when an ok record has all its settings but older plugin code:
    "strategy bitfit's code changed (...)"; None when no such record exists. `index`: the
    ok records by settings (`settings_index`), made once for a whole plan."""
    for record in index.get(_settings_text(spec.config(), spec.dataset_fingerprint), []):
        config = record["config"]
        old, new = config.get("code") or {}, spec.code or {}
        names = {"backbone": spec.backbone, "dataset": spec.dataset, "strategy": spec.strategy}
        changes = [
            describe_code_change(role, names[role], old.get(role), new.get(role))
            for role in ("backbone", "dataset", "strategy")
            if old.get(role) != new.get(role)
        ]
        if changes:
            return "; ".join(changes)
    return None


def _plan_one(
    config: RunConfig,
    dataset: str,
    splits: DatasetSplits,
    native: int | None,
    backbone: Backbone,
    strategy: Strategy,
    seed: int,
    execution: dict[str, Any],
) -> PlannedRun:
    size = native or FALLBACK_IMAGE_SIZE
    if backbone.fixed_image_size and config.image_size is None:
        size = backbone.fixed_image_size
    spec = RunSpec(
        backbone=backbone.name,
        dataset=dataset,
        strategy=strategy.name,
        seed=seed,
        image_size=size,
        hp=config.hyperparameters_for(strategy.name, strategy.defaults),
        execution=execution,
        weights=backbone.weights if strategy.pretrained else None,
        dataset_fingerprint=splits.fingerprint,
    )
    reason = strategy.skip_reason(backbone)
    if reason is None and backbone.fixed_image_size and size != backbone.fixed_image_size:
        reason = f"{backbone.name} takes only {backbone.fixed_image_size} px input (asked {size})"
    if reason is None and size < backbone.min_image_size:
        reason = f"{backbone.name} needs at least {backbone.min_image_size} px input (asked {size})"
    return PlannedRun(spec, "skipped" if reason else "pending", reason or "")
