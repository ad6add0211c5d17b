"""Plant each bug issue 10 names, one at a time, and show which fast tests catch it.

    python results/plant_bugs.py          # from the repository root, in the dev venv

Works on a `git archive` copy of HEAD in a temporary folder (the working tree
is never touched): for each bug it makes one text edit, runs the named test
files there (`-m "not slow"`) and restores the file. Exits 1 if any bug is
not caught, or if an edit no longer matches the code (then update it here).
Results of a run: results/mutation.md, part 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WARMUP_END = '        result.warmup_batches = {"train": train_sizes, "eval": eval_sizes}\n'
FEATURE_LOOP_CHECK = "            if not math.isfinite(train_loss):\n                raise Diverged(epoch, train_loss)\n            head.eval()"

#: (bug, file, text, text with the bug, test files that must catch it)
BUGS = [
    (
        "1 the feature-cache key loses the precision",
        "tlbench/features.py",
        "        backbone.preprocessing.to_dict(),\n        precision,\n",
        "        backbone.preprocessing.to_dict(),\n",
        ["tests/test_cache_keys.py"],
    ),
    (
        "2 the decode-cache key loses the dataset fingerprint",
        "tlbench/data.py",
        'cache_key("decoded", DECODE_VERSION, fingerprint, split, size)',
        'cache_key("decoded", DECODE_VERSION, split, size)',
        ["tests/test_cache_keys.py"],
    ),
    (
        "3a finetune's head at the backbone's rate",
        "tlbench/api.py",
        '"lr": hp.lr, "name": "head"}]',
        '"lr": hp.lr * hp.backbone_lr_mult, "name": "head"}]',
        ["tests/test_strategy_groups.py"],
    ),
    (
        "3b finetune's backbone at the head's rate",
        "tlbench/api.py",
        '"lr": hp.lr * hp.backbone_lr_mult, "name": "backbone"',
        '"lr": hp.lr, "name": "backbone"',
        ["tests/test_strategy_groups.py"],
    ),
    (
        "4a the warm-up's steps and images counted as measured",
        "tlbench/engine.py",
        WARMUP_END,
        WARMUP_END + "        result.measured_steps += len(train_sizes)\n"
        "        result.measured_images += sum(train_sizes)\n",
        ["tests/test_warmup_throughput.py"],
    ),
    (
        "4b the warm-up's seconds timed as training",
        "tlbench/engine.py",
        WARMUP_END,
        WARMUP_END + "        result.train_seconds += result.warmup_seconds\n"
        "        result.measured_seconds += result.warmup_seconds\n",
        ["tests/test_warmup_throughput.py"],
    ),
    (
        "4c the warm-up not undone",
        "tlbench/engine.py",
        "        with _undone(model, step, [loader.augment_generator], device):\n",
        "        with contextlib.nullcontext():\n",
        ["tests/test_warmup_throughput.py"],
    ),
    (
        "5a the linear head loop without its NaN/inf check",
        "tlbench/engine.py",
        FEATURE_LOOP_CHECK,
        "            head.eval()",
        ["tests/test_divergence.py"],
    ),
    (
        "5b the head loop checks NaN only",
        "tlbench/engine.py",
        FEATURE_LOOP_CHECK,
        FEATURE_LOOP_CHECK.replace("not math.isfinite", "math.isnan"),
        ["tests/test_divergence.py"],
    ),
    (
        "5c the image loop without its NaN/inf check",
        "tlbench/engine.py",
        "        if not math.isfinite(train_loss):\n            raise Diverged(epoch, train_loss)\n"
        "        # The epoch's freed",
        "        # The epoch's freed",
        ["tests/test_divergence.py"],
    ),
    (
        "6a resume counts a failed or interrupted record as done",
        "tlbench/plan.py",
        'if r.get("status") == "ok" and k not in rerun}',
        "if k not in rerun}",
        ["tests/test_resume_rule.py"],
    ),
    (
        "6b a later failed attempt replaces a finished answer",
        "tlbench/results.py",
        'if previous is None or r.get("status") == "ok" or previous.get("status") != "ok":',
        "if True:",
        ["tests/test_resume_rule.py"],
    ),
    (
        "7 predict ranks the least likely class first",
        "tlbench/predict.py",
        "return p.topk(k, dim=1)",
        "return p.topk(k, dim=1, largest=False)",
        ["tests/test_predict.py"],
    ),
]


def plant(copy: Path, bug: tuple) -> bool:
    name, path, text, planted, tests = bug
    file = copy / path
    source = file.read_text()
    if source.count(text) != 1:
        print(f"{name}: the edit matches {source.count(text)} places, not one: update it")
        return False
    file.write_text(source.replace(text, planted))
    try:
        start = time.perf_counter()
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-m",
                "not slow",
                *tests,
            ],
            cwd=copy,
            env={**os.environ, "PYTHONPATH": str(copy)},
            capture_output=True,
            text=True,
        )
    finally:
        file.write_text(source)
    failed = [line.split(" - ")[0][7:] for line in run.stdout.splitlines() if line[:7] == "FAILED "]
    caught = run.returncode == 1 and bool(failed)
    seconds = time.perf_counter() - start
    print(f"{name}: {'caught' if caught else 'NOT CAUGHT'} ({seconds:.0f} s)")
    for test in failed:
        print(f"    {test}")
    return caught


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="tlbench-plant-") as tmp:
        copy = Path(tmp)
        archive = subprocess.run(["git", "archive", "HEAD"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(copy)], input=archive.stdout, check=True)
        results = [plant(copy, bug) for bug in BUGS]
    print(f"{sum(results)} of {len(BUGS)} planted bugs caught")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
