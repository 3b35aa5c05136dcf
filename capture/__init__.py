"""capture: record exchange market data through a shared-memory ring."""

from common.version import __version__

__all__ = ["__version__"]
