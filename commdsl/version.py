"""The package version: part of every compile cache key and tuning record."""
__version__ = "0.1.0"
