"""`python -m tlbench`: the `tlbench` command."""

import sys

from tlbench.cli import console_main

if __name__ == "__main__":
    sys.exit(console_main())
