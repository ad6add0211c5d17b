"""Resume's "already done, or trained again because ...", in the cases the mutation run
(results/mutation.md) found unchecked: the exact reason printed, the exact folder a
checkpoint is looked for in, and records that lack a field; and which record answers a
key (resume and the report) when records come from several runs, files and time zones.

`needs_rerun` looks at files only, so the checkpoints here are empty files named as
`--save-models` names them; no model is trained.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tlbench import results
from tlbench.config import RunConfig

#: the end of every --strict reason: what the user can do about it.
STRICT_ADVICE = "which --strict does not accept (remove or replace them, or rerun without --strict)"


def record(key: str = "k", status: str = "ok", **fields) -> dict:
    """A record with only the fields every record has; each test adds what it reads."""
    return {"key": key, "status": status, "config": {}, **fields}


def touch(*paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def looked_for(folder: Path, key: str = "k") -> str:
    return f"{folder / key}.safetensors with {key}.json, or an older {folder / key}.pt"


@pytest.mark.parametrize("status", ["failed", "interrupted", "skipped"])
def test_a_run_that_did_not_end_ok_is_not_done_and_the_reason_says_how_it_ended(status):
    assert results.needs_rerun(record(status=status), RunConfig()) == (
        f"its last run ended '{status}'"
    )


def test_save_models_looks_in_models_beside_the_results_file(tmp_path):
    config = RunConfig(out=str(tmp_path / "exp" / "runs.jsonl"), save_models=True)
    models = tmp_path / "exp" / "models"
    # A record with no "cost" at all (written by hand, or by an older tlbench).
    assert results.needs_rerun(record(), config) == (
        f"it ran without --save-models, so it has no checkpoint (looked for {looked_for(models)})"
    )
    assert results.needs_rerun(record(cost="not a dict"), config) == (
        f"it ran without --save-models, so it has no checkpoint (looked for {looked_for(models)})"
    )
    # Not asked for a checkpoint: the same record is done.
    assert results.needs_rerun(record(), RunConfig(out=config.out)) is None


def test_a_checkpoint_in_the_models_folder_makes_the_run_done_even_if_the_record_names_none(
    tmp_path,
):
    config = RunConfig(out=str(tmp_path / "runs.jsonl"), save_models=True)
    models = tmp_path / "models"
    touch(models / "k.safetensors")  # weights without their sidecar: not a checkpoint
    assert "no checkpoint" in results.needs_rerun(record(cost={}), config)
    touch(models / "k.json")
    assert results.needs_rerun(record(cost={}), config) is None
    # Another key's checkpoint does not count.
    assert results.needs_rerun(record("other", cost={}), config) == (
        "it ran without --save-models, so it has no checkpoint "
        f"(looked for {looked_for(models, 'other')})"
    )


def test_an_older_single_file_checkpoint_in_the_models_folder_makes_the_run_done(tmp_path):
    config = RunConfig(out=str(tmp_path / "runs.jsonl"), save_models=True)
    touch(tmp_path / "models" / "k.pt")
    assert results.needs_rerun(record(cost={}), config) is None


def test_without_models_dir_the_checkpoint_the_record_names_will_do_wherever_it_is(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    touch(elsewhere / "k.safetensors", elsewhere / "k.json")
    done = record(cost={"checkpoint": str(elsewhere / "k.safetensors")})
    config = RunConfig(out=str(tmp_path / "runs.jsonl"), save_models=True)
    assert results.needs_rerun(done, config) is None
    # Asked into a folder of its own (--models-dir): the one there is the one that counts.
    config.models_dir = str(tmp_path / "new")
    assert results.needs_rerun(done, config) == (
        f"its checkpoint is missing (--save-models; looked for {looked_for(tmp_path / 'new')})"
    )
    config.models_dir = str(elsewhere)
    assert results.needs_rerun(done, config) is None


def test_a_checkpoint_the_record_names_but_that_lost_its_sidecar_is_missing(tmp_path):
    touch(tmp_path / "old" / "k.safetensors")
    config = RunConfig(out=str(tmp_path / "runs.jsonl"), save_models=True)
    named = record(cost={"checkpoint": str(tmp_path / "old" / "k.safetensors")})
    assert results.needs_rerun(named, config) == (
        f"its checkpoint is missing (--save-models; looked for {looked_for(tmp_path / 'models')})"
    )


def test_strict_reruns_a_run_that_skipped_even_one_image_and_names_it():
    one = record(data={"skipped_images": 1, "skipped_files": ["ds/train/cat/bad.png"]})
    assert results.needs_rerun(one, RunConfig(strict=True)) == (
        f"it skipped 1 unreadable image(s), e.g. ds/train/cat/bad.png, {STRICT_ADVICE}"
    )
    assert results.needs_rerun(one, RunConfig()) is None  # without --strict it is done


@pytest.mark.parametrize("files", [[], None, [7]])
def test_strict_reason_without_a_file_name_to_show_gives_the_count_alone(files):
    data = {"skipped_images": 3, "skipped_files": files}
    assert results.needs_rerun(record(data=data), RunConfig(strict=True)) == (
        f"it skipped 3 unreadable image(s), {STRICT_ADVICE}"
    )


@pytest.mark.parametrize(
    "fields",
    [{}, {"data": None}, {"data": {}}, {"data": {"skipped_images": 0}}],
    ids=["no data", "data null", "no count", "none skipped"],
)
def test_strict_accepts_a_run_that_records_no_skipped_image(fields):
    assert results.needs_rerun(record(**fields), RunConfig(strict=True)) is None


# --------------------------------------------------------------------------- which record answers


UTC = dt.timezone.utc


def test_a_record_time_without_a_zone_is_utc_and_one_with_a_zone_keeps_its_instant():
    assert results.record_time({"time": "2026-03-01T12:00:00"}) == dt.datetime(
        2026, 3, 1, 12, tzinfo=UTC
    )
    # 12:00 at +02:00 is 10:00 UTC: comparing as if it were 12:00 UTC would misorder it.
    assert results.record_time({"time": "2026-03-01T12:00:00+02:00"}) == dt.datetime(
        2026, 3, 1, 10, tzinfo=UTC
    )
    for unreadable in [{}, {"time": None}, {"time": 1772366400}, {"time": "yesterday"}]:
        assert results.record_time(unreadable) is None


def test_records_from_several_files_are_ordered_by_when_they_were_written_across_zones():
    paris_noon = record("a", time="2026-03-01T12:00:00+01:00")  # 11:00 UTC
    utc_half_past_eleven = record("b", time="2026-03-01T11:30:00")
    no_time = record("c")
    also_no_time = record("d")
    ordered = results.in_time_order([utc_half_past_eleven, no_time, paris_noon, also_no_time])
    # Without a time counts as oldest; equal times keep the order read.
    assert [r["key"] for r in ordered] == ["c", "d", "a", "b"]


def test_the_latest_record_of_a_key_is_the_newest_written_whatever_its_status():
    ok = record(time="2026-03-01T10:00:00", accuracy=0.9)
    failed = record(status="failed", time="2026-03-01T11:00:00")
    other = record("other", time="2026-03-01T09:00:00")
    assert results.latest_by_key([failed, other, ok]) == {"k": failed, "other": other}


def test_a_finished_result_answers_its_key_until_a_newer_one_replaces_it():
    first = record(time="2026-03-01T10:00:00", accuracy=0.5)
    interrupted = record(status="interrupted", time="2026-03-01T11:00:00")
    second = record(time="2026-03-01T12:00:00", accuracy=0.7)
    # Read out of order (two files): time decides.
    assert results.answer_by_key([second, interrupted, first]) == {"k": second}
    # An interrupted rerun (--force, Ctrl-C) does not hide the accuracy already there.
    assert results.answer_by_key([first, interrupted]) == {"k": first}


def test_a_key_that_never_finished_is_answered_by_its_newest_attempt():
    failed = record(status="failed", time="2026-03-01T10:00:00")
    interrupted = record(status="interrupted", time="2026-03-01T11:00:00")
    other = record("other", time="2026-03-01T09:00:00")
    assert results.answer_by_key([interrupted, other, failed]) == {
        "k": interrupted,
        "other": other,
    }
    # Then a finished run replaces it.
    ok = record(time="2026-03-01T12:00:00")
    assert results.answer_by_key([interrupted, ok, failed]) == {"k": ok}


def test_records_said_to_be_in_time_order_are_taken_in_the_order_given():
    from tlbench.results import answer_by_key, latest_by_key

    older = {"key": "k", "status": "ok", "time": "2026-01-02T00:00:00+00:00", "n": 1}
    newer = {"key": "k", "status": "ok", "time": "2026-01-01T00:00:00+00:00", "n": 2}
    # The caller vouches for the order: the last one given wins, whatever its time says.
    assert latest_by_key([older, newer], ordered=True)["k"]["n"] == 2
    assert answer_by_key([older, newer], ordered=True)["k"]["n"] == 2
    # Not vouched for: sorted by time first.
    assert latest_by_key([older, newer])["k"]["n"] == 1
    assert answer_by_key([older, newer])["k"]["n"] == 1
