"""The peer: the capture loop a user would write without capture.

A websockets client subscribes to Kraken spot trades, and for each message
takes a receive stamp, appends it to a file (one unbuffered write: the bytes
are handed to the OS, the same point the flusher's receive-to-disk stamp
measures) and publishes it with nats-py's JetStream ``publish_async``
(bounded pending: at most ``--pending`` unacknowledged, the library's
semaphore), recording the time each ack arrives.  It stops at the blast's
end marker, waits for every ack, and writes its figures as JSON.

``publish_async`` with ``publish_async_max_pending`` came with nats.py
pull request #569 (github.com/nats-io/nats.py/pull/569, read 2026-12-06).

Latencies here are exact (every message), not log2 buckets.  Run by
bench/shard_bench_helpers.py in its own process, so psutil sees its CPU
alone.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

import nats
import numpy as np
from websockets.asyncio.client import connect

from common import histogram

MARKER = b'{"blast_end":true'
TRADE = b'{"channel":"trade","type":"update"'


def pct(ns: list[int]) -> dict[str, float | None]:
    if not ns:
        return {"p50": None, "p99": None, "p99.9": None}
    a = np.asarray(ns, dtype=np.float64) / 1e9
    p50, p99, p999 = np.percentile(a, [50, 99, 99.9])
    return {"p50": float(p50), "p99": float(p99), "p99.9": float(p999)}


async def main(a: argparse.Namespace) -> dict:
    nc = await nats.connect(a.nats, connect_timeout=5)
    js = nc.jetstream(publish_async_max_pending=a.pending)
    await js.add_stream(name=a.stream, subjects=[a.subject + ".>"])
    subject = f"{a.subject}.trade.BTC-USD"
    fd = os.open(a.file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    disk_ns: list[int] = []
    ack_ns: list[int] = []
    failed = 0
    received = 0
    first = last = 0
    cpu0 = 0.0

    def on_ack(t_recv: int):
        def done(fut: asyncio.Future) -> None:
            nonlocal failed
            if fut.cancelled() or fut.exception() is not None:
                failed += 1
            else:
                ack_ns.append(time.time_ns() - t_recv)
        return done

    try:
        async with connect(a.url, max_size=64 << 20, compression=None, ping_interval=None) as ws:
            await ws.send(json.dumps({"method": "subscribe", "req_id": 1,
                                      "params": {"channel": "trade", "symbol": ["BTC/USD"]}}))
            async for msg in ws:
                t = time.time_ns()
                b = msg.encode() if isinstance(msg, str) else msg
                if b.startswith(MARKER):
                    break
                if not b.startswith(TRADE):
                    continue
                if not received:
                    first, cpu0 = t, time.process_time()
                received += 1
                last = t
                os.write(fd, b + b"\n")
                disk_ns.append(time.time_ns() - t)
                fut = await js.publish_async(subject, b)
                fut.add_done_callback(on_ack(t))
        await asyncio.wait_for(js.publish_async_completed(), 120)
    finally:
        os.close(fd)
        cpu = time.process_time() - cpu0
        await nc.close()
    span = (last - first) / 1e9
    hist, dhist = histogram.new(), histogram.new()   # the same buckets as capture's
    histogram.add_many(hist, ack_ns)
    histogram.add_many(dhist, disk_ns)
    return {"received": received, "acked": len(ack_ns), "failed": failed, "cpu_s": cpu,
            "recv_rate": received / span if span > 0 else None,
            "recv_to_disk": pct(disk_ns), "recv_to_ack": pct(ack_ns),
            "recv_to_ack_hist_us": hist, "recv_to_disk_hist_us": dhist}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--nats", required=True)
    ap.add_argument("--stream", required=True)
    ap.add_argument("--subject", required=True)
    ap.add_argument("--file", required=True)
    ap.add_argument("--frames", type=int, required=True)
    ap.add_argument("--pending", type=int, default=4096)
    ap.add_argument("--result", required=True)
    args = ap.parse_args()
    r = asyncio.run(main(args))
    with open(args.result, "w") as f:
        json.dump(r, f)
    sys.exit(0)
