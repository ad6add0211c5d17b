"""The final evaluation image by image: recorded compactly, and used to pair single runs.

With one seed a row has no paired t; its tie mark comes from a paired
bootstrap over the evaluation images, which needs which images each run got
right. The engine returns that vector, the record stores it as a base64
bitset (`accuracy.final_correct`), and the report pairs single-seed rows on it.
Every verdict below is worked out from the vectors in the test.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tlbench import engine, report
from tlbench.record import decode_correct, encode_correct
from tlbench.runner import Runner

# --------------------------------------------------------------------------- the record field


def test_the_bitset_round_trips_and_stays_small():
    rng = np.random.default_rng(0)
    correct = rng.integers(0, 2, size=10_001)
    encoded = encode_correct(correct)
    assert encoded["images"] == 10_001
    assert list(decode_correct(encoded, 10_001)) == list(correct)
    # 10,001 bits are 1,251 bytes, 1,668 base64 characters: a sixth of a "0"/"1" string.
    assert len(encoded["bits"]) == 4 * math.ceil(1251 / 3) == 1668
    assert len(json.dumps(encoded)) < 1700
    assert list(decode_correct(encode_correct([True, False, True]))) == [1, 0, 1]


@pytest.mark.parametrize(
    "value",
    [
        None,
        "AQ==",
        {"images": 3},
        {"images": "3", "bits": "oA=="},
        {"images": True, "bits": "oA=="},
        {"images": 3, "bits": "not base64!"},
        {"images": 20, "bits": "oA=="},  # 20 images need 3 bytes, not 1
    ],
)
def test_a_malformed_field_decodes_to_nothing(value):
    assert decode_correct(value) is None


def test_a_count_other_than_the_eval_splits_decodes_to_nothing():
    encoded = encode_correct([1, 0, 1])
    assert decode_correct(encoded, 3) is not None
    assert decode_correct(encoded, 4) is None


# --------------------------------------------------------------------------- the engine


def test_evaluation_says_which_images_were_right_across_batches():
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    predicted = torch.tensor([0, 2, 2, 1, 1, 0, 0])  # right: 0, 2, 4, 6
    logits = torch.nn.functional.one_hot(predicted, 3).float()
    out = engine.evaluate_logits(lambda a, b: logits[a:b], labels, 3, 3, torch.device("cpu"), True)
    assert out["correct"].tolist() == [True, False, True, False, True, False, True]
    assert out["accuracy"] == pytest.approx(4 / 7)
    plain = engine.evaluate_logits(lambda a, b: logits[a:b], labels, 3, 3, torch.device("cpu"))
    assert "correct" not in plain and plain["accuracy"] == out["accuracy"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_per_image_results_add_no_synchronising_op():
    """The per-image flags are written on the device; the one read stays the one read."""
    device = torch.device("cuda")
    labels = torch.arange(40) % 3
    logits = torch.randn(40, 3, device=device)
    hits = torch.zeros(40, dtype=torch.long, device=device)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        confusion, _ = engine.eval_counts(lambda a, b: logits[a:b], labels, 3, 8, device, hits)
        both = torch.cat([confusion, hits])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    expected = (logits.argmax(1).cpu() == labels).long()
    assert both[9:].cpu().tolist() == expected.tolist()


def test_every_run_records_its_final_evaluation_image_by_image(tiny_config, plugins):
    tiny_config.strategies = ["linear", "finetune"]
    records = Runner(tiny_config, plugins).run()
    assert [r["status"] for r in records] == ["ok", "ok"]
    for r in records:
        n = r["data"]["eval_images"]
        field = r["accuracy"]["final_correct"]
        correct = decode_correct(field, n)
        assert correct is not None and len(correct) == n
        # The vector is the final epoch's: its mean is the final accuracy.
        assert correct.mean() == pytest.approx(r["accuracy"]["final"], abs=1e-6)
        # The record grows by the bitset only: n / 8 bytes in base64, plus the key names.
        assert len(json.dumps(field)) <= 4 * math.ceil(math.ceil(n / 8) / 3) + 32
        assert "correct" not in json.dumps(r["accuracy"]["curve"])


# --------------------------------------------------------------------------- ties of single runs


N = 200


def vector(right: list[int]) -> list[int]:
    """0/1 over N images, 1 at the given image indices."""
    out = [0] * N
    for i in right:
        out[i] = 1
    return out


def rec(backbone: str, correct: list[int] | None, *, seed: int = 0, split: str = "test") -> dict:
    accuracy = sum(correct) / N if correct is not None else 0.5
    record = {
        "schema": 2,
        "key": f"{backbone}/{seed}",
        "status": "ok",
        "config": {
            "backbone": backbone,
            "dataset": "flowers",
            "dataset_fingerprint": "fp",
            "strategy": "linear",
            "seed": seed,
        },
        "accuracy": {"final": accuracy, "best": accuracy},
        "cost": {"train_seconds": 1.0},
        "data": {"eval_images": N, "eval_split": split},
    }
    if correct is not None:
        record["accuracy"]["final_correct"] = encode_correct(correct)
    return record


def ties(records: list[dict]) -> dict[str, bool | None]:
    return {r.backbone: r.tie for r in report.summarize(records)}


def test_identical_results_image_by_image_are_a_tie():
    same = vector(list(range(150)))
    assert ties([rec("a", same), rec("b", same, seed=1)]) == {"a": True, "b": True}


def test_a_clearly_worse_run_is_not_a_tie():
    # a is right on 180 images, b on 120 of them and nothing else: b - a is -0.3 on every
    # resample's scale (only-a ~ Binomial(200, 0.3), sd 0.032): 0 is far outside.
    a, b = vector(list(range(180))), vector(list(range(120)))
    assert ties([rec("a", a), rec("b", b)]) == {"a": True, "b": False}


def test_pairing_over_images_tells_apart_what_the_counts_alone_cannot():
    # Both times b is 4 images (2 points) behind a.
    a = vector(list(range(160)))
    # b right on 156 of a's 160 and no other: the only discordant images favour a. A
    # resample has no discordant image with probability 0.98^200 = 1.8% < 2.5%, so the
    # 95% interval of the difference starts above 0: told apart.
    subset = vector(list(range(156)))
    assert 0.98**200 < 0.025
    assert ties([rec("a", a), rec("b", subset)]) == {"a": True, "b": False}
    # b right on 150 of a's and on 6 others: 10 images favour a, 6 favour b; the difference
    # 4/200 has a resampled sd of about sqrt(16)/200 = 0.02: 0 is inside. A tie.
    mixed = vector([*range(150), *range(160, 166)])
    assert sum(mixed) == 156
    assert ties([rec("a", a), rec("b", mixed)]) == {"a": True, "b": True}


def test_records_without_per_image_results_keep_todays_marks():
    # One seed each and no vectors: no paired comparison, so no mark but the best's.
    assert ties([rec("a", None), rec("b", None, seed=1)]) == {"a": True, "b": None}
    # One side without a vector is no pair either.
    assert ties([rec("a", vector(list(range(150)))), rec("b", None)]) == {"a": True, "b": None}


def test_runs_evaluated_on_another_split_are_not_paired():
    same = vector(list(range(150)))
    assert ties([rec("a", same), rec("b", same, split="val")]) == {"a": True, "b": None}


def test_seeds_in_common_still_pair_by_seed():
    # Two seeds each: paired t over the seeds, whatever the vectors say. b is behind a by
    # 0.05 and 0.15 (mean 0.10, sd 0.0707, t(0.975, 1) = 12.7: half width 0.635): a tie.
    a0, a1 = vector(list(range(180))), vector(list(range(170)))
    b0, b1 = vector(list(range(170))), vector(list(range(140)))
    found = ties([rec("a", a0), rec("a", a1, seed=1), rec("b", b0), rec("b", b1, seed=1)])
    assert found == {"a": True, "b": True}
