"""`tlbench compare BASE NEW` and `tlbench.compare`: two results files, cell by cell (issue 24).

The problem it answers: there was no way to compare two results files, so a
change that made a cell worse passed CI unseen. Records are hand-made (no
torch): per-image results where the pairing is over images, several seeds
where it is over seeds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tlbench
from tlbench import cli, comparison, stats
from tlbench.record import encode_correct

IMAGES = 200


def _correct(hits: int, offset: int = 0) -> list[int]:
    """`hits` of IMAGES right, starting at `offset` (wrapping)."""
    out = [0] * IMAGES
    for i in range(hits):
        out[(offset + i) % IMAGES] = 1
    return out


def record(
    backbone: str = "b",
    strategy: str = "linear",
    *,
    seed: int = 0,
    correct: list[int] | None = None,
    accuracy: float | None = None,
    seconds: float = 10.0,
    lr: float = 0.001,
    status: str = "ok",
    fingerprint: str = "data1",
) -> dict:
    acc = accuracy if accuracy is not None else sum(correct or []) / IMAGES
    r = {
        "schema": 2,
        "key": f"{backbone}-{strategy}-{seed}-{lr}-{status}",
        "status": status,
        "reason": None if status == "ok" else "CUDA out of memory",
        "config": {
            "backbone": backbone,
            "weights": "w",
            "dataset": "imagefolder:/data/flowers",
            "dataset_fingerprint": fingerprint,
            "strategy": strategy,
            "seed": seed,
            "image_size": 64,
            "device": "cpu",
            "hyperparameters": {"epochs": 2, "lr": lr},
        },
        "data": {"eval_images": IMAGES, "eval_split": "test"},
    }
    if status == "ok":
        r["accuracy"] = {"final": acc, "best": acc, "best_epoch": 2}
        if correct is not None:
            r["accuracy"]["final_correct"] = encode_correct(correct)
        r["cost"] = {"train_seconds": seconds}
    return r


def write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    """BASE: two cells at 90% and 60%; NEW: the first planted 20 points worse and 3x slower."""
    base = write(
        tmp_path / "base.jsonl",
        [
            record("b", "linear", correct=_correct(180)),
            record("c", "scratch", correct=_correct(120)),
        ],
    )
    new = write(
        tmp_path / "new.jsonl",
        [
            record("b", "linear", correct=_correct(140), seconds=30.0),
            record("c", "scratch", correct=_correct(120)),
        ],
    )
    return base, new


def test_the_worse_cell_fails_the_gate_with_exit_1(files, capsys) -> None:
    base, new = files
    assert cli.main(["compare", str(base), str(new)]) == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("b / linear"))
    assert "-20.0" in line and "WORSE" in line and "3.00" in line  # the cost ratio
    assert "images" in line  # paired over the per-image results
    same = next(line for line in out.splitlines() if line.startswith("c / scratch"))
    assert "cannot tell" in same
    assert "FAIL: 1 cell(s)" in out and "b / linear" in out.splitlines()[-1]


def test_a_threshold_above_the_drop_passes_and_the_same_file_passes(files, capsys) -> None:
    base, new = files
    assert cli.main(["compare", str(base), str(new), "--fail-if-worse", "25"]) == 0
    assert cli.main(["compare", str(base), str(base)]) == 0
    assert "ok: no cell worse" in capsys.readouterr().out


def test_json_and_markdown(files, capsys) -> None:
    base, new = files
    assert cli.main(["compare", str(base), str(new), "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["failing"] == ["b / linear"]
    cell = next(c for c in data["cells"] if c["backbone"] == "b")
    assert cell["verdict"] == "worse" and cell["paired_over"] == "images"
    assert cell["difference"]["estimate"] == pytest.approx(-0.2)
    assert cell["cost_ratio"] == pytest.approx(3.0)
    assert cli.main(["compare", str(base), str(new), "--format", "markdown"]) == 1
    out = capsys.readouterr().out
    assert "### dataset: imagefolder:flowers" in out and "| b / linear" in out


def test_the_interval_is_the_paired_bootstrap_of_the_report(files) -> None:
    base, new = files
    found = tlbench.compare(base, new)
    cell = next(c for c in found.cells if c.backbone == "b")
    expected = stats.paired_bootstrap(_correct(140), _correct(180))
    assert cell.difference == expected
    assert [c.label for c in found.failing] == ["b / linear"] and not found.ok


def test_a_better_cell_is_better_and_does_not_fail(tmp_path) -> None:
    base = [record(correct=_correct(100))]
    new = [record(correct=_correct(150))]
    found = tlbench.compare(base, new)
    assert [c.verdict for c in found.cells] == ["better"] and found.ok


def test_over_seeds_without_per_image_results(tmp_path) -> None:
    base = [record(seed=s, accuracy=0.80 + 0.01 * s) for s in range(3)]
    new = [record(seed=s, accuracy=0.70 + 0.01 * s + 0.002 * (s % 2)) for s in range(3)]
    (cell,) = tlbench.compare(base, new).cells
    assert cell.paired_over == "seeds" and cell.verdict == "worse"
    assert cell.difference == stats.paired_t(
        {s: r["accuracy"]["final"] for s, r in enumerate(new)},
        {s: r["accuracy"]["final"] for s, r in enumerate(base)},
    )


def test_one_run_each_without_per_image_results_cannot_tell(tmp_path) -> None:
    (cell,) = tlbench.compare([record(accuracy=0.9)], [record(accuracy=0.5)]).cells
    assert cell.verdict == "cannot tell" and cell.difference is None
    assert "no per-image results" in cell.note


def test_other_data_is_not_paired_over_images() -> None:
    base = [record(correct=_correct(180))]
    new = [record(correct=_correct(100), fingerprint="data2")]
    (cell,) = tlbench.compare(base, new).cells
    assert cell.verdict == "cannot tell" and "different data" in cell.note


def test_a_changed_setting_is_compared_with_what_it_replaces_and_named() -> None:
    base = [record(correct=_correct(180), lr=0.001)]
    new = [record(correct=_correct(20), lr=0.5)]
    (cell,) = tlbench.compare(base, new).cells
    assert cell.verdict == "worse" and cell.changed == "lr 0.001 -> 0.5"


def test_a_run_that_failed_in_new_fails_the_gate() -> None:
    base = [record(correct=_correct(180))]
    new = [record(status="failed")]
    found = tlbench.compare(base, new)
    assert [c.verdict for c in found.cells] == ["failed"] and not found.ok
    assert "out of memory" in found.cells[0].note


def test_cells_in_one_file_only_are_listed_and_do_not_fail() -> None:
    found = tlbench.compare([record("b")], [record("c")])
    assert sorted(c.verdict for c in found.cells) == ["only in base", "only in new"]
    assert found.ok


def test_several_seeds_with_per_image_results_resample_images() -> None:
    new = [np.array(_correct(150, s)) for s in range(3)]
    base = [np.array(_correct(170, 7 * s)) for s in range(3)]
    d = comparison.over_images(new, base)
    assert d.method == "paired-bootstrap" and d.n == IMAGES
    assert d.estimate == pytest.approx(-0.1)  # the mean accuracy difference over the seeds
    assert d.upper < 0 and d.lower < d.estimate < d.upper


def test_bad_threshold_and_missing_file_are_input_errors(files, capsys) -> None:
    base, new = files
    assert cli.main(["compare", str(base), str(new), "--fail-if-worse", "-1"]) == 2
    assert cli.main(["compare", str(base), str(base.parent / "nope.jsonl")]) == 2
    assert "NEW results file not found" in capsys.readouterr().err
