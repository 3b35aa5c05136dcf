"""Blast mode, paced and unpaced: exactly N frames, intact and in order, then
the marker; the record of what was sent matches what arrived."""
from __future__ import annotations

import pytest

from capture.simulator import Blast, Scenario, Simulator, blast_marker, frames_digest
from common.errors import ConfigError
from simhelp import client, recv, run


def _sub(symbol: str = "BTC/USD") -> bytes:
    return (b'{"method":"subscribe","req_id":1,"params":{"channel":"trade","symbol":["%s"]}}'
            % symbol.encode())


async def _blast_into_list(sim: Simulator, n: int) -> list[bytes]:
    """Subscribe, then collect every trade frame up to the marker."""
    out: list[bytes] = []
    async with client(sim.url("kraken")) as ws:
        await ws.send(_sub())
        while True:
            m = await recv(ws, 10.0)
            b = m.encode() if isinstance(m, str) else m
            if b == blast_marker(n):
                return out
            if b.startswith(b'{"channel":"trade"'):
                out.append(b)


# distinct=7 with these counts makes every run of due frames wrap around the
# pre-built block at a different place; 1 is the degenerate one-frame block.
@pytest.mark.parametrize("rate,n,distinct,size", [
    (20_000.0, 3001, 7, 256),
    (50_000.0, 5000, 4096, 2048),
    (5_000.0, 500, 1, 256),
    (0.0, 3001, 7, 256),
])
def test_blast_sends_exactly_n_frames_in_order_then_the_marker(rate, n, distinct, size):
    sc = Scenario(rate=0, heartbeat_interval=3600, record="frames",
                  blast=Blast(frames=n, size=size, distinct=distinct, rate=rate))

    async def body():
        async with Simulator(["kraken"], sc) as sim:
            got = await _blast_into_list(sim, n)
            rec = sim.connections("kraken")[0]
            return got, rec
    got, rec = run(body, 60.0)
    assert len(got) == n
    assert all(len(b) == size for b in got)
    # Frame i is distinct frame i % distinct: the cycle is intact and in order.
    assert all(got[i] == got[i % distinct] for i in range(n))
    assert len(set(got[:distinct])) == min(distinct, n)
    blasted = [p for p in rec.sent if p.startswith(b'{"channel":"trade"')]
    assert blasted == got                      # the record is exactly what arrived
    assert rec.data_count >= n
    assert frames_digest(rec.sent) == rec.digest()
    if rate:
        st = rec.summary()["blast"]
        assert st["frames"] == n and st["rate"] == rate and st["achieved_rate"] > 0
    else:
        assert "blast" not in rec.summary()


def test_blast_rate_must_be_finite_and_not_negative():
    for bad in (-1.0, float("inf")):
        with pytest.raises(ConfigError, match="blast.rate"):
            Scenario(blast=Blast(frames=10, rate=bad))
    sc = Scenario(blast=Blast(frames=10, rate=2500.0))
    assert Scenario.from_json(sc.to_json()).blast == sc.blast
