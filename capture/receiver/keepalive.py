"""A connection's keepalive: our pings and whether they were answered.

One ping is outstanding at a time.  While it is, the connection classifies
more frames on its hot path (a PONG can be a little longer than a heartbeat,
see ``Connection._set_peek``); a ping unanswered for ``pong_timeout`` makes
the connection stale.  A venue either answers WebSocket pings (a ping frame
with an empty body) or wants an application-level ping message
(:class:`capture.venues.base.Keepalive`), which the venue's subscriber
builds.  Time here is the event loop's clock, passed in by the watchdog.
"""
from __future__ import annotations


class Keepalive:
    """Ping bookkeeping for one connection.

    Args:
        interval: seconds between pings; None or 0: we never ping.
        pong_timeout: seconds an answer may take.
    """

    def __init__(self, interval: float | None, pong_timeout: float) -> None:
        self.interval = interval or None
        self.pong_timeout = pong_timeout
        self.sent_at: float | None = None   # the outstanding ping's send time
        self.next_at = 0.0

    def fresh(self) -> None:
        """A new connection: no ping outstanding."""
        self.sent_at = None

    def start(self, now: float) -> None:
        """The watchdog starts: the first ping one interval from ``now``."""
        self.next_at = now + (self.interval or 0)

    @property
    def outstanding(self) -> bool:
        return self.sent_at is not None

    def answered(self) -> bool:
        """The answer came; True if a ping was outstanding."""
        if self.sent_at is None:
            return False
        self.sent_at = None
        return True

    def overdue(self, now: float) -> float | None:
        """Seconds the outstanding ping has waited, once past ``pong_timeout``."""
        if self.sent_at is not None and now - self.sent_at > self.pong_timeout:
            return now - self.sent_at
        return None

    def due(self, now: float) -> bool:
        """Time to send a ping (counted as sent)?  At most one outstanding:
        the schedule moves on every interval either way."""
        if not self.interval or now < self.next_at:
            return False
        self.next_at = now + self.interval
        if self.sent_at is not None:
            return False
        self.sent_at = now
        return True
