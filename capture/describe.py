"""What the venue modules can tell about a recorded message: channel, symbol, exchange time.

The tools that get data out (``cat``, ``export``, ``replay``) live partly in
``flusher/segments``, below the venue modules, so they take a *describer
factory* from here instead of importing ``capture.venues`` themselves::

    describe = describe_for("kraken")      # None for a venue we do not know
    channel, symbol, exchange_ts_ns = describe(raw_bytes)

Each part is None when the venue module cannot tell it.  The route extractor
answers for data frames (cheap: no JSON tree); ``classify`` fills in the
channel (and sometimes the symbol) of chatter such as heartbeats and acks.
The venue contract says the extractors never raise on received bytes; a
describer still never lets a bug there stop an export.
"""
from __future__ import annotations

import functools
from typing import Callable

from capture import venues

Description = tuple["str | None", "str | None", "int | None"]
Describe = Callable[[bytes], Description]

_NOTHING: Description = (None, None, None)


@functools.lru_cache(maxsize=None)
def describe_for(venue: str) -> Describe | None:
    """A describer for one venue's messages, or None for a venue not in the registry."""
    v = venues.VENUES.get(venue)
    if v is None:
        return None
    route, classify, exchange_ts = v.route, v.classify, v.exchange_ts_ns

    def describe(raw: bytes) -> Description:
        try:
            rk = route(raw)
            if rk is not None:
                return rk.channel, rk.symbol, exchange_ts(raw)
            c = classify(raw)
            return c.channel, c.symbol, None
        except Exception:  # noqa: BLE001 - a venue parser bug must not stop reading
            return _NOTHING
    return describe


__all__ = ["describe_for", "Describe", "Description"]
