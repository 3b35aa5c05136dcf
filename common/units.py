"""The one grammar of sizes and durations in configuration.

Every place that reads a size or a duration (the capture TOML, the NATS
table, the flusher's command line) parses it here, so ``"256MiB"`` means the
same thing everywhere and a config that one parser took is taken by all.

Sizes (bytes)::

    4096            an integer: bytes
    "4096" "4096B"  bytes
    "4k"  "4KB"     decimal: 4 * 1000        (k, m, g, t; the B is optional)
    "4Ki" "4KiB"    binary:  4 * 1024        (Ki, Mi, Gi, Ti)

Durations (seconds, a float)::

    1.5             a number: seconds
    "1.5" "1.5s"    seconds
    "250ms" "10us" "5ns"   milli-, micro-, nanoseconds
    "10m" "2h" "7d"        minutes, hours, days

Unit letters are case-insensitive (``m`` is mega for a size and minutes for
a duration: the key says which).  Whitespace around the number and the unit
is allowed.  This is the union of the two grammars the code had before (the
capture config's ``"256MiB"``/``"30s"`` and the NATS table's ``"256m"``,
``ns``, ``us``), so existing configs keep their meaning.  Anything else is a
:class:`~common.errors.ConfigError` naming the file and the key.
"""
from __future__ import annotations

import re
from typing import Any

from common.errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]i?b?|b)?\s*$", re.I)
_SIZE_MULT = {"b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}
_SIZE_MULT_BIN = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|ms|s|m|h|d)?\s*$", re.I)
_DURATION_MULT = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
                  "d": 86400.0}

SIZE_EXAMPLE = 'a size like 4096, "512KiB", "256MiB" or "10GB"'
DURATION_EXAMPLE = 'a duration like 1.5, "250ms", "30s", "10m" or "2h"'


def parse_size(value: Any, key: str, path: str | None = None) -> int:
    """A size in bytes (>= 0).

    Raises:
        ConfigError: not a size in the grammar above, or negative.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(path, key, f"must be {SIZE_EXAMPLE}, not {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(path, key, f"must not be negative, not {value}")
        return value
    m = _SIZE.match(value)
    if not m:
        raise ConfigError(path, key, f"must be {SIZE_EXAMPLE}, not {value!r}")
    unit = (m.group(2) or "b").lower()
    mult = _SIZE_MULT_BIN[unit[0]] if "i" in unit else _SIZE_MULT[unit[0]]
    return int(m.group(1)) * mult


def parse_duration(value: Any, key: str, path: str | None = None) -> float:
    """A duration in seconds (>= 0).

    Raises:
        ConfigError: not a duration in the grammar above, or negative.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(path, key, f"must be {DURATION_EXAMPLE}, not {value!r}")
    if isinstance(value, (int, float)):
        if value < 0 or value != value:  # NaN is no duration either
            raise ConfigError(path, key, f"must not be negative, not {value!r}")
        return float(value)
    m = _DURATION.match(value)
    if not m:
        raise ConfigError(path, key, f"must be {DURATION_EXAMPLE}, not {value!r}")
    return float(m.group(1)) * _DURATION_MULT[(m.group(2) or "s").lower()]
