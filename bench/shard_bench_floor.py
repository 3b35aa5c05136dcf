"""nats-server's own cost per stored message: the floor under any publisher.

The whole-shard steps report nats-server's CPU per message as it runs next
to the shard.  This case asks what the server needs when the client costs
almost nothing: every HPUB command (capture's own header layout, 256 B
payloads, one subject) is built before the clock starts and written on a
raw socket in 1 MiB chunks, and the acks are counted, not parsed.  The
server's CPU (psutil, user + system) over the time it takes to store and
acknowledge them all, divided by the messages, is its floor on this host.

Four modes, each into a fresh file-storage stream on the run's server:
acknowledged with a ``Nats-Msg-Id`` (what capture sends), acknowledged
without one, and both without a reply subject (no ack).  The differences
price the de-duplication and the per-message acknowledgement; the report
uses the first as the floor in its capacity arithmetic.
"""
from __future__ import annotations

import asyncio
import time

import nats
import psutil

MODES = ("ack+msgid", "ack", "noack+msgid", "noack")
_PAYLOAD = b'{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD"}]}'.ljust(256, b" ")
_CHUNK = 1 << 20


def _commands(stream: str, mode: str, n: int) -> bytes:
    subject = f"{stream}.trade.BTC-USD".encode()
    out = []
    for i in range(n):
        hdr = b"NATS/1.0\r\n"
        if "msgid" in mode:
            hdr += b"Nats-Msg-Id: floor:%d\r\n" % i
        hdr += b"Capture-Seq: %d\r\nCapture-Recv-Ns: 1700000000000000000\r\n\r\n" % i
        reply = b" _FLOOR.%d" % i if mode.startswith("ack") else b""
        out.append(b"HPUB %s%s %d %d\r\n%s%s\r\n" % (subject, reply, len(hdr), len(hdr) + len(_PAYLOAD),
                                                   hdr, _PAYLOAD))
    return b"".join(out)


async def _one(url: str, server: psutil.Process, mode: str, n: int) -> dict:
    stream = "FLOOR_" + mode.replace("+", "_").upper()
    nc = await nats.connect(url, connect_timeout=5)
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[f"{stream}.>"], storage="file")
    data = _commands(stream, mode, n)
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    r, w = await asyncio.open_connection(host, int(port))
    acks = 0
    try:
        await r.readline()   # INFO
        w.write(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true}\r\n'
                b"SUB _FLOOR.> 1\r\nPING\r\n")
        await w.drain()
        while (await r.readline()) != b"PONG\r\n":
            pass

        async def count() -> None:
            nonlocal acks
            while True:
                b = await r.read(1 << 20)
                if not b:
                    return
                acks += b.count(b"MSG _FLOOR.")

        counter = asyncio.ensure_future(count())
        c0, t0 = server.cpu_times(), time.monotonic()
        for o in range(0, len(data), _CHUNK):
            w.write(data[o:o + _CHUNK])
            await w.drain()
        while (await js.stream_info(stream)).state.messages < n:
            await asyncio.sleep(0.005)
        while mode.startswith("ack") and acks < n:
            await asyncio.sleep(0.005)
        t1, c1 = time.monotonic(), server.cpu_times()
        counter.cancel()
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
