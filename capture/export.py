"""Getting data out as tables: ``to_arrow`` and ``export`` with the venues' channel,
symbol and exchange time filled in.

The work is done in :mod:`flusher.segments.export` (columns, files, the
manifest); this module binds it to the venue registry, which lives in this
layer, so a user writes::

    from capture.export import to_arrow
    df = to_arrow("data", venue="kraken", start="2027-01-15T07:00Z").to_pandas()

pyarrow is the optional ``export`` extra (``pip install capture[export]``).
"""
from __future__ import annotations

import functools

from capture.describe import describe_for
from flusher.segments import export as _export

SCHEMA = _export.SCHEMA
to_arrow = functools.partial(_export.to_arrow, describe_for=describe_for)
export = functools.partial(_export.export, describe_for=describe_for)


def main(argv: list[str] | None = None) -> int:
    """``capture export`` (options: ``capture export --help``)."""
    return _export.main_export(argv, describe_for=describe_for)


__all__ = ["to_arrow", "export", "main", "SCHEMA"]
