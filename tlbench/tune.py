"""Tuning: every cell of a grid searched the same way on a validation split.

With `--tune N`, each cell of the grid (backbone x dataset x strategy x
budget x image size) becomes an Optuna study of N trials over the
strategy's `search_space`. A trial is an ordinary run spec with
`holdout="validation=F"`: it trains on the training split less a stratified
fraction F of each class (`tlbench.budget.validation_split`) and is scored by
its final accuracy on that fraction, ties broken by the lower validation
loss (`score`). Trial 0 is the cell's own settings (what it trains with
untuned), so a search never chooses settings that score lower on validation
than those. The test split is never read by a trial. The chosen configuration then trains with every seed of the grid on
the whole training split and is evaluated once on the test split: those are
the rows the report shows, each with a `tuning` part that names the study,
its chosen settings and what the search cost.

Fairness: every cell gets the same number of trials, the same sampler and
the same seed. Trials are asked `batch` at a time, whatever the executor,
so `--executor process` runs them in parallel and makes the same choices as
inline (training is deterministic). Trials go through the runner like any
run: each is one record in the results file, and a trial already there is
never trained again.

Resuming: the studies live in one SQLite file beside the results file
(`runs.jsonl` -> `runs.tune.db`). A trial asked but never told (the driver
was killed) is run again with the same settings, or read from the results
file when its record is there, so a resumed search makes the choices an
uninterrupted one would have.

Successive halving (`--tune-pruner halving`): a trial trains in rungs, each
the first epochs of its whole schedule (`RunSpec.stop_epoch`); a promoted
trial's next rung continues from the state its last rung left in
`runs.tune/` (`tlbench.rungs`), so a trial that climbs every rung trains its
epochs once. A trial's states are deleted when it is told its last result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlbench.budget import holdout_name
from tlbench.cache import cache_key
from tlbench.errors import ConfigError, TlbenchError
from tlbench.plugin_types import PlannedRun, RunSpec, SearchDim, Strategy
from tlbench.rungs import forget

if TYPE_CHECKING:
    import optuna

#: bumped when a study's meaning changes (its name holds it, so old studies are not resumed).
#: 2: scores break ties by the validation loss, samplers are seeded per trial, and halving
#: is told each batch best first. 3: trial 0 is the cell's own settings. 4: a halving rung
#: is the first epochs of the whole schedule, continued by the next rung.
TUNE_VERSION = 4
SAMPLERS = ("tpe", "random")
#: "none": every trial trains all its epochs; "halving": successive halving on epochs.
PRUNERS = ("none", "halving")


@dataclass(frozen=True)
class TuneSettings:
    """How every cell of a grid is tuned (`--tune`, `[tune]`, `tlbench.run(tune=...)`)."""

    #: trials per cell: every backbone gets the same search budget.
    trials: int
    #: fraction of each class of the training split held out to choose on.
    validation: float = 0.2
    #: trials asked at once; the same for every executor, so every executor chooses alike.
    batch: int = 4
    #: Optuna's TPE (Bergstra et al. 2011), or random search.
    sampler: str = "tpe"
    #: the sampler's seed, and the seed every trial trains with.
    seed: int = 0
    #: "halving": Optuna's successive-halving pruner on epochs (each trial trains a third
    #: of the epochs, then the best third of the trials all of them, and so on).
    pruner: str = "none"
    #: successive halving keeps 1 in `reduction` trials from one rung to the next.
    reduction: int = 3

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ConfigError(
                f"--tune takes the number of trials per cell (>= 1), not {self.trials}"
            )
        if not 0 < self.validation < 1:
            raise ConfigError(f"--validation-fraction must be in (0, 1), not {self.validation!r}")
        if self.batch < 1:
            raise ConfigError(f"--tune-batch must be at least 1, not {self.batch}")
        if self.pruner not in PRUNERS:
            raise ConfigError(
                f"--tune-pruner must be one of {', '.join(PRUNERS)}, not {self.pruner!r}"
            )
        if self.reduction < 2:
            raise ConfigError(
                f"the halving reduction factor must be 2 or more, not {self.reduction}"
            )
        if self.seed < 0:
            raise ConfigError(f"--tune-seed must be 0 or more, not {self.seed}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(
                f"--tune-sampler must be one of {', '.join(SAMPLERS)}, not {self.sampler!r}"
            )

    @property
    def holdout(self) -> str:
        return holdout_name(self.validation)


def storage_path(out: Path) -> Path:
    """The studies' SQLite file beside the results file: `runs.jsonl` -> `runs.tune.db`."""
    return out.with_suffix(".tune.db")


def rung_states_path(out: Path) -> Path:
    """The folder where halving rungs leave their training state: `runs.jsonl` -> `runs.tune/`."""
    return out.with_suffix(".tune")


def rung_states_for(out: Path, pruner: str) -> Path | None:
    """`rung_states_path(out)` where the search prunes by rungs (halving), else None."""
    return rung_states_path(out) if pruner != "none" else None


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError(
            "--tune needs Optuna: pip install 'tlbench[tune]' (or pip install optuna)"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


@dataclass
class CellStudy:
    """One cell's search: its Optuna study and the run spec its trials vary.

    Without a pruner a trial is one run of all the epochs. With successive
    halving a trial trains at each rung of `rungs()` in turn: a rung is the
    first epochs of the whole schedule (`RunSpec.stop_epoch`), continued from
    the trial's last rung (`tlbench.rungs`); its validation accuracy is
    reported at that epoch, and the pruner stops the trial or lets it on.
    """

    base: RunSpec
    strategy: Strategy
    settings: TuneSettings
    study: optuna.Study
    #: where rungs leave their training state (`Workspace.rung_states`); None: nowhere.
    states: Path | None = None

    @property
    def name(self) -> str:
        return self.study.study_name

    def rungs(self) -> list[int]:
        """The epochs a trial trains at, rung by rung (the last: all of them)."""
        return rungs(self.base.hp.epochs, self.settings)

    def spec(self, params: dict[str, Any], rung: int | None = None) -> RunSpec:
        """The run of a trial with `params` to epoch `rung` of its schedule (default: all of
        it). Every rung of a halving search stops at an epoch, the last one included."""
        return dataclasses.replace(
            self.base,
            seed=self.settings.seed,
            hp=self.base.hp.replace(**params),
            holdout=self.settings.holdout,
            stop_epoch=rung if self.settings.pruner != "none" else None,
        )

    def _epoch(self, spec: RunSpec) -> int:
        """The rung `spec` stops at."""
        return spec.stop_epoch if spec.stop_epoch is not None else spec.hp.epochs

    def _rung_of(self, trial: Any) -> int | None:
        """The next rung of a running trial: the first it has no value at (None: none left)."""
        done = set(trial.intermediate_values)
        return next((r for r in self.rungs() if r not in done), None)

    def next_batch(self) -> list[tuple[int, RunSpec]]:
        """Runs to train now: every running trial's next rung (a killed driver's trials
        included), then new trials' first rung while the round has room (`batch`)."""
        optuna = _optuna()
        states = optuna.trial.TrialState
        trials = self.study.get_trials(deepcopy=False)
        told = sum(t.state in (states.COMPLETE, states.FAIL, states.PRUNED) for t in trials)
        running = [t for t in trials if t.state == states.RUNNING]
        out = []
        for t in running:
            rung = self._rung_of(t)
            if rung is not None:
                out.append((t.number, self.spec(t.params, rung)))
        # New trials fill the batch up: a round holds `batch` runs or the running trials'
        # (so a resumed round asks what the interrupted one would have, and no more).
        distributions = _distributions(self.strategy.search_space)
        if not trials:
            self._enqueue_own_settings()
        new = 0
        while len(out) < self.settings.batch and told + len(running) + new < self.settings.trials:
            self.study.sampler = _sampler(self.settings, len(trials) + new)
            trial = self.study.ask(distributions)
            out.append((trial.number, self.spec(trial.params, self.rungs()[0])))
            new += 1
        return out

    def own_settings(self) -> dict[str, Any] | None:
        """The cell's own settings of the searched hyperparameters (what it trains with
        untuned), or None when one lies outside the search space."""
        own = {d.name: getattr(self.base.hp, d.name) for d in self.strategy.search_space}
        inside = all(
            own[d.name] in d.choices if d.choices else d.low <= own[d.name] <= d.high
            for d in self.strategy.search_space
        )
        return own if inside else None

    def _enqueue_own_settings(self) -> None:
        """Trial 0 of a new study is the cell's own settings: the search then never chooses
        settings that score lower on validation than those it would replace (with 144
        validation images, a trial can beat untried defaults by luck alone)."""
        own = self.own_settings()
        if own is not None:
            self.study.enqueue_trial(own)

    def tell(self, number: int, spec: RunSpec, record: dict[str, Any] | None) -> None:
        """Trial `number`'s run `spec` finished with `record`: score it, prune it or go on."""
        optuna = _optuna()
        states = optuna.trial.TrialState
        value = score(record)
        if value is None:
            self.study.tell(number, state=states.FAIL)
        elif self._epoch(spec) == self.rungs()[-1]:
            self.study.tell(number, float(value))
        else:
            storage = self.study._storage  # the ask-and-tell API has no trial by number
            trial = optuna.trial.Trial(
                self.study,
                storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number),
            )
            trial.report(float(value), self._epoch(spec))
            if not trial.should_prune():
                return  # on to its next rung, which continues from this one's state
            self.study.tell(number, state=states.PRUNED)
        if self.states is not None:  # the trial trains no further rung
            forget(self.states, [dataclasses.replace(spec, stop_epoch=r) for r in self.rungs()])

    def trial_specs(self) -> list[RunSpec]:
        """Every run of every trial so far: each rung it reached (a pruned trial's too)."""
        optuna = _optuna()
        states = optuna.trial.TrialState
        last = self.rungs()[-1]
        out = []
        for t in self.study.get_trials(deepcopy=False):
            epochs = [r for r in self.rungs() if r in t.intermediate_values]
            if t.state == states.COMPLETE and last not in epochs:
                epochs.append(last)
            elif t.state == states.FAIL and self._rung_of(t) is not None:
                epochs.append(self._rung_of(t))  # the run that failed
            out += [self.spec(t.params, e) for e in epochs]
        return out

    def summary(self, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The `tuning` part of each reported record of this cell."""
        optuna = _optuna()
        trials = self.study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            return {"study": self.name, "trials": 0, "chosen": None}
        best = max(complete, key=lambda t: (t.value, -t.number))  # the first of equals
        keys = [spec.key for spec in self.trial_specs()]
        found = [records.get(k) or {} for k in keys]
        accuracy = _validation_accuracy(records.get(self.spec(best.params, self.rungs()[-1]).key))
        seconds = [(r.get("cost") or {}).get("wall_seconds") or 0.0 for r in found]
        epochs = sum(_epochs_trained(r) for r in found)
        return {
            "study": self.name,
            "sampler": self.settings.sampler,
            "pruner": self.settings.pruner,
            "seed": self.settings.seed,
            "holdout": self.settings.holdout,
            "space": [d.describe() for d in self.strategy.search_space],
            "trials": len(trials),
            "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
            "trial_keys": keys,
            "chosen": dict(best.params),
            "chosen_trial": best.number,
            # the trial that tried the cell's own settings (None: they lie outside the space)
            "own_settings_trial": 0 if self.own_settings() == dict(trials[0].params) else None,
            "validation_accuracy": best.value if accuracy is None else accuracy,
            "search_seconds": float(sum(seconds)),
            "search_epochs": int(epochs),
        }


def _epochs_trained(record: dict[str, Any]) -> int:
    """The epochs a trial's run trained: a rung continued from an earlier one trained
    only those after it (`tlbench.rungs`)."""
    rung = record.get("rung") or {}
    if isinstance(rung.get("epochs_trained"), int):
        return int(rung["epochs_trained"])
    return int((record.get("config") or {}).get("hyperparameters", {}).get("epochs", 0))


def _distributions(space: Sequence[SearchDim]) -> dict[str, Any]:
    optuna = _optuna()
    out: dict[str, Any] = {}
    for dim in space:
        if dim.choices:
            out[dim.name] = optuna.distributions.CategoricalDistribution(list(dim.choices))
        else:
            out[dim.name] = optuna.distributions.FloatDistribution(
                float(dim.low), float(dim.high), log=dim.log
            )
    return out


def study_name(spec: RunSpec, strategy: Strategy, settings: TuneSettings) -> str:
    """A cell's study: everything its trials share (not the seed, not the searched values)."""
    cell = dataclasses.replace(spec, seed=settings.seed, holdout=settings.holdout)
    space = [d.describe() for d in strategy.search_space]
    pruner = [] if settings.pruner == "none" else [settings.pruner, settings.reduction]
    return cache_key(
        "study", TUNE_VERSION, cell.key, space, settings.sampler, settings.seed, *pruner
    )


def rungs(epochs: int, settings: TuneSettings) -> list[int]:
    """The epochs a trial of a cell of `epochs` trains at, rung by rung (the last: all)."""
    if settings.pruner == "none":
        return [epochs]
    out: list[int] = []
    for k in range(2, -1, -1):  # three rungs: epochs / r^2, epochs / r, epochs
        rung = max(1, round(epochs / settings.reduction**k))
        if rung not in out:
            out.append(rung)
    return out


def _pruner(settings: TuneSettings, epochs: int) -> Any:
    optuna = _optuna()
    if settings.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=rungs(epochs, settings)[0], reduction_factor=settings.reduction
    )


def _sampler(settings: TuneSettings, number: int = 0) -> Any:
    """The sampler that asks for trial `number`, seeded by the search's seed and `number`.

    Optuna's samplers draw from one random stream per sampler object, so a
    search resumed in a new process would draw other settings than the
    uninterrupted one from the same trials told. Seeded per trial, trial
    `number` gets the same settings from the same history in any process.
    """
    import numpy as np

    optuna = _optuna()
    seed = int(np.random.SeedSequence([settings.seed, number]).generate_state(1)[0])
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # A seeded TPE whose first quarter of trials (at least two) is random start-up.
    startup = max(2, settings.trials // 4)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


RunSpecs = Callable[[list[RunSpec]], dict[str, dict[str, Any]]]
Answers = Callable[[], dict[str, Any]]


def search(
    plans: list[PlannedRun],
    strategies: Callable[[str], Strategy],
    settings: TuneSettings,
    out: Path,
    run_specs: RunSpecs,
    answers: Answers,
) -> list[PlannedRun]:
    """Tune every cell of `plans`; return the plans with each cell's chosen settings.

    `run_specs(specs)` trains the specs not already in the results file and
    returns the record of each key; `answers()` is the results file's answer
    of each key (both the runner's). Cells whose strategy has no search
    space keep their settings, with a warning. The studies' file is made
    beside the results file (its folder too); one that cannot be read or
    written is a `TlbenchError` naming it.
    """
    from sqlalchemy.exc import SQLAlchemyError  # Optuna's storage: a dependency of Optuna

    path = storage_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)  # made before any trial's record is
    states = rung_states_for(out, settings.pruner)
    try:
        cells, cell_of = _studies(plans, strategies, settings, f"sqlite:///{path}", states)
        tuned = _search(plans, cells, cell_of, run_specs, answers)
    except SQLAlchemyError as exc:
        raise TlbenchError(
            f"cannot use the tuning studies in {path} ({getattr(exc, 'orig', None) or exc}). "
            "Free the disk or make the folder writable; a file that is not a study database "
            "can be moved away: the searches then start again, and every trial already in "
            "the results file is read from there, not trained again"
        ) from None
    if states is not None and states.is_dir() and not any(states.iterdir()):
        with contextlib.suppress(OSError):  # every trial told its last result: none is needed
            states.rmdir()
    return tuned


def _studies(
    plans: list[PlannedRun],
    strategies: Callable[[str], Strategy],
    settings: TuneSettings,
    storage: str,
    states: Path | None,
) -> tuple[dict[str, CellStudy], dict[int, str]]:
    """Each cell's study (made, or loaded from `storage`), by name, and each tuned plan's
    cell by its place in `plans`; `states`: the folder of the rungs' training states."""
    optuna = _optuna()
    cells: dict[str, CellStudy] = {}
    cell_of: dict[int, str] = {}
    untuned: set[str] = set()
    for i, p in enumerate(plans):
        if p.status == "skipped":
            continue
        strategy = strategies(p.spec.strategy)
        if not strategy.search_space:
            untuned.add(strategy.name)
            continue
        name = cell_of[i] = study_name(p.spec, strategy, settings)
        if name not in cells:
            study = optuna.create_study(
                study_name=name,
                storage=storage,
                load_if_exists=True,
                direction="maximize",
                sampler=_sampler(settings),
                pruner=_pruner(settings, p.spec.hp.epochs),
            )
            base = dataclasses.replace(p.spec, seed=settings.seed)
            cells[name] = CellStudy(base, strategy, settings, study, states)
    for name in sorted(untuned):
        warnings.warn(
            f"strategy {name!r} declares no search space: its runs are not tuned",
            UserWarning,
            stacklevel=2,
        )
    return cells, cell_of


def _search(
    plans: list[PlannedRun],
    cells: dict[str, CellStudy],
    cell_of: dict[int, str],
    run_specs: RunSpecs,
    answers: Answers,
) -> list[PlannedRun]:
    """Run `cells`' trials batch by batch until every study is done; `plans` with each
    tuned plan's chosen settings (`cell_of`: a plan's cell by its place in `plans`)."""
    records: dict[str, dict[str, Any]] = {}
    while True:
        batch = [(cell, n, spec) for cell in cells.values() for n, spec in cell.next_batch()]
        if not batch:
            break
        records.update(run_specs([spec for _, _, spec in batch]))
        for cell, number, spec in _telling_order(batch, records):
            cell.tell(number, spec, records.get(spec.key))
    # Every trial's record, those of earlier invocations included, for the search cost.
    everything = answers()
    summaries = {name: cell.summary(everything) for name, cell in cells.items()}
    return [_chosen(p, summaries[cell_of[i]]) if i in cell_of else p for i, p in enumerate(plans)]


Told = tuple[CellStudy, int, RunSpec]


def _telling_order(batch: list[Told], records: dict[str, dict[str, Any]]) -> list[Told]:
    """The batch's runs in the order their results are told: best first.

    Optuna's successive-halving pruner is asynchronous: it decides on a trial
    as soon as it is told, against the values told so far at that rung, and
    lets the first trials at a rung through before there are others to
    compare them with. A batch's runs all finished together, so telling the
    best first has every later one decided against the better ones of its
    own batch, as a synchronous round would. Ties keep the trial numbers'
    order, so the choices stay the same whatever the executor.
    """

    def value(told: Told) -> float:
        got = score(records.get(told[2].key))
        return float("-inf") if got is None else got

    return sorted(batch, key=lambda told: (-value(told), told[1]))


#: how much the validation loss weighs in a trial's score: it breaks ties of accuracy only
#: (a loss of at most `MAX_LOSS` weighs less than one image of a split under a million).
LOSS_WEIGHT = 1e-9
MAX_LOSS = 1e3


def _validation_accuracy(record: dict[str, Any] | None) -> float | None:
    """A trial's run's final accuracy on the validation split (None: it failed)."""
    record = record or {}
    final = (record.get("accuracy") or {}).get("final")
    ok = record.get("status") == "ok" and isinstance(final, (int, float))
    return float(final) if ok else None


def score(record: dict[str, Any] | None) -> float | None:
    """What a trial is chosen (and pruned) on: its final validation accuracy, ties broken
    by the lower final validation loss (None: the run failed).

    144 validation images allow 145 accuracies, and a search's best settings
    often tie on them; without a tie-break the pruner lets every tie through
    and the first of equals is chosen whatever its loss.
    """
    accuracy = _validation_accuracy(record)
    if accuracy is None:
        return None
    curve = (record or {}).get("accuracy", {}).get("curve") or [{}]
    loss = curve[-1].get("eval_loss")
    finite = isinstance(loss, (int, float)) and math.isfinite(loss)
    return accuracy - LOSS_WEIGHT * (min(max(loss, 0.0), MAX_LOSS) if finite else MAX_LOSS)


def _chosen(p: PlannedRun, tuning: dict[str, Any]) -> PlannedRun:
    """`p` at its cell's chosen settings, carrying the search (`tuning`)."""
    if tuning["chosen"] is None:
        return PlannedRun(p.spec, "skipped", "every tuning trial failed: see their records")
    spec = dataclasses.replace(p.spec, hp=p.spec.hp.replace(**tuning["chosen"]), tuning=tuning)
    return PlannedRun(spec, "pending", "")


def chosen_line(tuning: dict[str, Any]) -> str:
    """One line for the console: what a cell chose, on what, at what cost."""
    chosen = ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in sorted((tuning.get("chosen") or {}).items())
    )
    own = tuning.get("own_settings_trial")
    kept = " (its own settings: no trial beat them)" if own == tuning.get("chosen_trial") else ""
    return (
        f"{chosen}{kept} ({tuning['trials']} trials, validation "
        f"{100 * tuning['validation_accuracy']:.1f}%, search {tuning['search_seconds']:.1f} s)"
    )
