"""`tlbench run ... | head -3`: the reader goes away, the grid does not.

A closed standard output is not a reason to lose a grid: every run is still
trained and recorded, the exit status is the grid's, and standard error says
where the records are.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tlbench import results


# slow: a real `tlbench run` process piped into `head` (its own torch import; 7 s).
@pytest.mark.slow
def test_a_grid_piped_into_head_finishes_and_keeps_every_record(tmp_path):
    out = tmp_path / "runs.jsonl"
    command = (
        f"{sys.executable} -m tlbench.cli run --plain --backbones small_cnn --datasets synthetic "
        "--strategies scratch --seeds 0,1,2 --epochs 1 --image-size 32 "
        f"--out {out} --cache-dir {tmp_path / 'cache'} --device cpu | head -3"
    )
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=tmp_path,
        env={**os.environ, "TLBENCH_LOAD_PLUGINS": ""},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr  # pipefail: tlbench's own status
    assert len(done.stdout.splitlines()) == 3
    records = results.read(out)
    assert [r["config"]["seed"] for r in records] == [0, 1, 2]
    assert all(r["status"] == "ok" for r in records)
    assert "output closed while the grid ran; it finished" in done.stderr
    assert "Traceback" not in done.stderr
