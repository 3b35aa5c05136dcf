"""capture: record exchange market data through a shared-memory ring."""

__version__ = "0.1.0"
