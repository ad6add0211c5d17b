"""The version of tlbench, in a module of its own: any module may read it without
importing the package's front door (and everything that imports)."""

__version__ = "0.1.0"
