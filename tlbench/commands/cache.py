"""`tlbench cache`: what the decoded-image, feature and score caches hold, and removing it.

    tlbench cache [list] [--json]           every entry: kind, dataset, split, size, backbone,
                                            bytes, last use
    tlbench cache prune --older-than 30d    entries not used for 30 days
    tlbench cache prune --larger-than 1GB   entries above a size
    tlbench cache prune --max-size 20GB     the most recently used up to a total, the rest go
    tlbench cache prune --dataset NAME      every entry of a dataset (or --backbone NAME)
    tlbench cache clear                     everything (asks first on a terminal)

Prune's criteria combine: `--older-than 30d --larger-than 1GB` removes the
entries that are both; `--dataset`/`--backbone` limit any of them to those
entries. `--dry-run` says what would go and removes nothing. Only the
cache's own folders (`decoded/`, `features/`, `scores/`) are touched, never downloaded
datasets (`data/`), and never a write in progress. Removing an entry that a
running process has open is safe: its map stays valid until it lets go, and
a later run computes the entry again.

Imports neither torch nor numpy: it answers at once. (It was
`tlbench.cachecmd`, which still imports as this module for one release.)
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import re
import sys
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tlbench.cache import (
    KINDS,
    CacheEntry,
    default_cache_dir,
    lock_is_free,
    orphan_writer,
    scan,
)
from tlbench.identity import dataset_identity, short_name, short_names

EPILOG = """examples:
  tlbench cache                                   what is cached, newest use first
  tlbench cache prune --older-than 30d            not used for 30 days
  tlbench cache prune --max-size 20GB             keep the most recently used 20 GB
  tlbench cache prune --dataset 'imagefolder:*pets*' --dry-run
  tlbench cache clear --yes
"""

_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZES = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_duration(text: str) -> float:
    """Seconds of `30d`, `12h`, `90m`, `45s`, `2w` (a number and a unit)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*", text.lower())
    if m is None or m[2] not in _UNITS:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 30d, 12h, 90m, 45s or 2w, got {text!r}"
        )
    return float(m[1]) * _UNITS[m[2]]


def parse_size(text: str) -> int:
    """Bytes of `1GB`, `500MB`, `2GiB`, `100k`, `12345` (decimal units; `i` for binary)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])(i)?)?b?\s*", text.lower())
    if m is None:
        raise argparse.ArgumentTypeError(
            f"expected a size like 1GB, 500MB, 2GiB or a number of bytes, got {text!r}"
        )
    unit = 1024 ** ("kmgt".index(m[2]) + 1) if m[3] else _SIZES[m[2] or ""]
    return int(float(m[1]) * unit)


def human_bytes(n: int) -> str:
    """`n` in decimal units, as the reports show memory: 1.2 GB, 340 MB, 12 kB."""
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def human_age(seconds: float) -> str:
    for unit, scale in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= scale:
            return f"{seconds / scale:.0f} {unit} ago"
    return "just now"


# --------------------------------------------------------------------------- arguments


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    cache = subparsers.add_parser(
        "cache",
        help="what the decoded-image, feature and score caches hold; prune or clear them",
        description="List, prune or clear the decoded-image, feature and score caches.",
    )
    add_arguments(cache)
    return cache


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `cache` command's options and its `list`, `prune` and `clear` actions."""
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    _common(parser)
    actions = parser.add_subparsers(dest="cache_action", metavar="ACTION")
    _common(actions.add_parser("list", help="what is cached (the default)"))

    prune = actions.add_parser(
        "prune",
        help="remove entries by age, size, dataset or backbone",
        description="Remove the entries that match every criterion given.",
    )
    prune.add_argument(
        "--older-than",
        type=parse_duration,
        metavar="AGE",
        help="not used for AGE: 30d, 12h, 90m, 2w (default: any age)",
    )
    prune.add_argument(
        "--larger-than",
        type=parse_size,
        metavar="SIZE",
        help="entries above SIZE: 1GB, 500MB, 2GiB (default: any size)",
    )
    prune.add_argument(
        "--max-size",
        type=parse_size,
        metavar="SIZE",
        help="keep the most recently used entries up to SIZE in all, remove the rest "
        "(default: no limit)",
    )
    _name_filters(prune)
    prune.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    _common(prune)

    clear = actions.add_parser(
        "clear",
        help="remove every entry",
        description="Remove every cache entry; asks first when run on a terminal.",
    )
    clear.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    clear.add_argument(
        "--yes", "-y", action="store_true", help="do not ask (never asked off a terminal)"
    )
    _common(clear)


def _common(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: given before or after the action (`cache --json list`, `cache list
    # --json`), a flag is seen, and the action's parser never resets it.
    parser.add_argument(
        "--cache-dir",
        default=argparse.SUPPRESS,
        metavar="DIR",
        help="the cache to look at (default: $TLBENCH_CACHE_DIR, else ~/.cache/tlbench)",
    )
    parser.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )


def _name_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        action="append",
        metavar="NAME",
        help="only entries of this dataset: its name, path or a wildcard, e.g. "
        "'imagefolder:*pets*' (repeatable; default: every dataset)",
    )
    parser.add_argument(
        "--backbone",
        action="append",
        metavar="NAME",
        help="only features of this backbone, or a wildcard (repeatable; default: every backbone)",
    )


# --------------------------------------------------------------------------- the command


def main(args: argparse.Namespace, console: Any = None) -> int:
    """Run `tlbench cache ...`; prints with `console` (rich) or to stdout."""

    def out(line: str) -> None:
        if console is None:
            print(line)
        else:  # as it is: no markup, no highlighting, never wrapped or cut
            console.print(line, soft_wrap=True, markup=False, highlight=False)

    root = Path(getattr(args, "cache_dir", None) or default_cache_dir()).expanduser()
    action = getattr(args, "cache_action", None) or "list"
    entries, temps = scan(root)
    if action == "list":
        return _list(root, entries, temps, as_json=getattr(args, "json", False), out=out)
    if action == "prune":
        criteria = (args.older_than, args.larger_than, args.max_size, args.dataset, args.backbone)
        if all(c is None for c in criteria):  # `--older-than 0s` is a criterion
            _err(
                "say what to prune: --older-than, --larger-than, --max-size, --dataset or "
                "--backbone (`tlbench cache clear` removes everything)"
            )
            return 2
        chosen = select(
            entries,
            older_than=args.older_than,
            larger_than=args.larger_than,
            max_size=args.max_size,
            datasets=args.dataset,
            backbones=args.backbone,
        )
    else:
        chosen = list(entries)
        if chosen and not args.dry_run and not args.yes and sys.stdin.isatty():
            answer = input(
                f"Remove {len(chosen)} cache entries ({human_bytes(_total(chosen))}) "
                f"under {root}? [y/N] "
            )
            if answer.strip().lower() not in ("y", "yes"):
                out("nothing removed")
                return 1
    code = _remove(root, entries, chosen, temps, dry_run=args.dry_run, out=out)
    if action == "clear" and not args.dry_run:
        _remove_stray_locks(root)
    return code


def _err(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _total(entries: Iterable[CacheEntry]) -> int:
    return sum(e.bytes for e in entries)


# --------------------------------------------------------------------------- describing entries


def _row(entry: CacheEntry, names: dict[str, str], now: float) -> dict[str, Any]:
    meta = entry.meta
    dataset = meta.get("dataset")
    size = meta.get("size") if entry.kind == "decoded" else meta.get("image_size")
    if size is None and entry.kind == "decoded" and meta.get("shape"):
        size = meta["shape"][-1]
    shown = names.get(dataset, dataset) if dataset else None
    if shown is None and meta.get("fingerprint"):
        shown = f"? (fingerprint {meta['fingerprint'][:8]})"
    return {
        "kind": entry.kind,
        "key": entry.key,
        "dataset": dataset,
        "dataset_name": shown or "?",
        "split": meta.get("split"),
        "size": size,
        "backbone": meta.get("backbone"),
        "weights": meta.get("weights"),
        "bytes": entry.bytes,
        "last_used": entry.last_used,
        "last_used_iso": datetime.fromtimestamp(entry.last_used, timezone.utc).isoformat(
            timespec="seconds"
        ),
        "age_seconds": max(0.0, now - entry.last_used),
        "problem": entry.problem,
        "files": [str(p) for p in entry.files],
    }


def _rows(entries: list[CacheEntry], now: float) -> list[dict[str, Any]]:
    names = short_names(
        e.meta["dataset"] for e in entries if isinstance(e.meta.get("dataset"), str)
    )
    return [_row(e, names, now) for e in entries]


def _line_cells(row: dict[str, Any]) -> list[str]:
    return [
        row["kind"],
        row["dataset_name"] + (f"  [{row['problem']}]" if row["problem"] else ""),
        row["split"] or "-",
        f"{row['size']} px" if row["size"] else "-",
        row["backbone"] or "-",
        human_bytes(row["bytes"]),
        human_age(row["age_seconds"]),
    ]


def _table(rows: list[dict[str, Any]]) -> list[str]:
    """Plain aligned columns: never cut, whatever the terminal or pipe."""
    header = ["KIND", "DATASET", "SPLIT", "SIZE", "BACKBONE", "BYTES", "LAST USE"]
    cells = [header] + [_line_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    right = {3, 5}  # numbers
    return [
        "  ".join(
            (c.rjust(w) if i in right else c.ljust(w))
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in cells
    ]


def _list(
    root: Path, entries: list[CacheEntry], temps: list[Path], *, as_json: bool, out: Any
) -> int:
    now = time.time()
    rows = sorted(_rows(entries, now), key=lambda r: -r["last_used"])
    temp_rows = [
        {"path": str(p), "bytes": _size(p), "orphaned": orphan_writer(p, now=now)} for p in temps
    ]
    if as_json:
        print(
            json.dumps(
                {
                    "cache_dir": str(root),
                    "entries": rows,
                    "total_bytes": _total(entries),
                    "temporary_files": temp_rows,
                },
                indent=2,
            )
        )
        return 0
    if not rows and not temp_rows:
        out(f"nothing cached under {root}")
        return 0
    for line in _table(rows):
        out(line)
    out(f"{len(rows)} entries, {human_bytes(_total(entries))} under {root}")
    orphans = [t for t in temp_rows if t["orphaned"]]
    if orphans:
        out(
            f"{len(orphans)} temporary file(s) of interrupted writes "
            f"({human_bytes(sum(t['bytes'] for t in orphans))}): the next run or "
            "`tlbench cache prune` removes them"
        )
    if len(orphans) < len(temp_rows):
        out(f"{len(temp_rows) - len(orphans)} write(s) in progress")
    return 0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# --------------------------------------------------------------------------- choosing and removing


def _dataset_patterns(names: list[str]) -> list[str]:
    patterns = []
    for name in names:
        patterns.append(name)
        canonical, _ = dataset_identity(name)  # a path as typed matches its resolved name
        patterns.append(canonical)
    return patterns


def _matches_dataset(entry: CacheEntry, patterns: list[str]) -> bool:
    dataset = entry.meta.get("dataset")
    if not isinstance(dataset, str):
        return False
    candidates = {dataset, short_name(dataset), short_name(dataset).partition(":")[2]}
    return any(fnmatch.fnmatchcase(c, p) for c in candidates for p in patterns)


def select(
    entries: list[CacheEntry],
    *,
    older_than: float | None = None,
    larger_than: int | None = None,
    max_size: int | None = None,
    datasets: list[str] | None = None,
    backbones: list[str] | None = None,
    now: float | None = None,
) -> list[CacheEntry]:
    """The entries `prune` removes (see the module docstring for how criteria combine)."""
    now = time.time() if now is None else now
    scope = list(entries)
    if datasets:
        patterns = _dataset_patterns(datasets)
        scope = [e for e in scope if _matches_dataset(e, patterns)]
    if backbones:
        scope = [
            e
            for e in scope
            if isinstance(e.meta.get("backbone"), str)
            and any(fnmatch.fnmatchcase(e.meta["backbone"], b) for b in backbones)
        ]
    if older_than is not None or larger_than is not None:
        chosen = [
            e
            for e in scope
            if (older_than is None or now - e.last_used > older_than)
            and (larger_than is None or e.bytes > larger_than)
        ]
    elif max_size is not None:
        chosen = []
    else:
        chosen = list(scope)  # only names given: every entry of them
    if max_size is not None:
        taken = {id(e) for e in chosen}
        total, full = 0, False
        for e in sorted((e for e in scope if id(e) not in taken), key=lambda e: -e.last_used):
            if not full and total + e.bytes <= max_size:
                total += e.bytes
            else:
                full = True  # the first that does not fit: it and every older one go
                chosen.append(e)
    return chosen


def _remove_entry(entry: CacheEntry) -> tuple[bool, str | None]:
    """Remove an entry's files, its sidecar first (it stops counting at once)."""
    order = sorted(entry.files, key=lambda p: {".json": 0, ".npy": 1, ".lock": 2}.get(p.suffix, 3))
    for path in order:
        if path.suffix == ".lock" and not lock_is_free(path):
            continue  # a process is computing it right now: its lock stays
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            return False, f"{path}: {exc.strerror or exc}"
    return True, None


def _remove_stray_locks(root: Path) -> None:
    """Lock files of entries that never came to be (a failed decode), unless held."""
    for kind in KINDS:
        with contextlib.suppress(OSError):
            for lock in (root / kind).glob("*.lock"):
                if not lock.with_suffix(".npy").exists() and lock_is_free(lock):
                    with contextlib.suppress(OSError):
                        lock.unlink()


def _remove(
    root: Path,
    entries: list[CacheEntry],
    chosen: list[CacheEntry],
    temps: list[Path],
    *,
    dry_run: bool,
    out: Any,
) -> int:
    now = time.time()
    orphans = [p for p in temps if orphan_writer(p, now=now)]
    verb = "would remove" if dry_run else "removed"
    names = short_names(
        e.meta["dataset"] for e in entries if isinstance(e.meta.get("dataset"), str)
    )
    failed = 0
    removed: list[CacheEntry] = []
    for entry in sorted(chosen, key=lambda e: e.last_used):
        row = _row(entry, names, now)
        what = " ".join(c for c in _line_cells(row)[:5] if c != "-")
        ok, why = (True, None) if dry_run else _remove_entry(entry)
        if ok:
            removed.append(entry)
            out(
                f"{verb} {what}: {human_bytes(entry.bytes)}, last used {human_age(row['age_seconds'])}"
            )
        else:
            failed += 1
            _err(f"cannot remove {what} ({why})")
    orphan_bytes, orphan_count = 0, 0
    for path in orphans:
        size = _size(path)
        if not dry_run:
            try:
                path.unlink()
            except OSError:
                continue
        orphan_bytes += size
        orphan_count += 1
        out(f"{verb} {path.name} (a write that was interrupted): {human_bytes(size)}")
    kept = [e for e in entries if e not in removed]
    temps_part = f" and {orphan_count} temporary file(s)" if orphan_count else ""
    summary = (
        f"{verb} {len(removed)} entries{temps_part} "
        f"({human_bytes(_total(removed) + orphan_bytes)}); "
        f"{len(kept)} left ({human_bytes(_total(kept))}) under {root}"
    )
    out(summary)
    with contextlib.suppress(OSError):
        sys.stdout.flush()
    return 1 if failed else 0
