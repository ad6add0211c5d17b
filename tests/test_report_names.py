"""Report tables name datasets by their short names; exports keep the canonical identity.

Records carry a dataset's canonical name (`imagefolder:/abs/path`). A table
shows `imagefolder:flowers12`, keeping as much of the path as tells two
datasets apart (`tlbench.identity.short_names`), and csv/json carry both.
"""

from __future__ import annotations

import csv
import io
import json

from tlbench import report, tables


def rec(dataset: str, backbone: str = "b", acc: float = 0.5, strategy: str = "linear") -> dict:
    return {
        "schema": 2,
        "key": f"{dataset}/{backbone}/{strategy}",
        "status": "ok",
        "config": {"backbone": backbone, "dataset": dataset, "dataset_fingerprint": "fp" + dataset,
                   "strategy": strategy, "seed": 0},
        "accuracy": {"final": acc, "best": acc},
        "cost": {"train_seconds": 1.0},
    }  # fmt: skip


A, B, PETS = "imagefolder:/data/a/flowers", "imagefolder:/data/b/flowers", "imagefolder:/data/pets"
RECORDS = [rec(A, acc=0.9), rec(B, acc=0.4), rec(PETS, acc=0.7), rec(PETS, "c", 0.6)]


def test_sections_are_titled_by_short_names_that_tell_datasets_apart():
    rows = report.summarize(RECORDS)
    assert {r.dataset: r.section for r in rows} == {
        A: "imagefolder:a/flowers",
        B: "imagefolder:b/flowers",
        PETS: "imagefolder:pets",
    }
    # Two folders named flowers stay two sections: each is alone, so each is its own best.
    assert [(r.dataset, r.pareto, r.tie) for r in rows if "flowers" in r.dataset] == [
        (A, True, True),
        (B, True, True),
    ]
    md = tables.render(report.sort_rows(rows), "markdown")
    headings = [line for line in md.splitlines() if line.startswith("###")]
    assert headings == [
        "### dataset: imagefolder:a/flowers",
        "### dataset: imagefolder:b/flowers",
        "### dataset: imagefolder:pets",
    ]
    assert "/data/" not in md


def test_a_dataset_column_shows_the_short_name():
    rows = report.summarize(RECORDS)
    text = tables.render(rows, "markdown", group_by="backbone")
    cells = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| imag")]
    # One cell per row: pets has two backbones.
    assert sorted(cells) == [
        "imagefolder:a/flowers",
        "imagefolder:b/flowers",
        "imagefolder:pets",
        "imagefolder:pets",
    ]


def test_exports_keep_the_canonical_name_beside_the_short_one():
    rows = report.summarize(RECORDS)
    data = json.loads(tables.render(rows, "json"))
    assert {(d["dataset"], d["dataset_name"]) for d in data} == {
        (A, "imagefolder:a/flowers"),
        (B, "imagefolder:b/flowers"),
        (PETS, "imagefolder:pets"),
    }
    table = list(csv.DictReader(io.StringIO(tables.render(rows, "csv"))))
    assert {t["dataset"] for t in table} == {A, B, PETS}


def test_names_that_cannot_be_shortened_apart_stay_whole():
    # "imagefolder:ds" (no path) and the folder /ds would both read "imagefolder:ds".
    rows = report.summarize([rec("imagefolder:ds"), rec("imagefolder:/ds")])
    assert sorted(r.section for r in rows) == ["imagefolder:/ds", "imagefolder:ds"]


def test_builtin_names_are_their_own_short_names():
    (row,) = report.summarize([rec("cifar10")])
    assert row.section == "cifar10" and row.dataset_name == "cifar10"
