"""Regenerate the captures in this folder from real runs (the README quotes them).

    python docs/captures/make_captures.py            # from the repository root

What it does, all through `tlbench.cli.main` (the real command, real plugins,
the real flowers12 images):

1. `tlbench run --config examples/flowers12_quick.toml` with a terminal console
   120 columns wide, so the live display is used; a frame of it is saved
   mid-grid as `run_live.txt` (and one during the first decode as
   `run_live_decode.txt`), the way a screenshot would show it.
   The screen after the grid (run lines, then the comparison table) is
   `run_final.txt`.
2. The linear runs with two more seeds, `--plain` (as in a log or CI):
   the finished run is skipped, the features come from the cache, and the
   output ends with the comparison table: `run_resume_plain.txt`. The same
   at 64 px into a second results file, `flowers12_64px.jsonl`: cheaper
   features, another point on the accuracy/cost frontier.
3. `tlbench report` of both results files in every format (`report.*`),
   grouped by strategy, and `--plot flowers12.png`.
4. `tlbench predict` of the best checkpoint on one test image per class:
   `predict.txt` and `predict_grid.png`.

The results files are kept here (`flowers12.jsonl`, `flowers12_64px.jsonl`):
run again, the script remakes steps 3 and 4 from them without training;
`--fresh` deletes them and redoes everything.

The committed captures were made on a quiet 2-core CPU (torch's default
threads) at commit 46f2b34; their seconds and images/s are that machine's,
not a benchmark (see benchmarks/ for those).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

import tlbench.cli
import tlbench.console
from tlbench import results

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FLOWERS = REPO.parent / "shared" / "data" / "flowers12"
RESULTS = HERE / "flowers12.jsonl"
MODELS = Path("/tmp/tlbench-captures-models")
#: a cache of its own, emptied for a fresh start, so the first run really decodes and extracts.
CACHE = Path("/tmp/tlbench-captures-cache")
WIDTH = 120
SMALL_RESULTS = HERE / "flowers12_64px.jsonl"
RUN = [
    "run",
    "--config",
    str(REPO / "examples" / "flowers12_quick.toml"),
    "--datasets",
    f"imagefolder:{FLOWERS}",
    "--out",
    str(RESULTS),
    "--save-models",
    "--models-dir",
    str(MODELS),
    "--cache-dir",
    str(CACHE),
]
RESUME_SHOWN = [
    "--config",
    "examples/flowers12_quick.toml",
    "--backbones",
    "efficientnet_lite0",
    "--strategies",
    "linear",
    "--seeds",
    "0,1,2",
]
RESUME = [*RUN, *RESUME_SHOWN[2:]]
SMALL = [*RESUME, "--image-size", "64", "--out", str(SMALL_RESULTS)]


def _frame(lines: list[tuple[str, str | None]], bars: Any) -> str:
    """The terminal as it looks now: the lines printed so far, then the live bars."""
    screen = Console(record=True, width=WIDTH, file=io.StringIO(), force_terminal=True)
    for text, style in lines:
        screen.print(text, style=style, highlight=False, markup=False)
    screen.print(bars)
    return "\n".join(line.rstrip() for line in screen.export_text().splitlines()) + "\n"


class SnapshotProgress(tlbench.console.LiveProgress):
    """The live display, plus frames saved at chosen moments and the screen at the end."""

    def __init__(self, console: Console):
        super().__init__(console)
        self.lines: list[tuple[str, str | None]] = []
        self.current = ""
        self.decode_saved = False
        self.end_offset = 0

    def _emit(self, text: str, style: str | None = None) -> None:
        self.lines.append((text, style))
        super()._emit(text, style)

    def run_started(self, plan: Any, index: int, total: int) -> None:
        self.current = f"{plan.spec.backbone}/{plan.spec.strategy}"
        super().run_started(plan, index, total)

    def phase(self, name: str, done: int | None = None, total: int | None = None) -> None:
        super().phase(name, done, total)
        if name == "decode" and done and total and done >= total // 2 and not self.decode_saved:
            self.decode_saved = True
            (HERE / "run_live_decode.txt").write_text(_frame(self.lines, self.renderable()))

    def epoch(self, metrics: dict[str, Any], epochs: int) -> None:
        super().epoch(metrics, epochs)
        if self.current == "efficientnet_lite0/finetune" and metrics["epoch"] == 1:
            (HERE / "run_live.txt").write_text(_frame(self.lines, self.renderable()))

    def grid_finished(self, records: list[dict[str, Any]]) -> None:
        super().grid_finished(records)
        # The bars are gone; what follows in the output is the final table.
        self.end_offset = self.console.file.tell()


def _cli(argv: list[str], *, terminal: bool, progress: type | None = None) -> tuple[int, str]:
    """Run `tlbench argv` with a console of WIDTH columns; returns (exit code, stdout text)."""
    buffer = io.StringIO()
    real_console = tlbench.cli.Console
    real_make = tlbench.console.make_progress

    def console(**kwargs: Any) -> Console:
        if kwargs.get("stderr"):
            return real_console(**kwargs)
        return real_console(
            file=buffer,
            width=WIDTH,
            force_terminal=terminal,
            color_system="standard" if terminal else None,
            **kwargs,
        )

    tlbench.cli.Console = console
    if progress is not None:
        tlbench.console.make_progress = lambda c, **k: progress(c)
    try:
        with contextlib.redirect_stdout(buffer):
            code = tlbench.cli.main(argv)
    finally:
        tlbench.cli.Console = real_console
        tlbench.console.make_progress = real_make
    return code, buffer.getvalue()


def _write(name: str, text: str) -> None:
    (HERE / name).write_text("\n".join(line.rstrip() for line in text.splitlines()) + "\n")
    print(f"wrote docs/captures/{name}")


def main() -> int:
    if "--fresh" in sys.argv[1:]:
        RESULTS.unlink(missing_ok=True)
    if not RESULTS.exists():
        shutil.rmtree(CACHE, ignore_errors=True)
        SMALL_RESULTS.unlink(missing_ok=True)
        train()
    report()
    return 0


def train() -> None:
    """Steps 1 and 2: the runs, with their live, final and plain captures."""
    progress: list[SnapshotProgress] = []

    def snapshot(console: Console) -> SnapshotProgress:
        progress.append(SnapshotProgress(console))
        return progress[-1]

    code, text = _cli(RUN, terminal=True, progress=snapshot)
    print(f"run: exit {code}")
    # The terminal once the grid is done: the run lines, then the comparison.
    lines = "\n".join(t for t, _ in progress[0].lines)
    final = Text.from_ansi(text[progress[0].end_offset :]).plain
    _write(
        "run_final.txt",
        "$ tlbench run --config examples/flowers12_quick.toml\n" + lines + "\n" + final,
    )

    code, text = _cli([*RESUME, "--plain"], terminal=False)
    _write("run_resume_plain.txt", "$ tlbench run " + " ".join(RESUME_SHOWN) + " --plain\n" + text)
    # Cheaper features (64 px) in a second results file: another point on the frontier.
    code, _ = _cli(SMALL, terminal=False)
    print(f"64 px run: exit {code}")


def report() -> None:
    """Steps 3 and 4: the report in every format, the plot, predictions."""

    both = [str(RESULTS), str(SMALL_RESULTS)]
    shown = f"{RESULTS.name} {SMALL_RESULTS.name}"
    _, text = _cli(["report", *both], terminal=False)
    _write("report_table.txt", f"$ tlbench report {shown}\n" + text)
    for fmt, ext in (
        ("markdown", "md"),
        ("csv", "csv"),
        ("json", "json"),
        ("html", "html"),
        ("latex", "tex"),
    ):
        _, text = _cli(["report", *both, "--format", fmt], terminal=False)
        _write(f"report.{ext}", text)
    _, text = _cli(["report", *both, "--group-by", "strategy", "--sort", "time"], terminal=False)
    _write(
        "report_by_strategy.txt",
        f"$ tlbench report {shown} --group-by strategy --sort time\n" + text,
    )
    code, _ = _cli(
        ["report", *both, "--format", "json", "--plot", str(HERE / "flowers12.png")], terminal=False
    )
    print(f"plot: exit {code}")

    # The most accurate run with a checkpoint, on one test image per class.
    ok = [
        r
        for r in results.latest_by_key(results.read(RESULTS)).values()
        if r["status"] == "ok"
        and r["cost"].get("checkpoint")
        and Path(r["cost"]["checkpoint"]).exists()
    ]
    if ok:
        best = max(ok, key=lambda r: r["accuracy"]["final"])
        images = [
            str(sorted(d.iterdir())[0]) for d in sorted((FLOWERS / "test").iterdir()) if d.is_dir()
        ]
        code, text = _cli(
            [
                "predict",
                best["cost"]["checkpoint"],
                *images,
                "--top-k",
                "3",
                "--grid",
                str(HERE / "predict_grid.png"),
            ],
            terminal=False,
        )
        c = best["config"]
        _write(
            "predict.txt",
            f"$ tlbench predict <{c['backbone']} / {c['strategy']} checkpoint> "
            "flowers12/test/<one image per class> --top-k 3 --grid predict_grid.png\n" + text,
        )


if __name__ == "__main__":
    sys.exit(main())
