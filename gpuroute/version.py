"""The version of gpuroute (one place: the package, the build and results read it)."""

__version__ = "0.1.0"
