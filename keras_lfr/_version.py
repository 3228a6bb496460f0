"""keras_lfr's version, in a module of its own: read without importing the package."""

__version__ = "0.3.0"
