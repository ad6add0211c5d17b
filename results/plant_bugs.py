"""Plant each bug issues 10 and 25 name, one at a time, and show which fast tests catch it.

    python results/plant_bugs.py          # from the repository root, in the dev venv
    python results/plant_bugs.py 25.      # only the bugs whose name starts with "25."

Works on a `git archive` copy of HEAD in a temporary folder (the working tree
is never touched): for each bug it makes its text edits (one, or several in
one file for a bug that changes both sides of a contract), runs the named
test files there (`-m "not slow"`) and restores the file. Exits 1 if any bug
is not caught, or if an edit no longer matches the code (then update it here).
Results of a run: results/mutation.md, part 1 (issue 10) and "Planted bugs of
issue 25".
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WARMUP_END = '        result.warmup_batches = {"train": train_sizes, "eval": eval_sizes}\n'
#: the non-finite loss check both fit loops share (`fitting.count_epoch`).
LOSS_CHECK = "    if not math.isfinite(train_loss):\n        raise Diverged(epoch, train_loss)\n"
#: what the warm-up's undo puts back after the block (`fitting.undone`).
UNDO = "    with torch.no_grad():\n        module.load_state_dict(weights)\n    step.restore(step_state)\n"

#: (bug, file, text, text with the bug, test files that must catch it); text and
#: planted text may be tuples of the same length: edits made together in that file.
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
        "tlbench/plugin_types.py",
        '"lr": hp.lr, "name": "head"}]',
        '"lr": hp.lr * hp.backbone_lr_mult, "name": "head"}]',
        ["tests/test_strategy_groups.py"],
    ),
    (
        "3b finetune's backbone at the head's rate",
        "tlbench/plugin_types.py",
        '"lr": hp.lr * hp.backbone_lr_mult, "name": "backbone"',
        '"lr": hp.lr, "name": "backbone"',
        ["tests/test_strategy_groups.py"],
    ),
    (
        "4a the warm-up's steps and images counted as measured",
        "tlbench/image_fit.py",
        WARMUP_END,
        WARMUP_END + "        result.measured_steps += len(train_sizes)\n"
        "        result.measured_images += sum(train_sizes)\n",
        ["tests/test_warmup_throughput.py"],
    ),
    (
        "4b the warm-up's seconds timed as training",
        "tlbench/image_fit.py",
        WARMUP_END,
        WARMUP_END + "        result.train_seconds += result.warmup_seconds\n"
        "        result.measured_seconds += result.warmup_seconds\n",
        ["tests/test_warmup_throughput.py"],
    ),
    (
        "4c the warm-up not undone",
        "tlbench/fitting.py",
        UNDO,
        "",
        ["tests/test_warmup_throughput.py"],
    ),
    (
        "5a the fit loops without their NaN/inf check",
        "tlbench/fitting.py",
        LOSS_CHECK,
        "",
        ["tests/test_divergence.py"],
    ),
    (
        "5b the fit loops check NaN only",
        "tlbench/fitting.py",
        LOSS_CHECK,
        LOSS_CHECK.replace("not math.isfinite", "math.isnan"),
        ["tests/test_divergence.py"],
    ),
    (
        "6a resume counts a failed or interrupted record as done",
        "tlbench/plan.py",
        'if r.get("status") == "ok" and k not in self.rerun',
        "if k not in self.rerun",
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
    # Issue 25: bugs no round trip, chance input or single run can see.
    (
        "25.1 the per-image bitset packed little-endian on both sides",
        "tlbench/record.py",
        (
            "np.packbits(flags.astype(bool))",
            "np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=n)",
        ),
        (
            'np.packbits(flags.astype(bool), bitorder="little")',
            'np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=n, bitorder="little")',
        ),
        ["tests/test_known_answers.py"],
    ),
    (
        "25.2 each budget draws its own order (budgets no longer nested)",
        "tlbench/budget.py",
        "order = np.random.default_rng([seed, int(c)]).permutation(members)",
        "order = np.random.default_rng([seed, int(c), sum(map(ord, budget))]).permutation(members)",
        ["tests/test_properties.py"],
    ),
    (
        "25.3 the transferability-score memo keyed without budget and seed",
        "tlbench/trial.py",
        "            spec.budget,\n            spec.seed if spec.budget else None,\n",
        "",
        ["tests/test_second_run.py"],
    ),
    (
        "25.4 squeezing out unreadable images keeps the first N rows",
        "tlbench/data.py",
        "rows = np.flatnonzero(ok)",
        "rows = np.arange(len(labels))",
        ["tests/test_properties.py"],
    ),
    (
        "25.5 seeds paired by rank (each row sorted), not by seed",
        "tlbench/stats.py",
        'return t_interval([a[s] - b[s] for s in common], confidence, method="paired-t")',
        "return t_interval([x - y for x, y in zip(sorted(a[s] for s in common), "
        'sorted(b[s] for s in common))], confidence, method="paired-t")',
        ["tests/test_properties.py"],
    ),
]


def plant(copy: Path, bug: tuple) -> bool:
    name, path, text, planted, tests = bug
    file = copy / path
    source = file.read_text()
    edits = list(zip(text, planted, strict=True)) if isinstance(text, tuple) else [(text, planted)]
    changed = source
    for old, new in edits:
        if changed.count(old) != 1:
            print(f"{name}: the edit matches {changed.count(old)} places, not one: update it")
            return False
        changed = changed.replace(old, new)
    file.write_text(changed)
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


def main(prefixes: list[str]) -> int:
    bugs = [b for b in BUGS if not prefixes or b[0].startswith(tuple(prefixes))]
    with tempfile.TemporaryDirectory(prefix="tlbench-plant-") as tmp:
        copy = Path(tmp)
        archive = subprocess.run(["git", "archive", "HEAD"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(copy)], input=archive.stdout, check=True)
        results = [plant(copy, bug) for bug in bugs]
    print(f"{sum(results)} of {len(bugs)} planted bugs caught")
    return 0 if results and all(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
