"""The README says how to install on a machine without an NVIDIA GPU (issue 24).

The problem: `pip install -e .` on a CPU-only machine pulled the CUDA wheels
(a 5.7 GB venv) and the README did not say how to get PyTorch's CPU build.
"""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_cpu_only_install_is_next_to_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index("## The two commands")
    section = text[start : text.index("\n## ", start + 1)]
    (command,) = [
        line.strip()
        for line in section.splitlines()
        if "--index-url https://download.pytorch.org/whl/cpu" in line
    ]
    # torch and torchvision both from the CPU index, before tlbench, so pip keeps them.
    first, second = (
        command.index("pip install torch torchvision"),
        command.index("pip install -e ."),
    )
    assert first < second
    assert "pip install -e '.[dev]'" in section  # the tests' variant is said too
    assert re.search(r"\d+(\.\d+)? GB", section)  # what was measured, in the section
