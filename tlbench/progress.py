"""Live progress of a grid: rich bars on a terminal, plain lines in logs and CI."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichBars

from tlbench.runner import PlannedRun, Progress


def _describe(metrics: dict[str, Any]) -> str:
    ips = metrics.get("train_images_per_s")
    return (
        f"loss {metrics['train_loss']:.3f}  acc {100 * metrics['eval_accuracy']:.1f}%"
        + (f"  {ips:.0f} img/s" if ips else "")
    )


def _outcome(record: dict[str, Any]) -> str:
    c = record["config"]
    name = f"{c['backbone']} / {c['strategy']} / {c['dataset']} / seed {c['seed']}"
    if record["status"] == "ok":
        acc = record["accuracy"]
        return f"{name}: top-1 {100 * acc['final']:.1f}% (best {100 * acc['best']:.1f}% at epoch {acc['best_epoch']})"
    return f"{name}: {record['status']} — {record.get('reason')}"


class PlainProgress(Progress):
    """One line per run and per epoch: readable in a log file."""

    def __init__(self, console: Console, quiet: bool = False):
        self.console, self.quiet = console, quiet
        self._index = self._total = 0
        self._last_phase = ""

    def _print(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, highlight=False, soft_wrap=True)

    def grid_started(self, plans: list[PlannedRun]) -> None:
        todo = sum(p.status == "pending" for p in plans)
        done = sum(p.status == "done" for p in plans)
        skipped = sum(p.status == "skipped" for p in plans)
        self._print(f"grid: {len(plans)} runs — {todo} to train, {done} already done, {skipped} skipped")

    def run_started(self, plan: PlannedRun, index: int, total: int) -> None:
        self._index, self._total = index, total
        self._print(f"[{index}/{total}] {plan.spec.label} at {plan.spec.image_size} px")

    def phase(self, name: str, done: int | None = None, total: int | None = None) -> None:
        if done is None and name != self._last_phase:
            self._last_phase = name
            self._print(f"    {name}")

    def epoch(self, metrics: dict[str, Any], epochs: int) -> None:
        self._print(f"    epoch {metrics['epoch']}/{epochs}  {_describe(metrics)}")

    def run_finished(self, record: dict[str, Any]) -> None:
        self._print(f"    -> {_outcome(record)}")


class LiveProgress(PlainProgress):
    """Two bars: the grid (run i of n, ETA) and the current run (phase, epoch, metrics)."""

    def __init__(self, console: Console):
        super().__init__(console)
        self.bars = RichBars(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            transient=False,
        )
        self._grid = self._run = None
        self._started = 0.0

    def grid_started(self, plans: list[PlannedRun]) -> None:
        super().grid_started(plans)
        todo = sum(p.status != "done" for p in plans)
        self.bars.start()
        self._grid = self.bars.add_task("grid", total=todo, info="")
        self._started = time.perf_counter()

    def run_started(self, plan: PlannedRun, index: int, total: int) -> None:
        if self._run is not None:
            self.bars.remove_task(self._run)
        self.bars.update(self._grid, description=f"grid run {index}/{total}")
        self._run = self.bars.add_task(f"  {plan.spec.backbone}/{plan.spec.strategy}", total=None, info="")

    def phase(self, name: str, done: int | None = None, total: int | None = None) -> None:
        if self._run is None:
            return
        if done is not None:
            self.bars.update(self._run, completed=done, total=total, info=name)
        else:
            self.bars.update(self._run, completed=0, total=None, info=name)

    def epoch(self, metrics: dict[str, Any], epochs: int) -> None:
        if self._run is not None:
            self.bars.update(self._run, completed=metrics["epoch"], total=epochs,
                             info=f"train  epoch {metrics['epoch']}/{epochs}  {_describe(metrics)}")

    def run_finished(self, record: dict[str, Any]) -> None:
        self.bars.console.print(f"  {_outcome(record)}", highlight=False)
        if self._grid is not None:
            self.bars.advance(self._grid)

    def grid_finished(self, records: list[dict[str, Any]]) -> None:
        if self._run is not None:
            self.bars.remove_task(self._run)
            self._run = None
        self.bars.stop()


def make_progress(console: Console, *, quiet: bool) -> Progress:
    if quiet:
        return PlainProgress(console, quiet=True)
    if console.is_terminal:
        return LiveProgress(console)
    return PlainProgress(console)
