"""Credentials out of anything printed: the one redaction helper.

A URL may carry credentials in its userinfo (``nats://user:pass@host:4222``,
``nats://TOKEN@host``).  Whatever prints a URL - a warning, an error, ``capture
config check``, a log line - passes it through ``redact`` first: the password
(or a lone token) becomes ``***``; the user name, host and port stay, so the
line still says where.  ``RedactFilter`` does the same for every record of a
logger, as a net under the call sites that format an exception text nobody
checked (a client library may put the URL it tried in its message).
"""
from __future__ import annotations

import logging
import re
from typing import Iterable

MASK = "***"

# scheme://userinfo@ : userinfo has no '/', '@' or whitespace (RFC 3986 3.2.1
# allows ':' in it; the first ':' separates the user from the password).
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<info>[^/@\s'\"]+)@")


def _mask(m: re.Match) -> str:
    info = m["info"]
    user, sep, _secret = info.partition(":")
    # user:password -> user:***; a lone token (nats://TOKEN@host) is the secret itself
    return f"{m['scheme']}{user}:{MASK}@" if sep else f"{m['scheme']}{MASK}@"


def redact(text: object) -> str:
    """``text`` (anything; str() of it) with the credentials of every URL in it masked."""
    s = str(text)
    return _USERINFO.sub(_mask, s) if "@" in s else s


def redact_urls(urls: Iterable[str]) -> list[str]:
    return [redact(u) for u in urls]


class RedactFilter(logging.Filter):
    """Masks URL credentials in a record's final message (install on a handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        red = redact(msg)
        if red != msg:
            record.msg, record.args = red, None
        return True


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Add ``RedactFilter`` to every handler of ``logger`` (default: the root logger)."""
    for h in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactFilter) for f in h.filters):
            h.addFilter(RedactFilter())


__all__ = ["MASK", "redact", "redact_urls", "RedactFilter", "install_log_filter"]
