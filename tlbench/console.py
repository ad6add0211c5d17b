"""Live progress of a grid: rich bars on a terminal, plain lines in logs and CI.

The console is an observer plugin like any other (pytest's terminal reporter
is the model): `tlbench run` registers it for the grid, and it hears the same
hooks a third-party tracker does (`tlbench_grid_started`, `tlbench_run_phase`,
`tlbench_epoch_ended`, ...), whichever process or machine runs the trials.
Runs may overlap (the `devices` and `ray` executors): each line names its run.

Three modes, picked by `make_progress`:

- live (a terminal): two bars, the grid (run i of n, elapsed, ETA) and the
  current run (phase: decode, features, train, eval; epoch, loss, accuracy,
  images/s), with one line per finished run printed above them;
- plain (output is not a terminal, or `--plain`): one line per run, phase
  change and epoch, no colour and no cursor movement, readable in a log;
- quiet (`--quiet`): nothing until the final table.

The ETA counts runs still to train, with the current run's finished epochs
as a fraction of a run; runs already in the results file and skipped runs
take no time and are not counted.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, RenderableType
from rich.progress import BarColumn, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichBars
from rich.text import Text

from tlbench.hookspecs import hookimpl
from tlbench.plugin_types import PlannedRun, RunSpec

#: phases the runner reports before training; train and eval alternate every epoch.
SETUP_PHASES = ("decode", "build", "features")


def format_duration(seconds: float | None) -> str:
    """`0.34` -> `0.3s`, `75` -> `1m15s`; `None` -> `?`."""
    if seconds is None or seconds != seconds:
        return "?"
    if seconds < 9.95:
        return f"{max(0.0, seconds):.1f}s"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def describe_epoch(metrics: dict[str, Any]) -> str:
    """`loss 0.412  acc 83.3%  1,234 img/s` from an epoch's metrics."""
    loss, acc = metrics.get("train_loss"), metrics.get("eval_accuracy")
    ips = metrics.get("train_images_per_s")
    parts = [
        "loss ?" if loss is None else f"loss {loss:.3f}",
        "acc ?" if acc is None else f"acc {100 * acc:.1f}%",
    ]
    if ips:
        parts.append(f"{ips:,.0f} img/s")
    return "  ".join(parts)


def short_dataset(name: str) -> str:
    """`imagefolder:/long/path/to/flowers` -> `imagefolder:…/flowers` (progress lines only)."""
    base, sep, argument = name.partition(":")
    parts = argument.rstrip("/").split("/")
    return f"{base}:…/{parts[-1]}" if sep and len(parts) > 2 else name


def describe_run(
    backbone: str,
    strategy: str,
    dataset: str,
    seed: int,
    holdout: str | None = None,
    stop_epoch: int | None = None,
) -> str:
    """One run for the progress lines; a tuning trial says it is one (`tlbench.tune`), and
    a halving rung where it stops (`tlbench.rungs`)."""
    rung = f", to epoch {stop_epoch}" if stop_epoch is not None else ""
    trial = f" / tuning trial ({holdout}{rung})" if holdout else ""
    return f"{backbone} / {strategy} / {short_dataset(dataset)} / seed {seed}{trial}"


def describe_spec(spec: RunSpec) -> str:
    """`describe_run` of a run spec."""
    return describe_run(
        spec.backbone, spec.strategy, spec.dataset, spec.seed, spec.holdout, spec.stop_epoch
    )


def describe_outcome(record: dict[str, Any]) -> str:
    """One line for a finished run: its name and its result or reason."""
    c = record["config"]
    name = describe_run(
        c["backbone"], c["strategy"], c["dataset"], c["seed"], c.get("holdout"), c.get("stop_epoch")
    )
    if record["status"] == "ok":
        acc = record["accuracy"]
        seconds = record.get("elapsed_seconds") or record.get("cost", {}).get("wall_seconds")
        took = f" in {format_duration(seconds)}" if seconds is not None else ""
        return (
            f"{name}: top-1 {100 * acc['final']:.1f}% "
            f"(best {100 * acc['best']:.1f}% at epoch {acc['best_epoch']}){took}"
            f"{_inference_outcome(record.get('inference'))}"
        )
    return f"{name}: {record['status']} — {record.get('reason')}"


def _inference_outcome(inference: Any) -> str:
    """The trained model's batch-1 latency, and its export where that went wrong (loudly)."""
    if not isinstance(inference, dict) or inference.get("latency_ms_p50") is None:
        return ""
    text = f"; {inference['latency_ms_p50']:.1f} ms per image at batch 1"
    onnx = inference.get("onnx")
    if isinstance(onnx, dict) and onnx.get("status") != "ok":
        text += f"; ONNX {str(onnx.get('status')).upper()}: {onnx.get('reason')}"
    return text


class GridClock:
    """Runs done (with the current run's epochs as a fraction) and the time left."""

    def __init__(self, total: int):
        self.total = total
        self.finished = 0
        self.fraction = 0.0  # of the current run
        self.started = time.perf_counter()

    @property
    def done(self) -> float:
        return self.finished + self.fraction

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def eta(self) -> float | None:
        """Seconds left at the pace so far; None before any progress."""
        if self.done <= 0:
            return None
        return self.elapsed() / self.done * max(0.0, self.total - self.done)


def stdout_to_devnull() -> None:
    """Point file descriptor 1 at /dev/null: later writes (and the final flush) succeed."""
    import os
    import sys

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


class PipeSafeConsole(Console):
    """A rich Console whose closed output raises `BrokenPipeError` for its caller to handle.

    rich's own answer to a closed pipe is `SystemExit(1)`, which would end a
    grid whose output is piped into `head`; tlbench's console stops printing
    instead, and the command that owns the output decides what a closed pipe means.
    Not a terminal, it never wraps a line (`soft_wrap`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_terminal and "soft_wrap" not in kwargs:
            # A log or a pipe: a line is never cut into two at the console's width (80 when
            # it cannot tell); a terminal wraps long lines itself.
            self.soft_wrap = True

    def on_broken_pipe(self) -> None:
        stdout_to_devnull()
        raise BrokenPipeError


class Observer:
    """Turns the observer hooks into the display's calls (run numbers kept here)."""

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self._total = 0

    @hookimpl
    def tlbench_grid_started(self, plan: list[PlannedRun]) -> None:
        self._index.clear()
        self._total = sum(p.status == "pending" for p in plan)
        self.grid_started(plan)

    @hookimpl
    def tlbench_run_started(self, run: RunSpec) -> None:
        # A run retried (its worker died) keeps its number: [2/3] twice, never [4/3].
        index = self._index.setdefault(run.key, len(self._index) + 1)
        self.run_started(run, index, self._total)

    @hookimpl
    def tlbench_run_phase(
        self, run: RunSpec, phase: str, done: int | None, total: int | None
    ) -> None:
        self.phase(phase, done, total)

    @hookimpl
    def tlbench_epoch_ended(self, run: RunSpec, epoch: int, metrics: dict[str, Any]) -> None:
        self.epoch(metrics, metrics.get("epochs", epoch))

    @hookimpl
    def tlbench_run_finished(self, run: RunSpec, record: dict[str, Any]) -> None:
        self.run_finished(record)

    @hookimpl
    def tlbench_grid_finished(self, records: list[dict[str, Any]]) -> None:
        self.grid_finished(records)

    def grid_started(self, plans: list[PlannedRun]) -> None: ...
    def run_started(self, spec: RunSpec, index: int, total: int) -> None: ...
    def phase(self, name: str, done: int | None = None, total: int | None = None) -> None: ...
    def epoch(self, metrics: dict[str, Any], epochs: int) -> None: ...
    def run_finished(self, record: dict[str, Any]) -> None: ...
    def grid_finished(self, records: list[dict[str, Any]]) -> None: ...


class PlainProgress(Observer):
    """One line per run and setup phase, epoch lines every few seconds: readable in a log."""

    #: at most one epoch line per this many seconds (first and last epochs always).
    EPOCH_LINE_SECONDS = 10.0

    def __init__(self, console: Console, quiet: bool = False):
        super().__init__()
        self.console, self.quiet = console, quiet
        #: the reader of standard output went away while the grid ran.
        self.output_closed = False
        self.clock = GridClock(0)
        self._last_phase = ""
        self._pending_decode = ""
        self._epochs = 0
        self._last_line = 0.0

    def _emit(self, text: str, style: str | None = None) -> None:
        if self.quiet:
            return
        try:
            self.console.print(text, style=style, highlight=False, soft_wrap=True, markup=False)
        except BrokenPipeError:
            # `tlbench run | head`: the reader has gone, the grid has not. Stop
            # printing (standard output now goes nowhere) and let it finish.
            self.quiet = True
            self.output_closed = True
            stdout_to_devnull()

    def grid_started(self, plans: list[PlannedRun]) -> None:
        todo = sum(p.status == "pending" for p in plans)
        done = sum(p.status == "done" for p in plans)
        skipped = sum(p.status == "skipped" for p in plans)
        self.clock = GridClock(todo)
        self._emit(
            f"grid: {len(plans)} runs — {todo} to train, {done} already done, {skipped} skipped"
        )

    def run_started(self, spec: RunSpec, index: int, total: int) -> None:
        self._last_phase = ""
        self.clock.fraction = 0.0
        eta = self.clock.eta()
        when = f"  (elapsed {format_duration(self.clock.elapsed())}, eta {format_duration(eta)})"
        s = spec
        self._emit(
            f"[{index}/{total}] {describe_spec(s)} "
            f"at {s.image_size} px" + (when if eta is not None else "")
        )

    def phase(self, name: str, done: int | None = None, total: int | None = None) -> None:
        # Epoch lines already say that training and evaluation happen, and
        # building a model is instant; a decode is worth a line only when
        # images are really decoded (counts arrive), not read from the cache.
        base = name.split()[0] if name else name
        if done is None:
            if base == "decode":
                self._pending_decode = name
            elif name != self._last_phase and base not in ("train", "eval", "build"):
                self._last_phase = name
                self._emit(f"    {name}")
        elif base == "decode" and self._pending_decode:
            self._emit(f"    {self._pending_decode}: {total} images")
            self._pending_decode = ""

    def epoch(self, metrics: dict[str, Any], epochs: int) -> None:
        self._epochs = epochs
        self.clock.fraction = min(1.0, metrics["epoch"] / max(1, epochs))
        # A log wants the trend, not 30 lines of a head that trains in a second:
        # the first and last epochs, and one line per EPOCH_LINE_SECONDS between.
        now = time.perf_counter()
        epoch = metrics["epoch"]
        if epoch in (1, epochs) or now - self._last_line >= self.EPOCH_LINE_SECONDS:
            self._last_line = now
            self._emit(f"    epoch {epoch}/{epochs}  {describe_epoch(metrics)}")

    def run_finished(self, record: dict[str, Any]) -> None:
        if record["status"] != "skipped":
            self.clock.finished += 1
        self.clock.fraction = 0.0
        self._emit(f"    -> {describe_outcome(record)}")

    def grid_finished(self, records: list[dict[str, Any]]) -> None:
        trained = sum(r["status"] != "skipped" for r in records)
        if trained:
            self._emit(f"grid done: {trained} runs in {format_duration(self.clock.elapsed())}")

    def close(self) -> None:
        """Release the display (after an interruption too)."""


class _CountColumn(ProgressColumn):
    """`run 3/12`, `epoch 2/5`, `320/720 images`; blank without a count (building, extracting)."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "")
        if task.total is None or not unit:
            return Text("")
        done, total = int(task.completed), int(task.total)
        if unit == "run":  # the run under way, not the runs finished
            return Text(f"run {min(done + 1, total)}/{total}", style="progress.download")
        if unit == "epoch":
            return Text(f"epoch {done}/{total}", style="progress.download")
        return Text(f"{done}/{total} {unit}", style="progress.download")


class _EtaColumn(ProgressColumn):
    """The grid's own ETA (runs, not rich's recent-speed window)."""

    def __init__(self, clock_of: Any):
        super().__init__()
        self._clock_of = clock_of

    def render(self, task: Task) -> Text:
        if task.fields.get("unit") != "run":
            return Text("")
        return Text(f"eta {format_duration(self._clock_of().eta())}", style="progress.remaining")


class LiveProgress(PlainProgress):
    """Two bars: the grid (run i of n, ETA) and the current run (phase, epoch, metrics)."""

    def __init__(self, console: Console):
        super().__init__(console)
        self.bars = RichBars(
            TextColumn("{task.description}"),
            BarColumn(bar_width=20),
            _CountColumn(),
            TimeElapsedColumn(),
            _EtaColumn(lambda: self.clock),
            TextColumn("{task.fields[info]}"),
            console=console,
            transient=True,  # the bars vanish at the end; the run lines and table remain
        )
        self._grid: Any = None
        self._run: Any = None
        self._run_info = ""

    def renderable(self) -> RenderableType:
        """What the bars show now (for captures and tests)."""
        return self.bars.get_renderable()

    def _emit(self, text: str, style: str | None = None) -> None:
        # Through the live console, so lines appear above the bars.
        self.bars.console.print(text, style=style, highlight=False, markup=False)

    def grid_started(self, plans: list[PlannedRun]) -> None:
        super().grid_started(plans)
        self.bars.start()
        self._grid = self.bars.add_task("grid", total=max(1, self.clock.total), info="", unit="run")

    def run_started(self, spec: RunSpec, index: int, total: int) -> None:
        self._last_phase = ""
        self._epochs, self._run_info = 0, ""
        self.clock.fraction = 0.0
        if self._run is not None:
            self.bars.remove_task(self._run)
        s = spec
        self.bars.update(self._grid, completed=self.clock.done)
        self._run = self.bars.add_task(
            f"  {s.backbone} / {s.strategy} / seed {s.seed}", total=None, info="starting", unit=""
        )
        self._emit(
            f"[{index}/{total}] {describe_spec(s)} at {s.image_size} px",
            style="bold",
        )

    def phase(self, name: str, done: int | None = None, total: int | None = None) -> None:
        if self._run is None:
            return
        base = name.split()[0] if name else name
        if base in ("train", "eval") and self._epochs:
            # Keep the epoch bar and the last metrics; only the phase word changes.
            self.bars.update(self._run, info=f"{name:<6} {self._run_info}")
        elif done is not None:
            # "decode" counts belong to the "decode train" announced before them.
            label = self._last_phase if self._last_phase.startswith(name) else name
            self.bars.update(self._run, completed=done, total=total, info=label, unit="images")
        else:
            self._last_phase = name
            self.bars.update(self._run, completed=0, total=None, info=name, unit="")

    def epoch(self, metrics: dict[str, Any], epochs: int) -> None:
        self._epochs = epochs
        self.clock.fraction = min(1.0, metrics["epoch"] / max(1, epochs))
        if self._run is None:
            return
        self._run_info = describe_epoch(metrics)
        self.bars.update(
            self._run,
            completed=metrics["epoch"],
            total=epochs,
            unit="epoch",
            info=f"{'train':<6} {self._run_info}",
        )
        self.bars.update(self._grid, completed=self.clock.done)

    def run_finished(self, record: dict[str, Any]) -> None:
        if record["status"] != "skipped":
            self.clock.finished += 1
        self.clock.fraction = 0.0
        self._epochs, self._run_info = 0, ""
        style = {"ok": "green", "skipped": "dim"}.get(record["status"], "red")
        self._emit(f"    -> {describe_outcome(record)}", style=style)
        if self._grid is not None:
            self.bars.update(self._grid, completed=self.clock.done)

    def grid_finished(self, records: list[dict[str, Any]]) -> None:
        self.close()
        super().grid_finished(records)

    def close(self) -> None:
        if self._run is not None:
            self.bars.remove_task(self._run)
            self._run = None
        self.bars.stop()


def make_progress(
    console: Console, *, quiet: bool = False, plain: bool = False, notebook: bool = False
) -> PlainProgress:
    """The one progress factory of `tlbench run`, `select` and `tlbench.run()`.

    Live bars on a terminal (and, with `notebook`, in Jupyter when ipywidgets
    is there for rich's live display); plain lines when not a terminal or
    `plain`; nothing until the final table when `quiet`.
    """
    if quiet:
        return PlainProgress(console, quiet=True)
    if plain:
        return PlainProgress(console)
    if console.is_terminal or (notebook and console.is_jupyter and _has_ipywidgets()):
        return LiveProgress(console)
    return PlainProgress(console)


def _has_ipywidgets() -> bool:
    try:
        import ipywidgets  # noqa: F401 - rich's live display in Jupyter needs it
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- warnings


def _issuer(depth: int = 2) -> Any:
    """The frame that issued the warning being shown: the first outside the `warnings` module."""
    import sys

    frame = sys._getframe(depth)
    while frame is not None and frame.f_globals.get("__name__") == "warnings":
        frame = frame.f_back
    return frame


def is_tlbench_warning(frame: Any) -> bool:
    """Whether tlbench's own code called `warnings.warn` in `frame` (its module is tlbench's
    and the line it runs is a `warn(` call): a library's warning raised inside a call that
    tlbench made (a C++ `TORCH_WARN` in a torch op) is the library's, not tlbench's."""
    import linecache

    if frame is None or not str(frame.f_globals.get("__name__", "")).startswith("tlbench"):
        return False
    filename, line = frame.f_code.co_filename, frame.f_lineno
    # A warn( call spanning lines: Python 3.11 reports its first line, older ones may
    # report a line of its arguments.
    source = "".join(linecache.getline(filename, n) for n in range(max(1, line - 8), line + 1))
    return "warn(" in source


def show_warning(err: Console) -> Any:
    """A `warnings.showwarning` for the CLI: tlbench's own warnings as one plain line,
    `warning: ...` (never read as markup); every other library's in Python's own format
    (file, line, category), so that it is not taken for tlbench's."""
    import warnings

    def show(
        message: Any,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        if is_tlbench_warning(_issuer()):
            err.print(Text.assemble(("warning:", "yellow"), " ", str(message)))
        else:
            text = warnings.formatwarning(message, category, filename, lineno, line)
            err.print(Text(text.rstrip("\n")))

    return show
