"""pylenet: LeNet-5 training on a C++/OpenMP core. Public API."""
from pylenet._version import __version__
from pylenet import ops

__all__ = ["__version__", "ops"]
