"""Fault-injection soak: kill a 12-run grid at random, rerun it, and check nothing is lost.

Claim (issue 26): under every executor (`inline`, `process`, `devices
cpu,cpu`, `ray`), a `tlbench run` whose driver, worker or forkserver is
killed at a random moment by SIGKILL, SIGTERM, SIGINT or SIGHUP, then run
again, never holds two `ok` records of one run, never tears a line of its
results file, and a final rerun completes the grid.

Each step starts the same `tlbench run` (12 runs: the tiny CNN on `tinyset`,
seeds 0-11, 2 epochs at 16 px; `tests/signalgrid.py`'s driver) in a session
of its own, waits until its first run has started, then after a random delay
sends a random signal to a random target present at that moment: the driver,
a worker (a process of `process`/`devices`, a Ray task's worker) or the
forkserver. It waits for the driver to end (by the signal, or by finishing
the grid), kills whatever is left of its session (a Ray instance), and
checks the results file. The choices come from one seeded generator; the
moments depend on the machine. A fault is *survived* when the file's
invariants hold after its step, no traceback was printed, and the driver
ended as the signal says it should (finished, interrupted with 128 + the
signal, or killed).

Run: `nice -n 19 python benchmarks/soak.py [--seconds 480] [--seed 0]`; it
writes its figures to `results/soak.md`. `tests/test_soak.py` runs it, marked
slow, within 10 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from signalgrid import Driver, alive, children, forkserver_of

EXECUTORS = ("inline", "process", "devices", "ray")
SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
RUNS = 12
#: seconds one step may take before it counts as a hang (a Ray instance starts in ~16 s).
STEP_TIMEOUT = 180.0


@dataclass
class Figures:
    """What a soak did and saw; `problems` names every fault not survived."""

    seed: int
    faults: Counter = field(default_factory=Counter)  # (executor, target, signal) -> count
    injected: int = 0
    survived: int = 0
    steps: int = 0
    records_checked: int = 0
    final_reruns: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


def check_file(path: Path) -> tuple[int, list[str]]:
    """(records, problems) of a results file: a torn line, two ok records of one key."""
    if not path.exists():
        return 0, []
    problems: list[str] = []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        problems.append(f"{path.name}: the last line is torn (no newline)")
    ok: Counter = Counter()
    lines = [line for line in data.split(b"\n") if line.strip()]
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except ValueError:
            problems.append(f"{path.name}:{number}: a torn or invalid line")
            continue
        if record.get("status") == "ok":
            ok[record["key"]] += 1
    problems += [f"key {k} has {n} ok records" for k, n in ok.items() if n > 1]
    return len(lines), problems


def answers(path: Path) -> dict[str, str]:
    """Each key's answer status: ok if any of its records is ok, else its last status."""
    found: dict[str, str] = {}
    if path.exists():
        for line in path.read_bytes().split(b"\n"):
            try:
                record = json.loads(line)
            except ValueError:
                continue  # blank, or torn (`check_file` reports it)
            if found.get(record["key"]) != "ok":
                found[record["key"]] = record["status"]
    return found


def complete(folder: Path) -> bool:
    return sum(s == "ok" for s in answers(folder / "runs.jsonl").values()) == RUNS


def _workers(driver: Driver, executor: str) -> list[int]:
    """The processes running (or ready to run) this grid's trials now."""
    if executor in ("process", "devices"):
        server = forkserver_of(driver.pid)
        return children(server) if server is not None else []
    if executor == "ray":
        found = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if cmdline.read_bytes().startswith(b"ray::") and os.getpgid(
                    int(cmdline.parent.name)
                ) == os.getpgid(driver.pid):
                    found.append(int(cmdline.parent.name))
            except (OSError, ValueError):
                continue
        return found
    return []


def _target(driver: Driver, executor: str, rng: random.Random) -> tuple[str, int]:
    """A random target present now: (what, pid); the driver when nothing else is."""
    choices = [("driver", driver.pid)]
    workers = _workers(driver, executor)
    if workers:
        choices.append(("worker", rng.choice(sorted(workers))))
    server = forkserver_of(driver.pid) if executor in ("process", "devices") else None
    if server is not None:
        choices.append(("forkserver", server))
    return rng.choice(choices)


def _expected_exit(what: str, signum: int, code: int) -> bool:
    """Whether `code` is how a driver ends after `signum` reached its `what`."""
    if what == "driver":
        # 128 + signum from tlbench, or -signum: killed by it (before its handlers were in
        # place, or after the grid), which a shell shows as 128 + signum too; 0: it had done.
        return code in (0, 128 + signum, -signum)
    return code in (0, 1)  # a worker or the forkserver: the grid goes on (1: every run failed)


def _tail(log: str, lines: int = 15) -> str:
    return "\n".join(log.splitlines()[-lines:])


def _send(pid: int, signum: int) -> bool:
    """Send `signum` to `pid`; False when it had already ended (nothing was injected)."""
    if not alive(pid):
        return False
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def step(folder: Path, executor: str, rng: random.Random, figures: Figures) -> None:
    """One run of the grid with one fault at a random moment, then the file's checks."""
    signum = rng.choice(SIGNALS)
    delay = rng.uniform(0.0, 2.5)
    with Driver(folder, executor, RUNS) as driver:
        # From the first run's start (a worker exists by then), or the grid's end.
        driver.wait_until(
            lambda: (
                "[1/" in driver.log() or "grid done" in driver.log() or "0 to train" in driver.log()
            ),
            "the first run to start",
            STEP_TIMEOUT,
        )
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and driver.proc.poll() is None:
            time.sleep(0.05)
        if driver.proc.poll() is not None:
            code, what = driver.wait(), "nothing (the grid had finished)"
        else:
            what, pid = _target(driver, executor, rng)
            if _send(pid, signum):
                figures.injected += 1
                figures.faults[executor, what, signal.Signals(signum).name] += 1
            else:  # the target ended between being chosen and the signal: no fault this step
                what = f"nothing (the {what} had ended)"
            try:
                code = driver.wait(timeout=STEP_TIMEOUT)
            except subprocess.TimeoutExpired:
                code = None
        log = driver.log()
    figures.steps += 1
    count, problems = check_file(folder / "runs.jsonl")
    figures.records_checked += count
    injected = not what.startswith("nothing")
    where = f"{executor}: {signal.Signals(signum).name} to the {what}"
    if code is None:
        problems.append(f"{where}: the driver did not end within {STEP_TIMEOUT:.0f} s")
    elif injected and not _expected_exit(what, signum, code):
        problems.append(f"{where}: exit status {code}; the log ends:\n{_tail(log)}")
    elif not injected and code != 0:
        problems.append(f"{where}: exit status {code} with no fault; the log ends:\n{_tail(log)}")
    if "Traceback" in log:
        problems.append(f"{where}: a traceback:\n{log[log.index('Traceback') :][:2000]}")
    figures.problems += problems
    # A step with no fault sent checks the file all the same, but survives nothing.
    if injected and not problems:
        figures.survived += 1


def final_rerun(folder: Path, executor: str, figures: Figures) -> None:
    """The same command with no fault: it must complete the grid, each run once ok."""
    with Driver(folder, executor, RUNS) as driver:
        try:
            code = driver.wait(timeout=STEP_TIMEOUT * 2)
        except subprocess.TimeoutExpired:
            code = None
        log = driver.log()
    count, problems = check_file(folder / "runs.jsonl")
    figures.records_checked += count
    ok = sum(s == "ok" for s in answers(folder / "runs.jsonl").values())
    if code != 0 or ok != RUNS:
        problems.append(f"{executor}: the final rerun ended {code} with {ok} of {RUNS} runs ok")
    if "Traceback" in log:
        problems.append(f"{executor}: the final rerun printed a traceback")
    figures.final_reruns[executor] = f"{ok}/{RUNS} ok, exit {code}"
    figures.problems += problems


def soak(root: Path, *, seconds: float = 480.0, seed: int = 0, executors=EXECUTORS) -> Figures:
    """Faults at random on each executor for its share of `seconds`, then a final rerun each."""
    figures = Figures(seed)
    rng = random.Random(seed)
    started = time.monotonic()
    share = seconds / len(executors)
    for i, executor in enumerate(executors):
        rounds = 0
        folder = root / executor / "round0"
        folder.mkdir(parents=True)
        # Leave time for the final rerun: about a third of the executor's share.
        until = started + share * i + share * 0.65
        first = True  # every executor takes one fault at least, however short the soak
        while first or time.monotonic() < until:
            first = False
            step(folder, executor, rng, figures)
            if complete(folder) and time.monotonic() < until:
                # Every run is done: the next faults go to a fresh results file.
                rounds += 1
                folder = root / executor / f"round{rounds}"
                folder.mkdir()
        if not (folder / "runs.jsonl").exists() and rounds:
            folder = root / executor / f"round{rounds - 1}"
        final_rerun(folder, executor, figures)
    figures.seconds = round(time.monotonic() - started, 1)
    return figures


def write_markdown(figures: Figures, path: Path, command: str) -> None:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# Fault-injection soak (issue 26)",
        "",
        f"Made by `{command}` (`benchmarks/soak.py`, seed {figures.seed}); load average "
        f"{load:.1f} at the end, on this project's shared 2-core machine.",
        "",
        "A 12-run grid (tiny CNN, `tinyset`, 2 epochs, 16 px) under each executor; each step "
        "runs it and sends one random signal to a random target at a random moment, then "
        "checks the results file; a final rerun without faults must complete the grid.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| faults injected | {figures.injected} |",
        f"| faults survived | {figures.survived} |",
        f"| steps (runs of the grid with a fault planned) | {figures.steps} |",
        f"| records checked (summed over the checks after each step) | {figures.records_checked} |",
        f"| seconds | {figures.seconds} |",
        "",
        "| executor | target | signal | faults |",
        "|---|---|---|---|",
        *(f"| {e} | {t} | {s} | {n} |" for (e, t, s), n in sorted(figures.faults.items())),
        "",
        "Final reruns: "
        + ", ".join(f"{e} {outcome}" for e, outcome in figures.final_reruns.items())
        + ".",
        "",
        "Problems: " + ("none." if not figures.problems else ""),
        *(f"- {p}" for p in figures.problems),
        "",
    ]
    path.write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=480.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--executors", default=",".join(EXECUTORS))
    parser.add_argument(
        "--out", default=str(Path(__file__).resolve().parents[1] / "results" / "soak.md")
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tlbench-soak-") as tmp:
        figures = soak(
            Path(tmp), seconds=args.seconds, seed=args.seed, executors=args.executors.split(",")
        )
    command = "nice -n 19 python benchmarks/soak.py " + " ".join(sys.argv[1:])
    write_markdown(figures, Path(args.out), command.strip())
    print(Path(args.out).read_text())
    return 0 if not figures.problems and figures.survived == figures.injected else 1


if __name__ == "__main__":
    sys.exit(main())
