"""Integrity repairs: the per-symbol rate limit, the receiver's integrity
counters, and the local channel the checksum validator reports through.

Theory of operation
-------------------
Detections come from two places:

* sequence gaps, found by the receiver itself on its hot path
  (:class:`SeqScanner` in :meth:`capture.receiver.connection.Connection._on_message`, Kalshi ``seq`` per
  ``sid``, Kraken Futures ``seq`` per book subscription);
* Kraken spot book checksum mismatches, found off the receive path by the
  validator process (:mod:`capture.receiver.integrity`), an untethered ring reader.
  Only the receiver may write the ring, so the validator sends each
  detection as one small JSON datagram over a Unix datagram socket next to
  the ring file (:func:`channel_path`: ``<ring>.integrity.sock``, created by
  the receiver, owner-only 0600 inside the ring's 0700 directory).

For every detection the receiver writes one control record (``seq_gap`` /
``checksum_mismatch``), counts it in its status file's ``gaps``, and repairs
*that symbol only* on its live connection: Kalshi ``update_subscription``
``get_snapshot`` for the market's sid, Kraken spot and Futures unsubscribe +
subscribe of that one book.  Never a reconnect.

Each symbol has a token bucket (:class:`RepairLimiter`: ``burst`` repairs,
refilled at ``burst / window`` per second), so a symbol that keeps failing
cannot cause a resubscription storm; a repair the bucket refuses is recorded
as ``repair_suppressed`` (the detection itself is always recorded).

Datagram format (validator -> receiver), at most :data:`MAX_DATAGRAM` bytes::

    {"kind": "checksum_mismatch", "venue": "kraken", "symbol": "BTC/USD",
     "expected": 123, "computed": 456, "frame_seq": 789, "conn": 0}

Anything else (not JSON, unknown kind, a symbol no connection holds) is
counted as a bad report and ignored.
"""
from __future__ import annotations

import os
import re
import socket
import stat
import time
from typing import Any, Callable

import orjson

#: Kinds the validator may report.
REPORT_KINDS = frozenset({"checksum_mismatch"})
#: Largest datagram accepted (reports are ~200 bytes).
MAX_DATAGRAM = 4096
#: Venues whose books carry checksums (validated by capture.receiver.integrity).
CHECKSUM_VENUES = frozenset({"kraken"})
#: Venues whose book messages carry sequence numbers (checked in the receiver).
SEQUENCE_VENUES = frozenset({"kalshi", "kraken_futures"})


# --------------------------------------------------------------------------
# Sequence numbers on the hot path
# --------------------------------------------------------------------------

#: A frame without this byte string carries no sequence number: the venue
#: module's ``sequence()`` returns None for it (checked by the tests over the
#: simulator's frames).  Kalshi: ``"seq"``, since replies (``ok``,
#: ``unsubscribed``) carry one too and take a slot in their sid's numbering.
SEQ_HINTS: dict[str, bytes] = {"kalshi": b'"seq"', "kraken_futures": b'"book'}

#: The documented head of a frame, matched at offset 0 in one regex call:
#: either a sequenced book frame (groups: snapshot marker or None, stream
#: key, seq) or, in the same layout, a frame of another type (groups all
#: None: it carries no book sequence; Kalshi ``ok`` / ``unsubscribed``
#: replies are left to the fallback, as they may carry a ``seq``).  Kalshi
#: ``{"type":"orderbook_delta","sid":N,"seq":N,...``; Futures
#: ``{"feed":"book[_snapshot]","product_id":"..",`` then scalar members
#: (``side``, ``timestamp``; no nested object or array, so the ``"seq":``
#: found is a top-level key: inside a JSON string every quote is escaped)
#: within 96 bytes before ``"seq":N``.
_HEADS: dict[str, re.Pattern[bytes]] = {
    "kalshi": re.compile(
        rb'\{"type":"(?:orderbook_(?:(snapshot)|delta)","sid":([0-9]{1,19}),'
        rb'"seq":([0-9]{1,19})[,}]|(?!orderbook_|ok"|unsubscribed"))'),
    "kraken_futures": re.compile(
        rb'\{(?:"time":[0-9]{1,19},)?"feed":"(?:book(_snapshot)?",'
        rb'"product_id":"([A-Za-z0-9_:.\-]{1,64})",[^{}\[\]]{0,96}?'
        rb'"seq":([0-9]{1,19})[,}]|(?!book))'),
}


class SeqScanner:
    """Book sequence numbers for the receive path: ``match(raw)`` at offset 0,
    then :meth:`fallback` only for frames outside the documented layout.

    Semantics are those of the venue module's ``sequence()``, which remains
    the reference (the tests compare both over the simulator's frames and
    odd layouts): a frame in the documented layout is answered by one
    anchored regex match (a non-book frame fails or is recognised within a
    few bytes); anything else that could be a book frame (it contains the
    venue's hint) goes through ``venue.sequence()``.

    Stream keys on the hot path are the raw bytes of the sid / product id;
    :meth:`canonical` turns one into the venue module's key (Kalshi: the sid
    as an int; Futures: ``("book", product_id)``).  Measured in
    bench/test_integrity_bench.py.
    """

    __slots__ = ("venue", "hint", "slow", "match")

    def __init__(self, venue_cls: type) -> None:
        name = venue_cls.name
        if name not in SEQ_HINTS:
            raise ValueError(f"venue {name!r} has no sequence numbers")
        self.venue = name
        self.hint = SEQ_HINTS[name]
        self.slow = venue_cls.sequence
        self.match = _HEADS[name].match

    def fallback(self, raw: bytes) -> tuple[bytes, int, bool] | None:
        """``(key bytes, seq, snapshot)`` by the venue module, for frames the
        head regex did not answer."""
        if raw.find(self.hint) < 0:
            return None
        info = self.slow(raw)
        if info is None:
            return None
        k = info.stream_key
        key = str(k).encode() if isinstance(k, int) else str(k[1]).encode()
        return key, info.seq, info.snapshot

    def __call__(self, raw: bytes) -> tuple[bytes, int, bool] | None:
        """The whole answer (the connection inlines this)."""
        m = self.match(raw)
        if m is None:
            return self.fallback(raw)
        snap, key, seq = m.group(1, 2, 3)
        if seq is None:
            return None
        return key, int(seq), snap is not None

    def canonical(self, key: bytes) -> Any:
        """The venue module's stream key for a hot-path key."""
        return int(key) if self.venue == "kalshi" else ("book", key.decode())


def channel_path(ring_path: str) -> str:
    """The integrity channel of a ring: ``<ring>.integrity.sock``."""
    return os.fspath(ring_path) + ".integrity.sock"


# --------------------------------------------------------------------------
# Rate limit
# --------------------------------------------------------------------------

class TokenBucket:
    """``capacity`` tokens, refilled continuously at ``rate`` per second."""

    __slots__ = ("capacity", "rate", "tokens", "stamp", "clock")

    def __init__(self, capacity: float, rate: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity, self.rate, self.clock = float(capacity), float(rate), clock
        self.tokens = float(capacity)
        self.stamp = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class RepairLimiter:
    """At most ``burst`` repairs per symbol per ``window`` seconds (token
    bucket per symbol; ``burst`` 0 disables repairs altogether)."""

    def __init__(self, burst: int = 3, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if burst < 0 or window <= 0:
            raise ValueError("repair burst must be >= 0 and window > 0")
        self.burst, self.window, self.clock = burst, window, clock
        self._buckets: dict[str, TokenBucket] = {}

    def allow(self, symbol: str) -> bool:
        if self.burst == 0:
            return False
        b = self._buckets.get(symbol)
        if b is None:
            b = self._buckets[symbol] = TokenBucket(self.burst, self.burst / self.window,
                                                    self.clock)
        return b.take()


class Integrity:
    """Shared by the connections of one receiver: the limiter and the counters
    that go into the status file (``gaps`` and ``integrity``)."""

    def __init__(self, venue: str, burst: int = 3, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.venue = venue
        self.limiter = RepairLimiter(burst, window, clock)
        self.counts: dict[str, int] = {}

    def count(self, kind: str, n: int = 1) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + n


# --------------------------------------------------------------------------
# The channel
# --------------------------------------------------------------------------

class ChannelServer:
    """The receiver's end: a non-blocking Unix datagram socket at ``path``,
    mode 0600.  A stale socket file left by a dead receiver is replaced;
    anything else at that path (a regular file, a symlink) is refused.

    Raises:
        OSError: cannot bind, or the path holds something that is not a socket.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise OSError(f"{path}: exists and is not a socket")
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        # Bind under a temporary name, restrict it, then move it into place,
        # so the socket is never reachable with wider permissions.
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            self.sock.bind(tmp)
            os.chmod(tmp, 0o600)
            os.rename(tmp, path)
        except OSError:
            self.sock.close()
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self, limit: int = 1024) -> list[Any]:
        """Every datagram waiting (at most ``limit``), decoded; ``None`` for
        one that is not JSON."""
        out: list[Any] = []
        for _ in range(limit):
            try:
                data = self.sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            try:
                out.append(orjson.loads(data))
            except orjson.JSONDecodeError:
                out.append(None)
        return out

    def close(self) -> None:
        self.sock.close()
        try:
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)
        except OSError:
            pass


class ChannelClient:
    """The validator's end: sends reports; never blocks, never raises."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)

    def send(self, report: dict[str, Any]) -> bool:
        """True if the receiver's socket took it (False: no receiver, or its
        queue is full: the caller counts it as undelivered)."""
        try:
            self.sock.sendto(orjson.dumps(report), self.path)
            return True
        except OSError:
            return False

    def close(self) -> None:
        self.sock.close()


def valid_report(msg: Any) -> bool:
    """A report the receiver acts on: a known kind and a string symbol."""
    return (isinstance(msg, dict) and msg.get("kind") in REPORT_KINDS
            and isinstance(msg.get("symbol"), str) and 0 < len(msg["symbol"]) <= 256)
