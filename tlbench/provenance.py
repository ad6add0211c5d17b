"""Provenance: the versions, device and checkout a record's figures came from."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import torch

from tlbench.devices import backend_state, device_identity, device_name


def git_sha() -> str | None:
    """The sha of the tlbench checkout, when it is one (an editable install)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _torchvision_version() -> str | None:
    """`torchvision.__version__` (with its build tag, "0.29.1+cu130") without importing
    torchvision, which costs as much as importing torch: a run that uses no torchvision
    backbone or dataset never loads it."""
    spec = importlib.util.find_spec("torchvision")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        try:
            text = Path(folder, "version.py").read_text(encoding="utf-8")
        except OSError:
            continue
        if found := re.search(r"^__version__ = ['\"]([^'\"]+)['\"]", text, re.M):
            return found.group(1)
    try:
        return importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(device: torch.device, plugin_versions: dict[str, str]) -> dict[str, Any]:
    from tlbench.version import __version__

    torchvision_version = _torchvision_version()

    return {
        "tlbench": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device.type,
        "device_name": device_name(device),
        "device_identity": device_identity(device),
        **(backend_state() if device.type == "cuda" else {}),
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "plugins": plugin_versions,
        "git_sha": git_sha(),
    }
