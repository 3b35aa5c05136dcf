"""Polymarket market channel: array dump, event shapes, PING/PONG, silence
while ponging, dynamic subscribe, a 3 MiB snapshot frame intact."""
from __future__ import annotations

import re

import orjson

from capture.simulator import Scenario, Simulator
from simhelp import client, recv, recv_json, run


def initial(ids: list[str]) -> bytes:
    return orjson.dumps({"assets_ids": ids, "type": "market", "custom_feature_enabled": True})


def test_array_dump_events_and_pong():
    async def body():
        async with Simulator(["polymarket"], Scenario(rate=float("inf"), max_messages=400)) as sim:
            tokens = sim.symbols("polymarket")[:4]
            async with client(sim.url("polymarket")) as ws:
                await ws.send(initial(tokens))
                dump = await recv_json(ws)
                assert isinstance(dump, list) and len(dump) == 4
                assert [b["asset_id"] for b in dump] == tokens
                for b in dump:
                    assert b["event_type"] == "book"
                    assert re.fullmatch(r"0x[0-9a-f]{64}", b["market"])
                    assert re.fullmatch(r"\d{70,}", b["asset_id"])
                    assert re.fullmatch(r"\d{13}", b["timestamp"])
                    assert all(isinstance(lv["price"], str) and isinstance(lv["size"], str)
                               for lv in b["bids"] + b["asks"])
                kinds = set()
                while len(kinds) < 4:
                    m = await recv_json(ws)
                    kinds.add(m["event_type"])
                    if m["event_type"] == "price_change":
                        pc = m["price_changes"][0]
                        assert {"asset_id", "price", "size", "side", "hash", "best_bid",
                                "best_ask"} <= set(pc)
                assert {"price_change", "last_trade_price", "best_bid_ask", "book"} <= kinds
                await ws.send("PING")
                while (await recv(ws)) != "PONG":
                    pass
                # Yes/No tokens of one market share the condition id.
                assert dump[0]["market"] == dump[1]["market"] != dump[2]["market"]
    run(body)


def test_silence_while_answering_ping():
    async def body():
        async with Simulator(["polymarket"], Scenario(rate=float("inf"), silence_after=20)) as sim:
            async with client(sim.url("polymarket")) as ws:
                await ws.send(initial(sim.symbols("polymarket")[:2]))
                for _ in range(20):
                    await recv(ws)
                for _ in range(3):
                    await ws.send("PING")
                    assert await recv(ws) == "PONG"  # nothing else arrives
                rec = sim.connections("polymarket")[0]
                assert rec.data_count == 20 and rec.sent[-1] == b"PONG"
    run(body)


def test_dynamic_subscribe_and_unsubscribe():
    async def body():
        async with Simulator(["polymarket"], Scenario(rate=0)) as sim:
            toks = sim.symbols("polymarket")
            async with client(sim.url("polymarket")) as ws:
                await ws.send(initial(toks[:1]))
                assert len(await recv_json(ws)) == 1
                await ws.send(orjson.dumps({"assets_ids": toks[2:4], "operation": "subscribe"}))
                more = await recv_json(ws)
                assert [b["asset_id"] for b in more] == toks[2:4]
                await ws.send(orjson.dumps({"assets_ids": toks[2:3], "operation": "unsubscribe"}))
                await ws.send(b"not json")
                assert await recv(ws) == "INVALID OPERATION"
                await ws.send("PING")
                assert await recv(ws) == "PONG"
    run(body)


def test_three_mib_snapshot_frame_intact():
    async def body():
        size = 3 * 1024 * 1024
        async with Simulator(["polymarket"], Scenario(rate=0, large_snapshot_size=size)) as sim:
            async with client(sim.url("polymarket"), max_size=16 * 1024 * 1024) as ws:
                await ws.send(initial(sim.symbols("polymarket")[:6]))
                raw = await recv(ws)
                assert len(raw) >= size
                assert raw.encode() == sim.connections("polymarket")[0].sent[0]
                assert all(b["event_type"] == "book" for b in orjson.loads(raw))
    run(body)


def test_tokens_beyond_the_per_connection_limit_starve_silently():
    async def body():
        sc = Scenario(rate=float("inf"), max_messages=200, polymarket_max_assets=2)
        async with Simulator(["polymarket"], sc) as sim:
            toks = sim.symbols("polymarket")[:3]
            async with client(sim.url("polymarket")) as ws:
                await ws.send(initial(toks))
                dump = await recv_json(ws)
                seen = {b["asset_id"] for b in dump}
                for _ in range(199):
                    m = await recv_json(ws)
                    seen.add(m.get("asset_id") or m["price_changes"][0]["asset_id"])
                assert seen == set(toks[:2])
    run(body)
