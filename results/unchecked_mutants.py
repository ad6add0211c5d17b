"""The mutants of a target list that mutmut has not checked yet: the next 45-minute run's names.

    timeout 45m mutmut run $(grep -v '^#' results/mutation-targets.txt)
    mutmut results --all true | python results/unchecked_mutants.py results/mutation-targets.txt

mutmut 3 runs again every mutant its command line names, checked or not, so a
run cut off by `timeout` is continued by naming only what it did not reach:

    timeout 45m mutmut run $(mutmut results --all true | python results/unchecked_mutants.py results/mutation-targets.txt)

until this prints nothing. Reads mutmut's `name: status` lines on standard
input; prints the names whose status is "not checked" and that one of the
file's globs (`#` lines are comments) matches, one a line, in mutmut's order.
"""

from __future__ import annotations

import fnmatch
import sys
from collections.abc import Iterable
from pathlib import Path


def unchecked(results: Iterable[str], globs: list[str]) -> list[str]:
    """The names of `results` lines marked "not checked" that one of `globs` matches."""
    names = []
    for line in results:
        name, sep, status = line.strip().rpartition(": ")
        if sep and status == "not checked" and any(fnmatch.fnmatchcase(name, g) for g in globs):
            names.append(name)
    return names


def target_globs(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    print("\n".join(unchecked(sys.stdin, target_globs(Path(argv[0])))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
