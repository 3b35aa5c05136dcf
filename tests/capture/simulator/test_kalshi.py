"""Kalshi v2: handshake signature verified (401 otherwise), commands and
errors, orderbook snapshot + deltas with seq per sid, gaps, protocol pings."""
from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus
from websockets.frames import Opcode

from capture.simulator import Scenario, Simulator, kalshi_sign
from simhelp import client, recv_json, recv_until, run

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def auth(key=KEY, ts_ms: int | None = None, key_id="test-key") -> dict[str, str]:
    ts = str(int(time.time() * 1000) if ts_ms is None else ts_ms)
    return {"KALSHI-ACCESS-KEY": key_id, "KALSHI-ACCESS-TIMESTAMP": ts,
            "KALSHI-ACCESS-SIGNATURE": kalshi_sign(key, ts)}


def sim_for(sc: Scenario) -> Simulator:
    return Simulator(["kalshi"], sc, kalshi_public_key=KEY.public_key(), kalshi_key_id="test-key")


def cmd(i: int, name: str, **params) -> bytes:
    return orjson.dumps({"id": i, "cmd": name, "params": params})


def test_signature_accepted_and_bad_ones_rejected_with_401():
    async def body():
        async with sim_for(Scenario(rate=0)) as sim:
            async with client(sim.url("kalshi"), additional_headers=auth()) as ws:
                await ws.send(cmd(1, "subscribe", channels=["ticker"]))
                assert await recv_json(ws) == {"id": 1, "type": "subscribed",
                                               "msg": {"channel": "ticker", "sid": 1}}
            stale = int(time.time() * 1000) - 120_000
            bad = [auth(OTHER), auth(ts_ms=stale), auth(key_id="someone-else"), {}]
            forged = auth()
            forged["KALSHI-ACCESS-TIMESTAMP"] = str(int(forged["KALSHI-ACCESS-TIMESTAMP"]) + 1)
            bad.append(forged)
            for headers in bad:
                with pytest.raises(InvalidStatus) as ei:
                    async with client(sim.url("kalshi"), additional_headers=headers):
                        pass
                assert ei.value.response.status_code == 401
            vs = sim.server("kalshi")
            assert vs.rejected_401 == 5 and len(sim.connections("kalshi")) == 1
            assert vs.unauthorized[:4] == ["invalid signature", "stale timestamp",
                                           "unknown api key", "missing authentication headers"]
    run(body)


def test_commands_errors_and_orderbook_seq_per_sid():
    async def body():
        async with sim_for(Scenario(rate=float("inf"), max_messages=120)) as sim:
            t = sim.symbols("kalshi")
            async with client(sim.url("kalshi"), additional_headers=auth()) as ws:
                await ws.send(cmd(1, "subscribe", channels=["orderbook_delta"],
                                  market_tickers=t[:2]))
                await ws.send(cmd(2, "subscribe", channels=["orderbook_delta"],
                                  market_tickers=t[1:3]))
                await ws.send(cmd(3, "subscribe", channels=["nope"]))
                await ws.send(cmd(4, "frobnicate"))
                replies, seqs, snaps = {}, [], set()
                while len(seqs) < 100:
                    m = await recv_json(ws)
                    if "id" in m:
                        replies[m["id"]] = m
                    elif m["type"] in ("orderbook_snapshot", "orderbook_delta"):
                        assert m["sid"] == 1
                        seqs.append(m["seq"])
                        if m["type"] == "orderbook_snapshot":
                            snaps.add(m["msg"]["market_ticker"])
                            assert m["msg"]["yes_dollars_fp"][0][0].startswith("0.")
                        else:
                            d = m["msg"]
                            assert d["side"] in ("yes", "no") and d["price_dollars"]
                            assert d["delta_fp"].lstrip("-").replace(".", "").isdigit()
                assert replies[1] == {"id": 1, "type": "subscribed",
                                      "msg": {"channel": "orderbook_delta", "sid": 1}}
                assert replies[2] == {"id": 2, "type": "error",
                                      "msg": {"code": 6, "msg": "Already subscribed"}}
                assert replies[3]["msg"]["code"] == 8 and replies[4]["msg"]["code"] == 5
                assert snaps == set(t[:2])
                assert seqs == list(range(1, len(seqs) + 1))
    run(body)


def test_update_subscription_and_injected_gap():
    async def body():
        async with sim_for(Scenario(rate=0)) as sim:
            t = sim.symbols("kalshi")
            async with client(sim.url("kalshi"), additional_headers=auth()) as ws:
                await ws.send(cmd(1, "subscribe", channels=["orderbook_delta"],
                                  market_tickers=t[:1]))
                await recv_until(ws, lambda m: m.get("type") == "orderbook_snapshot")
                await ws.send(orjson.dumps({"id": 2, "cmd": "update_subscription", "params": {
                    "sids": [1], "market_tickers": [t[1]], "action": "add_markets"}}))
                ok = await recv_json(ws)
                assert ok["type"] == "ok" and ok["msg"]["market_tickers"] == t[:2]
                snap = await recv_json(ws)
                assert snap["type"] == "orderbook_snapshot" and snap["seq"] == 2
                await ws.send(orjson.dumps({"id": 3, "cmd": "update_subscription", "params": {
                    "sids": [1], "market_tickers": [t[0]], "action": "get_snapshot"}}))
                await recv_until(ws, lambda m: m.get("id") == 3)
                snap = await recv_json(ws)
                assert (snap["msg"]["market_ticker"], snap["seq"]) == (t[0], 3)
                # An injected gap: the next sequenced message skips one number.
                sim.inject("kalshi", "gap")
                sim.inject("kalshi", "data", count=2)
                a, b = await recv_json(ws), await recv_json(ws)
                assert (a["seq"], b["seq"]) == (5, 6)
                await ws.send(cmd(4, "unsubscribe", sids=[1]))
                assert await recv_json(ws) == {"id": 4, "sid": 1, "type": "unsubscribed"}
                await ws.send(cmd(5, "unsubscribe", sids=[1]))
                assert (await recv_json(ws))["msg"]["code"] == 7
    run(body)


class PingCounter(ClientConnection):
    pings = 0

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.got_ping = asyncio.Event()

    def process_event(self, event) -> None:
        if getattr(event, "opcode", None) is Opcode.PING:
            PingCounter.pings += 1
            self.got_ping.set()
        super().process_event(event)


def test_server_sends_protocol_pings():
    async def body():
        PingCounter.pings = 0
        async with sim_for(Scenario(rate=0, kalshi_ping_interval=0.02)) as sim:
            async with client(sim.url("kalshi"), additional_headers=auth(),
                              create_connection=PingCounter, ping_interval=None) as ws:
                while PingCounter.pings < 3:
                    ws.got_ping.clear()
                    await ws.got_ping.wait()
                # The connection is still fine: the client answered the pings.
                await ws.send(cmd(1, "subscribe", channels=["trade"]))
                assert (await recv_json(ws))["type"] == "subscribed"
    run(body)
