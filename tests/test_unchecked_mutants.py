"""`results/unchecked_mutants.py`: what a mutation run cut off at 45 minutes left, by name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "results" / "unchecked_mutants.py"

#: `mutmut results --all true` as mutmut 3.8 prints it.
RESULTS = """\
    tlbench.report.x__mean__mutmut_1: not checked
    tlbench.report.x__mark_ties__mutmut_4: survived
    tlbench.report.x__mark_ties__mutmut_5: not checked
    tlbench.report.x__mark_pareto__mutmut_57: timeout
    tlbench.image_fit.xǁ_ImageFitǁepoch__mutmut_9: not checked
    tlbench.image_fit.xǁBatchLoaderǁ__init____mutmut_13: killed
    tlbench.tables.x_render__mutmut_78: not checked
"""


def test_only_the_unchecked_mutants_the_targets_name_in_mutmuts_order(tmp_path):
    targets = tmp_path / "targets.txt"
    targets.write_text(
        "# a comment: tlbench.report.x__mean*\n"
        "tlbench.report.x__mark_ties*\n"
        "\n"
        "tlbench.image_fit.xǁ_ImageFitǁ*\n"
        "tlbench.tables.x_render*\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(targets)],
        input=RESULTS,
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=True,
    )
    assert done.stdout.split() == [
        "tlbench.report.x__mark_ties__mutmut_5",
        "tlbench.image_fit.xǁ_ImageFitǁepoch__mutmut_9",
        "tlbench.tables.x_render__mutmut_78",
    ]


def test_without_a_target_file_it_says_how_to_call_it():
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, encoding="utf-8"
    )
    assert done.returncode == 2
    assert "mutmut results --all true | python results/unchecked_mutants.py" in done.stderr
