"""The receiver: frames/s from the simulator's blast mode into the ring, per
transport and frame size, and receive-timestamp jitter under a burst.

Throughput.  The simulator runs in a child process (``SimulatorProcess``,
Kraken spot, ``Blast``: pre-framed frames written as fast as the socket takes
them) pinned to one core; the receiver runs here, pinned to the other, with
its real code path: :class:`capture.receiver.Receiver` ->
:class:`capture.receiver.connection.Connection` -> transport -> the ring's C write
(``Producer.raw_write``) into a 4 MiB ring on /dev/shm (no reader, so the ring
never refuses).  The
rate is counted from the receiver's own receive stamps: frames after the
subscription went live, over the time from going live to the stamp of the
blast's end marker.  Also reported: the receiver's CPU time per frame (process
CPU time over the blast / frames), which a busy machine disturbs much less
than the wall-clock rate.  Cases:

* ``picows``          the picows transport (callback listener, no copies above 64 KiB)
* ``websockets``      the websockets transport (hooked frame callback, no queue)
* ``websockets-loop`` reference: the classic ``async for msg in ws`` loop of
                      the websockets library writing each message into the
                      ring (what a receiver built the obvious way does)

Jitter.  The simulator sends Kraken trades at a steady rate with bursts
(``clock="wall"``: each message's ``timestamp`` is the wall clock when it was
built, microsecond resolution, i.e. its send time); afterwards the ring is
read and ``ring receive stamp - message timestamp`` is summarised (p50, p99,
max).  Same host, same clock.

Numbers are printed and summarised with ratios at the end of the run, never
asserted; each case also prints the 1-minute load average at its start and
end (the machine may be shared: read the rates with it).  CAPTURE_BENCH_SCALE scales frame counts; CAPTURE_BENCH_ROUNDS sets
rounds per case; CAPTURE_BENCH_NO_PIN=1 turns off pinning; set
CAPTURE_RECEIVER_RESULTS_JSON=<file> to write every round's figures.

Run: ``make bench`` or ``pytest bench/test_receiver_bench.py --benchmark-only -s``.
"""
from __future__ import annotations

import asyncio
import os
import statistics
import time

import orjson
import pytest

import ring
from capture.receiver.lifecycle import Timing
from capture.receiver.pinning import online_cores, pin
from capture.receiver.process import Receiver, ReceiverConfig
from capture.simulator import Blast, Scenario, SimulatorProcess, blast_marker
from capture.venues import KrakenSpot
from ring.frame import FrameType

SIZES = [256, 2048]
CASES = ["picows", "websockets", "websockets-loop"]
SCALE = float(os.environ.get("CAPTURE_BENCH_SCALE", "1"))
ROUNDS = int(os.environ.get("CAPTURE_BENCH_ROUNDS", "3"))
PIN = os.environ.get("CAPTURE_BENCH_NO_PIN") != "1" and len(online_cores()) >= 2
N = {"picows": {256: 1_500_000, 2048: 500_000},
     "websockets": {256: 400_000, 2048: 200_000},
     "websockets-loop": {256: 300_000, 2048: 150_000}}
CORE_SIM, CORE_RX = (online_cores()[0], online_cores()[1]) if PIN else (None, None)

RESULTS: dict[tuple[str, int], list[float]] = {}
CPU: dict[tuple[str, int], list[float]] = {}
LOAD: dict[tuple[str, int], tuple[float, float]] = {}   # 1-min load average at start, end
JITTER: dict[str, dict[str, float]] = {}
TIMING = Timing(connect_timeout=10, subscribe_timeout=10, ping_interval=0, silence_timeout=0,
                stagger=0, stagger_jitter=0)


class _Pinned:
    """Pin this process (all threads) to the receiver core for a round."""

    def __enter__(self):
        self.old = os.sched_getaffinity(0)
        if PIN:
            pin([CORE_RX])
        return self

    def __exit__(self, *exc):
        if PIN:
            pin(sorted(self.old))


def _sim(scenario: Scenario) -> SimulatorProcess:
    sp = SimulatorProcess(["kraken"], scenario).start()
    if PIN:
        pin([CORE_SIM], pid=sp.pid)
    return sp


def _frames(case: str, size: int) -> int:
    return max(10_000, int(N[case][size] * SCALE))


async def _receiver_round(ring_path: str, url: str, transport: str, n: int) -> tuple[float, float]:
    cfg = ReceiverConfig(ring=ring_path, venue="kraken", url=url, symbols=["BTC/USD"],
                         channels=["trade"], transport=transport, timing=TIMING,
                         stats_interval=0, seed=1)
    p = ring.Producer(ring_path)
    try:
        rx = Receiver(cfg, p)
        task = asyncio.ensure_future(rx.run())
        # status + ack + n blast frames + the end marker
        cpu0 = f0 = None
        while not rx.connections or rx.connections["kraken-0"].frames < n + 3:
            await asyncio.sleep(0.02)
            if task.done():
                task.result()
            if cpu0 is None and rx.connections and rx.connections["kraken-0"].frames > 1000:
                cpu0, f0 = time.process_time(), rx.connections["kraken-0"].frames
        cpu1 = time.process_time()
        c = rx.connections["kraken-0"]
        frames, t0, t1 = c.frames - c.live_frames, c.live_ns, c.last_data_ns
        cpu_us = (cpu1 - cpu0) / (c.frames - f0) * 1e6 if cpu0 is not None else float("nan")
        rx.stop()
        await task
    finally:
        p.close()
    return frames / ((t1 - t0) / 1e9), cpu_us


async def _websockets_loop_round(ring_path: str, url: str, n: int) -> tuple[float, float]:
    """The obvious receiver: ``async for`` over websockets, one write per message."""
    from websockets.asyncio.client import connect
    marker = blast_marker(n)
    p = ring.Producer(ring_path)
    write, data = p.write, int(FrameType.DATA)
    try:
        async with connect(url, max_size=64 << 20, compression=None, max_queue=None,
                           ping_interval=None) as ws:
            await ws.send(KrakenSpot().subscribe("trade", ["BTC/USD"]).decode())
            t0 = 0
            cpu0 = 0.0
            async for msg in ws:
                ts = time.time_ns()
                b = msg.encode() if isinstance(msg, str) else msg
                write(b, data, ts, 0, 0)
                if not t0 and b.startswith(b'{"channel":"trade"'):
                    t0, cpu0 = ts, time.process_time()
                if b == marker:
                    return n / ((ts - t0) / 1e9), (time.process_time() - cpu0) / n * 1e6
    finally:
        p.close()
    raise RuntimeError("blast ended without its marker")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("case", CASES)
def test_receiver_throughput(benchmark, make_ring, bench_summary, case, size):
    n = _frames(case, size)
    rates: list[float] = []
    cpus: list[float] = []
    load0 = os.getloadavg()[0]

    def one_round():
        path = make_ring(4 << 20)
        sp = _sim(Scenario(rate=0, record="count", heartbeat_interval=3600,
                           blast=Blast(frames=n, size=size)))
        try:
            with _Pinned():
                if case == "websockets-loop":
                    r, cpu = asyncio.run(_websockets_loop_round(path, sp.url("kraken"), n))
                else:
                    r, cpu = asyncio.run(_receiver_round(path, sp.url("kraken"), case, n))
        finally:
            summary = sp.stop()
        sent = sum(s["count"] for s in summary)
        assert sent >= n + 1, summary    # the whole blast was sent and received
        rates.append(r)
        cpus.append(cpu)

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    RESULTS[(case, size)] = rates
    CPU[(case, size)] = cpus
    LOAD[(case, size)] = (load0, os.getloadavg()[0])
    benchmark.extra_info.update({"frames": n, "frames_per_s": rates, "cpu_us_per_frame": cpus,
                                 "median_frames_per_s": statistics.median(rates),
                                 "load_average": LOAD[(case, size)]})
    print(f"\nreceiver {case:16s} {size:5d} B: median {statistics.median(rates) / 1e6:.3f} M frames/s"
          f" (rounds: {', '.join(f'{r / 1e6:.3f}' for r in rates)}); receiver CPU "
          f"{statistics.median(cpus):.2f} us/frame (rounds: {', '.join(f'{c:.2f}' for c in cpus)});"
          f" load {LOAD[(case, size)][0]:.2f} -> {LOAD[(case, size)][1]:.2f}")
    bench_summary.set_renderer("receiver throughput (frames/s, median of rounds)", _render)
    _dump_json()


def _render() -> list[str]:
    lines = [f"{'case':18s} {'size':>6s} {'M frames/s':>11s} {'MB/s':>8s}  vs websockets-loop"
             f"  {'CPU us/frame':>12s}  {'CPU vs loop':>11s}  {'load':>11s}"]
    for (case, size), rates in sorted(RESULTS.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        med = statistics.median(rates)
        base = RESULTS.get(("websockets-loop", size))
        ratio = f"{med / statistics.median(base):5.2f}x" if base else "   -"
        cpu = statistics.median(CPU.get((case, size)) or [float("nan")])
        base_cpu = CPU.get(("websockets-loop", size))
        cpu_ratio = f"{statistics.median(base_cpu) / cpu:5.2f}x" if base_cpu else "   -"
        l0, l1 = LOAD.get((case, size), (float("nan"), float("nan")))
        lines.append(f"{case:18s} {size:6d} {med / 1e6:11.3f} {med * size / 1e6:8.1f}  {ratio:>17s}"
                     f"  {cpu:12.2f}  {cpu_ratio:>11s}  {l0:4.2f}->{l1:4.2f}")
    for size in SIZES:
        a, b = RESULTS.get(("picows", size)), RESULTS.get(("websockets", size))
        if a and b:
            lines.append(f"picows / websockets transport, {size} B: "
                         f"{statistics.median(a) / statistics.median(b):.2f}x")
    lines.append(f"pinned: {'sim core %s, receiver core %s' % (CORE_SIM, CORE_RX) if PIN else 'no'}")
    return lines


# --------------------------------------------------------------------------
# Jitter
# --------------------------------------------------------------------------

def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


@pytest.mark.parametrize("transport", ["picows", "websockets"])
def test_receive_timestamp_jitter_under_burst(benchmark, make_ring, bench_summary, transport):
    total = max(2_000, int(20_000 * SCALE))
    lat_us: list[float] = []

    def one_round():
        path = make_ring(64 << 20)   # holds the whole run: read it afterwards
        sp = _sim(Scenario(rate=2000, burst_every=500, burst_size=2000, max_messages=total,
                           clock="wall", heartbeat_interval=3600, record="count"))
        try:
            with _Pinned():
                asyncio.run(_jitter_round(path, sp.url("kraken"), transport, total))
        finally:
            sp.stop()
        lat_us.extend(_latencies(path))

    benchmark.pedantic(one_round, rounds=1, iterations=1, warmup_rounds=0)
    JITTER[transport] = {"n": len(lat_us), "p50_us": _percentile(lat_us, 0.50),
                         "p99_us": _percentile(lat_us, 0.99), "max_us": max(lat_us)}
    benchmark.extra_info.update(JITTER[transport])
    j = JITTER[transport]
    print(f"\njitter {transport}: n={j['n']} p50 {j['p50_us']:.0f} us  p99 {j['p99_us']:.0f} us"
          f"  max {j['max_us']:.0f} us")
    bench_summary.set_lines("receiver: send -> receive stamp under burst (us)", [
        f"{t:12s} n={v['n']:6d}  p50 {v['p50_us']:8.0f}  p99 {v['p99_us']:8.0f}  max {v['max_us']:8.0f}"
        for t, v in JITTER.items()])
    _dump_json()


async def _jitter_round(path: str, url: str, transport: str, total: int) -> None:
    cfg = ReceiverConfig(ring=path, venue="kraken", url=url, symbols=["BTC/USD"],
                         channels=["trade"], transport=transport, timing=TIMING,
                         stats_interval=0, seed=1)
    p = ring.Producer(path)
    try:
        rx = Receiver(cfg, p)
        task = asyncio.ensure_future(rx.run())
        # the trade snapshot + `total` updates, after status and ack
        while not rx.connections or rx.connections["kraken-0"].frames < total + 2:
            await asyncio.sleep(0.02)
        rx.stop()
        await task
    finally:
        p.close()


def _latencies(path: str) -> list[float]:
    out = []
    with ring.Reader(path, "jitter", tethered=False, start="oldest", max_frames=1 << 16) as rd:
        while rd.available():
            b = rd.read()
            for f in b:
                if f.type == FrameType.DATA and bytes(f.payload[:20]) == b'{"channel":"trade","':
                    raw = bytes(f.payload)
                    if b'"type":"update"' not in raw:
                        continue
                    sent = KrakenSpot.exchange_ts_ns(raw)
                    if sent is not None:
                        out.append((f.ts - sent) / 1e3)
    return out


def _dump_json() -> None:
    path = os.environ.get("CAPTURE_RECEIVER_RESULTS_JSON")
    if path:
        with open(path, "wb") as f:
            f.write(orjson.dumps({"throughput": {f"{c}/{s}": r for (c, s), r in RESULTS.items()},
                                  "cpu_us_per_frame": {f"{c}/{s}": r for (c, s), r in CPU.items()},
                                  "load_average": {f"{c}/{s}": r for (c, s), r in LOAD.items()},
                                  "jitter": JITTER, "pinned": PIN}, option=orjson.OPT_INDENT_2))
