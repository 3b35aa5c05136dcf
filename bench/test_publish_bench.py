"""Publish throughput and recv-to-ack latency against a local nats-server.

Same run, same server, same stream settings (file storage, duplicate window):

* ``pipeline``      flusher.publisher.pipeline.AckPipeline: acked, de-duplicated
                    (Nats-Msg-Id + capture headers), bounded window
* ``publish_async`` nats-py ``js.publish_async`` + ``asyncio.gather``, same headers
* ``core``          nats-py core ``publish`` without acks (the upper bound)

for 256 B and 2 KiB payloads; ``test_ratios`` prints pipeline/publish_async
and pipeline/core from the per-test medians, and the client and server CPU
time per frame of each (on a small or shared machine the server, not the
client, caps the acked rates, so the CPU ratio is the steadier measure of
the client's cost).  The per-test medians are taken seconds apart, so a
neighbour's load that comes and goes skews their ratio; ``test_ratios``
therefore also runs ``CAPTURE_BENCH_PAIRS`` back-to-back pairs (pipeline
round, publish_async round, the order alternating) and reports the median
and range of the per-pair ratios, with the load average.
``test_catchup_vs_live`` runs the whole publisher twice on the same frames
in the same run: once lapped, catching up from segment files the real
flusher wrote (bench/publish_catchup_helpers.py), once live from a ring that
holds them all; it reports both rates, their ratio and the publisher's CPU
per frame of each.
``test_recv_to_ack_latency`` offers frames to a ring at a fixed rate from
another process and reports percentiles of (ack time - receive time) through
the whole publisher (ring -> JetStream ack).

Run: ``make bench`` (or pytest bench/test_publish_bench.py --benchmark-only -s).
"""
from __future__ import annotations

import asyncio
import itertools
import os
import statistics
import sys
import tempfile
import time

import nats
import pytest

from flusher.publisher.nats_embedded import NatsServer
from flusher.publisher.pipeline import AckPipeline

N = int(os.environ.get("CAPTURE_BENCH_MSGS", "20000"))
PAIRS = int(os.environ.get("CAPTURE_BENCH_PAIRS", "5"))
SIZES = [256, 2048]
SUBJECT = "bench.kraken.book.BTC-USD"
RESULTS: dict[tuple[str, int], float] = {}
CPU_US: dict[tuple[str, int], float] = {}
SRV_US: dict[tuple[str, int], float] = {}
_round = itertools.count()


@pytest.fixture(scope="module")
def server():
    with tempfile.TemporaryDirectory() as d:
        s = NatsServer(d).start()
        try:
            yield s
        finally:
            s.stop()


@pytest.fixture(scope="module")
def loop():
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def nc(server, loop):
    async def connect():
        c = await nats.connect(server.url, pending_size=64 << 20)
        jsm = c.jsm()
        await jsm.add_stream(name="BENCH", subjects=["bench.>"], duplicate_window=600,
                             max_bytes=8 << 30)
        return c
    c = loop.run_until_complete(connect())
    yield c
    loop.run_until_complete(c.close())


def _headers_bytes(r: int, i: int) -> bytes:
    return (b"NATS/1.0\r\nNats-Msg-Id: %d-bench:%d\r\nCapture-Seq: %d\r\n"
            b"Capture-Recv-Ns: %d\r\nCapture-Shard: 3\r\n\r\n" % (r, i, i, time.time_ns()))


async def _pipeline(nc, size: int) -> None:
    r = next(_round)
    payload = b"x" * size
    p = await AckPipeline(nc, window=8192).start()
    subj = SUBJECT.encode()
    for i in range(N):
        if not p.has_room():
            await p.wait_room()
        p.put(i, subj, payload, _headers_bytes(r, i), i)
    assert await p.drain(60)
    assert p.stats["acked"] == N
    await p.close()


async def _publish_async(nc, size: int) -> None:
    r = next(_round)
    payload = b"x" * size
    js = nc.jetstream(publish_async_max_pending=8192)
    futs = []
    for i in range(N):
        futs.append(await js.publish_async(SUBJECT, payload, headers={
            "Nats-Msg-Id": f"{r}-async:{i}", "Capture-Seq": str(i),
            "Capture-Recv-Ns": str(time.time_ns()), "Capture-Shard": "3"}))
    await asyncio.gather(*futs)


async def _core(nc, size: int) -> None:
    payload = b"x" * size
    for _ in range(N):
        await nc.publish("core.sink", payload)
    await nc.flush()


def _proc_cpu(pid: int | None) -> float | None:
    """CPU seconds (user + system) of a process so far; None where /proc has no answer."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _run(benchmark, loop, nc, server, name: str, fn, size: int) -> None:
    benchmark.group = f"publish {size} B x {N}"
    benchmark.extra_info["frames"] = N
    cpu: list[float] = []
    srv: list[float] = []

    def once() -> None:
        s0 = _proc_cpu(server.pid)
        c0 = time.process_time()
        loop.run_until_complete(fn(nc, size))
        cpu.append(time.process_time() - c0)
        s1 = _proc_cpu(server.pid)
        if s0 is not None and s1 is not None:
            srv.append(s1 - s0)
    benchmark.pedantic(once, rounds=3, iterations=1, warmup_rounds=1)
    RESULTS[(name, size)] = N / benchmark.stats.stats.median
    # Client CPU per frame: what the Python side costs, whatever the server does.
    CPU_US[(name, size)] = sorted(cpu)[len(cpu) // 2] / N * 1e6
    benchmark.extra_info["frames_per_s"] = round(RESULTS[(name, size)])
    benchmark.extra_info["client_cpu_us_per_frame"] = round(CPU_US[(name, size)], 2)
    if srv:   # the server's share (all its threads; clock-tick resolution)
        SRV_US[(name, size)] = sorted(srv)[len(srv) // 2] / N * 1e6
        benchmark.extra_info["server_cpu_us_per_frame"] = round(SRV_US[(name, size)], 2)


@pytest.mark.parametrize("size", SIZES)
def test_pipeline(benchmark, loop, nc, server, size):
    _run(benchmark, loop, nc, server, "pipeline", _pipeline, size)


@pytest.mark.parametrize("size", SIZES)
def test_publish_async(benchmark, loop, nc, server, size):
    _run(benchmark, loop, nc, server, "publish_async", _publish_async, size)


@pytest.mark.parametrize("size", SIZES)
def test_core(benchmark, loop, nc, server, size):
    _run(benchmark, loop, nc, server, "core", _core, size)


def _paired(loop, nc, size: int) -> list[float]:
    """pipeline/publish_async rate ratio of PAIRS back-to-back pairs of rounds."""
    ratios = []
    for k in range(PAIRS):
        order = (_pipeline, _publish_async) if k % 2 == 0 else (_publish_async, _pipeline)
        took = {}
        for fn in order:
            t0 = time.perf_counter()
            loop.run_until_complete(fn(nc, size))
            took[fn] = time.perf_counter() - t0
        ratios.append(took[_publish_async] / took[_pipeline])
    return ratios


def test_ratios(benchmark, loop, nc):
    benchmark.pedantic(lambda: None, rounds=1)
    lines = []
    for size in SIZES:
        p, a, c = (RESULTS.get((k, size)) for k in ("pipeline", "publish_async", "core"))
        if not (p and a and c):
            pytest.skip("run the whole module for ratios")
    load0 = os.getloadavg()
    for size in SIZES:
        p, a, c = (RESULTS[(k, size)] for k in ("pipeline", "publish_async", "core"))
        cp, ca = CPU_US[("pipeline", size)], CPU_US[("publish_async", size)]
        lines.append(f"{size:5d} B: pipeline {p:9.0f}/s  publish_async {a:9.0f}/s  "
                     f"core {c:9.0f}/s  pipeline/publish_async {p / a:4.2f}x  "
                     f"pipeline/core {p / c:4.2f}  client CPU/frame: pipeline {cp:.1f} us, "
                     f"publish_async {ca:.1f} us ({ca / cp:.2f}x)")
        sp, sa = SRV_US.get(("pipeline", size)), SRV_US.get(("publish_async", size))
        if sp and sa:
            lines.append(f"{size:5d} B: server CPU/frame: pipeline {sp:.1f} us, publish_async "
                         f"{sa:.1f} us; client + server: pipeline {cp + sp:.1f} us, "
                         f"publish_async {ca + sa:.1f} us ({(ca + sa) / (cp + sp):.2f}x)")
        benchmark.extra_info[f"ratio_vs_publish_async_{size}"] = round(p / a, 2)
        if PAIRS:
            r = _paired(loop, nc, size)
            med = statistics.median(r)
            lines.append(f"{size:5d} B: paired pipeline/publish_async over {len(r)} pairs: "
                         f"median {med:4.2f}x (min {min(r):4.2f}x, max {max(r):4.2f}x)")
            benchmark.extra_info[f"paired_ratio_vs_publish_async_{size}"] = round(med, 2)
            benchmark.extra_info[f"paired_ratio_min_{size}"] = round(min(r), 2)
    load1 = os.getloadavg()
    lines.append("load average: " + " ".join(f"{x:.2f}" for x in load0) + " before the pairs, "
                 + " ".join(f"{x:.2f}" for x in load1) + " after")
    print("\n" + "\n".join(lines))


_PRODUCER = r"""
import sys, time, ring
path, rate, count, size = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
body = b"book.BTC|" + b"x" * (size - 9)
with ring.Producer(path) as p:
    t0 = time.monotonic()
    for i in range(count):
        d = t0 + i / rate - time.monotonic()
        if d > 0:
            time.sleep(d)
        p.write(body)
"""


@pytest.mark.parametrize("rate", [5000])
def test_recv_to_ack_latency(benchmark, server, rate):
    import numpy as np

    import ring
    from flusher.publisher.publish import Publisher
    from flusher.publisher.routing import test_subject_fn
    from flusher.publisher.stream import parse_config
    count = int(rate * float(os.environ.get("CAPTURE_BENCH_SECONDS", "4")))
    lat: list[int] = []

    def once() -> None:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "bench.ring")
            ring.create(path, capacity=16 << 20).close()
            bus = parse_config({"servers": [server.url], "prefix": "latency",
                                "streams": {"lat": {"name": "BENCH_LAT"}}})

            async def main() -> None:
                pub = Publisher(path, venue="lat", shard=0, bus=bus,
                                subject_fn=test_subject_fn("latency", "lat"))
                task = asyncio.ensure_future(pub.run())
                started = asyncio.ensure_future(pub.started.wait())
                await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
                if task.done():
                    task.result()          # raises what stopped the publisher
                pub.pipe.latencies = lat
                env = dict(os.environ, PYTHONPATH=os.getcwd())
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", _PRODUCER, path, str(rate), str(count), "256", env=env)
                await proc.wait()
                pub.stop()
                assert await task == 0
            asyncio.run(main())

    benchmark.group = "recv-to-ack latency"
    benchmark.pedantic(once, rounds=1, iterations=1)
    a = np.array(lat, dtype=np.float64) / 1e6
    pct = {p: float(np.percentile(a, p)) for p in (50, 90, 99, 99.9)}
    benchmark.extra_info.update({f"p{p}_ms": round(v, 3) for p, v in pct.items()})
    benchmark.extra_info["max_ms"] = round(float(a.max()), 3)
    print(f"\nrecv-to-ack at {rate}/s offered, {len(a)} frames: "
          + "  ".join(f"p{p} {v:.2f} ms" for p, v in pct.items()) + f"  max {a.max():.2f} ms")


@pytest.mark.parametrize("size", [256])
def test_catchup_vs_live(benchmark, server, size):
    from publish_catchup_helpers import catch_up, prepare, prepare_live
    out: dict[str, dict] = {}

    def once() -> None:
        with tempfile.TemporaryDirectory() as d:
            disk = prepare(d, N, size)
            live = prepare_live(d, N, size)
            out["catchup"] = catch_up(server.url, d, disk, "BENCH_CATCHUP")
            out["live"] = catch_up(server.url, d, live, "BENCH_CATCHUP")

    benchmark.group = f"publisher catch-up vs live {size} B x {N}"
    benchmark.pedantic(once, rounds=1, iterations=1)
    cu, lv = out["catchup"], out["live"]
    assert cu["code"] == 0 and lv["code"] == 0
    assert cu["disk_frames"] > N // 2, cu["stats"]     # it really was lapped
    assert lv["disk_frames"] == 0, lv["stats"]         # and this one really was not
    rate = {k: v["frames"] / v["seconds"] for k, v in out.items()}
    cpu = {k: v["cpu"] / v["frames"] * 1e6 for k, v in out.items()}
    for k in out:
        benchmark.extra_info[f"{k}_frames_per_s"] = round(rate[k])
        benchmark.extra_info[f"{k}_cpu_us_per_frame"] = round(cpu[k], 2)
    benchmark.extra_info["catchup_over_live"] = round(rate["catchup"] / rate["live"], 2)
    print(f"\npublisher {size} B x {N}: catch-up from disk {rate['catchup']:.0f}/s "
          f"({cu['disk_frames']} frames from the files, {cpu['catchup']:.2f} us CPU/frame), "
          f"live from the ring {rate['live']:.0f}/s ({cpu['live']:.2f} us CPU/frame): "
          f"catch-up/live {rate['catchup'] / rate['live']:.2f}x, load average "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
