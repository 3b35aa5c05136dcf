"""Kalshi trade API WebSocket v2, sans-I/O, and the handshake signer.

Messages we send::

    {"id":1,"cmd":"subscribe","params":{"channels":["orderbook_delta"],"market_tickers":[..]}}
    {"id":2,"cmd":"unsubscribe","params":{"sids":[1]}}
    {"id":3,"cmd":"update_subscription","params":{"sid":1,"market_tickers":[..],
     "action":"add_markets"|"delete_markets"|"get_snapshot"}}

Frames we receive::

    {"id":1,"type":"subscribed","msg":{"channel":"orderbook_delta","sid":1}}
    {"id":2,"sid":1,"seq":7,"type":"unsubscribed"}
    {"id":3,"sid":1,"seq":8,"type":"ok","msg":{"market_tickers":[..]}}
    {"id":4,"type":"error","msg":{"code":8,"msg":"Unknown channel name"}}
    {"type":"orderbook_snapshot","sid":1,"seq":1,"msg":{"market_ticker":..,..}}
    {"type":"orderbook_delta","sid":1,"seq":2,"msg":{"market_ticker":..,"delta_fp":"-54.00",..}}
    {"type":"ticker"|"trade"|"market_lifecycle_v2","sid":..,"msg":{"market_ticker":..,..}}

``seq`` numbers one subscription (sid) across snapshots and deltas; a gap
means ``get_snapshot`` (or resubscribe).  Replies to commands on a sid
(``ok``, ``unsubscribed``) may carry a ``seq`` too: it takes a slot in that
sid's numbering, so :func:`sequence` reports it (skipping it would look like
a lost message).  Whether several ``subscribe`` commands for one channel share
one sid or get one each is not settled (observations of the live venue
disagree); nothing here assumes either: :func:`sequence` names the market of
each book frame, and the receiver tracks the set of markets per sid.

Errors (the code table of the AsyncAPI document, read 2026-12-06): code 25
(subscription buffer overflow: messages were lost and the subscription is
over) is *terminal* (:data:`TERMINAL_ERROR_CODES`): the markets it covers
need a gap record and a fresh subscription.  Code 27 (too many requests) is
a rate refusal (:data:`TOO_MANY_REQUESTS_CODES`): back off and send again.

Timestamps: ``ts`` (seconds or RFC 3339, by channel) is deprecated in favour
of ``ts_ms`` (epoch milliseconds); :func:`exchange_ts_ns` prefers ``ts_ms``
and falls back to ``ts``, so frames of either vintage are read.

Hosts: the documented production host is ``api.elections.kalshi.com``
(quick start, read 2026-12-06); newer material names
``external-api-ws.kalshi.com`` beside it.  The default stays on the
documented host because that is the one the quick start, the API-key
signing guide and the demo pairing (``demo-api.kalshi.co``) all name; the
other is a config ``url`` away (``[venues.kalshi] url``).  The server sends WebSocket protocol
pings every 10 s; the WebSocket library answers them, nothing to build here.

Authentication happens at the handshake of *every* connection:
:class:`KalshiSigner` produces the three ``KALSHI-ACCESS-*`` headers, freshly
timestamped each time.  The private key lives only inside the signer, which
never shows it (``repr``/``str`` are redacted, pickling is refused).
"""
from __future__ import annotations

import base64
import os
import re
import stat
import time
from collections.abc import Iterable

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from common.errors import ConfigError, KeyFileError

from capture.venues.base import (CONTROL_MAX, Classified, HEAD, Keepalive, Kind, RouteKey, SeqInfo, SeqLayout, VenueDefaults, as_list, dumps, epoch_to_ns, loads_small, lstrip_ws, rfc3339_to_ns, scan_int, scan_str, value_at)
from capture.venues.kalshi import discovery
from capture.venues.kalshi.subscriber import KalshiSubscriber

URL = "wss://api.elections.kalshi.com/trade-api/ws/v2"
DEMO_URL = "wss://demo-api.kalshi.co/trade-api/ws/v2"
WS_PATH = "/trade-api/ws/v2"
CHANNELS = frozenset({"ticker", "ticker_v2", "trade", "orderbook_delta", "market_lifecycle_v2"})
UPDATE_ACTIONS = frozenset({"add_markets", "delete_markets", "get_snapshot"})
#: Error code the venue uses for authentication failures.
AUTH_ERROR_CODE = 9
#: Errors that end a subscription (messages were lost): record a gap and
#: subscribe the affected markets again.  25 = subscription buffer overflow.
TERMINAL_ERROR_CODES = frozenset({25})
#: Errors that refuse a command for its rate: retry after a backoff.
TOO_MANY_REQUESTS_CODES = frozenset({27})

_CONTROL_TYPES = frozenset({"subscribed", "unsubscribed", "ok", "error"})
#: Data frame types whose subject is their subscription channel's.
_CHANNEL_OF = {"orderbook_snapshot": "orderbook_delta", "event_lifecycle": "market_lifecycle_v2"}
_SEQ_TYPES = {"orderbook_snapshot": True, "orderbook_delta": False}
#: Replies that take a slot in their sid's numbering when they carry ``seq``.
_SEQ_REPLIES = frozenset({"ok", "unsubscribed"})

_K_TYPE = b'"type"'
_K_MARKET = b'"market_ticker"'
_K_EVENT = b'"event_ticker"'
_K_SID = b'"sid"'
_K_SEQ = b'"seq"'


# --------------------------------------------------------------------------
# Key handling and signing
# --------------------------------------------------------------------------


def load_private_key(path: str | os.PathLike) -> rsa.RSAPrivateKey:
    """Load an unencrypted RSA private key (PEM, PKCS#8 or PKCS#1).

    The file must be a regular file with no group/other permission bits
    (like ssh, refuse before reading: a key others can read is compromised
    and should be rotated, not used).

    Raises:
        KeyFileError: missing, not a regular file, group/other-accessible,
            unreadable, not PEM, encrypted, or not an RSA key.
    """
    p = os.fspath(path)
    # Symlinks are followed (secret stores mount keys through them); the
    # checks below apply to the file actually opened (fstat, no race).
    # O_NONBLOCK: opening a FIFO must not hang; it is refused as not regular.
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        raise KeyFileError(p, "file does not exist") from None
    except OSError as exc:
        raise KeyFileError(p, f"cannot open ({exc.strerror or type(exc).__name__})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(p, "not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise KeyFileError(p, f"mode {mode:04o} lets group/others access it; "
                                  "chmod 600 (and rotate the key if it was exposed)")
        if st.st_size > 64 * 1024:
            raise KeyFileError(p, "too large to be a PEM private key")
        with os.fdopen(fd, "rb", closefd=True) as fh:
            fd = -1
            data = fh.read()
    finally:
        if fd >= 0:
            os.close(fd)
    if b"-----BEGIN" not in data:
        raise KeyFileError(p, "not a PEM file (no BEGIN line)")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyFileError(p, "the key is encrypted; an unencrypted PEM key is required") from None
    except (ValueError, UnsupportedAlgorithm):
        # The library's message is dropped on purpose: it may quote the input.
        raise KeyFileError(p, "not a valid PEM private key (PKCS#8 or PKCS#1)") from None
    except Exception as exc:  # anything else: same rule, no library text, no chaining
        raise KeyFileError(p, f"could not load the key ({type(exc).__name__})") from None
    finally:
        del data
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyFileError(p, f"not an RSA private key ({type(key).__name__.lstrip('_')})")
    return key


class KalshiSigner:
    """Signs the WebSocket handshake: RSA-PSS(SHA-256, MGF1-SHA-256, salt =
    digest length) over ``timestamp_ms + "GET" + "/trade-api/ws/v2"``.

    Build it once per process (``from_file``) and call :meth:`headers` for
    every connection attempt: the timestamp, hence the signature, must be
    fresh each time.
    """

    __slots__ = ("_key", "_key_id")

    def __init__(self, key_id: str, private_key: rsa.RSAPrivateKey) -> None:
        if not key_id:
            raise ConfigError(None, "key_id", "empty Kalshi access key id")
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise ConfigError(None, "private_key", "not an RSA private key object")
        self._key_id = key_id
        self._key = private_key

    @classmethod
    def from_file(cls, key_id: str, path: str | os.PathLike) -> KalshiSigner:
        """Raises: KeyFileError (see :func:`load_private_key`)."""
        return cls(key_id, load_private_key(path))

    @property
    def key_id(self) -> str:
        return self._key_id

    def sign(self, message: bytes) -> str:
        """Base64 RSA-PSS-SHA256 signature of ``message``."""
        sig = self._key.sign(
            message,
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH),
            hashes.SHA256())
        return base64.b64encode(sig).decode("ascii")

    def headers(self, timestamp_ms: int | None = None, method: str = "GET",
                path: str = WS_PATH) -> dict[str, str]:
        """The three handshake headers; ``timestamp_ms`` defaults to now."""
        ts = str(int(time.time() * 1000) if timestamp_ms is None else timestamp_ms)
        return {
            "KALSHI-ACCESS-KEY": self._key_id,
            "KALSHI-ACCESS-TIMESTAMP": ts,
            "KALSHI-ACCESS-SIGNATURE": self.sign(f"{ts}{method}{path}".encode()),
        }

    def __repr__(self) -> str:
        kid = self._key_id
        shown = kid[:4] + "..." if len(kid) > 8 else "..."
        return f"KalshiSigner(key_id={shown!r}, key=<redacted>)"

    __str__ = __repr__

    def __reduce__(self):  # pickling would copy the key into a byte stream
        raise TypeError("KalshiSigner cannot be pickled (holds a private key)")


# --------------------------------------------------------------------------
# Received frames
# --------------------------------------------------------------------------

def _int(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _from_obj(msg: object) -> Classified:
    if not isinstance(msg, dict):
        return Classified(Kind.UNKNOWN)
    typ = msg.get("type")
    req_id = _int(msg.get("id"))
    body = msg.get("msg") if isinstance(msg.get("msg"), dict) else {}
    sid = _int(msg.get("sid"))
    if sid is None:
        sid = _int(body.get("sid"))
    channel = body.get("channel") if isinstance(body.get("channel"), str) else None
    if typ == "subscribed":
        return Classified(Kind.ACK, channel, req_id=req_id, sid=sid)
    if typ == "ok":
        return Classified(Kind.ACK, channel, req_id=req_id, sid=sid, detail="ok")
    if typ == "unsubscribed":
        return Classified(Kind.UNSUBSCRIBED, channel, req_id=req_id, sid=sid)
    if typ == "error":
        return Classified(Kind.ERROR, req_id=req_id, sid=sid, code=_int(body.get("code")),
                          detail=str(body.get("msg", "")))
    if isinstance(typ, str):
        ticker = body.get("market_ticker") or body.get("event_ticker")
        return Classified(Kind.DATA, _CHANNEL_OF.get(typ, typ),
                          ticker if isinstance(ticker, str) else None, sid=sid)
    return Classified(Kind.UNKNOWN)


def classify(raw: bytes) -> Classified:
    """What a received frame is.  Cheap: data frames are never parsed."""
    i = lstrip_ws(raw)
    if i >= len(raw) or raw[i] != 0x7B:
        return Classified(Kind.MALFORMED)
    typ = _type(raw, i)
    if typ is not None and typ not in _CONTROL_TYPES:
        return Classified(Kind.DATA, _CHANNEL_OF.get(typ, typ), _ticker(raw, i),
                          sid=scan_int(raw, _K_SID, i))
    if len(raw) > CONTROL_MAX:
        return Classified(Kind.UNKNOWN)
    msg = loads_small(raw)
    return Classified(Kind.MALFORMED) if msg is None else _from_obj(msg)


def _type(raw: bytes, i: int) -> str | None:
    """Top-level ``type``: first in practice; if not, the first anywhere
    (nested ``msg`` objects carry no ``type`` key)."""
    t = scan_str(raw, _K_TYPE, i, i + HEAD)
    return t if t is not None else scan_str(raw, _K_TYPE, i)


def _ticker(raw: bytes, i: int) -> str | None:
    t = scan_str(raw, _K_MARKET, i)
    return t if t is not None else scan_str(raw, _K_EVENT, i)


def route(raw: bytes) -> RouteKey | None:
    """``(channel, market_ticker)``; event lifecycle frames route by event ticker."""
    i = lstrip_ws(raw)
    if i >= len(raw) or raw[i] != 0x7B:
        return None
    typ = _type(raw, i)
    if typ is None or typ in _CONTROL_TYPES:
        return None
    ticker = _ticker(raw, i)
    return None if ticker is None else RouteKey(_CHANNEL_OF.get(typ, typ), ticker)


def sequence(raw: bytes) -> SeqInfo | None:
    """``(sid, seq)`` of orderbook snapshots and deltas, and of the ``ok`` /
    ``unsubscribed`` replies that carry a ``seq`` (never a snapshot, no market)."""
    i = lstrip_ws(raw)
    if i >= len(raw) or raw[i] != 0x7B:
        return None
    typ = _type(raw, i)
    snapshot = _SEQ_TYPES.get(typ)  # type: ignore[arg-type]
    if snapshot is None:
        if typ not in _SEQ_REPLIES or len(raw) > CONTROL_MAX:
            return None
        # A reply: top-level sid and seq (its msg holds tickers, no numbers).
        msg = loads_small(raw)
        if not isinstance(msg, dict):
            return None
        sid, seq = _int(msg.get("sid")), _int(msg.get("seq"))
        return None if sid is None or seq is None else SeqInfo(sid, seq, False, None)
    sid = scan_int(raw, _K_SID, i)
    seq = scan_int(raw, _K_SEQ, i)
    if sid is None or seq is None:
        return None
    return SeqInfo(sid, seq, snapshot, scan_str(raw, _K_MARKET, i))


def exchange_ts_ns(raw: bytes) -> int | None:
    """``ts_ms`` (epoch ms, the current field) if present, else the deprecated
    ``ts``: RFC 3339 text or epoch seconds, whichever the channel sends."""
    ms = scan_int(raw, b'"ts_ms"')
    if ms is not None:
        return ms * 1_000_000
    v = value_at(raw, b'"ts"')
    if v < 0:
        return None
    if raw[v] == 0x22:
        text = scan_str(raw, b'"ts"')
        return None if text is None else (
            epoch_to_ns(int(text)) if text.isascii() and text.isdigit() else rfc3339_to_ns(text))
    n = scan_int(raw, b'"ts"')
    return None if n is None else epoch_to_ns(n)


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------

#: The receiver's hot-path form of :func:`sequence` (see
#: :class:`capture.venues.base.SeqLayout`): the documented head
#: ``{"type":"orderbook_delta","sid":N,"seq":N,...`` in one anchored match;
#: a frame without ``"orderbook_`` carries no book sequence.  Stream key: the
#: sid.  The tests compare it with :func:`sequence` over the simulator's
#: frames and odd layouts.
# Replies (``ok``, ``unsubscribed``) may carry a ``seq`` in their sid's
# numbering: the hint is ``"seq"`` so they reach the sequence check, and the
# head leaves them to the fallback parser.
SEQ_LAYOUT = SeqLayout(
    head=re.compile(
        rb'\{"type":"(?:orderbook_(?:(snapshot)|delta)","sid":([0-9]{1,19}),'
        rb'"seq":([0-9]{1,19})[,}]|(?!orderbook_|ok"|unsubscribed"))'),
    hint=b'"seq"',
    canonical=int,
    key_bytes=lambda k: str(k).encode())


class Kalshi(VenueDefaults):
    """Command builders for one connection (holds the command ``id`` counter)."""

    name = "kalshi"
    default_channels = ("orderbook_delta", "trade", "ticker")
    channels = CHANNELS
    channels_configurable = True
    per_connection = 100
    needs_key = True
    checksum_validator = False
    url = URL
    demo_url = DEMO_URL
    #: The server pings every 10 s; the WebSocket library pongs.  No client ping.
    keepalive = Keepalive(client_ping_interval=None, app_ping=False, server_heartbeat=10.0)

    subscriber = KalshiSubscriber
    discover = staticmethod(discovery.discover)
    rest_url = discovery.REST
    rest_path = "/trade-api/v2"
    seq_layout = SEQ_LAYOUT
    auth_error_code = AUTH_ERROR_CODE
    signer = staticmethod(KalshiSigner.from_file)

    classify = staticmethod(classify)
    route = staticmethod(route)
    sequence = staticmethod(sequence)
    exchange_ts_ns = staticmethod(exchange_ts_ns)
    terminal_error_codes = TERMINAL_ERROR_CODES
    too_many_requests_codes = TOO_MANY_REQUESTS_CODES

    @staticmethod
    def terminal_error(c: Classified) -> bool:
        """An error that ended a subscription (messages lost): resubscribe."""
        return c.kind is Kind.ERROR and c.code in TERMINAL_ERROR_CODES

    @staticmethod
    def too_many_requests(c: Classified) -> bool:
        """A command refused for its rate: back off, then send it again."""
        return c.kind is Kind.ERROR and c.code in TOO_MANY_REQUESTS_CODES

    def __init__(self, first_id: int = 1) -> None:
        self._id = first_id

    def next_id(self) -> int:
        cid = self._id
        self._id += 1
        return cid

    def _cmd(self, cmd: str, params: dict, cmd_id: int | None) -> bytes:
        return dumps({"id": self.next_id() if cmd_id is None else cmd_id,
                      "cmd": cmd, "params": params})

    def subscribe(self, channels: Iterable[str] | str,
                  market_tickers: Iterable[str] | str | None = None, *,
                  cmd_id: int | None = None) -> bytes:
        """Subscribe; ``market_tickers=None`` means all markets (ticker/trade).

        Raises:
            ConfigError: unknown channel, or an empty ticker list.
        """
        chans = as_list(channels)
        bad = [c for c in chans if c not in CHANNELS]
        if not chans or bad:
            raise ConfigError(None, "channels", f"unknown or no Kalshi channels {bad or chans}")
        params: dict = {"channels": chans}
        if market_tickers is not None:
            tickers = as_list(market_tickers)
            if not tickers:
                raise ConfigError(None, "market_tickers", "empty market ticker list")
            params["market_tickers"] = tickers
        return self._cmd("subscribe", params, cmd_id)

    def unsubscribe(self, sids: Iterable[int] | int, *, cmd_id: int | None = None) -> bytes:
        ids = [sids] if isinstance(sids, int) else list(dict.fromkeys(sids))
        if not ids:
            raise ConfigError(None, "sids", "no subscription ids")
        return self._cmd("unsubscribe", {"sids": ids}, cmd_id)

    def update_subscription(self, sid: int, action: str,
                            market_tickers: Iterable[str] | str = (), *,
                            cmd_id: int | None = None) -> bytes:
        """``add_markets`` / ``delete_markets`` / ``get_snapshot`` on one sid.

        ``get_snapshot`` is the per-market repair after a ``seq`` gap.
        """
        if action not in UPDATE_ACTIONS:
            raise ConfigError(None, "action", f"unknown update_subscription action {action!r}")
        params: dict = {"sid": sid, "action": action}
        tickers = as_list(market_tickers)
        if tickers:
            params["market_tickers"] = tickers
        elif action != "get_snapshot":
            raise ConfigError(None, "market_tickers", f"{action} needs market tickers")
        return self._cmd("update_subscription", params, cmd_id)
