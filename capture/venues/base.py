"""Common types of the venue protocol modules, and the cheap byte scanners.

Every venue module is *sans-I/O* (the python-websockets ``protocol.py``
idea): bytes to send come out of builder methods, received bytes go into
pure functions that say what a frame is (:meth:`Venue.classify`), where it
should be published (:meth:`Venue.route`), and which sequence number it
carries (:meth:`Venue.sequence`).  Nothing here touches a socket, a clock or
a logger, so everything is tested with plain bytes.

Cheapness is a requirement, not a nicety.  The receiver stamps a frame and
writes it to the ring without parsing it; it may look at small frames on its
control path, and the publisher routes *every* frame.  Frames reach ~2 MiB
(Polymarket book dumps), so the extractors here never build a JSON tree of a
data frame: one precompiled regex per key finds ``"key": "value"`` (C speed,
stops at the first hit, searches only a head window where that suffices) and
the scalar is read from the match.  The string pattern uses possessive
quantifiers, so even multi-megabyte malformed input costs one linear pass.
Only frames already known to be small control replies go to ``orjson``.

Why a key match is trustworthy: inside a JSON string every ``"`` is escaped,
so the byte sequence ``"key"`` followed by optional whitespace and ``:`` can
only be a real object key.  It may still be a key of a *nested* object; each
venue module picks keys whose first occurrence is the one it wants and says so.

Exceptions: venue code raises only subclasses of
:class:`common.errors.VenueError` (see :mod:`capture.venues` for the tree) or,
for bad caller arguments, :class:`common.errors.ConfigError`.  The
extractors never raise on received bytes: malformed input gives ``None`` or
:attr:`Kind.MALFORMED`.
"""
from __future__ import annotations

import enum
import functools
import re
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, ClassVar, NamedTuple, Protocol, runtime_checkable

import orjson

#: Bytes at the start of a frame searched for the keys that tell control
#: frames from data frames.  Control replies put these keys first in practice;
#: a data frame whose head lacks them is still recognised by its data keys.
HEAD = 512

#: Frames larger than this are never parsed with orjson by ``classify``:
#: venue control replies are a few hundred bytes; anything this big is data.
CONTROL_MAX = 16 * 1024


class Kind(str, enum.Enum):
    """What a received frame is, as far as the connection lifecycle cares."""

    ACK = "ack"                    # a subscription (or update) was accepted
    UNSUBSCRIBED = "unsubscribed"  # an unsubscribe was accepted
    ERROR = "error"                # the venue refused something; see detail/code
    HEARTBEAT = "heartbeat"        # venue keepalive, carries no market data
    PONG = "pong"                  # answer to our application-level ping
    INFO = "info"                  # status / info / other venue notices
    DATA = "data"                  # market data
    UNKNOWN = "unknown"            # valid JSON this module does not recognise
    MALFORMED = "malformed"        # not JSON (or not the venue's framing)


#: Kinds that are protocol chatter rather than market data.
CONTROL_KINDS = frozenset({Kind.ACK, Kind.UNSUBSCRIBED, Kind.ERROR, Kind.HEARTBEAT,
                           Kind.PONG, Kind.INFO})


@dataclass(frozen=True, slots=True)
class Classified:
    """The answer of ``classify``.

    Attributes:
        kind: what the frame is.
        channel: the channel / feed / event type when known.
        symbol: the instrument (symbol, product id, market ticker, condition id).
        req_id: the request id the venue echoed (Kraken ``req_id``, Kalshi ``id``).
        sid: Kalshi subscription id.
        code: the venue's numeric error code, when it has one.
        detail: the venue's error text or status word, verbatim.
    """

    kind: Kind
    channel: str | None = None
    symbol: str | None = None
    req_id: int | None = None
    sid: int | None = None
    code: int | None = None
    detail: str | None = None


class RouteKey(NamedTuple):
    """Where a data frame belongs: ``channel`` and instrument (``symbol``)."""

    channel: str
    symbol: str


class SeqInfo(NamedTuple):
    """A sequence number found in a frame.

    ``stream_key`` identifies the numbering (Kalshi: the sid; Kraken Futures:
    ``(feed, product_id)``); ``snapshot`` is true when the frame restarts the
    stream (a book snapshot), which resets gap detection; ``symbol`` names
    the instrument when the frame carries one, so a repair can target it.
    """

    stream_key: Hashable
    seq: int
    snapshot: bool = False
    symbol: str | None = None


@dataclass(frozen=True, slots=True)
class Keepalive:
    """Keepalive facts of a venue (seconds), for the connection lifecycle.

    Attributes:
        client_ping_interval: how often the client should send its ping
            (application message from ``ping()`` if ``app_ping``, otherwise a
            WebSocket ping frame); ``None`` if the client need not ping.
        app_ping: the ping is an application message (``Venue.ping()``).
        server_heartbeat: the venue's own heartbeat/ping period, if any.
        must_send_within: the venue drops a client silent for this long.
    """

    client_ping_interval: float | None
    app_ping: bool
    server_heartbeat: float | None
    must_send_within: float | None = None


@runtime_checkable
class Venue(Protocol):
    """What every venue module's class offers (see e.g. :mod:`.kraken`)."""

    name: ClassVar[str]
    url: ClassVar[str]
    demo_url: ClassVar[str | None]
    keepalive: ClassVar[Keepalive]
    # Traits the layers above read instead of branching on the venue's name.
    #: every channel (feed) a config may name
    channels: ClassVar[frozenset[str]]
    #: channels subscribed when the config names none
    default_channels: ClassVar[tuple[str, ...]]
    #: whether a config may choose channels (Polymarket's market channel is all-in-one)
    channels_configurable: ClassVar[bool]
    #: instruments per connection when the config does not say
    per_connection: ClassVar[int]
    #: the handshake needs a key (``[venues.<name>] key_id`` and ``key_file``)
    needs_key: ClassVar[bool]
    #: books carry a checksum that the validator process checks off the hot path
    checksum_validator: ClassVar[bool]

    #: the :class:`capture.venues.subscribe.Subscriber` subclass that plans
    #: this venue's subscriptions and repairs (built once per connection)
    subscriber: ClassVar[type]
    #: ``async discover(base_url or None) -> [(unit key, members)]``, the
    #: venue's REST discovery (``None``: instruments must be listed)
    discover: ClassVar[Callable[..., Any] | None]
    #: the REST base URL discovery uses when the config names none
    rest_url: ClassVar[str | None]
    #: the path prefix of the REST base under a host (the simulator's)
    rest_path: ClassVar[str]
    #: book frames carry sequence numbers: the hot path's layout of them
    #: (``None``: no sequence checks)
    seq_layout: ClassVar[SeqLayout | None]
    #: the venue's error code for refused credentials (Kalshi: 9)
    auth_error_code: ClassVar[int | None]
    #: ``signer(key_id, key_file)`` -> an object whose ``headers()`` sign a
    #: handshake (venues with ``needs_key``)
    signer: ClassVar[Callable[..., Any] | None]
    #: how the validator checks this venue's book checksums (with ``checksum_validator``)
    checksums: ClassVar[ChecksumSpec | None]

    @staticmethod
    def classify(raw: bytes) -> Classified: ...

    @staticmethod
    def route(raw: bytes) -> RouteKey | None: ...

    @staticmethod
    def sequence(raw: bytes) -> SeqInfo | None: ...

    @staticmethod
    def exchange_ts_ns(raw: bytes) -> int | None: ...


@dataclass(frozen=True, slots=True)
class SeqLayout:
    """How the receiver finds a book frame's sequence number on its hot path.

    ``head`` is matched at offset 0 of every frame: for a sequenced book
    frame in the venue's documented layout its groups are (snapshot marker
    or None, stream key bytes, seq digits); for a frame of another type in
    the same layout they are all None.  A frame it does not match goes to
    the venue's ``sequence()`` (the reference) if it contains ``hint``: a
    frame without ``hint`` carries no book sequence.  ``canonical`` turns
    the key bytes into ``sequence()``'s stream key, ``key_bytes`` back.
    """

    head: re.Pattern[bytes]
    hint: bytes
    canonical: Callable[[bytes], Hashable]
    key_bytes: Callable[[Hashable], bytes]


@dataclass(frozen=True, slots=True)
class ChecksumSpec:
    """What the book-checksum validator process needs from a venue whose
    ``checksum_validator`` trait is true.

    ``books(depth)`` builds the per-symbol book keeper (``feed(raw)`` ->
    results with ``symbol``, ``expected``, ``computed``; ``drop(symbol)``;
    ``books`` the dict of books); ``depths`` are the book depths it accepts;
    ``is_book_frame(payload)`` picks the frames to feed, cheaply;
    ``format_error`` is what ``feed`` raises for an unusable frame (with a
    ``symbol`` attribute).
    """

    books: Callable[[int], Any]
    depths: tuple[int, ...]
    is_book_frame: Callable[[bytes | memoryview], bool]
    format_error: type[Exception]


class VenueDefaults:
    """The optional traits' defaults; a venue class derives from this and
    states what differs (see :class:`Venue` for what each trait means)."""

    demo_url: ClassVar[str | None] = None
    channels_configurable: ClassVar[bool] = True
    needs_key: ClassVar[bool] = False
    checksum_validator: ClassVar[bool] = False
    discover: ClassVar[Callable[..., Any] | None] = None
    rest_url: ClassVar[str | None] = None
    rest_path: ClassVar[str] = ""
    seq_layout: ClassVar[SeqLayout | None] = None
    auth_error_code: ClassVar[int | None] = None
    signer: ClassVar[Callable[..., Any] | None] = None
    checksums: ClassVar[ChecksumSpec | None] = None


# --------------------------------------------------------------------------
# Gap detection
# --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Gap:
    """A break in a venue sequence: ``got`` arrived where ``expected`` was due.

    ``got < expected`` means a duplicate or a restart of the numbering.
    """

    stream_key: Hashable
    expected: int
    got: int

    @property
    def missing(self) -> int:
        return max(0, self.got - self.expected)


class GapDetector:
    """Tracks ``seq`` per stream and reports each break exactly once.

    The first number seen on a stream (or any snapshot) sets the baseline.
    After a gap is reported the detector continues from the number that
    arrived, so the following in-order messages are quiet and the same gap is
    never reported twice; a snapshot (the repair) resets the stream.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[Hashable, int] = {}

    def feed(self, key: Hashable, seq: int, snapshot: bool = False) -> Gap | None:
        last = self._last.get(key)
        self._last[key] = seq
        if snapshot or last is None or seq == last + 1:
            return None
        return Gap(key, last + 1, seq)

    @property
    def table(self) -> dict[Hashable, int]:
        """The last number per stream.  The receiver's hot path inlines
        :meth:`feed` over this very dict (a test holds both to the same
        answers); clear it in place, never replace it."""
        return self._last

    def feed_info(self, info: SeqInfo | None) -> Gap | None:
        """Feed what ``Venue.sequence(raw)`` returned (``None`` is ignored)."""
        return None if info is None else self.feed(info.stream_key, info.seq, info.snapshot)

    def reset(self, key: Hashable) -> None:
        """Forget a stream (after unsubscribe or a resubscribe request)."""
        self._last.pop(key, None)

    def expected(self, key: Hashable) -> int | None:
        last = self._last.get(key)
        return None if last is None else last + 1

    def __len__(self) -> int:
        return len(self._last)


# --------------------------------------------------------------------------
# Byte scanners (never raise on received bytes)
# --------------------------------------------------------------------------

_START = (b"{", b"[")
# A JSON string: an unrolled loop with possessive quantifiers, so runs of
# plain bytes are consumed by one class repeat and never backtracked; even a
# multi-megabyte unterminated string costs one linear pass.
_STRING_BODY = rb'"([^"\\]*+(?:\\.[^"\\]*+)*+)"'
_STRING = re.compile(_STRING_BODY, re.DOTALL)
_STR_RE: dict[bytes, re.Pattern[bytes]] = {}
_KEY_RE: dict[bytes, re.Pattern[bytes]] = {}
_LEAD_WS = re.compile(rb"[ \t\r\n]*+")
_INT = re.compile(rb"(-?[0-9]{1,20})(?![0-9.eE])")


def _str_re(key: bytes) -> re.Pattern[bytes]:
    """``"key" : "value"`` with any JSON string value, compiled once per key."""
    rx = _STR_RE.get(key)
    if rx is None:
        rx = _STR_RE[key] = re.compile(
            re.escape(key) + rb'[ \t\r\n]*+:[ \t\r\n]*+' + _STRING_BODY, re.DOTALL)
    return rx


def lstrip_ws(raw: bytes) -> int:
    """Index of the first non-whitespace byte of ``raw`` (``len`` if none)."""
    if raw[:1] in _START:  # the usual case, one slice
        return 0
    return _LEAD_WS.match(raw).end()  # type: ignore[union-attr]  (always matches)


def _key_re(key: bytes) -> re.Pattern[bytes]:
    rx = _KEY_RE.get(key)
    if rx is None:
        rx = _KEY_RE[key] = re.compile(re.escape(key) + rb"[ \t\r\n]*+:[ \t\r\n]*+")
    return rx


def value_at(raw: bytes, key: bytes, start: int = 0, end: int | None = None) -> int:
    """Index where the value of object key ``key`` starts, or -1.

    ``key`` is the quoted key (``b'"symbol"'``).  With ``end``, the key must
    begin inside ``raw[start:end]`` (whitespace around the colon may run up
    to 64 bytes past it); the value itself may extend past ``end``.
    """
    n = len(raw)
    rx = _key_re(key)
    if end is None or end >= n:
        m = rx.search(raw, start)
    else:
        m = rx.search(raw, start, min(n, end + 64))
        if m is not None and m.start() >= end:
            m = None
    if m is None or m.end() >= n:
        return -1
    return m.end()


def _decode(body: bytes) -> str | None:
    """The text of a JSON string body (the bytes between the quotes)."""
    try:
        if b"\\" not in body:
            return body.decode()
        v = orjson.loads(b'"' + body + b'"')
    except (UnicodeDecodeError, orjson.JSONDecodeError):
        return None
    return v if isinstance(v, str) else None


def _string_at(raw: bytes, i: int) -> str | None:
    """Decode the JSON string starting at ``raw[i] == '"'``."""
    if i < 0:
        return None
    m = _STRING.match(raw, i)
    return None if m is None else _decode(m.group(1))


def _int_at(raw: bytes, i: int) -> int | None:
    """Read an integer literal (or a quoted integer) starting at ``raw[i]``.

    At most 20 digits; a fraction or exponent means "not an integer".
    """
    if i < 0:
        return None
    quoted = raw[i:i + 1] == b'"'
    m = _INT.match(raw, i + quoted)
    if m is None or (quoted and raw[m.end():m.end() + 1] != b'"'):
        return None
    return int(m.group(1))


def scan_str(raw: bytes, key: bytes, start: int = 0, end: int | None = None) -> str | None:
    """The string value of the first ``key`` with a string value in ``raw[start:end]``.

    One precompiled regex search (C speed); with ``end`` the whole pair must
    lie inside the window, which only the head windows use.
    """
    rx = _str_re(key)
    m = rx.search(raw, start) if end is None else rx.search(raw, start, end)
    return None if m is None else _decode(m.group(1))


def scan_int(raw: bytes, key: bytes, start: int = 0, end: int | None = None) -> int | None:
    """The integer value (bare or quoted) of the first ``key`` in ``raw[start:end]``."""
    return _int_at(raw, value_at(raw, key, start, end))


def scan_str_head_tail(raw: bytes, key: bytes, window: int = HEAD) -> str | None:
    """Find ``key`` in the head, then the tail, then anywhere.

    For single-object frames whose interesting top-level key may sit after a
    megabyte of nested arrays (Polymarket puts ``event_type`` last in a book
    event): ``rfind`` in the tail avoids scanning the whole frame twice.
    Only use where nested objects cannot carry the same key.
    """
    v = scan_str(raw, key, 0, window)
    if v is not None:
        return v
    n = len(raw)
    if n > window:
        j = raw.rfind(key, max(0, n - window))
        if j >= 0:
            v = _string_at(raw, value_at(raw, key, j, j + len(key)))
            if v is not None:
                return v
        return scan_str(raw, key)
    return None


def loads_small(raw: bytes) -> object | None:
    """orjson-parse a frame known to be small; ``None`` if too big or invalid."""
    if len(raw) > CONTROL_MAX:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def dumps(obj: object) -> bytes:
    """Serialise an outbound message (compact UTF-8 JSON, sent as a text frame)."""
    return orjson.dumps(obj)


def as_list(items: str | Iterable[str]) -> list[str]:
    """Accept one name or an iterable of names; keep order, drop duplicates."""
    if isinstance(items, str):
        return [items]
    return list(dict.fromkeys(items))


# --------------------------------------------------------------------------
# Timestamps
# --------------------------------------------------------------------------

def rfc3339_to_ns(text: str) -> int | None:
    """Parse an RFC 3339 UTC time with up to 9 fraction digits to ns.

    ``datetime.fromisoformat`` takes at most 6 fraction digits, so the
    fraction is cut off and added back exactly.
    """
    if len(text) > 64:
        return None
    m = _RFC3339_UTC.fullmatch(text)
    if m is not None:   # the usual form: what the general path below gives, without its steps
        try:
            return (_whole_seconds_ns(m.group(1) + "+00:00")
                    + int((m.group(2) + "000000000")[:9]))
        except (ValueError, OverflowError):
            return None
    try:
        frac_ns = 0
        s = text.strip()
        if s.endswith(("Z", "z")):
            s = s[:-1] + "+00:00"
        dot = s.find(".")
        if dot >= 0:
            k = dot + 1
            while k < len(s) and s[k].isdigit():
                k += 1
            digits = s[dot + 1:k]
            if not digits:
                return None
            frac_ns = int((digits + "000000000")[:9])
            s = s[:dot] + s[k:]
        return _whole_seconds_ns(s) + frac_ns
    except (ValueError, OverflowError):
        return None


_RFC3339_UTC = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})"
                          r"\.([0-9]{1,9})Z")


@functools.lru_cache(maxsize=4096)
def _whole_seconds_ns(s: str) -> int:
    """The time without its fraction, in ns.  Cached: a feed's messages share
    their second with many others, and ``fromisoformat`` plus ``timestamp``
    were most of an export's time per message.  Errors are not cached."""
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp()) * 1_000_000_000


def epoch_to_ns(value: int) -> int:
    """Venue epoch integers come in s, ms, us or ns; normalise by magnitude."""
    v = abs(value)
    if v < 10**11:        # seconds (until year 5138)
        return value * 1_000_000_000
    if v < 10**14:        # milliseconds
        return value * 1_000_000
    if v < 10**17:        # microseconds
        return value * 1_000
    return value
