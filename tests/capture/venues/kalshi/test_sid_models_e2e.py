"""Kalshi end to end under both readings of the venue's sid rule:
"per_command" (each ``subscribe`` opens its own sid) and "shared" (every
book ``subscribe`` joins one sid whose ``seq`` numbers all its markets),
with ``ok`` / ``unsubscribed`` replies that carry a ``seq``.

Simulator -> receiver -> a real ring.  What must hold in both models: no
false gap (replies and snapshots in the shared numbering are not gaps); a
real gap repairs every market the lost message could have belonged to; a
terminal subscription error (code 25) is a gap record, a metric and a fresh
subscription of exactly the markets it ended; "too many requests" is backed
off and retried; no market is left without a fresh snapshot afterwards."""
from __future__ import annotations

import pytest

from capture.receiver.process import ReceiverConfig
from capture.simulator import Scenario, SimulatorThread
from integrity_helpers import cleanup, controls, data_in_ring, data_json, new_ring, received, total_sent, write_key
from receiver_helpers import FAST, Collector, ReceiverThread
from timing import wait_for

KEY_ID = "kalshi-test-key"
MODELS = ("per_command", "shared")


@pytest.fixture
def ring_path():
    d, p = new_ring()
    yield p
    cleanup(d)


def _cfg(ring_path, st, key_file, n=3, **kw):
    return ReceiverConfig(ring=ring_path, venue="kalshi", url=st.url("kalshi"),
                          symbols=st.sim.symbols("kalshi")[:n], transport="picows",
                          timing=kw.pop("timing", FAST), seed=1, kalshi_key_id=KEY_ID,
                          kalshi_key_file=str(key_file), channels=["orderbook_delta"], **kw)


def _snapshots(msgs, ticker):
    return [d for d in data_json(msgs)
            if d.get("type") == "orderbook_snapshot" and d["msg"]["market_ticker"] == ticker]


def _book_sids(msgs):
    return {d["sid"] for d in data_json(msgs) if d.get("type") == "orderbook_snapshot"}


def _all_in_ring(col, st):
    wait_for(lambda: data_in_ring(col) == total_sent(st.sim.connections("kalshi")), 10,
             "every frame the simulator sent, in the ring")


def _start(st, tmp_path, ring_path, **kw):
    key = tmp_path / "kalshi.pem"
    write_key(key, st.sim.kalshi_private_key)
    return _cfg(ring_path, st, key, **kw)


@pytest.mark.parametrize("model", MODELS)
def test_no_false_gaps_and_a_gap_repairs_every_market_of_its_sid(ring_path, tmp_path, model):
    sc = Scenario(rate=0, heartbeat_interval=3600, seed=21, kalshi_sid_model=model,
                  kalshi_reply_seq=True)
    with SimulatorThread(["kalshi"], sc, kalshi_key_id=KEY_ID) as st:
        syms = st.sim.symbols("kalshi")[:3]
        col = Collector(ring_path)
        rt = ReceiverThread(_start(st, tmp_path, ring_path))
        try:
            col.wait_control("live")
            st.inject("kalshi", "data", count=40)
            _all_in_ring(col, st)
            # a market leaves: an unsubscribe (own sid) or a delete_markets on
            # the shared sid; either reply carries a seq that is not a gap
            conn = next(iter(rt.rx.connections.values()))
            rt.call(conn.update_members, syms[:2])
            st.inject("kalshi", "data", count=40)
            _all_in_ring(col, st)
            assert controls(col.snapshot(), "seq_gap") == []
            # a real gap on the sid carrying syms[0]
            st.inject("kalshi", "gap", symbol=syms[0])
            st.inject("kalshi", "data", count=40)
            col.wait_control("repair")
            repaired = syms[:2] if model == "shared" else syms[:1]
            wait_for(lambda: all(len(_snapshots(col.snapshot(), s)) == 2 for s in repaired), 10,
                     "a fresh snapshot of every market of the gapped sid")
            st.inject("kalshi", "data", count=40)
            _all_in_ring(col, st)
            status = rt.call(rt.rx.status)
        finally:
            rt.stop()
            msgs = col.stop()
        records = st.sim.connections("kalshi")
    sids = _book_sids(msgs)
    assert len(sids) == (1 if model == "shared" else 3)
    gaps = controls(msgs, "seq_gap")
    assert len(gaps) == 1, gaps
    if model == "shared":
        assert gaps[0]["markets"] == sorted(syms[:2])
    ups = [m["params"] for m in received(records) if m.get("cmd") == "update_subscription"]
    snaps = [u for u in ups if u["action"] == "get_snapshot"]
    assert len(snaps) == 1 and sorted(snaps[0]["market_tickers"]) == sorted(repaired)
    # replies carried seq (so they were part of the numbering the check followed)
    replies = [d for d in data_json(msgs) if d.get("type") in ("ok", "unsubscribed")]
    assert replies and all("seq" in r for r in replies)
    # no market stale: every remaining market has deltas after its last snapshot
    frames = data_json(msgs)
    for s in syms[:2]:
        last = max(i for i, d in enumerate(frames) if d.get("type") == "orderbook_snapshot"
                   and d["msg"]["market_ticker"] == s)
        assert any(d.get("type") == "orderbook_delta" and d["msg"]["market_ticker"] == s
                   for d in frames[last + 1:]), s
    assert status["gaps"]["seq_gap"] == 1
    assert not controls(msgs, "reconnect")


@pytest.mark.parametrize("model,with_sid", [("per_command", True), ("shared", True),
                                            ("per_command", False)])
def test_terminal_error_is_a_gap_a_metric_and_a_resubscription(ring_path, tmp_path, model,
                                                               with_sid):
    """With a sid, the error ends that sid's markets; without one (the error
    cannot say which) every book market of the connection is resubscribed."""
    sc = Scenario(rate=0, heartbeat_interval=3600, seed=22, kalshi_sid_model=model,
                  kalshi_reply_seq=True)
    with SimulatorThread(["kalshi"], sc, kalshi_key_id=KEY_ID) as st:
        syms = st.sim.symbols("kalshi")[:3]
        col = Collector(ring_path)
        rt = ReceiverThread(_start(st, tmp_path, ring_path))
        try:
            col.wait_control("live")
            st.inject("kalshi", "data", count=30)
            _all_in_ring(col, st)
            st.inject("kalshi", "terminal_error", symbol=syms[0], with_sid=with_sid)
            lost = col.wait_control("subscription_lost")[0]
            ended = syms if model == "shared" or not with_sid else syms[:1]
            wait_for(lambda: all(len(_snapshots(col.snapshot(), s)) == 2 for s in ended), 10,
                     "a fresh subscription (and snapshot) of every market the error ended")
            st.inject("kalshi", "data", count=60)
            _all_in_ring(col, st)
            status = rt.call(rt.rx.status)
        finally:
            rt.stop()
            msgs = col.stop()
        records = st.sim.connections("kalshi")
    assert sorted(lost["markets"]) == sorted(ended) and lost["code"] == 25
    assert status["gaps"]["subscription_lost"] == 1
    subs = [m["params"]["market_tickers"] for m in received(records) if m.get("cmd") == "subscribe"]
    assert sorted(t for ts in subs[3:] for t in ts) == sorted(ended)   # resubscribed: those only
    # the untouched markets kept their one snapshot; every market has data after the error
    for s in syms:
        assert len(_snapshots(msgs, s)) == (2 if s in ended else 1)
    after = [d for d in data_json(msgs)[-60:] if d.get("type") == "orderbook_delta"]
    assert {d["msg"]["market_ticker"] for d in after} == set(syms)
    assert controls(msgs, "seq_gap") == [] and not controls(msgs, "reconnect")


def test_too_many_requests_is_backed_off_and_retried(ring_path, tmp_path):
    """The venue refuses all but two subscribe commands of the burst with
    code 27: they are sent again after a backoff, on the same connection."""
    sc = Scenario(rate=0, heartbeat_interval=3600, seed=23, subscribe_burst=2,
                  subscribe_refill=20.0)
    with SimulatorThread(["kalshi"], sc, kalshi_key_id=KEY_ID) as st:
        syms = st.sim.symbols("kalshi")[:4]
        col = Collector(ring_path)
        rt = ReceiverThread(_start(st, tmp_path, ring_path, n=4))
        try:
            col.wait_control("subscribe_failed")
            wait_for(lambda: all(_snapshots(col.snapshot(), s) for s in syms), 10,
                     "every market subscribed in the end")
        finally:
            rt.stop()
            msgs = col.stop()
    failed = controls(msgs, "subscribe_failed")
    assert failed and all(f["code"] == 27 and "retry_in_s" in f for f in failed)
    retried = {s for f in failed for s in f["symbols"]}
    sent = controls(msgs, "subscribe_sent")
    assert {s for x in sent if x["reason"] == "rate_limit_retry" for s in x["symbols"]} >= retried
    assert not controls(msgs, "reconnect")
