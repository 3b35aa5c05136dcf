"""nats-server's own cost per stored message: the floor under any publisher.

The whole-shard steps report nats-server's CPU per message as it runs next
to the shard.  This case asks what the server needs when the client costs
almost nothing: every HPUB command (capture's own header layout, 256 B
payloads, one subject) is built before the clock starts and written on a
raw socket 1,024 at a time, and the acks are counted, not parsed.  The
server's CPU (psutil, user + system) over the time it takes to store and
acknowledge them all, divided by the messages, is its floor on this host.

Two modes, each into a fresh file-storage stream on the run's server:
acknowledged with a ``Nats-Msg-Id`` (what capture sends) and without one;
the difference prices the de-duplication.  At most 8,192 messages are
unacknowledged at a time, as in capture's own pipeline (JetStream refuses
what overflows a stream's ingest queue).  The report uses the first mode as
the floor in its capacity arithmetic.
"""
from __future__ import annotations

import asyncio
import time

import nats
import psutil

MODES = ("ack+msgid", "ack")
_PAYLOAD = b'{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD"}]}'.ljust(256, b" ")
_CHUNK_MSGS = 1024
_WINDOW = 8192
_BOUND_S = 120.0


def _check(deadline: float, what: str) -> None:
    if time.monotonic() > deadline:
        raise TimeoutError(f"nats-server floor: {what} within {_BOUND_S:.0f} s")


def _commands(stream: str, mode: str, n: int) -> list[bytes]:
    subject = f"{stream}.trade.BTC-USD".encode()
    out = []
    for i in range(n):
        hdr = b"NATS/1.0\r\n"
        if "msgid" in mode:
            hdr += b"Nats-Msg-Id: floor:%d\r\n" % i
        hdr += b"Capture-Seq: %d\r\nCapture-Recv-Ns: 1700000000000000000\r\n\r\n" % i
        out.append(b"HPUB %s _FLOOR.%d %d %d\r\n%s%s\r\n" % (subject, i, len(hdr), len(hdr) + len(_PAYLOAD),
                                                             hdr, _PAYLOAD))
    return out


async def _one(url: str, server: psutil.Process, mode: str, n: int) -> dict:
    stream = "FLOOR_" + mode.replace("+", "_").upper()
    nc = await nats.connect(url, connect_timeout=5)
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[f"{stream}.>"], storage="file")
    cmds = _commands(stream, mode, n)
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    r, w = await asyncio.open_connection(host, int(port))
    acks = errors = 0
    moved = asyncio.Event()
    try:
        await r.readline()   # INFO
        w.write(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true}\r\n'
                b"SUB _FLOOR.> 1\r\nPING\r\n")
        await w.drain()
        while (await r.readline()) != b"PONG\r\n":
            pass

        async def count() -> None:
            # Counted per line: a token split across two reads is joined.
            nonlocal acks, errors
            tail = b""
            while True:
                b = await r.read(1 << 20)
                if not b:
                    return
                b = tail + b
                cut = b.rfind(b"\n") + 1
                acks += b.count(b'"seq":', 0, cut)
                errors += b.count(b'"error"', 0, cut)
                tail = b[cut:]
                moved.set()

        counter = asyncio.ensure_future(count())
        c0, t0 = server.cpu_times(), time.monotonic()
        deadline = t0 + _BOUND_S

        async def acked_to(level: int, what: str) -> None:
            while acks < level:
                _check(deadline, f"{mode}: {acks} of {what} ({errors} error replies)")
                moved.clear()
                try:
                    await asyncio.wait_for(moved.wait(), 1.0)
                except asyncio.TimeoutError:
                    pass

        # At most _WINDOW unacknowledged, as capture's own pipeline keeps
        # (JetStream refuses what overflows its ingest queue).
        for o in range(0, n, _CHUNK_MSGS):
            await acked_to(o + _CHUNK_MSGS - _WINDOW, f"{o} sent were acknowledged")
            w.write(b"".join(cmds[o:o + _CHUNK_MSGS]))
            await w.drain()
        await acked_to(n, f"{n} acks arrived")
        t1, c1 = time.monotonic(), server.cpu_times()
        counter.cancel()
        stored = (await js.stream_info(stream)).state.messages
        if stored != n or errors:
            raise RuntimeError(f"nats-server floor, {mode}: {stored} of {n} stored, {errors} error replies")
    finally:
        w.close()
    await js.delete_stream(stream)
    await nc.close()
    cpu = (c1.user + c1.system) - (c0.user + c0.system)
    return {"mode": mode, "messages": n, "seconds": t1 - t0, "rate": n / (t1 - t0),
            "nats_cpu_us": cpu / n * 1e6, "acks": acks}


def nats_floor(url: str, server_pid: int, n: int = 300_000) -> list[dict]:
    """Each mode once, in order, on the running server ``server_pid``."""
    server = psutil.Process(server_pid)
    return [asyncio.run(_one(url, server, mode, n)) for mode in MODES]
