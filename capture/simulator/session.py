"""The I/O-free core every venue session shares.

A session is one connection's protocol state: bytes in (``on_message``),
frames out (lists of :data:`Out`), and a round-robin of data *streams*, one
per subscribed (channel, instrument), each seeded from (seed, venue, channel,
instrument).  The server (``server.py``) decides *when* to send; the session
decides *what*.  Keeping time out of here is what makes content deterministic.
"""
from __future__ import annotations

import time

from typing import Callable, NamedTuple

import orjson

from capture.simulator.script import Scenario
from capture.simulator.universe import Universe
from capture.simulator.values import Clock


class Out(NamedTuple):
    """One frame to send: payload bytes (sent as a text frame) and whether it
    is a data message (counted by the scenario) or a control frame."""

    payload: bytes
    data: bool


def ctl(obj: object) -> Out:
    return Out(orjson.dumps(obj), False)


def dat(payload: bytes) -> Out:
    return Out(payload, True)


#: A stream yields its next data message.
Stream = Callable[[], bytes]

#: First malformed flavour: an HTML error page, what a proxy sends mid-stream.
NON_JSON = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


def pad_json(msg: bytes, size: int) -> bytes:
    """Grow a JSON object to exactly ``size`` bytes with a ``"pad"`` member.

    Raises:
        ValueError: the message alone is already longer than ``size``.
    """
    room = size - len(msg) - len(b',"pad":""')
    if room < 0:
        raise ValueError(f"blast frame size {size} is below this venue's minimum "
                         f"{len(msg) + 9}")
    return msg[:-1] + b',"pad":"' + b"x" * room + b'"}'


class Seq:
    """Sequence numbers for one subscription (Kraken Futures ``seq`` per
    subscription, Kalshi ``seq`` per ``sid``), with optional injected gaps."""

    def __init__(self, start: int, gap_every: int) -> None:
        self.value, self.gap_every, self.n, self.gap_next = start, gap_every, 0, False

    def next(self) -> int:
        self.n += 1
        if self.gap_next or (self.gap_every and self.n % self.gap_every == 0):
            self.gap_next = False
            self.value += 1  # the skipped number is never sent
        self.value += 1
        return self.value


class Session:
    """Base of the four venue sessions.

    Subclasses set ``venue``, fill ``self.streams`` on subscription and
    implement ``on_message``, ``large`` and ``blast_frame``.
    """

    venue = ""
    #: Kraken spot sends a heartbeat after an idle interval, from the start.
    idle_heartbeat = False

    def __init__(self, scenario: Scenario, universe: Universe, index: int) -> None:
        self.sc = scenario
        self.universe = universe
        self.index = index
        self.clock = Clock(scenario.clock)
        self.streams: dict[object, Stream] = {}
        self._rr = 0
        self._malformed = 0
        self.last_data = b"{}"
        #: Set when the first subscription succeeded (blast mode starts then).
        self.subscribed_once = False
        self._tokens = float(scenario.subscribe_burst or 0)
        self._refilled = time.monotonic()

    def _rate_ok(self) -> bool:
        """Token bucket over subscription commands, per connection
        (``Scenario.subscribe_burst`` / ``subscribe_refill``)."""
        if self.sc.subscribe_burst is None:
            return True
        now = time.monotonic()
        self._tokens = min(float(self.sc.subscribe_burst),
                           self._tokens + (now - self._refilled) * self.sc.subscribe_refill)
        self._refilled = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    # -- I/O-free protocol surface -------------------------------------
    def on_open(self) -> list[Out]:
        return []

    def on_message(self, message: str | bytes) -> list[Out]:
        raise NotImplementedError

    def heartbeat(self) -> bytes | None:
        """The periodic heartbeat frame, if this connection gets one now."""
        return None

    def has_data(self) -> bool:
        return bool(self.streams)

    def next_data(self) -> bytes:
        """The next steady data message, round-robin over the streams."""
        keys = list(self.streams)
        key = keys[self._rr % len(keys)]
        self._rr += 1
        self.last_data = self.streams[key]()
        return self.last_data

    def large(self, size: int) -> bytes:
        raise NotImplementedError

    def blast_frame(self, i: int, size: int) -> bytes:
        raise NotImplementedError

    def malformed(self) -> bytes:
        """Alternately a non-JSON page and a truncated copy of the last data
        message (a copy: the streams' state does not move)."""
        self._malformed += 1
        if self._malformed % 2:
            return NON_JSON
        return self.last_data[: max(1, len(self.last_data) // 2)]

    # -- helpers --------------------------------------------------------
    @staticmethod
    def parse(message: str | bytes) -> object:
        """JSON or ``None`` for anything that is not a JSON value."""
        try:
            return orjson.loads(message)
        except orjson.JSONDecodeError:
            return None
