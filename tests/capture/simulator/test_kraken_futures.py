"""Kraken Futures v1 against the simulator: info, per-product acks, errors,
book seq continuity, injected gaps, heartbeat feed."""
from __future__ import annotations

import orjson

from capture.simulator import Scenario, Simulator
from simhelp import client, recv_json, recv_until, run


def test_info_acks_errors_and_book_seq():
    async def body():
        async with Simulator(["kraken_futures"], Scenario(rate=float("inf"), max_messages=200)) as sim:
            async with client(sim.url("kraken_futures")) as ws:
                assert await recv_json(ws) == {"event": "info", "version": 1}
                await ws.send(orjson.dumps({"event": "subscribe", "feed": "book",
                                            "product_ids": ["PF_XBTUSD", "PF_ETHUSD", "PF_NOPE"]}))
                acks, errors, seqs = [], [], {}
                while sum(len(v) for v in seqs.values()) < 150:
                    m = await recv_json(ws)
                    if m.get("event") == "subscribed":
                        acks.append(m["product_ids"])
                    elif m.get("event") == "error":
                        errors.append(m)
                    elif m.get("feed") in ("book_snapshot", "book"):
                        if m["feed"] == "book_snapshot":
                            assert m["product_id"] not in seqs and m["bids"] and m["asks"]
                        else:
                            assert m["side"] in ("buy", "sell") and "qty" in m and "price" in m
                        seqs.setdefault(m["product_id"], []).append(m["seq"])
                assert acks == [["PF_XBTUSD"], ["PF_ETHUSD"]]
                assert errors == [{"event": "error", "message": "Invalid product id"}]
                for s in seqs.values():
                    assert s == list(range(s[0], s[0] + len(s)))
    run(body)


def test_trade_snapshot_first():
    async def body():
        async with Simulator(["kraken_futures"], Scenario(rate=float("inf"), max_messages=5)) as sim:
            async with client(sim.url("kraken_futures")) as ws:
                await recv_json(ws)
                await ws.send(b'{"event":"subscribe","feed":"trade","product_ids":["PF_SOLUSD"]}')
                m, before = await recv_until(ws, lambda m: "event" not in m)
                assert before == [{"event": "subscribed", "feed": "trade",
                                   "product_ids": ["PF_SOLUSD"]}]
                assert m["feed"] == "trade_snapshot" and len(m["trades"]) == 10
                nxt = await recv_json(ws)
                assert nxt["feed"] == "trade" and nxt["seq"] == m["trades"][-1]["seq"] + 1
    run(body)


def test_injected_seq_gaps_and_heartbeat():
    async def body():
        sc = Scenario(rate=float("inf"), max_messages=101, gap_every=25,
                      heartbeat_interval=0.02)
        async with Simulator(["kraken_futures"], sc) as sim:
            async with client(sim.url("kraken_futures")) as ws:
                await recv_json(ws)
                await ws.send(b'{"event":"subscribe","feed":"heartbeat"}')
                await recv_until(ws, lambda m: m.get("event") == "subscribed")
                await ws.send(b'{"event":"subscribe","feed":"book","product_ids":["PF_XBTUSD"]}')
                seqs = []
                heartbeat = None
                while heartbeat is None:
                    m = await recv_json(ws)
                    if m.get("feed") in ("book", "book_snapshot") and "event" not in m:
                        seqs.append(m["seq"])
                    elif m.get("feed") == "heartbeat":
                        heartbeat = m
                gaps = [b - a for a, b in zip(seqs, seqs[1:]) if b - a != 1]
                # 101 sequenced messages, every 25th skips one number.
                assert len(seqs) == 101 and gaps == [2, 2, 2, 2]
                assert isinstance(heartbeat["time"], int)
    run(body)
