"""Reading back what a stream holds for one ring (the read-back behind the
catch-up horizon)."""
from __future__ import annotations

import time

import nats


from conftest_nats import *  # noqa: F401,F403,E402
from conftest_nats import run_async  # noqa: E402

from flusher.publisher.stream import stored_sequences  # noqa: E402


def test_stored_sequences_of_one_ring(nats_server):
    async def main():
        nc = await nats.connect(nats_server.url)
        await nc.jsm().add_stream(name="S", subjects=["p.v.>"], duplicate_window=60)
        js = nc.jetstream()
        t0 = time.time()
        for i in range(300):
            ring_id = "aa" if i % 3 else "bb"            # two rings share the stream
            await js.publish(f"p.v.{'book' if i % 2 else 'control'}.x", b"%d" % i,
                             headers={"Nats-Msg-Id": f"{ring_id}:{i}"})
        got = await stored_sequences(nc, "S", "p.v.>", "aa:", t0 - 1, min_seq=100)
        assert got == {i for i in range(100, 300) if i % 3}
        # Nothing stored since a later time: empty (not a stalled read).
        assert await stored_sequences(nc, "S", "p.v.>", "aa:", time.time() + 5) == set()
        await nc.close()
    run_async(main())


def test_stored_sequences_of_an_empty_stream(nats_server):
    async def main():
        nc = await nats.connect(nats_server.url)
        await nc.jsm().add_stream(name="E", subjects=["e.>"])
        assert await stored_sequences(nc, "E", "e.>", "aa:", 0.0) == set()
        await nc.close()
    run_async(main())
