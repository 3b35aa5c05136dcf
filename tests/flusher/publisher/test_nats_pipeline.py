"""The acked pipeline against a real nats-server: acks that never come, 503s,
a full stream (discard new).  No hang, no loss, every case counted."""
from __future__ import annotations

import asyncio
import time

import nats
import pytest
from nats.js import api


from conftest_nats import *  # noqa: F401,F403,E402
from conftest_nats import read_stream, run_async, timeout  # noqa: E402

from flusher.publisher import client_hooks  # noqa: E402
from flusher.publisher.pipeline import AckPipeline, build_headers  # noqa: E402


def _hdr(i: int) -> bytes:
    return build_headers(f"ring0:{i}", (("Capture-Seq", i), ("Capture-Recv-Ns", 1), ("Capture-Shard", 0)))


async def _until(pred, seconds: float, what: str) -> None:
    deadline = time.monotonic() + timeout(seconds)
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def _check_once(msgs, n: int) -> None:
    seqs = sorted(int(m.headers["Capture-Seq"]) for m in msgs)
    assert seqs == list(range(n)), f"{len(seqs)} stored for {n} published"
    for m in msgs:
        assert m.data == b"frame-%d" % int(m.headers["Capture-Seq"])


@pytest.mark.parametrize("fast_parser", [True, False], ids=["fast-ack-parser", "nats-py-parser"])
def test_basic_window_and_commit_order(nats_server, monkeypatch, fast_parser):
    # False: what a nats-py release the fast ack parser was not tested against gets
    monkeypatch.setattr(client_hooks, "FAST_PARSER_OK", fast_parser and client_hooks.FAST_PARSER_OK)

    async def main():
        nc = await nats.connect(nats_server.url)
        await nc.jsm().add_stream(name="S", subjects=["s.>"], duplicate_window=60)
        commits = []
        p = await AckPipeline(nc, window=64, on_commit=commits.append).start()
        assert p._hooks.parser_installed == client_hooks.FAST_PARSER_OK  # the path under test is live
        for i in range(1000):
            await p.submit(i, "s.a", b"frame-%d" % i, _hdr(i), commit=i)
            assert p.in_flight <= 64
        assert await p.drain(timeout(30))
        assert commits == sorted(commits) and commits[-1] == 999
        assert p.stats["acked"] == 1000
        await p.close()
        await nc.close()
    run_async(main())
    _check_once(run_async(read_stream([nats_server.url], "S")), 1000)


def test_ack_that_never_comes(nats_server):
    """A proxy in front of the stream loses some publishes and some acks
    (after storing): timeouts, resends with the same Msg-Id, de-duplication."""
    n = 600

    async def main():
        nc = await nats.connect(nats_server.url)
        await nc.jsm().add_stream(name="S", subjects=["s.>"], duplicate_window=60)
        seen: dict[str, int] = {}
        tasks = set()

        async def forward(msg, relay: bool) -> None:
            resp = await nc.request("s." + msg.subject, msg.data, headers=msg.headers,
                                    timeout=timeout(5))
            if relay:
                await nc.publish(msg.reply, resp.data)

        async def proxy(msg) -> None:
            mid = msg.headers["Nats-Msg-Id"]
            k = seen[mid] = seen.get(mid, 0) + 1
            i = int(mid.split(":")[1])
            if k == 1 and i % 3 == 0:
                return                       # lost on the way: never stored, never acked
            relay = not (k == 1 and i % 5 == 1)  # stored, but the ack is lost
            t = asyncio.ensure_future(forward(msg, relay))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        await nc.subscribe("p.>", cb=proxy)
        p = await AckPipeline(nc, window=128, ack_timeout=0.3, backoff=(0.01, 0.1)).start()
        for i in range(n):
            await p.submit(i, "p.x", b"frame-%d" % i, _hdr(i), commit=i)
        assert await p.drain(timeout(60)), "drain did not finish"
        st = dict(p.stats)
        await p.close()
        await nc.close()
        return st
    st = run_async(main())
    assert st["ack_timeout"] >= n // 3
    assert st["duplicate_ack"] >= 1
    assert st["acked"] == n
    _check_once(run_async(read_stream([nats_server.url], "S")), n)


def test_no_responders_then_stream_appears(nats_server):
    n = 200

    async def main():
        nc = await nats.connect(nats_server.url)
        p = await AckPipeline(nc, window=256, ack_timeout=1.0, backoff=(0.01, 0.2)).start()
        for i in range(n):
            await p.submit(i, "late.x", b"frame-%d" % i, _hdr(i), commit=i)
        await _until(lambda: p.stats["no_responders"] >= n, 30, "503 replies")
        assert p.committed is None
        await nc.jsm().add_stream(name="LATE", subjects=["late.>"], duplicate_window=60)
        assert await p.drain(timeout(30))
        st = dict(p.stats)
        await p.close()
        await nc.close()
        return st
    st = run_async(main())
    assert st["acked"] == n and st["resent"] >= n
    _check_once(run_async(read_stream([nats_server.url], "LATE")), n)


def test_full_stream_discard_new(nats_server):
    """A stream that refuses new messages: counted, retried, nothing lost once
    it has room again, and the pipeline never hangs."""
    n = 300

    async def main():
        nc = await nats.connect(nats_server.url)
        jsm = nc.jsm()
        cfg = api.StreamConfig(name="FULL", subjects=["full.>"], max_msgs=100,
                               discard=api.DiscardPolicy.NEW, duplicate_window=60)
        await jsm.add_stream(cfg)
        p = await AckPipeline(nc, window=512, ack_timeout=1.0, backoff=(0.01, 0.2)).start()
        for i in range(n):
            await p.submit(i, "full.x", b"frame-%d" % i, _hdr(i), commit=i)
        await _until(lambda: p.stats["stream_full"] >= n - 100, 30, "stream-full replies")
        assert p.committed == 99            # the prefix that fit
        await jsm.update_stream(cfg.evolve(max_msgs=-1))
        assert await p.drain(timeout(30))
        st = dict(p.stats)
        await p.close()
        await nc.close()
        return st
    st = run_async(main())
    assert st["acked"] == n
    _check_once(run_async(read_stream([nats_server.url], "FULL")), n)


def test_disconnect_then_reconnect_resends(nats_server):
    """Publishes across a server restart: nothing buffered while down, all
    resent on reconnect, stored once."""
    n = 2000

    async def main():
        nc = await nats.connect(nats_server.url, max_reconnect_attempts=-1,
                                reconnect_time_wait=0.1, pending_size=0)
        await nc.jsm().add_stream(name="S", subjects=["s.>"], duplicate_window=60)
        p = await AckPipeline(nc, window=4096, ack_timeout=1.0, backoff=(0.01, 0.2)).start()
        for i in range(n // 2):
            await p.submit(i, "s.x", b"frame-%d" % i, _hdr(i), commit=i)
        nats_server.stop()
        await _until(lambda: not nc.is_connected, 30, "the client to notice")
        for i in range(n // 2, n):
            await p.submit(i, "s.x", b"frame-%d" % i, _hdr(i), commit=i)
        nats_server.start()
        assert await p.drain(timeout(60))
        await p.close()
        await nc.close()
    run_async(main())
    _check_once(run_async(read_stream([nats_server.url], "S")), n)
