"""`tlbench select`'s summary at the edges the first tests left open.

Written for the mutants the mutation run's second shard (results/mutation.md) left
alive in `select.summarize`, `_pick`, `_full_grid_cost`, `_interval` and
`two_stages`: the exact sentence that says why the pick is the pick, ties and failed
finalists, a pick that cannot be made, backbones and groups the summary must leave
out or keep, every validation run counted in what the selection spent, the full
grid's cost measured over seeds or scaled by FLOPs from more than one finalist, and
the finalists chosen by the probes' validation accuracy, not their test accuracy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types

import pytest

from tlbench import select
from tlbench.errors import TlbenchError


def _record(
    backbone, strategy, accuracy, *, seed=0, seconds=1.0, flops=None, params=None, **config
):
    return {
        "key": f"{backbone}-{strategy}-{seed}-{config}",
        "status": "ok",
        "config": {"backbone": backbone, "strategy": strategy, "dataset": "d",
                   "dataset_fingerprint": "f", "image_size": 16, "seed": seed, **config},
        "accuracy": {"final": accuracy, "best": accuracy},
        "cost": {"train_seconds": seconds, "feature_seconds": 0.0,
                 "forward_flops_per_image": flops, "total_params": params},
        "data": {"eval_images": 100},
    }  # fmt: skip


def _cell(backbone, strategy):
    return ("d", "f", None, 16, backbone, strategy)


def _summary(records, backbones, *, top_k=2, validation=None, rank_by="probe"):
    (found,) = select.summarize(
        records,
        backbones=backbones,
        finalist_strategy="finetune",
        rank_by=rank_by,
        top_k=top_k,
        validation=validation,
    )
    return found


# --------------------------------------------------------------------------- the pick and why


# Ranked a, b by test accuracy and by parameters (`--rank-by params` ranks without
# validation, so a fine-tune can be a finalist whose probe has no validation run).
PROBES = [_record("a", "linear", 0.70, params=2), _record("b", "linear", 0.60, params=1)]


@pytest.mark.parametrize(
    ("validation", "pick", "why"),
    [
        (
            {_cell("a", "linear"): 0.93, _cell("a", "finetune"): 0.40,
             _cell("b", "linear"): 0.50, _cell("b", "finetune"): 0.90},
            ("a", "linear"),
            "the probe beat the finetune on validation (93.0% against 90.0%): "
            "keep `linear`, the cheaper",
        ),
        (
            {_cell("a", "linear"): 0.70, _cell("b", "linear"): 0.65,
             _cell("a", "finetune"): 0.80, _cell("b", "finetune"): 0.875},
            ("b", "finetune"),
            "the finetune beat the probe on validation (87.5% against 70.0%): keep `finetune`",
        ),
        (
            {_cell("a", "finetune"): 0.875, _cell("b", "finetune"): 0.80},
            ("a", "finetune"),
            "the finetune alone has a validation run (87.5%): keep `finetune`",
        ),
        (
            {_cell("a", "linear"): 0.625, _cell("b", "linear"): 0.60},
            ("a", "linear"),
            "the probe alone has a validation run (62.5%): keep `linear`, the cheaper",
        ),
    ],
    ids=["probe beats finalists", "finalist beats probes", "finalist alone", "probe alone"],
)  # fmt: skip
def test_the_pick_says_which_side_won_on_validation_by_how_much_and_what_is_kept(
    validation, pick, why
):
    finals = [_record("a", "finetune", 0.5), _record("b", "finetune", 0.9)]
    found = _summary(PROBES + finals, ["a", "b"], validation=validation, rank_by="params")
    assert found.finalists == ["a", "b"]
    assert (found.pick, found.pick_strategy) == pick
    assert found.why == why
    assert found.validation == {f"{b} / {s}": v for (*_, b, s), v in validation.items()}


def test_on_equal_validation_accuracy_the_cheaper_probe_is_kept():
    validation = {_cell("a", "linear"): 0.75, _cell("a", "finetune"): 0.75}
    found = _summary([*PROBES, _record("a", "finetune", 0.9)], ["a", "b"], validation=validation)
    assert (found.pick, found.pick_strategy, found.pick_accuracy) == ("a", "linear", 0.70)
    assert found.why == (
        "the probe beat the finetune on validation (75.0% against 75.0%): "
        "keep `linear`, the cheaper"
    )


def test_a_finalist_without_a_test_run_is_not_picked_whatever_its_validation():
    # b's fine-tune ran on the validation split but failed on test: it has no test accuracy.
    validation = {_cell("a", "finetune"): 0.80, _cell("b", "finetune"): 0.99}
    records = [*PROBES, _record("a", "finetune", 0.85)]
    found = _summary(records, ["a", "b"], validation=validation, rank_by="params")
    assert (found.pick, found.pick_strategy, found.pick_accuracy) == ("a", "finetune", 0.85)
    assert found.validation == {"a / finetune": 0.80, "b / finetune": 0.99}
    assert found.why == "the finetune alone has a validation run (80.0%): keep `finetune`"


def test_the_probe_is_picked_when_no_finalist_finished_its_test_run():
    # The probe needs no fine-tune beside it: it is a candidate whatever stage 2 did.
    validation = {_cell("a", "linear"): 0.75, _cell("b", "linear"): 0.70}
    found = _summary(PROBES, ["a", "b"], validation=validation)
    assert (found.pick, found.pick_strategy, found.pick_accuracy) == ("a", "linear", 0.70)
    assert found.why == "the probe alone has a validation run (75.0%): keep `linear`, the cheaper"


def test_without_validation_the_best_tested_finalist_by_test_accuracy_is_the_pick():
    probes = [*PROBES, _record("c", "linear", 0.65)]
    finals = [_record("a", "finetune", 0.80), _record("b", "finetune", 0.70)]
    # top 3: a, c, b; c's fine-tune is missing, and a beats b (the later name) on test.
    found = _summary(probes + finals, ["a", "b", "c"], top_k=3)
    assert found.finalists == ["a", "c", "b"]
    assert (found.pick, found.pick_strategy, found.pick_accuracy) == ("a", "finetune", 0.80)
    assert found.why == "picked by test accuracy: no validation runs were given"
    assert found.validation == {}


@pytest.mark.parametrize("validation", [None, {}], ids=["records alone", "no validation run"])
def test_when_no_finalist_can_be_picked_the_summary_says_so_and_reports_no_figure(validation):
    found = _summary(PROBES, ["a", "b"], validation=validation, rank_by="params")
    assert found.finalists == ["a", "b"]
    assert (found.pick, found.pick_strategy, found.pick_accuracy, found.interval) == (None,) * 4
    assert found.why == (
        "picked by test accuracy: no validation runs were given"
        if validation is None
        else "the finalists have no validation accuracy: nothing could be picked"
    )


def test_one_seed_that_does_not_say_how_many_images_it_was_scored_on_has_no_interval():
    final = _record("a", "finetune", 0.8)
    del final["data"]
    found = _summary([*PROBES, final], ["a", "b"], top_k=1)
    assert (found.pick, found.pick_accuracy, found.interval) == ("a", 0.8, None)


# --------------------------------------------------------------------------- what is summarised


def test_stage_one_ranks_the_probes_by_validation_where_test_disagrees():
    validation = {_cell("a", "linear"): 0.5, _cell("b", "linear"): 0.9}
    found = _summary(PROBES, ["a", "b"], top_k=1, validation=validation)
    assert found.ranking == [("b", 0.9), ("a", 0.5)]
    assert found.finalists == ["b"]


def test_only_the_backbones_asked_for_are_ranked_and_a_failed_probe_is_not():
    failed = _record("b", "linear", 0.99, params=9) | {"status": "failed"}
    other = _record("z", "linear", 0.95, params=5)
    found = _summary([PROBES[0], failed, other], ["a", "b"], rank_by="params")
    assert [b for b, _ in found.ranking] == ["a"]
    assert found.rank_by == "params"


def test_a_group_without_probes_is_skipped_and_the_groups_after_it_are_summarised():
    lone = _record("a", "finetune", 0.9, budget="shots=5")  # no probe at that budget
    found = select.summarize(
        [lone, *PROBES],
        backbones=["a", "b"],
        finalist_strategy="finetune",
        rank_by="probe",
        top_k=1,
    )
    assert [(s.dataset, s.finalists) for s in found] == [("d", ["a"])]


def test_what_the_selection_spent_counts_every_validation_run_of_its_group():
    probes = [_record("a", "linear", 0.7, seconds=1), _record("b", "linear", 0.6, seconds=2)]
    finals = [_record("a", "finetune", 0.8, seconds=10), _record("b", "finetune", 0.7, seconds=20)]
    held = [
        _record(b, s, 0.5, seconds=t, holdout="validation=0.2")
        for b, s, t in (("a", "linear", 100), ("b", "linear", 200), ("a", "finetune", 400))
    ]
    found = _summary(probes + finals + held, ["a", "b"], top_k=1)
    assert found.finalists == ["a"]
    # Both probes, a's fine-tune (b was not a finalist) and the three validation runs.
    assert found.spent_seconds == 1 + 2 + 10 + 100 + 200 + 400


# --------------------------------------------------------------------------- the full grid's cost


def test_the_measured_full_grid_pays_the_mean_fine_tune_once_per_seed():
    records = [
        _record(b, s, 0.5, seed=seed, seconds=t + seed)
        for seed in (0, 1, 2)
        for b, s, t in (("a", "linear", 1), ("b", "linear", 2), ("a", "finetune", 10))
    ] + [_record("b", "finetune", 0.5, seconds=40)]
    found = _summary(records, ["a", "b"])
    # Probes 3 + 5 + 7; fine-tunes 3 seeds x (a's mean 11 + b's only 40).
    assert found.full_grid_basis == "measured"
    assert found.full_grid_seconds == 15 + 3 * (11 + 40)


def test_the_estimate_scales_each_backbone_by_its_flops_at_the_finalists_mean_rate():
    probes = [
        _record("a", "linear", 0.7, seconds=1, flops=1e9),
        _record("b", "linear", 0.6, seconds=2, flops=2e9),
        _record("c", "linear", 0.5, seconds=3, flops=4e9),
    ]
    finals = [_record("a", "finetune", 0.8, seconds=10), _record("b", "finetune", 0.8, seconds=60)]
    found = _summary(probes + finals, ["a", "b", "c"])
    # a: 10 s per GFLOP, b: 30; c is estimated at their mean, 20 s per GFLOP, times 4.
    assert found.full_grid_basis == "estimated"
    assert found.full_grid_seconds == pytest.approx(6 + 10 + 60 + 80)


@pytest.mark.parametrize(
    "flops",
    [
        {"a": 1e9, "b": 2e9},  # c's FLOPs are not known: nothing to scale it by
        {"a": None, "b": 2e9, "c": 4e9},  # the only finalist's FLOPs are not known
        {"a": 0.0, "b": 2e9, "c": 4e9},
    ],
)
def test_without_flops_to_scale_by_the_full_grid_cost_is_unknown(flops):
    probes = [_record(b, "linear", 0.9 - i / 10, flops=flops.get(b)) for i, b in enumerate("abc")]
    found = _summary([*probes, _record("a", "finetune", 0.8, seconds=10)], ["a", "b", "c"])
    assert (found.full_grid_seconds, found.full_grid_basis) == (None, "unknown")


# --------------------------------------------------------------------------- the two stages


@dataclasses.dataclass
class _Config:
    backbones: list[str]
    strategies: list[str]
    validation_fraction: float = 0.2


class _Grid:
    """A grid that trains nothing: each cell answers with its test accuracy (None: it
    failed), and brings its validation accuracy as a tuned run does
    (`tuning.validation_accuracy`)."""

    def __init__(self, test, validation, latency=None):
        self.test, self.validation, self.latency = test, validation, latency or {}
        self.config = _Config(backbones=sorted({b for b, _ in test}), strategies=["finetune"])
        self.log = types.SimpleNamespace(records=[])

    def run(self, config, during=contextlib.nullcontext):
        records, plans = [], []
        with during():  # as the grid does: `during()` wraps the training
            self._train(config, records, plans)
        self.log.records += records
        return types.SimpleNamespace(plans=plans, records=lambda: records)

    def _train(self, config, records, plans):
        for b in config.backbones:
            for s in config.strategies:
                records.append(_record(b, s, self.test[b, s]))
                records[-1]["inference"] = {"latency_ms_p50": self.latency.get(b)}
                if self.test[b, s] is None:
                    records[-1]["status"] = "failed"
                spec = types.SimpleNamespace(
                    dataset="d", dataset_fingerprint="f", budget=None, image_size=16,
                    backbone=b, strategy=s, tuning={"validation_accuracy": self.validation[b, s]},
                )  # fmt: skip
                plans.append(types.SimpleNamespace(status="ok", spec=spec))


def test_two_stages_fine_tunes_the_probes_best_on_validation_not_on_test():
    # a's probe is the better on test, b's on validation: stage 2 fine-tunes b alone.
    test = {
        ("a", "linear"): 0.9,
        ("b", "linear"): 0.6,
        ("a", "finetune"): 0.95,
        ("b", "finetune"): 0.7,
    }
    validation = {("a", "linear"): 0.5, ("b", "linear"): 0.8, ("a", "finetune"): 0.6,
                  ("b", "finetune"): 0.85}  # fmt: skip
    stages = select.two_stages(
        _Grid(test, validation), rank_by="probe", top_k=1, finalist="finetune"
    )
    (found,) = stages.selections
    assert found.ranking == [("b", 0.8), ("a", 0.5)]
    assert found.finalists == ["b"] and found.accuracy == {"b": 0.7}
    assert (found.pick, found.pick_strategy, found.pick_accuracy) == ("b", "finetune", 0.7)


def test_the_callers_during_wraps_the_training_of_both_stages():
    # The CLI's `during` turns a stop signal into an interrupt while a stage trains (the
    # interrupted records, exit 128 + signal); a stage trained outside it would not get that.
    depth = [0]
    trained = []

    @contextlib.contextmanager
    def during():
        depth[0] += 1
        try:
            yield
        finally:
            depth[0] -= 1

    class Watched(_Grid):
        def _train(self, config, records, plans):
            trained.append((config.strategies, depth[0]))
            super()._train(config, records, plans)

    test = {("a", "linear"): 0.9, ("b", "linear"): 0.6, ("a", "finetune"): 0.95}
    select.two_stages(
        Watched(test, dict.fromkeys(test, 0.5)),
        rank_by="probe", top_k=1, finalist="finetune", during=during,
    )  # fmt: skip
    assert trained == [(["linear"], 1), (["finetune"], 1)]


def test_when_no_backbone_answers_within_the_latency_budget_the_error_says_each_ones_latency():
    test = {("a", "linear"): 0.9, ("b", "linear"): 0.6, ("c", "linear"): 0.5}
    grid = _Grid(test, dict.fromkeys(test, 0.5), latency={"b": 12.5, "c": 40})
    with pytest.raises(TlbenchError) as info:
        select.two_stages(grid, rank_by="probe", top_k=1, finalist="finetune", max_latency_ms=5)
    assert str(info.value) == (
        "no backbone answers within --max-latency-ms 5: a (not measured), b (12.5 ms), "
        "c (40.0 ms). Raise the budget, or add smaller backbones"
    )


def test_when_every_probe_failed_the_error_says_stage_1_found_nothing():
    grid = _Grid({("a", "linear"): None}, {("a", "linear"): 0.5})
    with pytest.raises(TlbenchError) as info:
        select.two_stages(grid, rank_by="probe", top_k=1, finalist="finetune")
    assert str(info.value) == "no backbone finished stage 1 (the probes); see the table above"


def test_a_selection_under_a_latency_budget_reports_the_budget_and_who_was_left_out():
    test = {("a", "linear"): 0.9, ("b", "linear"): 0.6, ("b", "finetune"): 0.7}
    grid = _Grid(test, dict.fromkeys(test, 0.5), latency={"a": 12.5, "b": 2.0})
    stages = select.two_stages(
        grid, rank_by="probe", top_k=1, finalist="finetune", max_latency_ms=5
    )
    (found,) = stages.selections
    assert (found.max_latency_ms, found.over_latency) == (5, {"a": 12.5})
    assert (found.finalists, found.pick) == (["b"], "b")
    assert stages.checks == []  # a was never fine-tuned: no ranking to check


def test_when_every_backbone_is_a_finalist_the_ranking_is_checked_against_its_strategy():
    probe = {"a": 0.9, "b": 0.8, "c": 0.7}
    test = {(b, "linear"): v for b, v in probe.items()}
    test |= {(b, "lp-ft"): 1.6 - v for b, v in probe.items()}  # the probe's order reversed
    stages = select.two_stages(_Grid(test, test), rank_by="probe", top_k=3, finalist="lp-ft")
    checks = {c.rank_by: c for c in stages.checks}
    assert checks["probe"].against == "lp-ft" and checks["probe"].backbones == 3
    assert (checks["probe"].tau, checks["probe"].regret) == pytest.approx((-1.0, 0.2))


# --------------------------------------------------------------------------- stage 1's inputs


def test_finalists_are_the_best_of_each_dataset_not_of_all_datasets_together():
    probes = [
        _record("a", "linear", 0.9),
        _record("b", "linear", 0.8),
        _record("c", "linear", 0.4, dataset="other"),
        _record("a", "linear", 0.3, dataset="other"),
    ]
    assert select.finalists(probes, "probe", 1) == ["a", "c"]


def test_each_cell_not_skipped_is_scored_once_on_validation_as_a_seed_0_trial():
    from tlbench.plugin_types import Hyperparameters, PlannedRun, RunSpec

    def spec(backbone, seed, tuning=None):
        return RunSpec(backbone, "d", "linear", seed, 16, Hyperparameters(), {}, None, "f",
                       tuning=tuning)  # fmt: skip

    asked: list[RunSpec] = []

    def run_specs(specs):
        asked.extend(specs)
        return {s.key: {"status": "ok", "accuracy": {"final": 0.5}} for s in specs}

    plans = [
        PlannedRun(spec("skipped", 3), "skipped", "cannot run here"),
        PlannedRun(spec("a", 3, tuning={"study": "s", "validation_accuracy": None})),
        PlannedRun(spec("a", 4)),  # the same cell, another seed: scored once
        PlannedRun(spec("tuned", 3, tuning={"study": "s", "validation_accuracy": 0.75})),
    ]
    outcome = types.SimpleNamespace(plans=plans, runner=types.SimpleNamespace(run_specs=run_specs))
    found = select.validation_accuracies(outcome, 0.2)
    assert found == {("d", "f", None, 16, "a", "linear"): 0.5,
                     ("d", "f", None, 16, "tuned", "linear"): 0.75}  # fmt: skip
    (trial,) = asked
    assert (trial.backbone, trial.seed, trial.holdout, trial.tuning) == (
        "a",
        0,
        "validation=0.2",
        None,
    )
