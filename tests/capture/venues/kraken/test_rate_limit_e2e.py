"""Kraken spot end to end: the bare rate-limit frame and repair fairness.

* ``{"Error": "Exceeded msg rate"}`` names no request: the subscribe it
  refused is sent again when its acks time out, on the same connection,
  instead of staying unsubscribed until a reconnect.
* A pair whose checksum keeps mismatching gets one repair in flight at a
  time (further reports are recorded "pending") and its token bucket: it
  cannot use up the requests other pairs' repairs need, even under the
  venue's message rate limit."""
from __future__ import annotations

import pytest

from capture.receiver.lifecycle import Timing
from capture.receiver.process import ReceiverConfig
from capture.simulator import Scenario, SimulatorThread
from integrity_helpers import cleanup, controls, new_ring, received
from receiver_helpers import FAST, Collector, ReceiverThread
from timing import wait_for

TIMING = Timing(**{**FAST.__dict__, "subscribe_timeout": 0.5, "subscribe_retry": 0.2,
                   "subscribe_retry_cap": 1.0})


@pytest.fixture
def ring_path():
    d, p = new_ring()
    yield p
    cleanup(d)


def _subscribed(col, channel):
    return {c["symbol"] for c in col.controls("subscribed") if c["channel"] == channel}


def test_bare_rate_limit_frame_is_retried_not_left_unsubscribed(ring_path):
    sc = Scenario(rate=0, heartbeat_interval=3600, subscribe_burst=1, subscribe_refill=5.0,
                  kraken_bare_rate_limit=True, seed=41)
    with SimulatorThread(["kraken"], sc) as st:
        syms = st.sim.symbols("kraken")[:2]
        cfg = ReceiverConfig(ring=ring_path, venue="kraken", url=st.url("kraken"), symbols=syms,
                             channels=["trade", "ticker", "book"], transport="picows",
                             timing=TIMING, seed=2)
        col = Collector(ring_path)
        rt = ReceiverThread(cfg)
        try:
            wait_for(lambda: all(_subscribed(col, ch) == set(syms)
                                 for ch in ("trade", "ticker", "book")), 20,
                     "every channel of every symbol subscribed in the end")
        finally:
            rt.stop()
            msgs = col.stop()
        assert len(st.sim.connections("kraken")) == 1
    refused = [c for c in controls(msgs, "venue_error") if c.get("rate_limited")]
    assert refused and all(c["error"] == "Exceeded msg rate" for c in refused)
    timed_out = [c for c in controls(msgs, "subscribe_timeout") if "retry_in_s" in c]
    assert timed_out
    retries = [c for c in controls(msgs, "subscribe_sent") if c["reason"] == "rate_limit_retry"]
    assert len(retries) >= len(timed_out)
    assert not controls(msgs, "reconnect")


def test_a_pair_that_keeps_mismatching_cannot_starve_the_others(ring_path):
    sc = Scenario(rate=0, heartbeat_interval=3600, subscribe_burst=6, subscribe_refill=4.0,
                  seed=42)
    with SimulatorThread(["kraken"], sc) as st:
        syms = st.sim.symbols("kraken")[:4]
        noisy, others = syms[0], syms[1:]
        cfg = ReceiverConfig(ring=ring_path, venue="kraken", url=st.url("kraken"), symbols=syms,
                             channels=["book"], transport="picows", timing=TIMING, seed=3,
                             repair_burst=3, repair_window=3600)
        col = Collector(ring_path)
        rt = ReceiverThread(cfg)
        try:
            col.wait_control("live")
            report = {"kind": "checksum_mismatch", "venue": "kraken", "expected": 1,
                      "computed": 2, "frame_seq": 0, "conn": 0}
            outcomes = [rt.call(rt.rx.report, {**report, "symbol": noisy}) for _ in range(50)]
            outcomes += [rt.call(rt.rx.report, {**report, "symbol": s}) for s in others]
            outcomes += [rt.call(rt.rx.report, {**report, "symbol": noisy}) for _ in range(50)]
            wait_for(lambda: all(sum(1 for c in col.controls("subscribed")
                                     if c["symbol"] == s) >= 2 for s in others), 20,
                     "every other pair's repair acked")
        finally:
            rt.stop()
            msgs = col.stop()
        records = st.sim.connections("kraken")
    assert outcomes[50:50 + len(others)] == ["sent"] * len(others)
    noisy_sent = [o for o in outcomes[:50] + outcomes[50 + len(others):] if o == "sent"]
    assert 1 <= len(noisy_sent) <= 3               # its own bucket, one in flight at a time
    assert set(outcomes) <= {"sent", "pending", "suppressed"}
    repairs = controls(msgs, "repair")
    assert len([r for r in repairs if r["symbol"] == noisy]) <= 3
    assert {r["symbol"] for r in repairs} == set(syms)
    # each other pair got a fresh book: subscribed again after its unsubscribe
    for s in others:
        cmds = [m["method"] for m in received(records)
                if m.get("method") in ("subscribe", "unsubscribe") and s in m["params"]["symbol"]]
        assert cmds[0] == "subscribe" and "unsubscribe" in cmds and cmds[-1] == "subscribe"
    assert len(controls(msgs, "checksum_mismatch")) == 100 + len(others)   # every report recorded
