"""Tuning (`--tune`): chosen on a validation split, never on the test split; resumable.

The tiny plugin's backbone and dataset train in well under a second, so a
real Optuna study of a few trials per cell runs in seconds.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tlbench import Plugins, hookimpl, testing
from tlbench.budget import budget_indices, validation_split
from tlbench.builtin.strategies import LINEAR
from tlbench.errors import ConfigError
from tlbench.report import summarize
from tlbench.results import read
from tlbench.runner import Runner
from tlbench.tune import TuneSettings, storage_path


def _tuned(config, trials=4, batch=2, **more):
    config.tune, config.tune_batch = trials, batch
    for k, v in more.items():
        setattr(config, k, v)
    return config


def _chosen(records) -> dict[tuple[str, str], dict]:
    return {
        (r["config"]["backbone"], r["config"]["strategy"]): r["tuning"]["chosen"]
        for r in records
        if r.get("tuning")
    }


# --------------------------------------------------------------------------- the split


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=40), min_size=2, max_size=6),
    fraction=st.floats(min_value=0.05, max_value=0.6),
)
def test_validation_split_is_stratified_disjoint_and_leaves_every_class_a_training_image(
    sizes, fraction
):
    labels = np.repeat(np.arange(len(sizes)), sizes)
    np.random.default_rng(len(sizes)).shuffle(labels)
    fit, val = validation_split(labels, fraction)
    assert not set(fit) & set(val)
    assert sorted([*fit, *val]) == list(range(len(labels)))
    for c, n in enumerate(sizes):
        held = int((labels[val] == c).sum())
        assert (labels[fit] == c).sum() >= 1  # a class never loses its last training image
        if n > 1:
            assert held == min(max(1, round(fraction * n)), n - 1)
    # The same split for any run: it depends on the labels and the fraction only.
    again = validation_split(labels.copy(), fraction)
    assert np.array_equal(again[1], val)


def test_budgets_of_a_trial_are_drawn_from_its_fit_part_and_stay_nested():
    labels = np.repeat(np.arange(3), 20)
    fit, val = validation_split(labels, 0.25)
    one, _ = budget_indices(labels[fit], "shots=1", seed=3)
    five, _ = budget_indices(labels[fit], "shots=5", seed=3)
    assert set(fit[one]) <= set(fit[five])
    assert not set(fit[five]) & set(val)


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "change, words",
    [
        ({"trials": 0}, "--tune"),
        ({"validation": 1.0}, "--validation-fraction"),
        ({"batch": 0}, "--tune-batch"),
        ({"sampler": "grid"}, "--tune-sampler"),
        ({"seed": -1}, "--tune-seed"),
    ],
)
def test_bad_tune_settings_are_refused_with_the_flag_named(change, words):
    with pytest.raises(ConfigError, match=words):
        TuneSettings(**{"trials": 2, **change})


# --------------------------------------------------------------------------- a tuned grid


def test_a_tuned_grid_chooses_on_validation_and_reports_only_the_chosen_runs(plugins, tiny_config):
    tiny_config.strategies = ["linear", "finetune"]
    tiny_config.seeds = [0, 1]
    records = Runner(_tuned(tiny_config), plugins).run()
    everything = read(tiny_config.out)
    trials = [r for r in everything if r["config"].get("holdout")]
    # Every cell gets the same number of trials, each evaluated on validation images.
    assert len(trials) == 2 * 4
    for t in trials:
        assert t["config"]["holdout"] == "validation=0.2"
        assert t["data"]["eval_split"] == "validation=0.2"
        assert t["config"]["seed"] == 0
        assert (
            t["data"]["eval_images"] + t["data"]["train_images"]
            == (t["data"]["train_images_available"])
        )
    # The reported runs: every seed, at the chosen settings, on the test split.
    assert {(r["config"]["strategy"], r["config"]["seed"]) for r in records} == {
        ("linear", 0),
        ("linear", 1),
        ("finetune", 0),
        ("finetune", 1),
    }
    for r in records:
        assert r["status"] == "ok", r["reason"]
        tuning = r["tuning"]
        hp = r["config"]["hyperparameters"]
        for name, value in tuning["chosen"].items():
            assert hp[name] == pytest.approx(value)
        assert r["data"]["eval_split"] == "test"
        assert tuning["trials"] == 4
        assert tuning["search_seconds"] > 0
        best = max(t["accuracy"]["final"] for t in trials if t["key"] in tuning["trial_keys"])
        assert tuning["validation_accuracy"] == pytest.approx(best)
    # The report's rows are the chosen runs only: a trial is never a row.
    rows = summarize(everything)
    assert {row.strategy for row in rows} == {"linear", "finetune"}
    assert all(len(row.seed_accuracy) == 2 for row in rows), rows
    assert storage_path(Path(tiny_config.out)).exists()


class _ShuffledTest:
    """`tinyset_shuffled`: tinyset with its test labels permuted (its training split as is)."""

    @hookimpl
    def tlbench_register_datasets(self, register):
        register(testing.lying_tiny_dataset("tinyset_shuffled"))

    @hookimpl
    def tlbench_register_strategies(self, register):
        # A plugin strategy that declares no search space: not tuned, and said so.
        register(dataclasses.replace(LINEAR, name="bare", search_space=()))


@pytest.fixture
def more_plugins():
    return Plugins(
        entry_points=False,
        extra=[("tiny", testing.TINY_PLUGIN), ("shuffled", _ShuffledTest())],
    )


def test_the_test_split_never_reaches_a_choice(more_plugins, tiny_config):
    """Permute the test labels: every chosen configuration stays the same."""
    tiny_config.strategies = ["linear", "finetune"]
    honest = Runner(_tuned(tiny_config), more_plugins).run()
    tiny_config.datasets = ["tinyset_shuffled"]
    tiny_config.out = str(Path(tiny_config.out).with_name("shuffled.jsonl"))
    records = Runner(_tuned(tiny_config), more_plugins).run()
    assert _chosen(records) == _chosen(honest)
    # The test split did change: what is reported on it is not the same.
    assert [r["accuracy"]["final"] for r in records] != [r["accuracy"]["final"] for r in honest]


def test_a_resumed_search_repeats_no_finished_trial_and_chooses_alike(plugins, tiny_config):
    tiny_config.strategies = ["linear"]
    complete = _chosen(Runner(_tuned(tiny_config, trials=6, batch=2), plugins).run())

    # An interrupted search: 2 of 6 trials told, 2 more asked and trained but never told
    # (the driver was killed between a batch's records and telling the study).
    tiny_config.out = str(Path(tiny_config.out).with_name("resumed.jsonl"))
    out = Path(tiny_config.out)
    Runner(_tuned(tiny_config, trials=2, batch=2), plugins).run()
    _ask_and_train_untold(plugins, tiny_config)
    trained_before = {r["key"] for r in read(out) if r["config"].get("holdout")}
    assert len(trained_before) == 4

    resumed = Runner(_tuned(tiny_config, trials=6, batch=2), plugins)
    records = resumed.run()
    trials = [r for r in read(out) if r["config"].get("holdout")]
    keys = [r["key"] for r in trials]
    assert len(keys) == len(set(keys)) == 6  # no finished trial trained twice
    assert _chosen(records) == complete


def _ask_and_train_untold(plugins, config):
    """Ask the next batch of the study and train it, as a driver killed before `tell` did."""
    from tlbench import tune

    runner = Runner(config, plugins)
    plans = runner.plan()
    settings = config.tune_settings()
    settings = dataclasses.replace(settings, trials=4)
    strategy = plugins.strategies.get("linear")
    optuna = tune._optuna()
    study = optuna.load_study(
        study_name=tune.study_name(plans[0].spec, strategy, settings),
        storage=f"sqlite:///{tune.storage_path(runner.out)}",
    )
    cell = tune.CellStudy(
        dataclasses.replace(plans[0].spec, seed=settings.seed), strategy, settings, study
    )
    batch = cell.next_batch()
    assert len(batch) == 2
    runner.run_specs([spec for _, spec in batch])


@pytest.mark.parametrize("pruner", ["none", "halving"])
def test_process_executor_tunes_to_the_same_choices_as_inline(plugins, tiny_config, pruner):
    tiny_config.strategies = ["linear"]
    inline = _chosen(Runner(_tuned(tiny_config, tune_pruner=pruner), plugins).run())
    tiny_config.out = str(Path(tiny_config.out).with_name("process.jsonl"))
    tiny_config.executor = "process"
    process = _chosen(Runner(_tuned(tiny_config, tune_pruner=pruner), plugins).run())
    assert process == inline
    if pruner == "halving":  # a rung in one worker continued the state another left
        rungs = [r["rung"] for r in read(tiny_config.out) if r.get("rung")]
        assert any(r["resumed_from_epoch"] > 0 for r in rungs)


def test_a_strategy_without_a_search_space_runs_untuned_with_a_warning(more_plugins, tiny_config):
    tiny_config.strategies = ["bare"]
    with pytest.warns(UserWarning, match="'bare' declares no search space"):
        (record,) = Runner(_tuned(tiny_config), more_plugins).run()
    assert record["status"] == "ok" and "tuning" not in record
    assert not [r for r in read(tiny_config.out) if r["config"].get("holdout")]


# --------------------------------------------------------------------------- front doors


def test_a_tune_table_in_toml_sets_every_tuning_setting(tmp_path):
    from tlbench.config import make_config

    path = tmp_path / "grid.toml"
    path.write_text(
        '[tune]\ntrials = 6\nvalidation_fraction = 0.25\nbatch = 3\nsampler = "random"\n'
        'pruner = "halving"\nseed = 7\n'
    )
    settings = make_config(path).tune_settings()
    assert settings == TuneSettings(
        trials=6, validation=0.25, batch=3, sampler="random", pruner="halving", seed=7
    )
    path.write_text("[tune]\ntrails = 6\n")
    with pytest.raises(ConfigError, match=r"trails.*trials"):
        make_config(path)


def test_tlbench_run_tunes_with_the_tune_keyword(tmp_path, monkeypatch):
    import tlbench
    from tlbench import plugins as plugin_module

    real = plugin_module.Plugins
    monkeypatch.setattr(
        plugin_module,
        "Plugins",
        lambda **k: real(entry_points=False, extra=[("tiny", testing.TINY_PLUGIN)]),
    )
    results = tlbench.run(
        backbones=["tiny"],
        datasets=["tinyset"],
        strategies=["linear"],
        image_size=16,
        epochs=2,
        tune=2,
        tune_batch=2,
        out=str(tmp_path / "r.jsonl"),
        cache_dir=str(tmp_path / "cache"),
        device="cpu",
    )
    (record,) = results
    assert record["tuning"]["trials"] == 2


def test_the_report_charges_a_tuned_row_its_search_unless_asked_not_to():
    def record(key, strategy, accuracy, train, search=None):
        r = {
            "key": key,
            "status": "ok",
            "time": "2026-12-06T12:00:00+00:00",
            "config": {"backbone": "b", "dataset": "d", "strategy": strategy, "seed": 0},
            "accuracy": {"final": accuracy, "best": accuracy, "best_epoch": 1},
            "cost": {"train_seconds": train, "feature_seconds": 0.0},
        }
        if search is not None:
            r["tuning"] = {"search_seconds": search, "trials": 8, "study": "s"}
        return r

    records = [record("k1", "linear", 0.90, 1.0), record("k2", "finetune", 0.92, 2.0, search=50)]
    honest = {r.strategy: r for r in summarize(records)}
    assert honest["finetune"].search_seconds == 50
    assert "tuned: 8 trials on validation, search 50 s" in honest["finetune"].reason
    # 52 s against 1 s: the more accurate row still is on the frontier (nothing beats it)...
    assert honest["finetune"].pareto and honest["linear"].pareto
    # ...and a cheaper, as-accurate untuned row now beats it only when the search counts.
    records.append(record("k3", "lp-ft", 0.92, 10.0))
    honest = {r.strategy: r for r in summarize(records)}
    trained = {r.strategy: r for r in summarize(records, cost="train")}
    assert not honest["finetune"].pareto and honest["lp-ft"].pareto
    assert trained["finetune"].pareto and not trained["lp-ft"].pareto
    with pytest.raises(ValueError, match="cost must be one of"):
        summarize(records, cost="search")


def test_successive_halving_prunes_on_epochs_and_charges_every_rung(plugins, tiny_config):
    tiny_config.strategies = ["linear"]
    tiny_config.hyperparameters = {"epochs": 9, "batch_size": 16}
    (record,) = Runner(_tuned(tiny_config, trials=6, batch=3, tune_pruner="halving"), plugins).run()
    tuning = record["tuning"]
    trials = [r for r in read(tiny_config.out) if r["config"].get("holdout")]
    # The rungs: the first ninth, the first third, all of the 9-epoch schedule.
    assert sorted({t["config"]["stop_epoch"] for t in trials}) == [1, 3, 9]
    assert {t["config"]["hyperparameters"]["epochs"] for t in trials} == {9}
    assert tuning["pruner"] == "halving" and tuning["trials"] == 6
    # Each trial climbs the rungs in order from the first, each rung continuing the last:
    # a trial's rungs trained its highest rung's epochs once in all.
    by_settings: dict[str, list[dict]] = {}
    for t in trials:
        key = json.dumps(t["config"]["hyperparameters"], sort_keys=True)
        by_settings.setdefault(key, []).append(t["rung"])
    assert len(by_settings) == 6
    climbed = [sorted(r["stop_epoch"] for r in rungs) for rungs in by_settings.values()]
    assert all(stops == [1, 3, 9][: len(stops)] for stops in climbed)
    assert any(len(stops) > 1 for stops in climbed)
    for rungs in by_settings.values():
        for r in rungs:
            before = max(
                (s["stop_epoch"] for s in rungs if s["stop_epoch"] < r["stop_epoch"]), default=0
            )
            assert r["resumed_from_epoch"] == before
            assert r["epochs_trained"] == r["stop_epoch"] - before
    assert tuning["search_epochs"] == sum(max(stops) for stops in climbed)
    assert record["config"]["hyperparameters"]["epochs"] == 9  # the chosen run trains them all
    assert "stop_epoch" not in record["config"]
    # Every trial was told its last result: no rung's state is left.
    assert not Path(tiny_config.out).with_suffix(".tune").exists()


def test_the_report_plots_sensitivity_and_says_how_far_tuning_moved_the_ranking(
    plugins, tiny_config, tmp_path
):
    pytest.importorskip("matplotlib")
    from tlbench.plot import plot_comparison, sensitivity
    from tlbench.report import tuning_changes, tuning_lines

    tiny_config.strategies = ["linear"]
    Runner(_tuned(tiny_config, trials=3, batch=3), plugins).run()
    records = read(tiny_config.out)
    rows = summarize(records)
    found = sensitivity(records, rows)
    assert set(found) == {"lr", "weight_decay"}
    trials = [r for r in records if r["config"].get("holdout")]
    assert sorted(t.value for t in found["lr"]) == sorted(
        t["config"]["hyperparameters"]["lr"] for t in trials
    )
    assert {t.validation_accuracy for t in found["lr"]} == {t["accuracy"]["final"] for t in trials}
    path = plot_comparison(rows, records, tmp_path / "plot.png")
    assert path.stat().st_size > 0
    # Default and tuned rows of two backbones: the ranking change, with Kendall's tau.
    from tlbench.report import Row

    def row(backbone, accuracy, tuned):
        return Row(
            dataset="d",
            backbone=backbone,
            strategy="linear",
            status="ok",
            n=1,
            accuracy=accuracy,
            search_seconds=1.0 if tuned else None,
        )

    changes = tuning_changes(
        [row("a", 0.9, False), row("b", 0.8, False), row("a", 0.85, True), row("b", 0.95, True)]
    )
    (change,) = changes
    assert (change.default, change.tuned) == (["a", "b"], ["b", "a"])
    assert change.tau == pytest.approx(-1.0) and change.mean_gain == pytest.approx(0.05)
    assert "Kendall tau -1.00" in tuning_lines(changes)[0]


def test_a_tuned_grid_run_again_trains_nothing_unless_asked_for_a_checkpoint(plugins, tiny_config):
    tiny_config.strategies = ["linear"]
    Runner(_tuned(tiny_config), plugins).run()
    before = len(read(tiny_config.out))
    Runner(_tuned(tiny_config), plugins).run()
    assert len(read(tiny_config.out)) == before  # trials and chosen runs all done
    # Planning's own rules still hold: a checkpoint asked for and missing trains it again.
    tiny_config.save_models = True
    (record,) = Runner(_tuned(tiny_config), plugins).run()
    assert len(read(tiny_config.out)) == before + 1 and record["cost"]["checkpoint"]


# --------------------------------------------------------------------------- scores, pruning


def _trained(accuracy: float, loss: float | None = 0.5, status: str = "ok") -> dict:
    curve = [] if loss is None else [{"epoch": 1, "eval_accuracy": accuracy, "eval_loss": loss}]
    return {"status": status, "accuracy": {"final": accuracy, "curve": curve}}


def test_a_trials_score_is_its_validation_accuracy_with_ties_broken_by_the_lower_loss():
    from tlbench.tune import MAX_LOSS, score

    assert score(_trained(0.75, 0.2)) > score(_trained(0.75, 0.3))
    # One image more of a split of 999,999 beats any loss; a missing or NaN loss counts as
    # the worst, never as the best.
    assert score(_trained(0.5 + 1 / 999_999, MAX_LOSS * 10)) > score(_trained(0.5, 0.0))
    assert score(_trained(0.75, None)) == score(_trained(0.75, float("nan")))
    assert score(_trained(0.75, None)) < score(_trained(0.75, MAX_LOSS / 2))
    assert score(_trained(0.75, 0.0)) == 0.75
    assert score(_trained(0.9, 0.1, status="failed")) is None and score(None) is None


def _fake_search(tmp_path, accuracy, *, hp=None, loss=lambda lr: 0.5, **settings):
    """`tune.search` over one `linear` cell whose runs 'train' instantly: a run's validation
    accuracy is `accuracy(lr, epochs)` and its loss `loss(lr)`; `settings` make the
    `TuneSettings`. Returns the chosen plan, the learning rates asked in order, and the
    results file beside which the study lives."""
    from tlbench.plugin_types import Hyperparameters, PlannedRun, RunSpec
    from tlbench.tune import search

    hp = hp or Hyperparameters(epochs=2)
    spec = RunSpec("b", "d", "linear", 0, 16, hp, {}, None, "fp")
    records: dict[str, dict] = {}
    lrs: list[float] = []

    def run_specs(specs):
        for s in specs:
            lrs.append(s.hp.lr)
            epochs = s.stop_epoch or s.hp.epochs
            records[s.key] = _trained(accuracy(s.hp.lr, epochs), loss=loss(s.hp.lr))
            records[s.key]["config"] = {"hyperparameters": {"epochs": epochs}}
        return {s.key: records[s.key] for s in specs}

    out = tmp_path / "runs.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    tune = TuneSettings(**settings)
    (plan,) = search([PlannedRun(spec)], lambda _: LINEAR, tune, out, run_specs, lambda: records)
    return plan, lrs, out


def _halving_search(tmp_path, accuracy_of_lr, trials=8, batch=4):
    """A halving search of 9-epoch runs (`_fake_search`): its plan and its study."""
    import optuna

    from tlbench.plugin_types import Hyperparameters

    plan, _, out = _fake_search(
        tmp_path, accuracy_of_lr, hp=Hyperparameters(epochs=9), trials=trials, batch=batch,
        pruner="halving",
    )  # fmt: skip
    storage = f"sqlite:///{storage_path(out)}"
    return plan, optuna.load_study(study_name=plan.spec.tuning["study"], storage=storage)


def test_halving_decides_a_batch_against_its_own_better_trials(tmp_path):
    """A batch's runs end together and are told best first: of a first batch of four at the
    first rung, only the best goes on (told in trial order, each trial better than those
    told before it went on too: the first one always)."""
    import optuna

    states = optuna.trial.TrialState
    # A trial's accuracy rises with its learning rate, at every rung.
    plan, study = _halving_search(tmp_path, lambda lr, epochs: 0.5 + lr, trials=4, batch=4)
    trials = study.get_trials()
    best = max(trials, key=lambda t: t.params["lr"])
    assert best.state == states.COMPLETE and sorted(best.intermediate_values) == [1, 3]
    assert all(t.state == states.PRUNED for t in trials if t is not best)
    assert all(list(t.intermediate_values) == [1] for t in trials if t is not best)
    assert plan.spec.hp.lr == best.params["lr"]


def test_tied_trials_are_chosen_by_their_loss_not_their_number(tmp_path):
    """Every trial ties on accuracy; the chosen one has the lowest loss (here the highest
    learning rate), not the lowest number, and is reported with its accuracy."""
    plan, lrs, _ = _fake_search(
        tmp_path, lambda lr, epochs: 0.75, loss=lambda lr: 1.0 - lr, trials=5, batch=5
    )  # the search's lr <= 0.1
    assert len(lrs) == 5 and lrs.index(max(lrs)) != 0
    assert plan.spec.hp.lr == max(lrs)
    assert plan.spec.tuning["validation_accuracy"] == 0.75


def _asked(tmp_path, seed: int, trials: int = 6) -> list[float]:
    """The learning rates a search of `trials` asks (`_fake_search`)."""
    where = tmp_path / f"seed{seed}"
    return _fake_search(where, lambda lr, epochs: 0.5 + lr, trials=trials, batch=2, seed=seed)[1]


def test_the_tune_seed_draws_other_settings_and_the_same_seed_draws_the_same(tmp_path):
    first, again, other = _asked(tmp_path, 0), _asked(tmp_path / "x", 0), _asked(tmp_path, 1)
    assert first == again
    assert first[0] == other[0]  # the cell's own settings, whatever the seed
    assert len(set(first[1:]) & set(other[1:])) == 0


def _search_of(tmp_path, hp, accuracy_of_lr, trials=6):
    """A search of one `linear` cell of `hp` (`_fake_search`): (plan, lrs)."""
    plan, lrs, _ = _fake_search(
        tmp_path, lambda lr, epochs: accuracy_of_lr(lr), hp=hp, trials=trials, batch=3
    )
    return plan, lrs


def test_trial_0_is_the_cells_own_settings_and_nothing_worse_on_validation_replaces_them(
    tmp_path,
):
    from tlbench.plugin_types import Hyperparameters
    from tlbench.tune import chosen_line

    own = Hyperparameters(epochs=2, lr=0.003, weight_decay=0.002)
    plan, lrs = _search_of(tmp_path, own, lambda lr: 0.9 if lr == 0.003 else 0.8)
    assert lrs[0] == 0.003 and len(lrs) == 6
    tuning = plan.spec.tuning
    assert tuning["chosen"] == {"lr": 0.003, "weight_decay": 0.002}
    assert tuning["chosen_trial"] == tuning["own_settings_trial"] == 0
    assert "its own settings: no trial beat them" in chosen_line(tuning)
    # A trial that scores higher on validation does replace them.
    plan, lrs = _search_of(tmp_path / "b", own, lambda lr: lr)
    assert plan.spec.hp.lr == max(lrs) != 0.003
    assert "own settings" not in chosen_line(plan.spec.tuning)


def test_own_settings_outside_the_search_space_are_not_a_trial(tmp_path):
    from tlbench.plugin_types import Hyperparameters

    plan, lrs = _search_of(tmp_path, Hyperparameters(epochs=2, lr=1.0), lambda lr: 0.5)
    assert 1.0 not in lrs and all(1e-4 <= lr <= 1e-1 for lr in lrs)
    assert plan.spec.tuning["own_settings_trial"] is None


def test_a_tuned_run_into_a_new_folder_makes_it_for_the_studies_too(plugins, tiny_config, tmp_path):
    """The studies' file is opened before any trial's record is written: its folder (the
    results file's, `results/` by default) is made then, not left to the first record."""
    tiny_config.strategies = ["linear"]
    tiny_config.out = str(tmp_path / "new" / "deeper" / "runs.jsonl")
    (record,) = Runner(_tuned(tiny_config), plugins).run()
    assert record["status"] == "ok" and record["tuning"]["trials"] == 4
    assert storage_path(Path(tiny_config.out)).is_file()


def test_a_studies_file_tlbench_cannot_open_is_an_error_naming_it_and_loses_nothing(
    plugins, tiny_config
):
    from tlbench.errors import TlbenchError

    tiny_config.strategies = ["linear"]
    Runner(_tuned(tiny_config), plugins).run()
    out = Path(tiny_config.out)
    kept = out.read_bytes()
    storage_path(out).write_bytes(b"these bytes are not an SQLite database\n" * 64)
    tiny_config.strategies = ["finetune"]  # a new cell: its study must be opened
    with pytest.raises(
        TlbenchError,
        match=r"cannot use the tuning studies in .*\.tune\.db \(file is not a database\)",
    ):
        Runner(_tuned(tiny_config), plugins).run()
    assert out.read_bytes() == kept


# --------------------------------------------------------------------------- halving's rungs


def _curve(record, *names):
    return [tuple(e[n] for n in names) for e in record["accuracy"]["curve"]]


@pytest.mark.parametrize("strategy", ["linear", "finetune", "lp-ft"])
def test_a_rung_continued_from_the_last_ends_exactly_as_one_trained_from_epoch_1(
    plugins, tiny_config, tmp_path, strategy
):
    """A rung is the first epochs of the whole schedule, and continuing the last rung's
    state (weights, optimiser, schedule, random streams) changes nothing but the cost."""
    from tlbench.plan import workspace_for
    from tlbench.trial import run_trial

    tiny_config.strategies = [strategy]
    tiny_config.hyperparameters = {"epochs": 6, "batch_size": 16}
    (plan,) = Runner(tiny_config, plugins).plan()
    spec = dataclasses.replace(plan.spec, holdout="validation=0.25")
    states = tmp_path / "states"
    keep = dataclasses.replace(workspace_for(tiny_config), rung_states=states)
    nowhere = dataclasses.replace(keep, rung_states=None)

    def rung(stop, workspace):
        return run_trial(dataclasses.replace(spec, stop_epoch=stop), workspace, plugins=plugins)

    whole = run_trial(spec, nowhere, plugins=plugins)
    first = rung(2, keep)
    assert sorted(p.name for p in states.iterdir()) == [
        f"{dataclasses.replace(spec, stop_epoch=2).key}.pt"
    ]
    resumed, straight = rung(4, keep), rung(4, nowhere)
    measured = ("epoch", "train_loss", "eval_loss", "eval_accuracy", "lr")
    # The first rung is the whole run's first two epochs: the 6-epoch schedule's rates.
    assert _curve(first, *measured) == _curve(whole, *measured)[:2]
    assert _curve(resumed, *measured) == _curve(straight, *measured) == _curve(whole, *measured)[:4]
    assert resumed["accuracy"]["final_correct"] == straight["accuracy"]["final_correct"]
    assert first["rung"] == {
        "stop_epoch": 2, "of_epochs": 6, "resumed_from_epoch": 0, "epochs_trained": 2,
    }  # fmt: skip
    assert resumed["rung"] == {
        "stop_epoch": 4, "of_epochs": 6, "resumed_from_epoch": 2, "epochs_trained": 2,
    }  # fmt: skip
    assert straight["rung"]["resumed_from_epoch"] == 0
    # The cost is of the epochs trained: half the steps of the rung trained from epoch 1.
    assert 2 * resumed["cost"]["measured_steps"] == straight["cost"]["measured_steps"]
    assert resumed["key"] == straight["key"] != whole["key"]
    assert whole["config"].get("stop_epoch") is None and "rung" not in whole


def test_a_torn_or_foreign_rung_state_is_not_used_and_the_rung_trains_from_epoch_1(
    plugins, tiny_config, tmp_path
):
    from tlbench.plan import workspace_for
    from tlbench.rungs import state_path
    from tlbench.trial import run_trial

    tiny_config.strategies = ["linear"]
    tiny_config.hyperparameters = {"epochs": 6, "batch_size": 16}
    (plan,) = Runner(tiny_config, plugins).plan()
    spec = dataclasses.replace(plan.spec, holdout="validation=0.25")
    states = tmp_path / "states"
    workspace = dataclasses.replace(workspace_for(tiny_config), rung_states=states)
    first, second = (dataclasses.replace(spec, stop_epoch=s) for s in (2, 4))
    run_trial(first, workspace, plugins=plugins)
    whole = run_trial(second, dataclasses.replace(workspace, rung_states=None), plugins=plugins)
    state_path(states, first).write_bytes(b"not a state")
    with pytest.warns(UserWarning, match="unreadable tuning state"):
        torn = run_trial(second, workspace, plugins=plugins)
    # Another batch size's state (an out-of-memory retry's) counts its steps otherwise.
    run_trial(
        dataclasses.replace(first, hp=spec.hp.replace(batch_size=8)), workspace, plugins=plugins
    )
    other = state_path(states, dataclasses.replace(first, hp=spec.hp.replace(batch_size=8)))
    other.replace(state_path(states, first))
    foreign = run_trial(second, workspace, plugins=plugins)
    for record in (torn, foreign):
        assert record["status"] == "ok" and record["rung"]["resumed_from_epoch"] == 0
        assert record["accuracy"]["curve"] == [
            {
                **e,
                "epoch_seconds": r["epoch_seconds"],
                "train_images_per_s": r["train_images_per_s"],
            }
            for e, r in zip(whole["accuracy"]["curve"], record["accuracy"]["curve"], strict=True)
        ]


def test_a_rungs_progress_line_says_where_it_stops():
    from tlbench.console import describe_outcome, describe_spec
    from tlbench.plugin_types import Hyperparameters, RunSpec

    spec = RunSpec("b", "d", "linear", 0, 16, Hyperparameters(epochs=30), {}, None, "fp")
    rung = dataclasses.replace(spec, holdout="validation=0.2", stop_epoch=3)
    assert (
        describe_spec(rung) == "b / linear / d / seed 0 / tuning trial (validation=0.2, to epoch 3)"
    )
    assert describe_spec(spec) == "b / linear / d / seed 0"
    record = {"config": rung.config(), "status": "failed", "reason": "r"}
    assert describe_outcome(record).startswith(describe_spec(rung))
