"""The shutdown count: the receiver stops while the simulator is still
sending, and every message the simulator sent before the server's close
frame is in the ring, exactly once and in order.

A message that arrives after our close frame and before the server's is
still received (RFC 6455 section 5.5.1: an endpoint may keep sending data
until it has sent its own close frame), so it must be recorded like any
other.  The simulator's record of what it sent is the reference."""
from __future__ import annotations

import asyncio
import dataclasses
import queue
import threading

import pytest
import websockets.asyncio.server

from capture.receiver.process import ReceiverConfig
from capture.simulator import Scenario, SimulatorThread
from receiver_helpers import (CONTROL, DATA, FAST, Collector, ReceiverThread,
                              assert_exactly_sent, control_records)
from timing import timeout, wait_for

TRANSPORTS = ["picows", "websockets"]


def _data_in_ring(col: Collector) -> int:
    return sum(1 for m in col.snapshot() if m.type == DATA)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("rate", [float("inf"), 1e6])
def test_messages_in_flight_at_stop_are_recorded(ring_path, transport, rate):
    # The simulator writes as fast as it can (unpaced, or paced above what it
    # can do), so frames are on the wire, in both socket buffers, when we close.
    sc = Scenario(rate=rate, heartbeat_interval=3600, seed=11)
    with SimulatorThread(["kraken"], sc) as st:
        syms = st.sim.symbols("kraken")
        cfg = ReceiverConfig(ring=ring_path, venue="kraken", url=st.url("kraken"),
                             connections=[syms[0:3]], transport=transport, timing=FAST,
                             channels=["trade", "ticker", "book"], seed=1)
        col = Collector(ring_path)
        rt = ReceiverThread(cfg)
        try:
            wait_for(lambda: _data_in_ring(col) >= 2000, 30, "2000 data frames in the ring")
            recs = st.sim.connections("kraken")
            sent_at_stop = sum(r.count for r in recs)
        finally:
            rt.stop()
        # The simulator's side of the connection is over only when its
        # record says so: its count is final from then on.
        wait_for(lambda: all(r.closed for r in st.sim.connections("kraken")), 20,
                 "the simulator's connections closed")
        msgs = col.stop()
        records = st.sim.connections("kraken")

    sent = sum(r.count for r in records)
    assert sent > sent_at_stop, "the simulator was not sending while the receiver stopped"
    in_ring = sum(1 for m in msgs if m.type == DATA)
    drops = control_records(msgs, "drop")
    assert not drops, drops
    assert in_ring == sent, f"the simulator sent {sent}, the ring holds {in_ring}"
    assert_exactly_sent(msgs, records, [0])
    closed = control_records(msgs, "closed", conn=0)
    assert closed and closed[-1]["by"] == "client"
    # the server answered our close: the handshake completed, nothing was cut off
    assert closed[-1]["code"] == 1000 and closed[-1]["handshake"] == "complete"
    assert closed[-1]["after_close"] >= 0
    # the stop record is last and counts every data frame
    ctl = [m for m in msgs if m.type == CONTROL]
    stop = control_records(ctl[-1:], "shard_stop")
    assert stop and stop[0]["frames"] == in_ring


def _hogging_server(stop_sending: threading.Event, sent: list[int]):
    """A WebSocket server that sends without ever yielding to its event loop,
    so it never reads (nor answers) the client's close frame: the case where
    the receiver must give up on the closing handshake and say so."""
    ready: queue.Queue = queue.Queue()

    async def handler(ws):
        msg = b'{"channel":"heartbeat"}'
        transport = ws.transport
        while not stop_sending.is_set() and not transport.is_closing():
            await ws.send(msg, text=True)   # no suspension below the high-water mark
            sent[0] += 1

    async def main():
        async with websockets.asyncio.server.serve(handler, "127.0.0.1", 0, compression=None,
                                                   write_limit=1 << 24) as srv:
            ready.put(srv.sockets[0].getsockname()[1])
            await asyncio.get_running_loop().run_in_executor(None, stop_sending.wait)

    th = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    th.start()
    return th, ready.get(timeout=timeout(10))


@pytest.mark.parametrize("transport", [
    "websockets",
    # Known gap: under this flood (a server that never yields) the picows loop
    # does not reach the stop before the receiver's stop bound, so no
    # ``closed`` record is written (the shard_stop and the supervisor's
    # records still are).  Kept visible until fixed.
    pytest.param("picows", marks=pytest.mark.xfail(reason="picows: a flooding peer starves the stop "
                                                         "(no closed record)", strict=False)),
])
def test_a_server_that_never_answers_close_is_named_in_the_record(ring_path, transport):
    stop_sending = threading.Event()
    sent = [0]
    th, port = _hogging_server(stop_sending, sent)
    try:
        cfg = ReceiverConfig(ring=ring_path, venue="kraken", url=f"ws://127.0.0.1:{port}",
                             connections=[["BTC/USD"]], transport=transport,
                             timing=dataclasses.replace(FAST, close_timeout=0.2, close_cap=1.0),
                             channels=["trade"], seed=1)
        col = Collector(ring_path)
        rt = ReceiverThread(cfg)
        try:
            wait_for(lambda: _data_in_ring(col) >= 1000, 30, "1000 data frames in the ring")
        finally:
            rt.stop()
        msgs = col.stop()
    finally:
        stop_sending.set()
        th.join(timeout(10))
    closed = control_records(msgs, "closed", conn=0)
    assert closed and closed[-1]["handshake"] == "aborted", closed
    # it kept reading (and recording) while the server kept sending
    assert closed[-1]["after_close"] > 0
    stop = control_records(msgs, "shard_stop")[0]
    assert stop["connections"][0]["close_aborted"] == 1
    assert stop["frames"] == sum(1 for m in msgs if m.type == DATA) <= sent[0]
