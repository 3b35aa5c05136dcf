"""The lifecycle of one WebSocket connection, as a table (h11 style).

Rule 1: a connection's state changes only through :data:`TRANSITIONS`
(``Connection._fire`` in :mod:`capture.receiver.connection`), and every transition
writes a control record (:data:`RECORD_KIND`) into the ring.

States and events (h11 style: (state, event) -> next state)::

    idle --start--> connecting --opened--> subscribing --subscribed--> live
                        |                      |   \\                   |  \\
                   connect_failed            lost  keepalive_timeout  lost silence /
                        |                      |          \\           |   keepalive_timeout
                        v                      v           v          v    v
                   backing_off <---------------+--lost--- stale <------+----+
                        |
                      retry --> connecting ...            any --stop--> closed

* ``subscribing``: subscribe requests sent; waiting for the venue's acks (or
  errors) for every (channel, instrument).  All answered, or
  ``subscribe_timeout`` passed, or a venue without acks (Polymarket) ->
  ``live``.
* ``live``: data flows.  The inbound-*data* silence watchdog runs here: a
  connection that still answers keepalives (PONG, heartbeats) but has sent no
  market data for ``silence_timeout`` is ``stale``.
* ``stale``: we close it (and replace it: backing_off -> connecting).
* ``backing_off``: capped exponential backoff with full jitter:
  ``delay = uniform(0, min(backoff_cap, backoff_base * 2**failures))``;
  ``failures`` resets once a connection has been live for ``stable_after``.

:class:`Timing` holds every interval of the lifecycle (tests make them small).
"""
from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from common.errors import ConfigError
from common import errors as _errors

#: Defined in the one error tree; connection.py imports it from here.
ConnectionStateError = _errors.ConnectionStateError


class State(str, enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    SUBSCRIBING = "subscribing"
    LIVE = "live"
    STALE = "stale"
    BACKING_OFF = "backing_off"
    CLOSED = "closed"


class Event(str, enum.Enum):
    START = "start"
    OPENED = "opened"
    CONNECT_FAILED = "connect_failed"
    SUBSCRIBED = "subscribed"
    SILENCE = "silence"
    KEEPALIVE_TIMEOUT = "keepalive_timeout"
    LOST = "lost"
    RETRY = "retry"
    STOP = "stop"


S, E = State, Event

#: The whole lifecycle.  (state, event) -> next state; anything else is a bug.
TRANSITIONS: dict[tuple[State, Event], State] = {
    (S.IDLE, E.START): S.CONNECTING,
    (S.CONNECTING, E.OPENED): S.SUBSCRIBING,
    (S.CONNECTING, E.CONNECT_FAILED): S.BACKING_OFF,
    (S.SUBSCRIBING, E.SUBSCRIBED): S.LIVE,
    (S.SUBSCRIBING, E.KEEPALIVE_TIMEOUT): S.STALE,
    (S.SUBSCRIBING, E.LOST): S.BACKING_OFF,
    (S.LIVE, E.SILENCE): S.STALE,
    (S.LIVE, E.KEEPALIVE_TIMEOUT): S.STALE,
    (S.LIVE, E.LOST): S.BACKING_OFF,
    (S.STALE, E.LOST): S.BACKING_OFF,
    (S.BACKING_OFF, E.RETRY): S.CONNECTING,
    **{(s, E.STOP): S.CLOSED for s in State if s is not S.CLOSED},
}

#: The control record kind each event writes.
RECORD_KIND: dict[Event, str] = {
    E.START: "connecting", E.RETRY: "connecting", E.OPENED: "opened",
    E.CONNECT_FAILED: "connect_failed", E.SUBSCRIBED: "live", E.SILENCE: "silence_timeout",
    E.KEEPALIVE_TIMEOUT: "keepalive_timeout", E.LOST: "closed", E.STOP: "stopped",
}


@dataclass(frozen=True)
class Timing:
    """Every interval of the lifecycle, in seconds (tests make them small).

    ``ping_interval``/``silence_timeout``: ``None`` means the venue's default
    (:class:`capture.venues.base.Keepalive`) / no silence watchdog; 0 disables.
    """

    connect_timeout: float = 10.0
    subscribe_timeout: float = 10.0
    ping_interval: float | None = None
    pong_timeout: float = 10.0
    silence_timeout: float | None = 120.0
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    stable_after: float = 30.0
    stagger: float = 0.25
    stagger_jitter: float = 0.25
    close_timeout: float = 2.0
    #: Frames at most this long are classified on the hot path when no
    #: reply is awaited (heartbeats, PONG); longer ones count as data unparsed.
    peek_bytes: int = 128
    #: After an authentication failure: the first retry waits in
    #: [auth_backoff/2, auth_backoff], doubling per consecutive failure up to
    #: auth_backoff_cap (credentials rarely fix themselves within seconds).
    auth_backoff: float = 5.0
    auth_backoff_cap: float = 300.0
    #: Subscriptions the venue refused for its request rate are sent again
    #: on the live connection after this, doubling per consecutive refusal up
    #: to subscribe_retry_cap.
    subscribe_retry: float = 1.0
    subscribe_retry_cap: float = 30.0

    def __post_init__(self) -> None:
        for k, v in self.__dict__.items():
            if isinstance(v, (int, float)) and v < 0:
                raise ConfigError(None, f"timing.{k}", f"must be >= 0, got {v}")
        if self.backoff_cap < self.backoff_base:
            raise ConfigError(None, "timing.backoff_cap", "must be >= backoff_base")
        if self.auth_backoff_cap < self.auth_backoff:
            raise ConfigError(None, "timing.auth_backoff_cap", "must be >= auth_backoff")
        if self.subscribe_retry_cap < self.subscribe_retry:
            raise ConfigError(None, "timing.subscribe_retry_cap", "must be >= subscribe_retry")

    def backoff(self, failures: int, rng: random.Random) -> tuple[float, float]:
        """``(delay, cap)``: full jitter over the capped exponential."""
        cap = min(self.backoff_cap, self.backoff_base * (2 ** min(failures, 32)))
        return rng.uniform(0.0, cap), cap

    def auth_delay(self, failures: int, rng: random.Random) -> tuple[float, float]:
        """``(delay, cap)`` after the ``failures``-th consecutive auth failure:
        never below half the cap, so a refused key cannot spin."""
        cap = min(self.auth_backoff_cap, self.auth_backoff * (2 ** min(max(failures, 1) - 1, 32)))
        return rng.uniform(cap / 2, cap), cap
