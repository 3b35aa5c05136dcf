"""One log line format for every process of a shard.

    ts=2026-12-06T07:20:01.123Z level=info shard=3 role=receiver event=connect_failed conn=kraken-0 error="..."

Every line carries a UTC timestamp, the level, the shard and the role (set
once per process by :func:`setup`, at its ``main``), then ``event=NAME`` and
``key=value`` fields.  Code logs through :func:`event`::

    event(log, "reconnect", conn="kraken-0", delay_s=1.25)

A plain ``log.info("text %s", x)`` (ours or a library's) still comes out in
the same shape, as ``event=log logger=NAME msg="text ..."``.

Values are written bare when they are a single token and as JSON strings
(double-quoted, escaped) otherwise, so a line splits on spaces without
ambiguity.  Secrets never reach a line: a field whose name says it holds one
(password, token, secret, seed, nkey, signature, credentials, private key) is
written as ``***``, and a URL's user-info (``nats://user:pass@host``) is cut
from every value and message.

Why not structlog: the format is one small formatter on the standard
``logging`` module, which every library we use already logs through; a
dependency would buy nothing the few lines here do not.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import IO, Any

from common.redact import RedactFilter, redact

__all__ = ["KVFormatter", "Throttle", "event", "format_value", "redact", "setup", "shard_of_ring"]

_SECRET_KEY = re.compile(r"(pass(word)?|token|secret|seed|nkey|signature|credential|creds|private_key|api_key)",
                         re.IGNORECASE)
_BARE = re.compile(r"^[A-Za-z0-9_.:/@+\-,\[\]]+$")


def format_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(round(value, 6))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, BaseException):
        value = f"{type(value).__name__}: {value}"
    elif not isinstance(value, str):
        value = json.dumps(value, default=str, separators=(",", ":"))
    value = redact(value)
    return value if value and _BARE.match(value) else json.dumps(value)


class KVFormatter(logging.Formatter):
    """``ts level shard role event key=value...`` for every record."""

    def __init__(self, shard: int | str | None, role: str) -> None:
        super().__init__()
        self.shard = "-" if shard is None else str(shard)
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        t = time.gmtime(record.created)
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"
        head = f"ts={ts} level={record.levelname.lower()} shard={self.shard} role={self.role}"
        fields: dict[str, Any] | None = getattr(record, "kv", None)
        name = getattr(record, "event", None)
        if name is None:
            parts = [f"event=log logger={record.name}", f"msg={format_value(record.getMessage())}"]
        else:
            parts = [f"event={name}"]
            for k, v in (fields or {}).items():
                parts.append(f"{k}={'***' if _SECRET_KEY.search(k) else format_value(v)}")
        if record.exc_info:
            parts.append(f"exc={format_value(self.formatException(record.exc_info))}")
        return " ".join([head, *parts])


def shard_of_ring(path: str | None) -> str | None:
    """``.../shard-3.ring`` -> ``"3"`` (the validator knows its shard only by its ring)."""
    m = re.search(r"shard-(\d+)\.ring$", path or "")
    return m.group(1) if m else None


def setup(role: str, shard: int | str | None = None, level: str | int = "INFO",
          stream: IO[str] | None = None) -> None:
    """Send every logger of this process to ``stream`` (stderr) in the one format.

    Called once, at the top of each process's ``main``; replaces handlers a
    previous call (or ``basicConfig``) installed."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(KVFormatter(shard, role))
    handler.addFilter(RedactFilter())   # URL credentials out of every record, whoever logs it
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event: ``event=name`` and ``fields`` as ``key=value``."""
    if logger.isEnabledFor(level):
        # The message is the rendered line too, for a handler without our formatter.
        text = " ".join([f"event={name}", *(f"{k}={'***' if _SECRET_KEY.search(k) else format_value(v)}"
                                            for k, v in fields.items())])
        logger.log(level, "%s", text, extra={"event": name, "kv": fields})


class Throttle:
    """At most ``burst`` lines per key per ``window`` seconds; the rest are
    counted and reported on the next line let through (``suppressed=N``), so
    a storm of one kind of event never becomes one line per message."""

    def __init__(self, burst: int = 10, window: float = 10.0,
                 clock: Any = time.monotonic) -> None:
        self.burst, self.window, self.clock = burst, window, clock
        self._seen: dict[Any, list[float]] = {}   # key -> [window start, lines, suppressed]

    def allow(self, key: Any) -> tuple[bool, int]:
        """``(log it?, lines suppressed before it)``."""
        now = self.clock()
        s = self._seen.get(key)
        if s is None or now - s[0] >= self.window:
            suppressed = int(s[2]) if s else 0
            self._seen[key] = [now, 1, 0]
            return True, suppressed
        if s[1] < self.burst:
            s[1] += 1
            return True, 0
        s[2] += 1
        return False, 0
