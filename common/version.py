"""The version of capture, in the lowest layer so that every layer (the
receiver's records, the tools) can name it without importing the
application package; ``capture.__version__`` is this."""

__version__ = "0.1.0"
