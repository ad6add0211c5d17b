"""One dataset, one name: the same data named three ways is one dataset.

`imagefolder:ds`, `imagefolder:/home/me/ds` and `imagefolder:link-to-ds` name
one folder; run keys, caches and reports must treat them as one dataset.
`dataset_identity` gives the canonical name (the argument as a resolved
absolute path, when it names a file or folder) for keys and records, and a
short readable name for tables. The content is told apart by the dataset's
fingerprint, which keys go on carrying beside the name: the same path holding
other images is other data.

Imports neither torch nor numpy (reports use it).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tlbench.plugin_types import DatasetSplits


def _resolved_argument(argument: str, splits: DatasetSplits | None) -> Path | None:
    """The argument as a resolved path, or None when it does not name a file or folder."""
    path = Path(argument).expanduser()
    if path.exists():
        return path.resolve()
    # A plugin may find a relative argument elsewhere (under its data folder):
    # its own account of the root it read counts when it ends with the argument.
    root = (splits.info or {}).get("root") if splits is not None else None
    if isinstance(root, str) and os.path.isabs(root) and Path(root).exists():
        tail = PurePath(os.path.normpath(argument)).parts
        if tail and Path(root).parts[-len(tail) :] == tail:
            return Path(root).resolve()
    return None


def dataset_identity(spec: str, splits: DatasetSplits | None = None) -> tuple[str, str]:
    """(canonical name, short name) of the dataset named `spec`.

    For `family:<argument>` whose argument names an existing file or folder
    (after `~` is expanded), the canonical name is `family:<resolved absolute
    path>` (symbolic links followed, `.` and `..` gone, no trailing slash),
    and the short name `family:<last path component>`; `short_names` tells
    apart two folders with the same last component. Any other name (a
    builtin like `cifar10`, an argument that is not a path) is its own
    canonical and short name. `splits`, the loaded dataset, is optional: an
    argument that is not a path from here but that the plugin found elsewhere
    (`info["root"]` ending with it) is named by that root.
    """
    base, sep, argument = spec.partition(":")
    if not sep or not argument:
        return spec, spec
    path = _resolved_argument(argument, splits)
    if path is None:
        return spec, spec
    canonical = f"{base}:{path}"
    return canonical, short_name(canonical)


def _path_part(name: str) -> tuple[str, PurePath] | None:
    base, sep, argument = name.partition(":")
    if not sep or not os.path.isabs(argument):
        return None
    return base, PurePath(argument)


def short_name(canonical: str) -> str:
    """The readable name of a canonical dataset name: `imagefolder:/data/flowers12` -> `imagefolder:flowers12`."""
    parts = _path_part(canonical)
    if parts is None:
        return canonical
    base, path = parts
    return f"{base}:{path.name or path}"


def short_names(canonicals: Iterable[str]) -> dict[str, str]:
    """A short name for each canonical name, unique among them.

    Two folders of the same name (`/a/ds` and `/b/ds`) keep as many trailing
    path components as tell them apart: `imagefolder:a/ds`, `imagefolder:b/ds`.
    """
    names = sorted(set(canonicals))
    depth = dict.fromkeys(names, 1)

    def shown(name: str) -> str:
        parts = _path_part(name)
        if parts is None:
            return name
        base, path = parts
        tail = path.parts[1:][-depth[name] :] or (str(path),)
        return f"{base}:{'/'.join(tail)}"

    while True:
        by_short: dict[str, list[str]] = {}
        for name in names:
            by_short.setdefault(shown(name), []).append(name)
        clashing = [
            n
            for group in by_short.values()
            if len(group) > 1
            for n in group
            if _path_part(n) is not None and depth[n] < len(_path_part(n)[1].parts) - 1
        ]
        if not clashing:
            return {name: shown(name) for name in names}
        for n in clashing:
            depth[n] += 1
