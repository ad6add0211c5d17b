"""Where tlbench writes, checked before any work: the results file, checkpoints, images.

A typo in `--out`, a read-only folder or an image name with an unknown
suffix fails here in a second, naming the path and what to do, not after the
first hour of training. The results file's own checks (`check_writable`,
`check_folder_writable`) are `tlbench.results`'; this module adds the image
paths and checks every output a command names at once.
"""

from __future__ import annotations

import os
from pathlib import Path

from tlbench.errors import TlbenchError
from tlbench.results import check_folder_writable, check_writable

#: image formats written when matplotlib is not installed to ask (its usual set).
_FORMATS = ("png", "pdf", "svg", "svgz", "jpg", "jpeg", "eps", "ps", "tif", "tiff", "webp", "pgf")


def image_path(path: str | os.PathLike[str], default_name: str) -> Path:
    """The file an image written to `path` really goes to, so that the path printed is it.

    An existing folder, or a path ending in a separator, gets `default_name`
    inside it; a name without a suffix gets `.png` (matplotlib would add it
    silently, and the path printed would not be the file written).
    """
    text = os.fspath(path)
    p = Path(text).expanduser()
    if text.endswith(("/", os.sep)) or p.is_dir():
        return p / default_name
    if not p.suffix:
        return p.with_name(p.name + ".png")
    return p


def _supported_formats() -> tuple[str, ...]:
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        return _FORMATS
    return tuple(FigureCanvasBase.get_supported_filetypes())


def check_image_path(path: str | os.PathLike[str], default_name: str, flag: str) -> Path:
    """`image_path`, checked before any work: a known image format, in a folder that can be
    written, not over a folder. Raises a `TlbenchError` naming the path and what to do."""
    target = image_path(path, default_name)
    suffix = target.suffix.lower().lstrip(".")
    formats = _supported_formats()
    if suffix not in formats:
        raise TlbenchError(
            f"{flag} {target}: cannot write a .{suffix} image; name a file ending in one of "
            f"{', '.join('.' + f for f in sorted(formats))} (e.g. {target.with_suffix('.png').name})"
        )
    for folder in (target.parent, *target.parent.parents):
        if folder.exists():
            if not folder.is_dir():
                raise TlbenchError(
                    f"{flag} {target}: {folder} is a file, not a folder. Choose another path."
                )
            break
    check_folder_writable(target.parent, f"the {flag} image", flag)
    if target.exists() and not target.is_file():
        raise TlbenchError(f"{flag} {target} exists and is not a file. Choose another path.")
    if target.exists() and not os.access(target, os.W_OK):
        raise TlbenchError(
            f"{flag} {target} exists and cannot be overwritten. Choose another path."
        )
    return target


def check_output_locations(
    *,
    results: str | os.PathLike | None = None,
    models_dir: str | os.PathLike | None = None,
    plot: str | os.PathLike | None = None,
    grid: str | os.PathLike | None = None,
) -> dict[str, Path]:
    """Check, before any work, that every output location given can be written.

    `results`: the results file (--out); `models_dir`: the folder --save-models
    writes to; `plot` and `grid`: image files (a folder or a name without a
    suffix resolve as `image_path` says). Raises a `TlbenchError`
    naming the path and what to do; returns the resolved paths by name.
    """
    out: dict[str, Path] = {}
    if results is not None:
        given = os.fspath(results)
        check_writable(given if given.endswith(("/", os.sep)) else Path(given).expanduser())
        out["results"] = Path(given).expanduser()
    if models_dir is not None:
        out["models_dir"] = check_folder_writable(models_dir, "checkpoints", "--models-dir")
    if plot is not None or grid is not None:
        if plot is not None:
            out["plot"] = check_image_path(plot, "tradeoff.png", "--plot")
        if grid is not None:
            out["grid"] = check_image_path(grid, "predictions.png", "--grid")
    return out
