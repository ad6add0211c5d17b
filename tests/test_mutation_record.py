"""The parts of a run record built from a finished fit: the per-image bitset, the accuracy,
the cost and the data facts, field by field.

Written for shard 2 of the mutation run (results/mutation.md): these are reached only by
tests that train a model and read a few of the fields back. Here each part is built from
stand-in fits and splits whose numbers are chosen so every sum is exact in binary, and
compared with the whole part written out by hand.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tlbench import record

# --------------------------------------------------------------------------- per-image bitset


@pytest.mark.parametrize(
    ("correct", "images", "bits"),
    [
        # 1011 0000 1 -> bytes 0xB0 0x80 -> base64 of 10110000 10000000 is "sIA="
        ([1, 0, 1, 1, 0, 0, 0, 0, 1], 9, "sIA="),
        ([True, False], 2, "gA=="),  # 10 -> 0x80
        ([1.0, 0.0, 0.0, 1.0], 4, "kA=="),  # 1001 -> 0x90
        ([[1, 0], [0, 1]], 4, "kA=="),  # read row by row, one flag an image
        ([], 0, ""),
    ],
)
def test_correctness_is_packed_eight_images_a_byte_in_base64(correct, images, bits):
    assert record.encode_correct(correct) == {"images": images, "bits": bits}


@pytest.mark.parametrize("correct", [[0, 2], [0.5], [-1, 1], [1, 1, 1, 1, 1, 1, 1, 1, 3]])
def test_correctness_other_than_0_or_1_is_refused(correct):
    with pytest.raises(ValueError) as info:
        record.encode_correct(correct)
    assert str(info.value) == "per-image correctness must be 0/1 or bool"


# --------------------------------------------------------------------------- accuracy


def _fit(**fields) -> SimpleNamespace:
    fit = SimpleNamespace(
        best_accuracy=0.75,
        best_epoch=2,
        final_accuracy=0.5,
        curve=[
            {"epoch": 1, "eval_accuracy": 0.25, "eval_balanced_accuracy": 0.125},
            {"epoch": 2, "eval_accuracy": 0.75, "eval_balanced_accuracy": 0.625},
            {"epoch": 3, "eval_accuracy": 0.5, "eval_balanced_accuracy": 0.375},
        ],
        final_correct=[1, 0],
        train_seconds=8.0,
        eval_seconds=2.0,
        warmup_seconds=0.5,
        upload_seconds=0.25,
    )
    vars(fit).update(fields)
    fit.cost = lambda: {
        "train_seconds": fit.train_seconds,
        "eval_seconds": fit.eval_seconds,
        "warmup_seconds": fit.warmup_seconds,
        "upload_seconds": fit.upload_seconds,
        "train_images_per_s": 100.0,
    }
    return fit


def test_the_accuracy_part_is_the_fits_figures_and_the_last_epochs_balanced_accuracy():
    fit = _fit()
    assert record.run_accuracy(fit) == {
        "best": 0.75,
        "best_epoch": 2,
        "final": 0.5,
        "final_balanced": 0.375,
        "curve": fit.curve,
        "final_correct": [1, 0],
    }


def test_a_fit_without_a_curve_has_no_balanced_accuracy():
    accuracy = record.run_accuracy(_fit(curve=[], final_correct=None))
    assert accuracy["final_balanced"] is None
    assert accuracy["curve"] == [] and accuracy["final_correct"] is None


def test_lp_ft_records_its_probe_stage_beside_the_fine_tune():
    probe = _fit(best_accuracy=0.625, final_accuracy=0.5, curve=[{}, {}, {}])
    assert record.run_accuracy(_fit(), probe)["probe"] == {
        "final": 0.5,
        "best": 0.625,
        "epochs": 3,
    }
    assert "probe" not in record.run_accuracy(_fit())


# --------------------------------------------------------------------------- cost


def test_the_cost_part_adds_every_section_to_the_wall_time():
    cost = record.run_cost(
        _fit(),
        None,
        seconds={"data_prep": 1.0, "features": 3.0},
        measured={"peak_memory_mb": 100.0},
    )
    assert cost == {
        "data_prep_seconds": 1.0,
        "feature_seconds": 3.0,
        "train_seconds": 8.0,
        "eval_seconds": 2.0,
        "warmup_seconds": 0.5,
        "upload_seconds": 0.25,
        "train_images_per_s": 100.0,
        "peak_memory_mb": 100.0,
        # 1 + 3 + 8 + 2, and the one-off warm-up and upload, 0.5 + 0.25
        "wall_seconds": 14.75,
    }


def test_a_run_without_data_preparation_or_features_costs_none_of_them():
    cost = record.run_cost(_fit(), None, seconds={}, measured={})
    assert (cost["data_prep_seconds"], cost["feature_seconds"]) == (0.0, 0.0)
    assert cost["wall_seconds"] == 8.0 + 2.0 + 0.5 + 0.25


def test_lp_ft_costs_both_stages():
    probe = _fit(train_seconds=4.0, eval_seconds=1.0, warmup_seconds=0.125, upload_seconds=0.0625)
    cost = record.run_cost(_fit(), probe, seconds={"data_prep": 1.0, "features": 3.0}, measured={})
    assert cost["probe_train_seconds"] == 4.0
    assert cost["train_seconds"] == 12.0  # 4 + 8
    assert cost["eval_seconds"] == 3.0  # 1 + 2
    # 1 + 3 + 12 + 3, and both stages' warm-ups and uploads: 0.125 + 0.0625 + 0.5 + 0.25
    assert cost["wall_seconds"] == 19.9375


# --------------------------------------------------------------------------- data


class _Split(list):
    def __init__(self, images: int, skipped: list[str]):
        super().__init__(range(images))
        self.skipped = skipped


def test_the_data_part_counts_the_images_and_lists_the_first_50_skipped():
    splits = SimpleNamespace(
        classes=["cat", "dog", "owl"], eval_split="val", info={"root": "/data", "rule": "folder"}
    )
    train = _Split(12, [f"train/{i}.jpg" for i in range(40)])
    evalset = _Split(5, [f"val/{i}.jpg" for i in range(15)])
    assert record.run_data(splits, train, evalset, store_size=7) == {
        "num_classes": 3,
        "classes": ["cat", "dog", "owl"],
        "train_images": 12,
        "eval_images": 5,
        "eval_split": "val",
        "skipped_images": 55,
        "skipped_files": [f"train/{i}.jpg" for i in range(40)]
        + [f"val/{i}.jpg" for i in range(10)],
        "store_size": 7,
        "root": "/data",
        "rule": "folder",
    }
