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

The records a connection writes (control frames whose header ``conn`` is the
connection id; the JSON carries ``kind``, ``conn_name``, ``state`` - the state
after the record - and, for transitions, ``from``)::

    connecting {attempt, url}       opened {attempt, url}     connect_failed {status, error}
    subscribe_sent {channel, symbols, req_id, reason}
    subscribed {channel, symbol, req_id}          subscribe_failed {channel, symbols, error, code[, retry_in_s]}
                                    (retry_in_s: refused for the venue's request rate; sent
                                    again on this connection then, subscribe_sent reason
                                    "rate_limit_retry", the delay doubling per refusal)
    subscribe_timeout {pending[, retry_in_s]}   venue_error {error, code[, rate_limited]}
                                    (a rate refusal naming no request, Kraken's bare
                                    {"Error": "Exceeded msg rate"}: the next request to time
                                    out with acks pending is retried like a named refusal)
    live {acked, failed, timed_out}
    subscription_lost {venue, sid, channel, markets, code, error}   the venue ended a
                                    subscription (Kalshi 25, buffer overflow: messages were
                                    lost); its markets are subscribed again at once, reason
                                    "subscription_lost"; counted in stats and status
    keepalive_timeout {waited_s}    silence_timeout {silent_s, last_data_ns}
    closed {code, reason, by[, handshake, after_close]}   on a stop: whether the closing
                                    handshake completed or was aborted, and the messages
                                    received after our close frame
    reconnect {attempt, delay, failures, cap}
    unsubscribe_sent {channel, symbols}           stopped {frames, malformed, refused, reconnects}
    receiver_error {error}          an unexpected exception: counted, rate-limited; inside an
                                    attempt it costs that attempt (closed 1011 by "error")
    auth_failed {status|code, error, retry_in_s}  HTTP 401/403 at the handshake, or the
                                    venue's auth error code (Kalshi 9) on a live connection;
                                    logged without key material, retried after the *auth*
                                    backoff (``auth_backoff`` doubling to ``auth_backoff_cap``,
                                    jittered in [cap/2, cap]: never a tight loop)

Integrity (with an :class:`capture.receiver.repair.Integrity`, see :mod:`capture.receiver.repair`)::

    seq_gap {venue, symbol, sid|feed, expected, got, missing[, repair: "pending"]}
    checksum_mismatch {venue, symbol, expected, computed, frame_seq}   (reported by the validator)
    repair {venue, symbol, reason, action}        get_snapshot / resubscribe sent for that symbol
    repair_suppressed {venue, symbol, reason, burst, window_s}   the symbol's token bucket is empty

:class:`Timing` holds every interval of the lifecycle (tests make them small).
"""
from __future__ import annotations

import enum
import logging
import random
from dataclasses import dataclass
from typing import Any

from common.errors import ConfigError
from common import errors as _errors
from common.log import Throttle, event as log_event

#: Defined in the one error tree; connection.py imports it from here.
ConnectionStateError = _errors.ConnectionStateError

log = logging.getLogger("capture.receiver")


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


#: Why a connection was replaced (``reconnects`` in its stats, the
#: ``reason`` label of capture_reconnects_total, exported at 0 from the start).
RECONNECT_REASONS = ("connect_failed", "server_close", "client", "error", "silence",
                     "keepalive_timeout", "auth", "closed")

_I, _W, _E = logging.INFO, logging.WARNING, logging.ERROR

#: The records of a connection that also make a log line, and at what level:
#: every state change (the transitions' kinds above), every reconnect with its
#: delay, every refusal and every gap.  Per-instrument acks and sends are not
#: logged: they come by the thousand.
LOGGED: dict[str, int] = {
    "connecting": _I, "opened": _I, "live": _I, "stopped": _I,
    "connect_failed": _W, "closed": _W, "silence_timeout": _W, "keepalive_timeout": _W,
    "reconnect": _I, "auth_failed": _E, "subscribe_failed": _W, "subscribe_timeout": _W,
    "seq_gap": _W, "checksum_mismatch": _W, "repair": _I, "repair_suppressed": _W,
    "receiver_error": _E, "venue_error": _W, "subscription_lost": _W,
}

#: Fields of a record that a log line repeats (the rest stay in the record).
_LOG_FIELDS = ("from", "attempt", "url", "status", "code", "reason", "by", "error", "delay",
               "failures", "cap", "retry_within_s", "retry_in_s", "waited_s", "silent_s",
               "channel", "symbol", "symbols", "expected", "got", "missing", "computed",
               "handshake", "after_close", "sid", "markets")

_throttle = Throttle()

#: Records that are a failure: the latest one is the connection's
#: ``last_error`` in the status file (what `capture status` shows).
ERROR_KINDS = frozenset({"connect_failed", "closed", "silence_timeout", "keepalive_timeout",
                         "auth_failed", "subscribe_failed", "subscribe_timeout", "receiver_error",
                         "venue_error", "seq_gap", "checksum_mismatch"})


def error_text(kind: str, fields: dict[str, Any]) -> str | None:
    """One short line for a failure record (None: not a failure; a close
    with code 1000 is a clean close)."""
    if kind not in ERROR_KINDS or (kind == "closed" and fields.get("code") == 1000):
        return None
    what = fields.get("error") or fields.get("reason") or ""
    code = fields.get("status") or fields.get("code")
    return f"{kind}" + (f" {code}" if code is not None else "") + (f": {what}" if what else "")


def log_record(conn: str, state: "State", kind: str, fields: dict[str, Any]) -> None:
    """Log one connection record if it is a :data:`LOGGED` kind, at most a
    burst per (connection, kind) per window (a storm is summarised, never one
    line per message)."""
    level = LOGGED.get(kind)
    if kind == "closed" and fields.get("code") == 1000:
        level = _I   # a clean close (ours at stop, or the venue's normal one)
    if level is None or not log.isEnabledFor(level):
        return
    ok, suppressed = _throttle.allow((conn, kind))
    if not ok:
        return
    kv: dict[str, Any] = {"conn": conn, "state": state.value}
    for k in _LOG_FIELDS:
        v = fields.get(k)
        if v is not None:
            # a subscribe refusal can name hundreds of symbols: the count is enough here
            kv[k] = len(v) if k in ("symbols", "markets") and isinstance(v, list) else v
    if suppressed:
        kv["suppressed"] = suppressed
    log_event(log, kind, level, **kv)


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
    #: A stop's closing handshake: messages the server sends until its close
    #: frame are still received and recorded, so the wait for that frame
    #: restarts whenever messages arrived within close_timeout; this bounds it.
    close_cap: float = 8.0
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
