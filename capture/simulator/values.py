"""Exact decimal formatting, timestamps and seeded randomness for the venues.

Prices and quantities live as integers counting units of ``10**-decimals``
and are formatted here, never through floats, so the digits on the wire are
exactly the pair's fixed precision (``0.10000000``), which is what the Kraken
book checksum is computed over.
"""
from __future__ import annotations

import datetime as _dt
import random
import time

import orjson

#: The simulated clock starts here (2026-01-01T00:00:00Z), in ns.
SIM_EPOCH_NS = 1_767_225_600 * 1_000_000_000
#: ... and advances this much per data message.
SIM_STEP_NS = 1_000_000


def fixed(units: int, decimals: int) -> str:
    """``fixed(10000000, 8) == "0.10000000"``; ``fixed(-5, 2) == "-0.05"``."""
    sign = "-" if units < 0 else ""
    digits = str(abs(units))
    if decimals == 0:
        return sign + digits
    digits = digits.rjust(decimals + 1, "0")
    return f"{sign}{digits[:-decimals]}.{digits[-decimals:]}"


def trimmed(units: int, decimals: int) -> str:
    """Like :func:`fixed` without trailing zeros (Polymarket style: "0.5", "30")."""
    s = fixed(units, decimals)
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


def raw(text: str) -> orjson.Fragment:
    """Embed ``text`` as a JSON number literal, digits untouched."""
    return orjson.Fragment(text.encode())


def rfc3339(ns: int) -> str:
    """``2026-01-01T00:00:00.001000Z`` (microseconds, like Kraken)."""
    secs, rem = divmod(ns, 1_000_000_000)
    dt = _dt.datetime.fromtimestamp(secs, _dt.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{rem // 1000:06d}Z"


def rfc3339_s(ns: int) -> str:
    """``2026-01-01T00:00:00Z`` (whole seconds, like Kalshi)."""
    dt = _dt.datetime.fromtimestamp(ns // 1_000_000_000, _dt.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def wall_rfc3339() -> str:
    return rfc3339(time.time_ns())


class Clock:
    """Data timestamps: simulated (deterministic) or wall time.

    The simulated clock advances one step per call to :meth:`tick`, so the
    timestamps of a stream depend only on its message count.
    """

    def __init__(self, mode: str) -> None:
        self.wall = mode == "wall"
        self._ns = SIM_EPOCH_NS

    def tick(self) -> int:
        if self.wall:
            return time.time_ns()
        self._ns += SIM_STEP_NS
        return self._ns

    def now(self) -> int:
        return time.time_ns() if self.wall else self._ns


def rng(seed: int, *parts: object) -> random.Random:
    """A generator private to (seed, parts): string seeds go through SHA-512,
    so the stream is the same in every process (no hash randomisation)."""
    return random.Random("/".join([str(seed), *map(str, parts)]))
