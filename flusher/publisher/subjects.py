"""NATS subject names for captured frames.

Layout::

    {prefix}.{venue}.{channel}.{instrument}     market data, e.g. prod.kraken.book.BTC-USD
    {prefix}.{venue}.control.shard-{N}          control records of shard N
    {prefix}.{venue}.unrouted                   frames no route could be read from

A NATS subject token may not contain ``.`` (the separator), ``*`` or ``>``
(wildcards) or whitespace.  Venue names contain all sorts of bytes
(``BTC/USD``, Kalshi ``FED-23DEC-T3.00``), so :func:`token` maps every byte
outside a conservative set (ASCII letters, digits, ``-_:+=@~``) to ``-``.
The mapping is not injective (``BTC/USD`` and ``BTC-USD`` meet); consumers
that need the exact instrument read it from the payload.  Tokens are cached:
the publisher sanitises the same few thousand names millions of times.
"""
from __future__ import annotations

import functools
import re

from common.errors import ConfigError

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-:+=@~]")
_PREFIX_TOKEN = re.compile(r"[A-Za-z0-9_\-]+")


@functools.lru_cache(maxsize=1 << 16)
def token(name: str) -> str:
    """One safe subject token: ``"BTC/USD"`` -> ``"BTC-USD"``; empty -> ``"_"``."""
    return _UNSAFE.sub("-", name) or "_"


def check_prefix(prefix: str) -> str:
    """Validate a configured prefix (one or more dot-separated safe tokens).

    Raises:
        ConfigError: an empty token or a character NATS would misread.
    """
    if not prefix or not all(_PREFIX_TOKEN.fullmatch(t) for t in prefix.split(".")):
        raise ConfigError(None, "subject_prefix",
                          f"{prefix!r} is not a dot-separated list of [A-Za-z0-9_-] tokens")
    return prefix


def data_subject(prefix: str, venue: str, channel: str, instrument: str) -> str:
    return f"{prefix}.{token(venue)}.{token(channel)}.{token(instrument)}"


def control_subject(prefix: str, venue: str, shard: int) -> str:
    return f"{prefix}.{token(venue)}.control.shard-{int(shard)}"


def unrouted_subject(prefix: str, venue: str) -> str:
    return f"{prefix}.{token(venue)}.unrouted"
