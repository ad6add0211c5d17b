"""`tlbench report` checks the shortcut: how well each ranking predicted the fine-tuned accuracies.

Three backbones, each probed (`linear`, with transferability scores) and
fine-tuned, on one dataset. The fine-tuned accuracies rank them a > b > c
(0.90, 0.80, 0.70). The weighted taus and regrets below are worked out by hand.

The probe (0.6, 0.7, 0.5) ranks them b > a > c: the pair (a, b) is discordant,
(a, c) and (b, c) concordant. scipy's weightedtau (hyperbolic weights 1/(r+1),
a pair weighs the sum of its two weights, averaged over the ranking by the
score and by the accuracy):

- by the probe's ranks b=0, a=1, c=2: weights b 1, a 1/2, c 1/3, so the pairs
  weigh (a,b) 3/2, (a,c) 5/6, (b,c) 4/3; tau = (-3/2 + 5/6 + 4/3) / (11/3) = 2/11;
- by the accuracy's ranks a=0, b=1, c=2: (a,b) 3/2, (a,c) 4/3, (b,c) 5/6; again 2/11.

So tau = 2/11 = 0.18, and picking the probe's first (b, 0.80) costs 0.90 - 0.80
= 10 points. Parameter counts (5, 9, 1) rank the same way: the same tau and
regret. LogME (0.3, 0.2, 0.1) agrees exactly: tau +1, regret 0. k-NN (0.1, 0.2,
0.3) reverses it: tau -1, and it picks c, 20 points behind. No H-score is
recorded, so it has no row.
"""

from __future__ import annotations

import json

import pytest

from tlbench import results, select
from tlbench.cli import main

DATASET = "imagefolder:/data/sets/flowers12"


def record(backbone, strategy, accuracy, *, seed=0, params=None, scores=None, dataset=DATASET):
    r = {
        "schema": 2,
        "key": f"{dataset}/{backbone}/{strategy}/{seed}",
        "status": "ok",
        "config": {"backbone": backbone, "strategy": strategy, "seed": seed, "dataset": dataset,
                   "dataset_fingerprint": "fp", "image_size": 32},
        "accuracy": {"final": accuracy, "best": accuracy},
        "cost": {"train_seconds": 1.0, "feature_seconds": 0.0, "total_params": params},
        "data": {"eval_images": 100},
    }  # fmt: skip
    if scores is not None:
        r["scores"] = scores
    return r


GRID = [
    record("a", "linear", 0.6, params=5, scores={"logme": 0.3, "knn_accuracy": 0.1}),
    record("b", "linear", 0.7, params=9, scores={"logme": 0.2, "knn_accuracy": 0.2}),
    record("c", "linear", 0.5, params=1, scores={"logme": 0.1, "knn_accuracy": 0.3}),
    record("a", "finetune", 0.9, params=5),
    record("b", "finetune", 0.8, params=9),
    record("c", "finetune", 0.7, params=1),
]

EXPECTED = {  # rank_by -> (tau, regret), worked out in the module docstring
    "probe": (2 / 11, 0.10),
    "params": (2 / 11, 0.10),
    "logme": (1.0, 0.0),
    "knn_accuracy": (-1.0, 0.20),
}


def test_the_checks_hold_the_worked_out_taus_and_regrets():
    checks = select.report_checks(GRID)
    found = {c.rank_by: (c.tau, c.regret) for c in checks}
    assert set(found) == set(EXPECTED)  # no H-score recorded: no row for it
    for name, (tau, regret) in EXPECTED.items():
        assert found[name] == pytest.approx((tau, regret)), name
    assert {(c.dataset, c.backbones, c.against) for c in checks} == {(DATASET, 3, "finetune")}


def test_two_backbones_are_not_a_grid_to_check():
    two = [r for r in GRID if r["config"]["backbone"] != "c"]
    assert select.report_checks(two) == []
    assert select.report_checks([r for r in GRID if r["config"]["strategy"] == "linear"]) == []


def test_a_failed_rerun_does_not_hide_the_answer_and_reruns_count_once():
    rerun = dict(GRID[3], status="interrupted", time="2030-01-01T00:00:00+00:00")
    again = dict(GRID[4], time="2030-01-01T00:00:00+00:00")  # the same key, the same answer
    checks = select.report_checks([*GRID, rerun, again])
    assert {c.rank_by: c.regret for c in checks}["probe"] == pytest.approx(0.10)


def test_lp_ft_is_checked_too():
    lpft = [dict(r, config={**r["config"], "strategy": "lp-ft"}, key=r["key"] + "/lp-ft")
            for r in GRID[3:]]  # fmt: skip
    checks = select.report_checks(GRID[:3] + lpft)
    assert {c.against for c in checks} == {"lp-ft"}
    assert {c.rank_by: c.tau for c in checks}["logme"] == pytest.approx(1.0)


@pytest.fixture
def grid_file(tmp_path):
    path = tmp_path / "grid.jsonl"
    for r in GRID:
        results.append(path, r)
    return path


def test_the_table_is_followed_by_the_ranking_check(grid_file, capsys):
    assert main(["report", str(grid_file)]) == 0
    out = capsys.readouterr().out
    check = out[out.index("ranking check: imagefolder:flowers12") :]
    assert "3 backbones, against finetune" in check
    lines = {line.split("  ")[0]: line.split() for line in check.splitlines()}
    assert lines["linear probe accuracy"][-2:] == ["+0.18", "10.0"]
    assert lines["parameter count (baseline)"][-2:] == ["+0.18", "10.0"]
    assert lines["LogME"][-2:] == ["+1.00", "0.0"]
    assert lines["k-NN accuracy"][-2:] == ["-1.00", "20.0"]
    assert out.index("top-1") < out.index("ranking check")  # after the table


def test_markdown_and_json_carry_the_check(grid_file, capsys):
    assert main(["report", str(grid_file), "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    assert "### ranking check: imagefolder:flowers12: 3 backbones, against finetune" in md
    assert "| LogME" in md and "| k-NN accuracy" in md
    row = next(line for line in md.splitlines() if line.startswith("| linear probe accuracy"))
    assert [c.strip() for c in row.strip("|").split("|")] == [
        "linear probe accuracy",
        "+0.18",
        "10.0",
    ]
    assert main(["report", str(grid_file), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {r["backbone"] for r in data["rows"]} == {"a", "b", "c"}
    by = {c["rank_by"]: c for c in data["ranking_checks"]}
    assert by["probe"]["tau"] == pytest.approx(2 / 11)
    assert by["knn_accuracy"]["regret"] == pytest.approx(0.2)


def test_without_a_full_grid_the_report_is_unchanged(tmp_path, capsys):
    path = tmp_path / "probes.jsonl"
    for r in GRID[:3]:
        results.append(path, r)
    assert main(["report", str(path)]) == 0
    assert "ranking check" not in capsys.readouterr().out
    assert main(["report", str(path), "--format", "json"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out), list)  # the plain list of rows


def test_checks_of_one_dataset_at_two_sizes_or_budgets_are_titled_apart():
    def at(r, **config):
        return dict(r, config={**r["config"], **config}, key=r["key"] + json.dumps(config))

    grid = [*GRID, *(at(r, image_size=64) for r in GRID), *(at(r, budget="shots=5") for r in GRID)]
    text = select.render_checks(select.report_checks(grid), "table")
    titles = [line for line in text.splitlines() if line.startswith("ranking check")]
    assert titles == [
        "ranking check: imagefolder:flowers12, 32px: 3 backbones, against finetune",
        "ranking check: imagefolder:flowers12, 64px: 3 backbones, against finetune",
        "ranking check: imagefolder:flowers12, budget 5-shot, 32px: 3 backbones, against finetune",
    ]
