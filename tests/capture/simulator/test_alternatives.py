"""The simulator speaks the alternatives the live venues are reported to
show (sans-I/O: the sessions' answers to commands, no sockets): both Kalshi
sid models, replies that carry ``seq``, the terminal code 25, code 27 for
too many requests, and Kraken's bare ``{"Error": "Exceeded msg rate"}``."""
from __future__ import annotations

import orjson
import pytest

from capture.simulator.kalshi import KalshiSession
from capture.simulator.kraken import KrakenSession
from capture.simulator.polymarket import PolymarketSession
from capture.simulator.script import Scenario
from capture.simulator.universe import Universe
from capture.venues.base import GapDetector
from capture.venues.kalshi import protocol as kalshi
from capture.venues.kraken import protocol as kraken
from capture.venues.polymarket import protocol as pm
from common.errors import ConfigError

UNI = Universe(0, 20)


def _kalshi(**kw) -> KalshiSession:
    return KalshiSession(Scenario(rate=0, **kw), UNI, 0)


def _cmd(i, name, **params) -> bytes:
    return orjson.dumps({"id": i, "cmd": name, "params": params})


def _frames(outs) -> list[dict]:
    return [orjson.loads(o.payload) for o in outs]


def _book_subscribe(s, tickers):
    out = []
    for i, t in enumerate(tickers, 1):
        out += _frames(s.on_message(_cmd(i, "subscribe", channels=["orderbook_delta"],
                                         market_tickers=[t])))
    return out


@pytest.mark.parametrize("model,sids", [("per_command", 3), ("shared", 1)])
def test_kalshi_sid_models(model, sids):
    s = _kalshi(kalshi_sid_model=model)
    tickers = [m.ticker for m in UNI.kalshi[:3]]
    out = _book_subscribe(s, tickers)
    acks = [f for f in out if f["type"] == "subscribed"]
    snaps = [f for f in out if f["type"] == "orderbook_snapshot"]
    assert len(acks) == 3 and len({a["msg"]["sid"] for a in acks}) == sids
    assert [f["msg"]["market_ticker"] for f in snaps] == tickers
    if model == "shared":   # one numbering for every market of the sid
        assert [f["seq"] for f in snaps] == [1, 2, 3]
    else:
        assert [f["seq"] for f in snaps] == [1, 1, 1]


def test_kalshi_replies_carry_seq_in_the_sids_numbering():
    s = _kalshi(kalshi_sid_model="shared", kalshi_reply_seq=True)
    tickers = [m.ticker for m in UNI.kalshi[:2]]
    out = _book_subscribe(s, tickers)
    sid = out[0]["msg"]["sid"]
    out += _frames(s.on_message(_cmd(9, "update_subscription", sid=sid, action="get_snapshot",
                                     market_tickers=tickers)))
    out += _frames(s.on_message(_cmd(10, "update_subscription", sid=sid,
                                     action="delete_markets", market_tickers=tickers[:1])))
    out += _frames(s.on_message(_cmd(11, "unsubscribe", sids=[sid])))
    numbered = [f for f in out if "seq" in f]
    assert [f["type"] for f in numbered] == ["orderbook_snapshot", "orderbook_snapshot", "ok",
                                              "orderbook_snapshot", "orderbook_snapshot", "ok",
                                              "unsubscribed"]
    assert [f["seq"] for f in numbered] == list(range(1, 8))
    # and the venue module reads that numbering without a gap
    det = GapDetector()
    infos = [kalshi.sequence(orjson.dumps(f)) for f in numbered]
    assert all(i is not None for i in infos)
    assert [det.feed(i.stream_key, i.seq) for i in infos] == [None] * 7


def test_kalshi_terminal_error_ends_the_sid():
    s = _kalshi(kalshi_sid_model="shared")
    tickers = [m.ticker for m in UNI.kalshi[:2]]
    _book_subscribe(s, tickers)
    assert s.has_data()
    frames = [orjson.loads(f) for f in s.terminal_error(tickers[1])]
    assert len(frames) == 1 and frames[0]["msg"]["code"] == 25
    c = kalshi.classify(orjson.dumps(frames[0]))
    assert kalshi.Kalshi.terminal_error(c) and c.sid == 1
    assert not s.has_data() and s.subs == {}
    assert s.terminal_error(tickers[0]) == []   # nothing left to end
    # without a sid, as the error may also come
    s2 = _kalshi()
    _book_subscribe(s2, tickers[:1])
    f = orjson.loads(s2.terminal_error(None, with_sid=False)[0])
    assert "sid" not in f and kalshi.classify(orjson.dumps(f)).sid is None


def test_kalshi_too_many_requests_code_27():
    s = _kalshi(subscribe_burst=1, subscribe_refill=0.0001)
    ok = _frames(s.on_message(_cmd(1, "subscribe", channels=["ticker"])))
    refused = _frames(s.on_message(_cmd(2, "subscribe", channels=["trade"])))
    assert ok[0]["type"] == "subscribed"
    assert refused == [{"id": 2, "type": "error", "msg": {"code": 27, "msg": "Too many requests"}}]
    assert kalshi.Kalshi.too_many_requests(kalshi.classify(orjson.dumps(refused[0])))


@pytest.mark.parametrize("bare", [False, True])
def test_kraken_rate_limit_forms(bare):
    s = KrakenSession(Scenario(rate=0, subscribe_burst=1, subscribe_refill=0.0001,
                               kraken_bare_rate_limit=bare), UNI, 0)
    sub = orjson.dumps({"method": "subscribe", "params": {"channel": "trade",
                                                          "symbol": ["BTC/USD"]}, "req_id": 5})
    s.on_message(sub)
    refused = [o.payload for o in s.on_message(sub)]
    assert len(refused) == 1
    c = kraken.classify(refused[0])
    assert c.kind is kraken.Kind.ERROR and kraken.KrakenSpot.rate_limited(c.detail)
    if bare:
        assert orjson.loads(refused[0]) == {"Error": "Exceeded msg rate"} and c.req_id is None
    else:
        assert c.req_id == 5


def test_scenario_refuses_an_unknown_sid_model():
    with pytest.raises(ConfigError, match="kalshi_sid_model"):
        Scenario(kalshi_sid_model="sometimes")
    with pytest.raises(ConfigError, match="listed_closed"):
        Scenario(listed_closed=-1)


def test_polymarket_no_new_assets_is_a_notice():
    s = PolymarketSession(Scenario(rate=0), UNI, 0)
    toks = list(UNI.poly[0].token_ids)
    first = s.on_message(orjson.dumps({"assets_ids": toks, "type": "market"}))
    assert first and first[0].data
    again = s.on_message(orjson.dumps({"assets_ids": toks, "operation": "subscribe"}))
    assert [o.payload for o in again] == [b"NO NEW ASSETS"]
    assert pm.classify(again[0].payload).kind is pm.Kind.INFO
