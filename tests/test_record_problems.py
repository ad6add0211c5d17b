"""`record.problems` and `decode_correct`: what the results file refuses to read, in words.

A line the results file cannot use is skipped with these words in the
warning (`tlbench report`, resume); each message is pinned here exactly, so
a check that stops firing, or fires on a good record, fails.
"""

from __future__ import annotations

import numpy as np

from tlbench.record import decode_correct, problems

OK = {
    "key": "k",
    "status": "ok",
    "config": {"backbone": "b", "dataset": "d", "strategy": "s", "seed": 0},
    "accuracy": {"final": 0.5, "best": 0.75},
    "cost": {},
}


def test_a_schema_1_record_has_no_schema_field_and_no_problem():
    assert "schema" not in OK
    assert problems(OK) == []
    assert problems({**OK, "schema": 2}) == []


def test_a_schema_that_is_not_an_integer_is_named():
    assert problems({**OK, "schema": True}) == ["schema is True, not a number"]
    assert problems({**OK, "schema": "2"}) == ["schema is '2', not a number"]


def test_a_newer_schema_says_to_upgrade():
    assert problems({**OK, "schema": 3}) == [
        "schema 3 is newer than this tlbench reads (2): upgrade tlbench"
    ]


def test_a_key_must_be_a_non_empty_string():
    assert problems({**OK, "key": ""}) == ["no key"]
    assert problems({**OK, "key": 5}) == ["no key"]
    assert problems({k: v for k, v in OK.items() if k != "key"}) == ["no key"]


def test_an_unknown_status_lists_the_four_there_are():
    assert problems({**OK, "status": "done"}) == [
        "status 'done' is not one of ok, failed, skipped, interrupted"
    ]


def test_what_is_not_a_json_object_says_what_it_is():
    assert problems([1, 2]) == ["not a JSON object (list)"]
    assert problems("x") == ["not a JSON object (str)"]


def test_the_config_and_its_identity_fields():
    assert problems({**OK, "config": None}) == ["no config"]
    assert problems({**OK, "key": "", "config": []}) == ["no key", "no config"]
    config = {"backbone": 1, "dataset": "d", "seed": 1.5}
    assert problems({**OK, "config": config}) == [
        "config.backbone missing",
        "config.strategy missing",
        "config.seed is 1.5, not an integer",
    ]


def test_an_ok_record_needs_its_accuracy_and_cost_figures():
    assert problems({**OK, "accuracy": None, "cost": None}) == ["no accuracy", "no cost"]
    accuracy = {"final": "0.5", "best": float("nan")}
    assert problems({**OK, "accuracy": accuracy}) == [
        "accuracy.final is '0.5', not a number",
        "accuracy.best is nan, not a number",
    ]
    # Only an ok record is held to them: a failed run has no figures.
    assert problems({**OK, "status": "failed", "accuracy": None, "cost": None}) == []


def test_a_run_of_no_images_decodes_to_an_empty_vector():
    got = decode_correct({"images": 0, "bits": ""})
    assert got is not None and got.shape == (0,)
    assert decode_correct({"images": -1, "bits": ""}) is None
    assert decode_correct({"images": True, "bits": "gA=="}) is None  # a bool is not a count
    assert decode_correct({"images": "8", "bits": "/w=="}) is None


def test_bits_with_characters_outside_base64_are_refused_not_skipped():
    # Lenient base64 drops the `*` and decodes the rest: a damaged record would then pass.
    assert np.array_equal(decode_correct({"images": 8, "bits": "/w=="}), np.ones(8, np.uint8))
    assert decode_correct({"images": 8, "bits": "/w*=="}) is None
    assert decode_correct({"images": 8, "bits": "/w==\n"}) is None
