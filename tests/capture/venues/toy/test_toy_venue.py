"""Adding a venue is one folder plus one registry call.

The toy venue (``toyvenue/``, next to this file: protocol, traits and
subscriber, nothing else) is registered with ``capture.venues.register`` and
run through the real receiver (its process class, connection, transport and
replies, sequence checks and repairs) against a minimal WebSocket server on
a loopback port; the ring then holds every frame the server sent, in order,
byte for byte, and the control records of the whole exchange: subscribe,
acks, a refusal, live, a sequence gap, its repair.
"""
from __future__ import annotations

import asyncio
import os
import threading

import orjson
import pytest
from websockets.asyncio.server import serve

import ring
from capture import venues
from capture.receiver.process import ReceiverConfig
from receiver_helpers import (DATA, FAST, Collector, ReceiverThread, cleanup, control_records,
                              make_ring_dir)
from timing import timeout, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.syspath_prepend(HERE)
    import toyvenue
    venues.register(toyvenue.Toy)          # the one registry line
    yield toyvenue.Toy
    venues.VENUES.pop(toyvenue.Toy.name)


@pytest.fixture
def ring_path():
    d = make_ring_dir()
    p = os.path.join(d, "shard-0.ring")
    ring.create(p, 4 << 20).close()
    yield p
    cleanup(d)


def _frame(**kw) -> bytes:
    return orjson.dumps(kw)


class ToyServer:
    """The toy exchange on 127.0.0.1, port 0, in its own thread and loop.

    Acks each known symbol, refuses ``BAD``; after the first subscribe it
    sends each symbol's snapshot and updates, skipping seq 13 of ``A`` (a
    gap); a later subscribe of one symbol (the repair) gets a fresh snapshot
    and one update."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.sent: list[bytes] = []          # every message, in send order
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self._handler, "127.0.0.1", 0) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    async def _send(self, ws, frame: bytes) -> None:
        self.sent.append(frame)
        await ws.send(frame.decode())

    async def _handler(self, ws) -> None:
        subs = 0
        async for text in ws:
            msg = orjson.loads(text)
            self.received.append(msg)
            if msg["op"] != "sub":
                continue
            subs += 1
            good = [s for s in msg["symbols"] if s != "BAD"]
            for s in msg["symbols"]:
                if s == "BAD":
                    await self._send(ws, _frame(op="err", id=msg["id"], sym=s, msg="unknown symbol"))
                else:
                    await self._send(ws, _frame(op="ack", id=msg["id"], ch="quotes", sym=s))
            if subs == 1:
                for s in good:
                    await self._send(ws, _frame(ch="snapshot", sym=s, seq=10, px="1.00"))
                await self._send(ws, _frame(op="hb"))
                for seq in (11, 12, 13, 14):
                    for s in good:
                        if (s, seq) != ("A", 13):
                            await self._send(ws, _frame(ch="quotes", sym=s, seq=seq, px=f"1.{seq}"))
            else:
                for s in good:
                    await self._send(ws, _frame(ch="snapshot", sym=s, seq=20, px="2.00"))
                    await self._send(ws, _frame(ch="quotes", sym=s, seq=21, px="2.01"))

    def __enter__(self) -> "ToyServer":
        self._thread.start()
        assert self._ready.wait(timeout(10)), "toy server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout(10))


@pytest.mark.parametrize("transport", ["picows", "websockets"])
def test_a_toy_venue_from_one_folder_runs_through_the_receiver(toy, ring_path, transport):
    assert venues.get("toy") is toy
    with ToyServer() as srv:
        cfg = ReceiverConfig(ring=ring_path, venue="toy", url=f"ws://127.0.0.1:{srv.port}/",
                             symbols=["A", "B", "BAD"], transport=transport, timing=FAST, seed=1)
        col = Collector(ring_path)
        rt = ReceiverThread(cfg)
        try:
            # the repair's snapshot and update arrive: the whole exchange is done
            wait_for(lambda: sum(m.type == DATA for m in col.snapshot()) == 16, 20,
                     "the toy server's 16 messages in the ring")
        finally:
            rt.stop()
            msgs = col.stop()

    # Every message the server sent (replies, heartbeat, market data) is a
    # DATA frame in the ring, in order, byte for byte.
    assert [m.payload for m in msgs if m.type == DATA] == srv.sent
    assert len(srv.sent) == 16

    # What the receiver sent: the subscribe, then the repair of A alone.
    assert srv.received == [
        {"op": "sub", "id": 1, "ch": "quotes", "symbols": ["A", "B", "BAD"]},
        {"op": "unsub", "ch": "quotes", "symbols": ["A"]},
        {"op": "sub", "id": 2, "ch": "quotes", "symbols": ["A"]},
    ]

    kinds = [c["kind"] for c in control_records(msgs, conn=0)]
    assert kinds[:2] == ["connecting", "opened"]
    assert kinds[-2:] == ["closed", "stopped"]
    sent = control_records(msgs, "subscribe_sent", conn=0)
    assert [(c["channel"], c["symbols"], c["req_id"], c["reason"]) for c in sent] == [
        ("quotes", ["A", "B", "BAD"], 1, "connect"), ("quotes", ["A"], 2, "repair")]
    acked = control_records(msgs, "subscribed", conn=0)
    assert [(c["channel"], c["symbol"], c["req_id"]) for c in acked] == [
        ("quotes", "A", 1), ("quotes", "B", 1), ("quotes", "A", 2)]
    (failed,) = control_records(msgs, "subscribe_failed", conn=0)
    assert (failed["symbols"], failed["error"], failed["req_id"]) == (["BAD"], "unknown symbol", 1)
    (live,) = control_records(msgs, "live", conn=0)
    assert (live["acked"], live["failed"], live["timed_out"]) == (2, 1, 0)
    (gap,) = control_records(msgs, "seq_gap", conn=0)
    assert (gap["venue"], gap["symbol"], gap["expected"], gap["got"], gap["missing"]) == \
        ("toy", "A", 13, 14, 1)
    (rep,) = control_records(msgs, "repair", conn=0)
    assert (rep["venue"], rep["symbol"], rep["reason"], rep["action"]) == \
        ("toy", "A", "seq_gap", "resubscribe")
    (unsub,) = control_records(msgs, "unsubscribe_sent", conn=0)
    assert (unsub["channel"], unsub["symbols"], unsub["reason"]) == ("quotes", ["A"], "repair")
    # the record order: the gap, then its repair, right after the frame that showed it
    order = [c["kind"] for c in control_records(msgs, conn=0)
             if c["kind"] in ("live", "seq_gap", "repair", "unsubscribe_sent")]
    assert order == ["live", "seq_gap", "repair", "unsubscribe_sent"]
    stats = rt.rx.connections["toy-0"].stats()
    assert (stats["seq_gaps"], stats["repairs"], stats["frames"]) == (1, 1, 16)


def test_register_refuses_a_taken_name_and_a_class_without_traits(toy):
    from common.errors import ConfigError

    class Impostor(toy):
        pass
    with pytest.raises(ConfigError, match="already registered"):
        venues.register(Impostor)

    class Bare:
        name = "bare"
    with pytest.raises(ConfigError, match="missing traits: url"):
        venues.register(Bare)
    assert "bare" not in venues.VENUES
