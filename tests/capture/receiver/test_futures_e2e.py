"""Kraken Futures end to end: simulator -> receiver (both transports) -> a
real ring.  Byte for byte capture; an injected book ``seq`` gap detected
once, recorded and repaired by resubscribing that product's book only; a
product whose book keeps gapping is rate-limited."""
from __future__ import annotations


import pytest


from capture.receiver.process import ReceiverConfig  # noqa: E402
from capture.simulator import Scenario, SimulatorThread  # noqa: E402
from integrity_helpers import (TRANSPORTS, controls, data_in_ring, data_json,  # noqa: E402
                               received, total_sent)
from receiver_helpers import FAST, Collector, ReceiverThread, assert_exactly_sent  # noqa: E402
from timing import wait_for  # noqa: E402

V = "kraken_futures"


def _cfg(ring_path, st, transport="picows", n=3, **kw):
    return ReceiverConfig(ring=ring_path, venue=V, url=st.url(V), symbols=st.sim.symbols(V)[:n],
                          transport=transport, timing=FAST, seed=1, **kw)


def _snapshots(msgs, pid):
    return [d for d in data_json(msgs) if d.get("feed") == "book_snapshot" and d["product_id"] == pid]


def _book_seqs(msgs, pid):
    return [d["seq"] for d in data_json(msgs)
            if d.get("feed") in ("book", "book_snapshot") and d.get("product_id") == pid]


def _book_cmds(records, event, pid):
    return [m for m in received(records) if m.get("event") == event and m.get("feed") == "book"
            and pid in m.get("product_ids", [])]


def _all_in_ring(st, col):
    return lambda: data_in_ring(col) == total_sent(st.sim.connections(V))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_futures_capture_and_a_gap_resubscribes_that_product_only(ring_path, transport):
    sc = Scenario(rate=0, heartbeat_interval=3600, seed=21)
    with SimulatorThread([V], sc) as st:
        pids = st.sim.symbols(V)[:3]
        col = Collector(ring_path)
        rt = ReceiverThread(_cfg(ring_path, st, transport))
        try:
            col.wait_control("live")
            st.inject(V, "data", count=40)
            wait_for(_all_in_ring(st, col), 10, "the first data in the ring")
            st.inject(V, "gap", symbol=pids[0])
            st.inject(V, "data", count=40)
            col.wait_control("repair")
            wait_for(lambda: len(_snapshots(col.snapshot(), pids[0])) == 2, 10,
                     "the resubscription's snapshot")
            st.inject(V, "data", count=40)
            wait_for(_all_in_ring(st, col), 10, "every frame in the ring")
            status = rt.call(rt.rx.status)
        finally:
            rt.stop()
            msgs = col.stop()
        records = st.sim.connections(V)
    assert len(records) == 1
    assert_exactly_sent(msgs, records, [0])
    gaps = controls(msgs, "seq_gap")
    assert len(gaps) == 1
    g = gaps[0]
    assert (g["venue"], g["symbol"], g["feed"], g["got"] - g["expected"]) == (V, pids[0], "book", 1)
    assert [(r["symbol"], r["action"]) for r in controls(msgs, "repair")] == \
        [(pids[0], "resubscribe")]
    # the venue was asked to unsubscribe + subscribe that one book, nothing else
    assert len(_book_cmds(records, "unsubscribe", pids[0])) == 1
    assert len(_book_cmds(records, "subscribe", pids[0])) == 2       # initial + repair
    for p in pids[1:]:
        assert len(_book_cmds(records, "subscribe", p)) == 1
        assert not _book_cmds(records, "unsubscribe", p)
        assert len(_snapshots(msgs, p)) == 1
        seqs = _book_seqs(msgs, p)
        assert len(seqs) > 1 and seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert not [m for m in received(records) if m.get("event") == "unsubscribe"
                and m.get("feed") != "book"]
    assert len(_snapshots(msgs, pids[0])) == 2
    assert not controls(msgs, "reconnect") and not controls(msgs, "repair_suppressed")
    assert status["gaps"]["seq_gap"] == 1 and status["integrity"]["repairs"] == 1


def test_a_product_that_keeps_gapping_is_rate_limited(ring_path):
    # every 4th book message of every product skips a number, forever
    sc = Scenario(rate=0, heartbeat_interval=3600, seed=22, gap_every=4)
    with SimulatorThread([V], sc) as st:
        pids = st.sim.symbols(V)[:2]
        col = Collector(ring_path)
        rt = ReceiverThread(_cfg(ring_path, st, n=2, repair_burst=2, repair_window=3600,
                                 channels=["book"]))
        try:
            col.wait_control("live")
            for _ in range(6):
                st.inject(V, "data", count=20)
                wait_for(_all_in_ring(st, col), 10, "the data in the ring")
            wait_for(lambda: all(len([s for s in controls(col.snapshot(), "repair_suppressed")
                                      if s["symbol"] == p]) >= 1 for p in pids), 10,
                     "suppressed repairs for both products")
        finally:
            rt.stop()
            msgs = col.stop()
        records = st.sim.connections(V)
    for p in pids:
        assert len([r for r in controls(msgs, "repair") if r["symbol"] == p]) == 2
        # the venue saw the initial subscription plus exactly two repairs
        assert len(_book_cmds(records, "subscribe", p)) == 3
        assert len(_book_cmds(records, "unsubscribe", p)) == 2
    # every gap is recorded once and leads to one repair, one suppression,
    # or nothing new while a repair for that stream is in flight
    gaps = controls(msgs, "seq_gap")
    pending = [g for g in gaps if g.get("repair") == "pending"]
    assert len(gaps) == (len(controls(msgs, "repair")) + len(controls(msgs, "repair_suppressed"))
                         + len(pending))
    assert not controls(msgs, "reconnect")
