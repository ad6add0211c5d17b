"""The transferability scores' disk cache (`tlbench.scores`): computed once per content.

A run that trains on frozen features records LogME, k-NN accuracy and the
H-score of its training features. The next process that trains on the same
features reads them from `<cache>/scores/` instead of computing them again,
and its record is the same, cost included: `scores.seconds` is what computing
them cost, whatever the cache held. The key is the features' and labels'
bytes (a property test changes one of either), the settings and the code; an
entry that is not what it claims is a miss, with a warning, and computed again.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_second_run import BASE as SPEC
from test_second_run import PLUGINS

from tlbench import scores
from tlbench.plugin_types import Workspace
from tlbench.trial import ProcessCache

ABOUT = {"dataset": "tinyset", "backbone": "tiny"}


def _process(cache_dir: Path) -> ProcessCache:
    """A new process's cache: only what is on disk under `cache_dir` is shared."""
    return ProcessCache(PLUGINS, Workspace(cache_dir=cache_dir, data_dir=cache_dir / "data"))


def _refuse(*args, **kwargs):
    raise AssertionError("the scores were computed again")


def _features(seed: int = 0, n: int = 24, dim: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)).astype(np.float32), np.arange(n, dtype=np.int64) % 3


def test_the_next_process_reads_the_scores_and_reports_what_computing_them_cost(
    tmp_path, monkeypatch
):
    first = _process(tmp_path).run(SPEC)
    assert first["status"] == "ok", first.get("reason")
    assert sorted(p.suffix for p in (tmp_path / "scores").iterdir()) == [".json", ".lock", ".npy"]
    monkeypatch.setattr(scores, "compute_scores", _refuse)
    again = _process(tmp_path).run(SPEC)
    assert again["cost"]["feature_cache"] == "disk"
    # Every figure, the seconds they cost included: a cost does not depend on the cache.
    assert again["scores"] == first["scores"]
    assert again["scores"]["seconds"] > 0


def test_tlbench_cache_lists_a_scores_entry_and_prunes_it_with_its_backbone(tmp_path, run_cli):
    x, y = _features()
    scores.ScoreStore(tmp_path).get_or_make(x, y, {**ABOUT, "split": "train", "image_size": 16})
    listed = run_cli("cache", "list", "--json", "--cache-dir", tmp_path)
    assert listed.code == 0, listed
    (entry,) = json.loads(listed.out)["entries"]
    assert (entry["kind"], entry["backbone"], entry["size"]) == ("scores", "tiny", 16)
    pruned = run_cli("cache", "prune", "--backbone", "tiny", "--cache-dir", tmp_path)
    assert pruned.code == 0, pruned
    assert list((tmp_path / "scores").glob("*.npy")) == []


def test_without_a_cache_folder_the_scores_are_computed_and_kept_nowhere():
    x, y = _features()
    store = scores.ScoreStore(None)
    found = store.get_or_make(x, y, ABOUT)
    assert {**found, "seconds": 0} == {**scores.compute_scores(x, y), "seconds": 0}


def test_a_cache_that_cannot_be_written_warns_once_and_the_scores_are_still_computed(tmp_path):
    (tmp_path / "scores").write_text("a file where the folder would be")
    x, y = _features()
    with pytest.warns(RuntimeWarning, match="cannot write the cache"):
        found = scores.ScoreStore(tmp_path).get_or_make(x, y, ABOUT)
    assert found["logme"] == scores.compute_scores(x, y)["logme"]


def test_a_score_that_fails_is_kept_with_its_reason(tmp_path, monkeypatch):
    # One image: leave-one-out k-NN has no neighbour, the other two scores exist.
    x, y = np.ones((1, 3), np.float32), np.array([0])
    made = scores.ScoreStore(tmp_path).get_or_make(x, y, ABOUT)
    assert made["knn_accuracy"] is None and "knn_accuracy" in made["errors"]
    monkeypatch.setattr(scores, "compute_scores", _refuse)
    assert scores.ScoreStore(tmp_path).get_or_make(x, y, ABOUT) == made


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 12),
    dim=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
    where=st.integers(0, 10**6),
    in_labels=st.booleans(),
)
def test_one_changed_feature_or_label_is_another_key(n, dim, seed, where, in_labels):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    y = rng.integers(0, 3, size=n)
    other_x, other_y = x.copy(), y.copy()
    if in_labels:
        other_y[where % n] += 1
    else:
        other_x.flat[where % x.size] = np.nextafter(x.flat[where % x.size], np.float32(np.inf))
    assert scores.score_key(other_x, other_y) != scores.score_key(x, y)
    # The same content is the same key, however it is laid out (a map, a gathered subset).
    assert scores.score_key(np.asfortranarray(x), y.copy()) == scores.score_key(x, y)


def test_the_key_covers_the_code_that_computes_the_scores(monkeypatch):
    x, y = _features()
    before = scores.score_key(x, y)
    monkeypatch.setattr(scores, "_code_digest", lambda: "an edited transferability.py")
    assert scores.score_key(x, y) != before
    monkeypatch.setattr(scores, "_code_digest", lambda: None)  # unreadable: nothing is kept
    assert scores.score_key(x, y) is None


def _stored(cache_dir: Path) -> tuple[Path, dict]:
    x, y = _features()
    scores.ScoreStore(cache_dir).get_or_make(x, y, ABOUT)
    (sidecar,) = (cache_dir / "scores").glob("*.json")
    return sidecar, json.loads(sidecar.read_text())


def _edit_sidecar(field: str, value):
    def edit(sidecar: Path, meta: dict) -> None:
        sidecar.write_text(json.dumps({**meta, field: value}))

    return edit


def _edit_scores(sidecar: Path, meta: dict) -> None:
    npy = sidecar.with_suffix(".npy")
    values = np.load(npy)
    values[0] += 1.0  # a better LogME than the features have
    with open(npy, "wb") as f:
        np.save(f, values)


def _copy_from_another_entry(sidecar: Path, meta: dict) -> None:
    # Another entry's files under this key: their checksums hold, their key does not.
    with tempfile.TemporaryDirectory() as tmp:
        x, y = _features(seed=1)
        scores.ScoreStore(Path(tmp)).get_or_make(x, y, ABOUT)
        (other,) = (Path(tmp) / "scores").glob("*.json")
        sidecar.write_text(other.read_text())
        sidecar.with_suffix(".npy").write_bytes(other.with_suffix(".npy").read_bytes())


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (_edit_sidecar("seconds", 0.001), "were changed"),
        (_edit_sidecar("seconds", -1.0), "expected a duration"),
        (_edit_sidecar("errors", {"logme": "made up"}), "were changed"),
        (_edit_sidecar("errors", {"accuracy": "x"}), "names a score it does not hold"),
        (_edit_sidecar("errors", ["logme"]), "sidecar field 'errors'"),
        (_edit_sidecar("seconds", "0.5"), "sidecar field 'seconds'"),
        (_edit_scores, "checksum"),
        (_copy_from_another_entry, "were changed"),
    ],
)
def test_an_entry_that_is_not_what_it_claims_is_computed_again(tmp_path, damage, why):
    sidecar, meta = _stored(tmp_path)
    damage(sidecar, meta)
    x, y = _features()
    with pytest.warns(RuntimeWarning, match=why):
        found = scores.ScoreStore(tmp_path).get_or_make(x, y, ABOUT)
    expected = scores.compute_scores(x, y)
    assert {**found, "seconds": 0} == {**expected, "seconds": 0}
    # ... and replaced: the next read is a hit again.
    assert scores.ScoreStore(tmp_path).get(scores.score_key(x, y)) == found
