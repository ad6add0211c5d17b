"""On-disk array caches that are safe to share between processes and to distrust.

An entry is `<root>/<key>.npy` (a plain array) plus `<key>.json` (its
sidecar: shape, dtype, what it holds), written to temporary names and renamed
into place, so a reader never sees half an entry. Arrays are read
memory-mapped and with `allow_pickle=False`: a dataset larger than memory is
paged in as it is used, a cache file that came from elsewhere cannot execute
code, and an entry whose sidecar or array is not what it claims is ignored
(and recomputed) with a warning. A cache folder that cannot be written is
not fatal: the run goes on without the disk cache, with one warning.

Several processes may share a cache: `ArrayStore.lock(key)` (an `flock` on
`<key>.lock`) lets the first compute an entry while the others wait and then
read it (`ArrayStore.load_or_compute`). A writer killed mid-write leaves a
`*.tmp` file named after its pid and host; the next store to open the folder
removes it once that writer is gone (or, for a writer on another host, once
the file is `ORPHAN_AGE_S` old). The last use of an entry is the modification
time of its `.npy`, set on every read (one `utime`, no rewrite).

This module imports neither torch nor, until an array is read or written,
numpy: `tlbench cache` uses it and answers at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import socket
import stat
import sys
import time
import types
import typing
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

try:
    import fcntl
except ImportError:  # not POSIX: no lock between processes; writes stay atomic
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    import numpy as np

#: the folders of a cache root that hold entries (`data/`, downloaded datasets, is not one):
#: decoded images, frozen-backbone features and their transferability scores.
KINDS = ("decoded", "features", "scores")
#: every sidecar tlbench writes carries this marker; `tlbench cache` removes only entries
#: whose sidecar holds it, and a read refuses an entry without it.
FORMAT = "tlbench-cache-entry/1"
#: a temporary file whose writer cannot be checked (another host, a reused pid) is
#: an orphan once it is this old: no write of one entry takes a day.
ORPHAN_AGE_S = 24 * 3600

#: Sidecar fields every entry may carry, and their types (checked on every read).
#: `shape` and `dtype` are required; the others describe the entry for `tlbench cache`.
SIDECAR_FIELDS: dict[str, Any] = {
    "shape": list[int],
    "dtype": str,
    "kind": str,
    "created": float,
    "dataset": (str, None),
    "fingerprint": str,
    "split": str,
    "size": int,
    "image_size": int,
    "backbone": (str, None),
    "weights": (str, None),
    "format": str,
    "checksum": str,
}
_REQUIRED = ("shape", "dtype")

_HOST = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:64] or "host"
#: `<name>.<pid>@<host>.t<token>.tmp`; older versions wrote `<name>.<pid>.tmp`.
_TMP = re.compile(
    r"^(?P<name>.+)\.(?P<pid>\d+)(?:@(?P<host>[A-Za-z0-9_-]*))?(?:\.t[0-9a-f]+)?\.tmp$"
)


def cache_key(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def default_cache_dir() -> Path:
    """`$TLBENCH_CACHE_DIR`, else `$XDG_CACHE_HOME/tlbench`, else `~/.cache/tlbench`."""
    if env := os.environ.get("TLBENCH_CACHE_DIR"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tlbench"


def default_memory_limit() -> int:
    """Bytes the in-process caches may hold by default: a quarter of the machine's RAM.

    Enough to keep a few decoded splits of a small dataset between the runs
    of a grid; a split larger than this is read memory-mapped from the disk
    cache each time instead (milliseconds) or, without a disk cache, decoded
    again.
    """
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (AttributeError, ValueError, OSError):  # not POSIX
        return 2 << 30


# --------------------------------------------------------------------------- sidecar types


def _matches(value: Any, expected: Any) -> bool:
    if expected is None:
        return value is None
    if isinstance(expected, tuple):
        return any(_matches(value, e) for e in expected)
    if isinstance(expected, types.GenericAlias) and typing.get_origin(expected) is list:
        (item,) = typing.get_args(expected)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if expected is float:  # JSON writes 3.0 as 3.0 but a hand-edited 3 is a number too
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def _describe(expected: Any) -> str:
    if expected is None:
        return "null"
    if isinstance(expected, tuple):
        return " or ".join(_describe(e) for e in expected)
    if isinstance(expected, types.GenericAlias):
        return f"a list of {_describe(typing.get_args(expected)[0])}"
    return expected.__name__


def check_sidecar(meta: Any, fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`meta` if it is a valid sidecar, else `ValueError` naming the first bad field.

    Every field of `SIDECAR_FIELDS` present must have its type, `shape` and
    `dtype` must be present, and so must every field of `fields` (name -> a
    type, a tuple of types or None for null, or `list[T]`), with its type.
    """
    if not isinstance(meta, dict):
        raise ValueError(f"sidecar is a {type(meta).__name__}, not an object")
    for name in (*_REQUIRED, *(fields or {})):
        if name not in meta:
            raise ValueError(f"sidecar has no {name!r}")
    for name, expected in {**SIDECAR_FIELDS, **(fields or {})}.items():
        if name in meta and not _matches(meta[name], expected):
            shown = json.dumps(meta[name])
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise ValueError(f"sidecar field {name!r} is {shown}, expected {_describe(expected)}")
    if any(n < 0 for n in meta["shape"]):
        raise ValueError(f"sidecar field 'shape' is {meta['shape']}, expected sizes >= 0")
    return meta


# --------------------------------------------------------------------------- in-process memory

V = TypeVar("V")


class MemoryLRU(Generic[V]):
    """Values by key holding at most `limit` bytes in all; the least recently used go first.

    Each value is put with the bytes it holds in process memory (a
    memory-mapped array holds none: the kernel pages it in and out). A value
    larger than the whole limit is not kept at all.
    """

    def __init__(self, limit: int | None = None):
        self.limit = default_memory_limit() if limit is None else limit
        self._items: OrderedDict[str, tuple[V, int]] = OrderedDict()
        self.nbytes = 0

    def get(self, key: str) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: str, value: V, nbytes: int) -> None:
        self.pop(key)
        if nbytes > self.limit:
            return
        self._items[key] = (value, nbytes)
        self.nbytes += nbytes
        while self.nbytes > self.limit:
            _, (_, dropped) = self._items.popitem(last=False)
            self.nbytes -= dropped

    def pop(self, key: str) -> V | None:
        item = self._items.pop(key, None)
        if item is None:
            return None
        self.nbytes -= item[1]
        return item[0]

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)


# --------------------------------------------------------------------------- orphans


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError:
        return True  # cannot tell: leave it to the age rule
    return True


def orphan_writer(path: Path, *, now: float | None = None) -> bool:
    """Whether `path` (a `*.tmp`) is a write its writer will never finish.

    True when its pid (in the name) is not alive on this host, or when it
    is older than `ORPHAN_AGE_S` (another host's writer, or a pid reused
    since). Never for a temporary file of this very process.
    """
    m = _TMP.match(path.name)
    if m is None:  # not a name tlbench writes: never an orphan of tlbench's, whatever its age
        return False
    try:
        st = path.lstat()
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode):  # a link or a pipe: tlbench writes neither
        return False
    if (time.time() if now is None else now) - st.st_mtime > ORPHAN_AGE_S:
        return True
    pid, host = int(m["pid"]), m["host"]
    if host not in (None, _HOST):
        return False
    return pid != os.getpid() and not _pid_alive(pid)


def remove_orphans(root: Path) -> list[tuple[Path, int]]:
    """Remove the orphaned temporary files directly under `root`: [(path, bytes)]."""
    removed = []
    try:
        candidates = list(root.glob("*.tmp"))
    except OSError:
        return []
    for path in candidates:
        if orphan_writer(path):
            with contextlib.suppress(OSError):
                size = path.stat().st_size
                path.unlink()
                removed.append((path, size))
    return removed


# --------------------------------------------------------------------------- the store


class PendingArray:
    """An entry being written: `array` is a writable map of its temporary file.

    `commit(meta)` puts it in place (array first, then sidecar); leaving the
    `ArrayStore.create` block without committing removes the temporary file.
    """

    def __init__(self, store: ArrayStore, key: str, array: np.memmap, tmp: Path):
        self.store, self.key, self.array, self._tmp = store, key, array, tmp
        self.committed = False

    def commit(self, meta: Mapping[str, Any]) -> bool:
        """Put the entry in place; False (with the store's warning) if it cannot be written."""
        shape, dtype = list(self.array.shape), str(self.array.dtype)
        # Unmapped, not flushed: readers share the page cache, and an msync of
        # a large entry would wait for the disk.
        del self.array
        self.committed = self.store._publish(self.key, self._tmp, meta, shape, dtype)
        return self.committed

    def _discard(self) -> None:
        self.__dict__.pop("array", None)
        with contextlib.suppress(OSError):
            self._tmp.unlink()


class ArrayStore:
    """`<root>/<key>.npy` + `<key>.json` (+ `<key>.lock`); `root=None` stores nothing."""

    def __init__(self, root: Path | None):
        self.root = root
        self._warned: set[str] = set()
        self._swept = False

    # ------------------------------------------------------------ helpers

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            warnings.warn(message, RuntimeWarning, stacklevel=4)

    def _paths(self, key: str) -> tuple[Path, Path]:
        assert self.root is not None
        return self.root / f"{key}.npy", self.root / f"{key}.json"

    def _tmp(self, path: Path) -> Path:
        return path.with_name(f"{path.name}.{os.getpid()}@{_HOST}.t{secrets.token_hex(4)}.tmp")

    def _sweep(self) -> None:
        """On first use: remove the temporary files that dead writers left."""
        if self.root is None or self._swept:
            return
        self._swept = True
        remove_orphans(self.root)

    def _cannot_write(self, exc: OSError) -> None:
        self._warn_once(
            f"cannot write the cache under {self.root} ({exc.strerror or exc}); going on "
            "without it (point --cache-dir at a writable folder to keep it)"
        )

    def reject(self, key: str, why: str) -> None:
        """Warn that entry `key` is not what it claims and will be computed again."""
        where = self.root / f"{key}.npy" if self.root else key
        self._warn_once(f"ignoring damaged cache entry {where} ({why}); computing it again")

    # ------------------------------------------------------------ reading

    def load(
        self,
        key: str,
        *,
        dtype: str | None = None,
        shape: Sequence[int | None] | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]] | None:
        """The entry's array (memory-mapped, read-only) and sidecar; None if absent or damaged.

        A cache is trusted no further than its contents can be checked: the
        sidecar's field types (`check_sidecar`, with `fields` required), its
        shape and dtype against the array's, and `dtype` and `shape` (None
        for any size along an axis) when given. A damaged entry is a miss,
        with one warning; the next save replaces it.
        """
        if self.root is None:
            return None
        self._sweep()
        array_path, meta_path = self._paths(key)
        try:
            if not (array_path.is_file() and meta_path.is_file()):
                return None
            meta = check_sidecar(json.loads(meta_path.read_text(encoding="utf-8")), fields)
            array = _open_array(array_path, meta)
            if list(array.shape) != meta["shape"] or str(array.dtype) != meta["dtype"]:
                raise ValueError(f"array {array.shape}/{array.dtype} does not match its sidecar")
            if meta.get("format") != FORMAT:
                self._warn_once(
                    f"ignoring cache entry {array_path}: its sidecar has no {FORMAT!r} marker "
                    "(an older tlbench wrote it, or not tlbench); computing it again"
                )
                return None
            if dtype is not None and str(array.dtype) != dtype:
                raise ValueError(f"dtype {array.dtype}, expected {dtype}")
            if shape is not None and (
                len(shape) != array.ndim
                or any(s is not None and s != a for s, a in zip(shape, array.shape, strict=True))
            ):
                wanted = tuple("*" if s is None else s for s in shape)
                raise ValueError(f"shape {array.shape}, expected {wanted}")
            if meta.get("checksum") != array_checksum(array):  # last: it reads every byte
                raise ValueError("its array's bytes do not match the checksum in its sidecar")
        except Exception as exc:  # any unreadable entry is just a cache miss
            self.reject(key, f"{type(exc).__name__}: {exc}")
            return None
        with contextlib.suppress(OSError):  # the last use, for `tlbench cache`
            os.utime(array_path)
        return array, meta

    # ------------------------------------------------------------ writing

    def save(self, key: str, array: np.ndarray, meta: Mapping[str, Any]) -> bool:
        """Write the entry atomically; False (with one warning) when it cannot be written."""
        import numpy as np

        if self.root is None:
            return False
        self._sweep()
        array_path, _ = self._paths(key)
        tmp_array = self._tmp(array_path)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(tmp_array, "wb") as f:
                np.save(f, array, allow_pickle=False)
        except OSError as exc:
            # Not unlink(missing_ok=True): under a file it raises NotADirectoryError.
            with contextlib.suppress(OSError):
                tmp_array.unlink()
            self._cannot_write(exc)
            return False
        return self._publish(key, tmp_array, meta, list(array.shape), str(array.dtype))

    @contextlib.contextmanager
    def create(self, key: str, shape: Sequence[int], dtype: str) -> Iterator[PendingArray | None]:
        """A new entry to fill in place (for arrays too large to hold in memory).

        Yields a `PendingArray` whose `array` maps a temporary file of the
        full size, allocated on disk up front (so a full disk is an `OSError`
        here, not a crash when a page is written), or None when the store
        cannot write (one warning). Call `commit(meta)` to put it in place.
        """
        import numpy as np

        if self.root is None:
            yield None
            return
        self._sweep()
        array_path, _ = self._paths(key)
        tmp = self._tmp(array_path)
        pending = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            header = {
                "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                "fortran_order": False,
                "shape": tuple(shape),
            }
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            with open(tmp, "wb") as f:
                np.lib.format.write_array_header_1_0(f, header)
                offset = f.tell()
                if nbytes:
                    _allocate(f.fileno(), offset + nbytes)
            array = (
                np.memmap(tmp, dtype=dtype, mode="r+", offset=offset, shape=tuple(shape))
                if nbytes
                else np.empty(shape, dtype)
            )
            pending = PendingArray(self, key, array, tmp)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            self._cannot_write(exc)
            yield None
            return
        try:
            yield pending
        finally:
            if not pending.committed:
                pending._discard()

    def _publish(
        self, key: str, tmp_array: Path, meta: Mapping[str, Any], shape: list[int], dtype: str
    ) -> bool:
        array_path, meta_path = self._paths(key)
        tmp_meta = self._tmp(meta_path)
        full = {"created": time.time(), **meta, "shape": shape, "dtype": dtype, "format": FORMAT}
        try:
            full["checksum"] = array_checksum(_open_array(tmp_array, full))
            tmp_meta.write_text(json.dumps(full), encoding="utf-8")
            # The array first: an entry counts only once its sidecar is in place.
            os.replace(tmp_array, array_path)
            os.replace(tmp_meta, meta_path)
        except OSError as exc:
            for tmp in (tmp_array, tmp_meta):
                with contextlib.suppress(OSError):
                    tmp.unlink()
            self._cannot_write(exc)
            return False
        return True

    # ------------------------------------------------------------ several processes

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Hold `key` against other processes (an `flock` on `<key>.lock`) while computing it.

        A second process asking for the same key waits here until the first
        leaves the block (or dies: the kernel releases the lock). Where no
        lock file can be made (an unwritable folder, not POSIX) it does not
        wait: the writes are atomic anyway, at worst the work is done twice.
        """
        if self.root is None or fcntl is None:
            yield
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def load_or_compute(
        self,
        key: str,
        compute: Callable[[], tuple[np.ndarray, Mapping[str, Any]]],
        *,
        dtype: str | None = None,
        shape: Sequence[int | None] | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any], bool]:
        """The entry (array, sidecar, True), or `compute()`'s (array, meta, False), saved.

        Computed once across processes: under `lock(key)`, a process that
        waited for another reads the entry that one wrote. The returned array
        is the saved entry's read-only map when saving worked (so the
        computed copy can be freed), else the computed array itself.
        """
        options = {"dtype": dtype, "shape": shape, "fields": fields}
        entry = self.load(key, **options)
        if entry is not None:
            return entry[0], entry[1], True
        with self.lock(key):
            entry = self.load(key, **options)  # written while this process waited
            if entry is not None:
                return entry[0], entry[1], True
            array, meta = compute()
            if self.save(key, array, meta):
                saved = self.load(key, **options)
                if saved is not None:
                    return saved[0], saved[1], False
            return array, {**meta, "shape": list(array.shape), "dtype": str(array.dtype)}, False


def array_checksum(array: np.ndarray) -> str:
    """`sha1:<hex>` of an array's bytes (a memory map is read through, never held whole).

    Written into every sidecar and checked on every read: bytes written over
    a cached array (a bad disk, a hand edit) make the entry a miss.
    """
    import numpy as np

    h = hashlib.sha1(usedforsecurity=False)
    flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    step = 64 << 20  # in slices: a map larger than memory is paged through, not loaded
    for start in range(0, len(flat), step):
        h.update(flat[start : start + step])
    return "sha1:" + h.hexdigest()


def _open_array(path: Path, meta: Mapping[str, Any]) -> np.ndarray:
    import numpy as np

    if 0 in meta["shape"]:  # nothing to map (mmap refuses an empty length)
        array = np.load(path, allow_pickle=False)
    else:
        # allow_pickle=False: an object array (a pickle) is refused, never run;
        # mmap_mode refuses object dtypes outright.
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    if not isinstance(array, np.ndarray):
        array.close()  # an .npz archive: not what this cache writes
        raise ValueError("not a single .npy array")
    return array


def _allocate(fd: int, length: int) -> None:
    """Reserve `length` bytes on disk, or raise OSError (ENOSPC) now rather than SIGBUS later."""
    if hasattr(os, "posix_fallocate") and sys.platform != "darwin":
        try:
            os.posix_fallocate(fd, 0, length)
            return
        except OSError as exc:
            if exc.errno not in (95, 22):  # EOPNOTSUPP, EINVAL: the filesystem cannot
                raise
    os.ftruncate(fd, length)


# --------------------------------------------------------------------------- listing


@dataclass
class CacheEntry:
    """One entry of a cache root, as `tlbench cache` shows it."""

    kind: str  # one of `KINDS`
    key: str
    #: the entry's files: array, sidecar, lock (those that exist).
    files: list[Path]
    bytes: int
    #: seconds since the epoch of the last read or write.
    last_used: float
    meta: dict[str, Any] = field(default_factory=dict)
    #: why the entry cannot be used (a missing or invalid sidecar), or None.
    problem: str | None = None


def entry_folder(root: Path, kind: str) -> Path | None:
    """`root/kind` if it is a real folder (not a link, not a file), else None.

    A linked `features/` leads out of the cache (into a project, another
    disk): nothing under it is listed or removed.
    """
    folder = root / kind
    try:
        st = folder.lstat()
    except OSError:
        return None
    return folder if stat.S_ISDIR(st.st_mode) else None


def _regular_files(folder: Path) -> set[str]:
    """Names of the regular files directly in `folder`: links and special files left out."""
    names = set()
    try:
        with os.scandir(folder) as it:
            for e in it:
                with contextlib.suppress(OSError):
                    if e.is_file(follow_symlinks=False):
                        names.add(e.name)
    except OSError:
        pass
    return names


def _written_by_tlbench(sidecar: Path) -> bool:
    """Whether `sidecar` is a JSON object holding tlbench's format marker."""
    try:
        meta = json.loads(sidecar.read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def scan(root: Path) -> tuple[list[CacheEntry], list[Path]]:
    """tlbench's entries under `root`'s `KINDS` folders, and their stray `*.tmp` files.

    Only what tlbench wrote is listed, so only that is ever removed: an entry
    counts when its sidecar is a regular file holding the `FORMAT` marker,
    and only its regular files (never a link) are its files; a linked kind
    folder is not looked into at all (`entry_folder`). `foreign` lists what
    is left alone.
    """
    entries: list[CacheEntry] = []
    temps: list[Path] = []
    for kind in KINDS:
        folder = entry_folder(root, kind)
        if folder is None:
            continue
        names = _regular_files(folder)
        temps += sorted(folder / n for n in names if _TMP.match(n))
        keys = {n[: -len(".json")] for n in names if n.endswith(".json")}
        for key in sorted(keys):
            if not _written_by_tlbench(folder / f"{key}.json"):
                continue
            files = [
                folder / f"{key}{s}" for s in (".npy", ".json", ".lock") if f"{key}{s}" in names
            ]
            entries.append(_describe_entry(kind, key, folder, files))
    return entries, temps


def foreign(root: Path) -> list[Path]:
    """What lies in `root`'s entry folders that tlbench did not write (it is never removed).

    A linked kind folder itself, links, and `.npy`/`.json` files without a
    sidecar holding the `FORMAT` marker (an older tlbench's entries among them).
    """
    out: list[Path] = []
    for kind in KINDS:
        folder = entry_folder(root, kind)
        if folder is None:
            if (root / kind).is_symlink():
                out.append(root / kind)
            continue
        try:
            names = sorted(p.name for p in folder.iterdir())
        except OSError:
            continue
        regular = _regular_files(folder)
        ours = {
            n[: -len(".json")]
            for n in regular
            if n.endswith(".json") and _written_by_tlbench(folder / n)
        }
        for n in names:
            stem, _, suffix = n.rpartition(".")
            if suffix in ("npy", "json") and (n not in regular or stem not in ours):
                out.append(folder / n)
    return out


def _describe_entry(kind: str, key: str, folder: Path, files: list[Path]) -> CacheEntry:
    size, mtime = 0, 0.0
    for p in files:
        with contextlib.suppress(OSError):
            st = p.stat()
            size += st.st_size
            if p.suffix == ".npy" or mtime == 0.0:
                mtime = max(mtime, st.st_mtime)
    entry = CacheEntry(kind, key, files, size, mtime)
    if folder / f"{key}.npy" not in files:
        entry.problem = "no array"
    try:
        entry.meta = check_sidecar(json.loads((folder / f"{key}.json").read_text("utf-8")))
    except (OSError, ValueError) as exc:
        entry.problem = entry.problem or (
            "no sidecar" if isinstance(exc, FileNotFoundError) else f"bad sidecar: {exc}"
        )
    return entry


def lock_is_free(path: Path) -> bool:
    """Whether `path` is a lock file tlbench made that no process holds (so it can be removed).

    False for anything tlbench never makes, which must stay: a link, a
    non-empty file (tlbench's locks are empty), a file in a linked folder.
    """
    try:
        st = path.lstat()
    except OSError:
        return False
    if (
        not stat.S_ISREG(st.st_mode)
        or st.st_size
        or entry_folder(path.parent.parent, path.parent.name) is None
    ):
        return False
    if fcntl is None:
        return True
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True
