"""The package version, read by setup.py and compiled into the core."""
__version__ = "0.1.0"
