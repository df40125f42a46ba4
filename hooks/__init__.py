"""calcinosis-cds: a CDS Hooks 2.0 service about calcinosis cutis."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("calcinosis-cds")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
