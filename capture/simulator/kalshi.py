"""Kalshi trade API WebSocket v2 (path ``/trade-api/ws/v2``), I/O-free.

Handshake auth (:func:`verify_handshake`): ``KALSHI-ACCESS-KEY``,
``KALSHI-ACCESS-TIMESTAMP`` (ms) and ``KALSHI-ACCESS-SIGNATURE`` =
base64(RSA-PSS SHA-256, MGF1 SHA-256, salt 32) over
``timestamp + "GET" + "/trade-api/ws/v2"``; the server answers 401 at the
handshake when it does not verify.  Commands ``subscribe`` (one ``sid`` per
channel), ``unsubscribe`` (``sids``), ``update_subscription`` (``add_markets``,
``delete_markets``, ``get_snapshot``); errors
``{"id":N,"type":"error","msg":{"code":..,"msg":..}}``.  ``orderbook_delta``
sends ``orderbook_snapshot`` then ``orderbook_delta`` with a signed
``delta_fp``; ``seq`` runs per ``sid`` across snapshots and deltas.

The alternatives the live venue is reported to show (``Scenario``):

* ``kalshi_sid_model="shared"``: every ``subscribe`` for ``orderbook_delta``
  joins one sid (acked with that sid), and its ``seq`` numbers all of its
  markets' snapshots and deltas; "per_command" opens a sid per command;
* ``kalshi_reply_seq``: ``ok`` / ``unsubscribed`` replies on a book sid carry
  the sid's next ``seq``;
* :meth:`KalshiSession.terminal_error`: code 25 (subscription buffer
  overflow) on the book sid carrying a market: the sid is gone, its markets
  get nothing until subscribed again.
"""
from __future__ import annotations

import base64
import binascii
import time
import uuid

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from capture.simulator.session import Out, Seq, Session, ctl, dat, pad_json
from capture.simulator.universe import KalshiMarket
from capture.simulator.values import fixed, rfc3339_s, rng

WS_PATH = "/trade-api/ws/v2"
CHANNELS = ("ticker", "trade", "orderbook_delta", "market_lifecycle_v2")
# Codes as documented by the venue.
E_UNPROCESSABLE, E_PARAMS, E_CHANNELS, E_SIDS, E_COMMAND = 1, 2, 3, 4, 5
E_ALREADY, E_SID, E_CHANNEL, E_PARAM, E_ONE_SID = 6, 7, 8, 11, 12
E_ACTION, E_TICKER, E_NO_ACTION, E_MARKET = 13, 14, 15, 16
E_BUFFER_OVERFLOW, E_TOO_MANY = 25, 27
#: Markets a ticker/trade subscription without market_tickers streams.
ALL_MARKETS = 5


def sign(private_key: rsa.RSAPrivateKey, timestamp_ms: str, path: str = WS_PATH) -> str:
    """The KALSHI-ACCESS-SIGNATURE value (for tests and the demo client)."""
    sig = private_key.sign((timestamp_ms + "GET" + path).encode(),
                           padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                       salt_length=padding.PSS.DIGEST_LENGTH),
                           hashes.SHA256())
    return base64.b64encode(sig).decode()


def verify_handshake(headers: dict[str, str], public_key: rsa.RSAPublicKey,
                     key_id: str | None, max_skew_s: float,
                     now_ms: int | None = None) -> str | None:
    """``None`` when the handshake headers authenticate, else the reason.

    Args:
        headers: request headers, names lower-cased.
        key_id: the expected KALSHI-ACCESS-KEY; ``None`` accepts any id.
        max_skew_s: how far the timestamp may be from now, either way.
    """
    key = headers.get("kalshi-access-key")
    ts = headers.get("kalshi-access-timestamp")
    sig = headers.get("kalshi-access-signature")
    if not key or not ts or not sig:
        return "missing authentication headers"
    if key_id is not None and key != key_id:
        return "unknown api key"
    if not ts.isdigit():
        return "bad timestamp"
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    if abs(now - int(ts)) > max_skew_s * 1000:
        return "stale timestamp"
    try:
        public_key.verify(base64.b64decode(sig, validate=True), (ts + "GET" + WS_PATH).encode(),
                          padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                      salt_length=hashes.SHA256.digest_size),
                          hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return "invalid signature"
    return None


def _dollars(cents_e2: int) -> str:
    """Price in 1/10000 dollars -> "0.0800"."""
    return fixed(cents_e2, 4)


class KBook:
    """Yes/no resting quantities (hundredths of a contract) by price (1/10000 $)."""

    def __init__(self, m: KalshiMarket, seed: int) -> None:
        self.m = m
        self.r = rng(seed, "kalshi", "book", m.ticker)
        self.market_id = str(uuid.UUID(int=rng(seed, "kalshi", "id", m.ticker).getrandbits(128),
                                       version=4))
        mid = self.r.randint(20, 80)
        self.yes = {(mid - 1 - i) * 100: self.r.randint(100, 100_000) for i in range(min(8, mid - 1))}
        self.no = {(100 - mid - 1 - i) * 100: self.r.randint(100, 100_000)
                   for i in range(min(8, 99 - mid))}

    def snapshot_msg(self) -> dict:
        return {"market_ticker": self.m.ticker, "market_id": self.market_id,
                "yes_dollars_fp": [[_dollars(p), fixed(q, 2)] for p, q in sorted(self.yes.items())],
                "no_dollars_fp": [[_dollars(p), fixed(q, 2)] for p, q in sorted(self.no.items())]}

    def delta_msg(self, ts_ns: int) -> dict:
        r = self.r
        yes = r.random() < 0.5
        side = self.yes if yes else self.no
        if side and r.random() < 0.7:
            p = r.choice(list(side))
            delta = r.randint(-side[p], 5_000) or 100
        else:
            p = r.randint(1, 99) * 100
            delta = r.randint(100, 5_000)
        q = side.get(p, 0) + delta
        if q:
            side[p] = q
        else:
            side.pop(p, None)
        return {"market_ticker": self.m.ticker, "market_id": self.market_id,
                "price_dollars": _dollars(p), "delta_fp": fixed(delta, 2),
                "side": "yes" if yes else "no", "ts": rfc3339_s(ts_ns),
                "ts_ms": ts_ns // 1_000_000}


class Sub:
    """One ``sid``: a channel and its markets (``None``: all markets)."""

    def __init__(self, sid: int, channel: str, tickers: list[str] | None, gap_every: int) -> None:
        self.sid, self.channel, self.tickers = sid, channel, tickers
        self.seq = Seq(0, gap_every) if channel == "orderbook_delta" else None


class KalshiSession(Session):
    venue = "kalshi"

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.subs: dict[int, Sub] = {}
        self.next_sid = 1
        self.books: dict[tuple[int, str], KBook] = {}
        self.r = rng(self.sc.seed, "kalshi", "data")

    # -- commands -------------------------------------------------------
    def on_message(self, message: str | bytes) -> list[Out]:
        req = self.parse(message)
        if not isinstance(req, dict):
            return [self._err(0, E_UNPROCESSABLE, "Unable to process message")]
        cid = req.get("id", 0)
        cmd = req.get("cmd")
        params = req.get("params")
        if cmd not in ("subscribe", "unsubscribe", "update_subscription", "list_subscriptions"):
            return [self._err(cid, E_COMMAND, "Unknown command")]
        if cmd == "list_subscriptions":
            return [ctl({"id": cid, "type": "ok", "msg": [
                {"channel": s.channel, "sid": s.sid} for s in self.subs.values()]})]
        if not isinstance(params, dict):
            return [self._err(cid, E_PARAMS, "Params required")]
        if not self._rate_ok():
            return [self._err(cid, E_TOO_MANY, "Too many requests")]
        return getattr(self, "_" + cmd)(cid, params)

    @staticmethod
    def _err(cid: object, code: int, msg: str) -> Out:
        return ctl({"id": cid, "type": "error", "msg": {"code": code, "msg": msg}})

    def _tickers(self, params: dict) -> list[str] | None:
        t = params.get("market_tickers")
        if t is None and params.get("market_ticker"):
            t = [params["market_ticker"]]
        return list(t) if t else None

    def _bad_ticker(self, tickers: list[str] | None) -> str | None:
        for t in tickers or ():
            if t not in self.universe.kalshi_by_ticker or t in self.sc.error_symbols:
                return t
        return None

    def _subscribe(self, cid: object, params: dict) -> list[Out]:
        channels = params.get("channels")
        if not isinstance(channels, list) or not channels:
            return [self._err(cid, E_CHANNELS, "Channels required")]
        tickers = self._tickers(params)
        bad = self._bad_ticker(tickers)
        if bad is not None:
            return [self._err(cid, E_MARKET, f"Market not found: {bad}")]
        out: list[Out] = []
        for ch in channels:
            if ch not in CHANNELS:
                out.append(self._err(cid, E_CHANNEL, "Unknown channel name"))
                continue
            if ch == "orderbook_delta" and not tickers:
                out.append(self._err(cid, E_TICKER, "Market Ticker required"))
                continue
            if self._already(ch, tickers):
                out.append(self._err(cid, E_ALREADY, "Already subscribed"))
                continue
            shared = self._shared_book_sub() if ch == "orderbook_delta" else None
            if shared is not None:   # the "shared" sid model: join the one book sid
                assert tickers is not None and shared.tickers is not None
                shared.tickers.extend(tickers)
                out.append(ctl({"id": cid, "type": "subscribed",
                                "msg": {"channel": ch, "sid": shared.sid}}))
                out.extend(self._start(shared, tickers))
                continue
            sub = Sub(self.next_sid, ch, None if ch == "market_lifecycle_v2" else tickers,
                      self.sc.gap_every)
            self.next_sid += 1
            self.subs[sub.sid] = sub
            out.append(ctl({"id": cid, "type": "subscribed",
                            "msg": {"channel": ch, "sid": sub.sid}}))
            self.subscribed_once = True
            out.extend(self._start(sub, sub.tickers))
        return out

    def _shared_book_sub(self) -> Sub | None:
        if self.sc.kalshi_sid_model != "shared":
            return None
        return next((s for s in self.subs.values() if s.channel == "orderbook_delta"), None)

    def _reply(self, cid: object, sub: Sub | None, sid: int, typ: str, **extra: object) -> Out:
        """An ``ok`` / ``unsubscribed`` reply; with ``kalshi_reply_seq`` a book
        sid's reply takes the sid's next ``seq``."""
        msg: dict = {"id": cid, "sid": sid}
        if self.sc.kalshi_reply_seq and sub is not None and sub.seq is not None:
            msg["seq"] = sub.seq.next()
        msg["type"] = typ
        msg.update(extra)
        return ctl(msg)

    def terminal_error(self, symbol: str | None = None, with_sid: bool = True) -> list[bytes]:
        """End the book sid carrying ``symbol`` (or the first) with code 25:
        its streams stop, as the venue's subscription buffer overflowed."""
        sub = next((s for s in self.subs.values() if s.channel == "orderbook_delta"
                    and (symbol is None or symbol in (s.tickers or ()))), None)
        if sub is None:
            return []
        del self.subs[sub.sid]
        self._stop(sub.sid, None)
        msg: dict = {"type": "error"}
        if with_sid:
            msg["sid"] = sub.sid
        msg["msg"] = {"code": E_BUFFER_OVERFLOW, "msg": "Subscription buffer overflow"}
        return [orjson.dumps(msg)]

    def _already(self, ch: str, tickers: list[str] | None) -> bool:
        for s in self.subs.values():
            if s.channel != ch:
                continue
            if s.tickers is None or tickers is None or set(s.tickers) & set(tickers):
                return True
        return False

    def _markets(self, sub: Sub, tickers: list[str] | None) -> list[KalshiMarket]:
        if tickers is None:
            return [m for m in self.universe.kalshi if m.status == "active"][:ALL_MARKETS]
        return [self.universe.kalshi_by_ticker[t] for t in tickers]

    def _start(self, sub: Sub, tickers: list[str] | None) -> list[Out]:
        """Register the streams of ``sub`` for ``tickers``; snapshots first."""
        out: list[Out] = []
        if sub.channel == "market_lifecycle_v2":
            self.streams[(sub.sid, "*")] = lambda: self._lifecycle(sub)
            return out
        for m in self._markets(sub, tickers):
            key = (sub.sid, m.ticker)
            if sub.channel == "orderbook_delta":
                book = self.books[key] = KBook(m, self.sc.seed)
                out.append(dat(self._snapshot(sub, book)))
                self.streams[key] = lambda s=sub, b=book: self._delta(s, b)
            elif sub.channel == "ticker":
                self.streams[key] = lambda s=sub, mk=m: self._ticker(s, mk)
            else:
                self.streams[key] = lambda s=sub, mk=m: self._trade(s, mk)
        return out

    def _stop(self, sid: int, tickers: list[str] | None) -> None:
        for key in [k for k in self.streams if k[0] == sid and (tickers is None or k[1] in tickers)]:
            del self.streams[key]
            self.books.pop(key, None)

    def _unsubscribe(self, cid: object, params: dict) -> list[Out]:
        sids = params.get("sids")
        if not isinstance(sids, list) or not sids:
            return [self._err(cid, E_SIDS, "Subscription IDs required")]
        out = []
        for sid in sids:
            if sid not in self.subs:
                out.append(self._err(cid, E_SID, "Unknown subscription ID"))
                continue
            sub = self.subs.pop(sid)
            self._stop(sid, None)
            out.append(self._reply(cid, sub, sid, "unsubscribed"))
        return out

    def _update_subscription(self, cid: object, params: dict) -> list[Out]:
        sids = params.get("sids")
        sid = params.get("sid")
        if sid is None and isinstance(sids, list) and len(sids) == 1:
            sid = sids[0]
        if sid is None or (isinstance(sids, list) and len(sids) != 1):
            return [self._err(cid, E_ONE_SID, "Exactly one subscription ID is required")]
        action = params.get("action")
        if not action:
            return [self._err(cid, E_NO_ACTION, "Action required")]
        sub = self.subs.get(sid)
        if sub is None:
            return [self._err(cid, E_SID, "Unknown subscription ID")]
        tickers = self._tickers(params)
        bad = self._bad_ticker(tickers)
        if bad is not None:
            return [self._err(cid, E_MARKET, f"Market not found: {bad}")]
        if action == "get_snapshot":
            if sub.channel != "orderbook_delta":
                return [self._err(cid, E_ACTION, "Unsupported action")]
            want = tickers or list(sub.tickers or ())
            out = [self._reply(cid, sub, sid, "ok", msg={"market_tickers": want})]
            for t in want:
                book = self.books.get((sid, t))
                if book is not None:
                    out.append(dat(self._snapshot(sub, book)))
            return out
        if action not in ("add_markets", "delete_markets") or sub.tickers is None:
            return [self._err(cid, E_ACTION, "Unsupported action")]
        if not tickers:
            return [self._err(cid, E_TICKER, "Market Ticker required")]
        if action == "add_markets":
            new = [t for t in tickers if t not in sub.tickers]
            if len(new) < len(tickers):
                return [self._err(cid, E_ALREADY, "Already subscribed")]
            sub.tickers.extend(new)
            ok = self._reply(cid, sub, sid, "ok", msg={"market_tickers": list(sub.tickers)})
            return [ok, *self._start(sub, new)]
        sub.tickers[:] = [t for t in sub.tickers if t not in tickers]
        self._stop(sid, tickers)
        return [self._reply(cid, sub, sid, "ok", msg={"market_tickers": list(sub.tickers)})]

    # -- data -----------------------------------------------------------
    def inject_gap(self, symbol: str | None = None) -> None:
        """Skip a seq number next, on every orderbook sid (or the one(s)
        carrying market ``symbol``)."""
        for s in self.subs.values():
            if s.seq is not None and (symbol is None or symbol in (s.tickers or ())):
                s.seq.gap_next = True

    def _snapshot(self, sub: Sub, book: KBook) -> bytes:
        self.clock.tick()
        return orjson.dumps({"type": "orderbook_snapshot", "sid": sub.sid,
                             "seq": sub.seq.next(), "msg": book.snapshot_msg()})

    def _delta(self, sub: Sub, book: KBook) -> bytes:
        msg = book.delta_msg(self.clock.tick())
        return orjson.dumps({"type": "orderbook_delta", "sid": sub.sid,
                             "seq": sub.seq.next(), "msg": msg})

    def _ticker(self, sub: Sub, m: KalshiMarket) -> bytes:
        r, ns = self.r, self.clock.tick()
        bid = r.randint(1, 97)
        ask = bid + r.randint(1, 2)
        price = r.randint(bid, ask)
        vol, oi = r.randint(0, 10 ** 6), r.randint(0, 10 ** 5)
        return orjson.dumps({"type": "ticker", "sid": sub.sid, "msg": {
            "market_ticker": m.ticker, "market_id": self._market_id(m),
            "price": price, "yes_bid": bid, "yes_ask": ask,
            "price_dollars": fixed(price, 2), "yes_bid_dollars": fixed(bid, 2),
            "yes_ask_dollars": fixed(ask, 2), "volume": vol, "volume_fp": fixed(vol * 100, 2),
            "open_interest": oi, "open_interest_fp": fixed(oi * 100, 2),
            "dollar_volume": vol // 2, "dollar_open_interest": oi // 2,
            "ts": ns // 1_000_000_000, "ts_ms": ns // 1_000_000, "time": rfc3339_s(ns)}})

    def _trade(self, sub: Sub, m: KalshiMarket) -> bytes:
        r, ns = self.r, self.clock.tick()
        yes = r.randint(1, 99)
        count = r.randint(1, 500)
        return orjson.dumps({"type": "trade", "sid": sub.sid, "msg": {
            "trade_id": str(uuid.UUID(int=r.getrandbits(128), version=4)),
            "market_ticker": m.ticker, "yes_price": yes, "no_price": 100 - yes,
            "yes_price_dollars": fixed(yes * 100, 4), "no_price_dollars": fixed((100 - yes) * 100, 4),
            "count": count, "count_fp": fixed(count * 100, 2),
            "taker_side": r.choice(("yes", "no")), "ts": ns // 1_000_000_000}})

    def _lifecycle(self, sub: Sub) -> bytes:
        r, ns = self.r, self.clock.tick()
        m = r.choice(self.universe.kalshi)
        ev = r.choice(("created", "activated", "deactivated", "close_date_updated"))
        secs = ns // 1_000_000_000
        return orjson.dumps({"type": "market_lifecycle_v2", "sid": sub.sid, "msg": {
            "market_ticker": m.ticker, "event_type": ev, "open_ts": secs - 86400,
            "close_ts": secs + 86400, "additional_metadata": {"event_ticker": m.event_ticker,
                                                              "title": m.title}}})

    def _market_id(self, m: KalshiMarket) -> str:
        return str(uuid.UUID(int=rng(self.sc.seed, "kalshi", "id", m.ticker).getrandbits(128),
                             version=4))

    def large(self, size: int) -> bytes:
        """Kalshi has no naturally huge frames: a ticker message padded to ``size``."""
        sub = next(iter(self.subs.values()), None) or Sub(0, "ticker", None, 0)
        return pad_json(self._ticker(sub, self.universe.kalshi[0]), size)

    def blast_frame(self, i: int, size: int) -> bytes:
        m = self.universe.kalshi[0]
        msg = orjson.dumps({"type": "trade", "sid": 1, "msg": {
            "trade_id": f"blast-{i}", "market_ticker": m.ticker, "yes_price": 50,
            "no_price": 50, "yes_price_dollars": "0.5000", "no_price_dollars": "0.5000",
            "count": 1, "count_fp": "1.00", "taker_side": "yes",
            "ts": self.clock.tick() // 1_000_000_000}})
        return pad_json(msg, size)
