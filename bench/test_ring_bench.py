"""The ring against its peers: throughput and one-way latency, all in one run.

Throughput, 256 B and 2 KiB frames, producer and reader in separate
processes (threads for the C reference), pinned to two different cores:

* ``ring-py``      this ring from Python: ``Producer.write`` per frame; the
                   reader process ``wait``/``read``/``commit``s batches
* ``ring-cffi``    diagnostic: the same, but the producer calls the cffi
                   ``lib.ring_write`` directly (no Python wrapper)
* ``c-core``       csrc/ring.c driven from C (bench/ring_core_bench.c, two
                   processes over a real ring file): the core without Python
* ``ref-c``        plain-C two-thread SPSC ring of the same logic
                   (bench/ref_ring.c), compiled here with the system compiler
* ``ref-c+crc+ts`` diagnostic: the reference plus CRC32C and a clock read
                   per frame, the two per-frame costs the core has on top
* ``mp.Queue``     multiprocessing.Queue, put per frame, get per frame
* ``faster-fifo``  faster_fifo.Queue (4 MiB, raw bytes, no pickling), put per
                   frame, get_many on the reader side

One-way latency, 256 B frames, one every 200 us: the ring's writer calls
``write(payload)`` and the core stamps CLOCK_REALTIME inside the call (the
API's default; the receiver's compiled path also stamps in C); one more ring
case stamps in Python just before the call (``write(payload,
ts=time.time_ns())``), which adds the caller's own call overhead; the queue
peers can only stamp in Python before their put.  The reader computes
``time.time_ns() - ts`` after its read returns.
Ring with a spinning reader (spin_us = 2 s), a sleeping one (spin_us = 0:
50 us of sched_yield, then the futex), both calling ``read(timeout)`` (wait
and read in one C call), and one that polls ``read()`` from Python without
waiting; the spinning and sleeping ones from C (ring_core_bench
-L: the core stamps inside ring_write, the reader takes the clock after
ring_read_batch), which is the floor the Python figures sit on; faster-fifo
with a blocking get (its wake-up) and a polling get; mp.Queue with a
blocking get.  The first 500 samples of each round (C: the first 5 %) are
warm-up and dropped.

Numbers are printed (and summarised with ratios at the end of the run),
never asserted.  Set CAPTURE_RING_RESULTS_MD=<file> to also write the summary
table as markdown and CAPTURE_RING_RESULTS_JSON=<file> for every round's
raw figures; CAPTURE_BENCH_SCALE scales frame counts, CAPTURE_BENCH_ROUNDS
sets the rounds per case, and CAPTURE_BENCH_NO_PIN=1 turns off pinning.

Run: ``make bench`` or ``pytest bench/test_ring_bench.py --benchmark-only -s``.
"""
from __future__ import annotations

import json
import os
import platform
import time

import pytest

import ring_bench_helpers as h
import ring_bench_report as report

SIZES = [256, 2048]
ROUNDS = int(os.environ.get("CAPTURE_BENCH_ROUNDS", "5"))
LAT_ROUNDS = ROUNDS
LAT_INTERVAL_NS = 200_000
LAT_SAMPLES = 5_000
LAT_WARM = 500

# frames per round, for roughly 0.3 - 1 s per round on an idle 2-core VM
N = {
    "ref-c": {256: 5_000_000, 2048: 2_000_000},
    "ref-c+crc+ts": {256: 3_000_000, 2048: 1_000_000},
    "c-core": {256: 3_000_000, 2048: 1_000_000},
    "ring-py": {256: 1_000_000, 2048: 500_000},
    "ring-cffi": {256: 1_000_000, 2048: 500_000},
    "mp.Queue": {256: 100_000, 2048: 100_000},
    "faster-fifo": {256: 300_000, 2048: 200_000},
}

TPUT: dict[tuple[str, int], h.Series] = {}
LAT: dict[str, list[dict]] = {}
LOADAVG: list[float] = []  # 1-minute load average at the start of every test


@pytest.fixture(autouse=True)
def _note_load():
    LOADAVG.append(os.getloadavg()[0])
    yield


def _series(case: str, size: int) -> h.Series:
    return TPUT.setdefault((case, size), h.Series())


def _show(case: str, size: int) -> None:
    s = TPUT[(case, size)]
    print(f"\n  {case:>13} {size:5d} B: median {h.median(s.fps) / 1e6:8.3f} M frames/s "
          f"{h.median(s.gbps):7.3f} GB/s  (rounds: "
          + ", ".join(f"{x / 1e6:.2f}" for x in s.fps) + " M/s)")


# -- fixtures --------------------------------------------------------------------
@pytest.fixture(scope="session")
def c_programs(tmp_path_factory):
    try:
        return h.build_c_programs(str(tmp_path_factory.mktemp("ring-c")))
    except RuntimeError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module", autouse=True)
def _register_summary(bench_summary):
    bench_summary.set_renderer("ring benchmark summary (medians of rounds)", _summary_lines)
    yield


# -- throughput: C ---------------------------------------------------------------
@pytest.mark.parametrize("frame_bytes", SIZES)
@pytest.mark.parametrize("variant", ["ref-c", "ref-c+crc+ts"])
def test_tput_ref_c(benchmark, c_programs, frame_bytes, variant):
    n = h.scaled(N[variant][frame_bytes])
    extra = variant == "ref-c+crc+ts"

    def once():
        r = h.run_ref(c_programs["ref"], frame_bytes, n, crc=extra, stamp=extra)
        _series(variant, frame_bytes).add(r["frames"], frame_bytes, r["seconds"],
                                          full_spins=r["full_spins"])

    benchmark.pedantic(once, rounds=ROUNDS, iterations=1)
    _show(variant, frame_bytes)


@pytest.mark.parametrize("frame_bytes", SIZES)
def test_tput_c_core(benchmark, c_programs, make_ring, frame_bytes):
    n = h.scaled(N["c-core"][frame_bytes])

    def setup():
        return (make_ring(),), {}

    def once(path):
        r = h.run_core(c_programs["core"], path, frame_bytes, n)
        _series("c-core", frame_bytes).add(r["frames"], frame_bytes, r["seconds"],
                                           full_retries=r["full_retries"], batches=r["batches"],
                                           reader_waits=r["reader_waits"])
        os.unlink(path)

    benchmark.pedantic(once, setup=setup, rounds=ROUNDS, iterations=1)
    _show("c-core", frame_bytes)
    e = TPUT[("c-core", frame_bytes)].extra
    print(f"    producer FULL retries per frame (median): "
          f"{h.median([x['full_retries'] / n for x in e]):.2f}; "
          f"frames per reader batch: {h.median([n / max(1, x['batches']) for x in e]):.1f}")


# -- throughput: Python peers -------------------------------------------------------
def _pair_bench(benchmark, case: str, frame_bytes: int, make_setup) -> None:
    n = h.scaled(N[case][frame_bytes])

    def setup():
        return (make_setup(n),), {}

    def once(pair: h.PairRun):
        prod, rd = pair.run()
        if rd["frames"] < n:
            raise RuntimeError(f"{case}: reader got {rd['frames']} of {n} frames")
        _series(case, frame_bytes).add(n, frame_bytes, (rd["t_end"] - prod["t0"]) / 1e9,
                                       full_retries=prod["full_retries"],
                                       write_s=(prod["t_written"] - prod["t0"]) / 1e9,
                                       batches=rd.get("batches", n))

    benchmark.pedantic(once, setup=setup, rounds=ROUNDS, iterations=1)
    _show(case, frame_bytes)
    e = TPUT[(case, frame_bytes)].extra
    print(f"    producer FULL retries per frame: {h.median([x['full_retries'] / n for x in e]):.3f}; "
          f"frames per reader batch: {h.median([n / max(1, x['batches']) for x in e]):.1f}; "
          f"producer-only rate: {h.median([n / x['write_s'] for x in e]) / 1e6:.3f} M/s")


@pytest.mark.parametrize("frame_bytes", SIZES)
@pytest.mark.parametrize("mode", ["write", "cffi"])
def test_tput_ring_python(benchmark, make_ring, frame_bytes, mode):
    case = "ring-py" if mode == "write" else "ring-cffi"

    def make(n):
        path = make_ring()
        return h.PairRun(h.ring_producer_main, (path, n, frame_bytes, mode),
                         h.ring_reader_main, (path, n, 200.0))

    _pair_bench(benchmark, case, frame_bytes, make)


@pytest.mark.parametrize("frame_bytes", SIZES)
@pytest.mark.parametrize("kind", ["mpq", "ff"])
def test_tput_queue_peers(benchmark, frame_bytes, kind):
    case = {"mpq": "mp.Queue", "ff": "faster-fifo"}[kind]
    prod = {"mpq": h.mpq_producer_main, "ff": h.ff_producer_main}[kind]
    rd = {"mpq": h.mpq_reader_main, "ff": h.ff_reader_main}[kind]

    def make(n):
        q = h.new_queue(kind)
        return h.PairRun(prod, (q, n, frame_bytes), rd, (q, n))

    _pair_bench(benchmark, case, frame_bytes, make)


# -- per-call costs, one process, one core ----------------------------------------------
# Not a peer comparison: the cost of each step on a warm cache, with the
# min of many short rounds (robust against a shared machine), so the
# cross-process figures above can be explained.  Per frame = round time / K.
K = 1000
MICRO: dict[tuple[str, int], float] = {}  # (step, size) -> ns per frame (min round)


@pytest.mark.parametrize("frame_bytes", SIZES)
@pytest.mark.parametrize("step", ["Producer.write", "lib.ring_write (cffi)", "Reader.read+commit"])
def test_micro_per_frame(benchmark, make_ring, frame_bytes, step):
    import ring

    path = make_ring()
    p = ring.Producer(path)
    rd = ring.Reader(path, "micro", tethered=True)
    payload = os.urandom(frame_bytes)

    def drain():
        while True:
            b = rd.read()
            if not len(b):
                return
            rd.commit(b)

    def fill():
        for _ in range(K):
            p.write(payload)

    if step == "Producer.write":
        w = p.write

        def target():
            for _ in range(K):
                w(payload)
        setup = drain
    elif step == "lib.ring_write (cffi)":
        # The bare cffi call with the producer's own state (a private
        # attribute, on purpose: this isolates the wrapper's cost).
        from ring._ringlib import lib

        pp, w, n = p._pp, lib.ring_write, len(payload)

        def target():
            for _ in range(K):
                w(pp, payload, n, 1, 0, 0, 0)
        setup = drain
    else:
        def target():
            b = rd.read()
            assert len(b) == K
            rd.commit(b)

        def setup():
            drain()
            fill()
    try:
        benchmark.pedantic(target, setup=setup, rounds=300, iterations=1, warmup_rounds=5)
        MICRO[(step, frame_bytes)] = benchmark.stats.stats.min / K * 1e9
        print(f"\n  {step:>22} {frame_bytes:5d} B: {MICRO[(step, frame_bytes)]:7.1f} ns/frame (min of rounds)")
    finally:
        rd.close()
        p.close()


# -- one-way latency -------------------------------------------------------------------
LAT_CASES = {
    "ring, spinning reader": "ring-spin",
    "ring, spinning reader, ts from Python": "ring-spin-pyts",
    "ring, futex-sleeping reader": "ring-futex",
    "ring, reader polling read()": "ring-poll",
    "c-core, spinning reader": "core-spin",
    "c-core, futex-sleeping reader": "core-futex",
    "faster-fifo, blocking get": "ff-block",
    "faster-fifo, polling get": "ff-poll",
    "mp.Queue, blocking get": "mpq-block",
}


@pytest.mark.parametrize("case", list(LAT_CASES))
def test_latency_one_way(benchmark, request, make_ring, case):
    kind = LAT_CASES[case]
    total = h.scaled(LAT_SAMPLES) + LAT_WARM
    if kind.startswith("core"):
        exe = request.getfixturevalue("c_programs")["core"]

        def core_once(path):
            r = h.run_core_latency(exe, path, 256, total, LAT_INTERVAL_NS,
                                   2_000_000_000 if kind == "core-spin" else 0)
            LAT.setdefault(case, []).append(r)
            os.unlink(path)

        benchmark.pedantic(core_once, setup=lambda: ((make_ring(),), {}), rounds=LAT_ROUNDS, iterations=1)
        _show_lat(case)
        return

    def setup():
        if kind.startswith("ring"):
            path = make_ring()
            spin = {"ring-spin": 2_000_000.0, "ring-spin-pyts": 2_000_000.0, "ring-futex": 0.0,
                    "ring-poll": -1.0}[kind]
            stamp = "python" if kind == "ring-spin-pyts" else "core"
            pair = h.PairRun(h.ring_lat_producer_main, (path, total, LAT_INTERVAL_NS, 256),
                             h.ring_lat_reader_main, (path, total, LAT_WARM, spin),
                             producer_kwargs={"stamp": stamp})
        elif kind.startswith("ff"):
            q = h.new_queue("ff")
            pair = h.PairRun(h.ff_lat_producer_main, (q, total, LAT_INTERVAL_NS, 256),
                             h.ff_lat_reader_main, (q, total, LAT_WARM, kind == "ff-poll"))
        else:
            q = h.new_queue("mpq")
            pair = h.PairRun(h.mpq_lat_producer_main, (q, total, LAT_INTERVAL_NS, 256),
                             h.mpq_lat_reader_main, (q, total, LAT_WARM, False))
        return (pair,), {}

    def once(pair: h.PairRun):
        prod, rd = pair.run()
        r = dict(rd["lat"])
        if "wakes" in prod:
            r["futex_wakes_per_frame"] = prod["wakes"] / rd["frames"]
        LAT.setdefault(case, []).append(r)

    benchmark.pedantic(once, setup=setup, rounds=LAT_ROUNDS, iterations=1)
    _show_lat(case)


def _show_lat(case: str) -> None:
    rs = LAT[case]
    line = (f"\n  {case:>28}: p50 {h.median([r['p50_us'] for r in rs]):7.2f} us  "
            f"p99 {h.median([r['p99_us'] for r in rs]):7.2f} us  "
            f"p99.9 {h.median([r['p999_us'] for r in rs]):8.2f} us  "
            f"max {h.median([r['max_us'] for r in rs]):8.1f} us  ({rs[0]['n']} samples x {len(rs)} rounds; "
            "p50 per round: " + ", ".join(f"{r['p50_us']:.2f}" for r in rs) + ")")
    if "futex_wakes_per_frame" in rs[0]:
        line += f"  futex wakes/frame {h.median([r['futex_wakes_per_frame'] for r in rs]):.2f}"
    print(line)


# -- summary -------------------------------------------------------------------------------
def _summary_lines() -> list[str]:
    tput = {k: {"fps": v.fps, "gbps": v.gbps} for k, v in TPUT.items()}
    rows = report.rows(tput, LAT, MICRO)
    if not rows:
        return []
    cp, cr = h.cpu_pair()
    lo, hi = (min(LOADAVG), max(LOADAVG)) if LOADAVG else (float("nan"),) * 2
    lines = [f"host: {platform.machine()}, {os.cpu_count()} CPUs, 1-min load average {lo:.1f} .. {hi:.1f} "
             f"during the run; producer pinned to CPU {cp}, reader to CPU {cr}; rounds per case: {ROUNDS}; "
             "GB/s = payload bytes / s (1e9)",
             "figures: median of rounds (best round); met?: median; best round",
             *report.text_table(rows)]
    raw = os.environ.get("CAPTURE_RING_RESULTS_JSON")
    if raw:
        tput_x = {k: {"fps": v.fps, "gbps": v.gbps, "extra": v.extra} for k, v in TPUT.items()}
        with open(raw, "w", encoding="utf-8") as f:
            json.dump(report.to_json(tput_x, LAT, MICRO, LOADAVG), f, indent=1)
        lines.append(f"(raw figures written to {raw}; pool runs with bench/ring_bench_report.py)")
    md = os.environ.get("CAPTURE_RING_RESULTS_MD")
    if md:
        with open(md, "w", encoding="utf-8") as f:
            f.write(f"<!-- bench/test_ring_bench.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} -->\n")
            f.write(report.markdown_table(rows))
        lines.append(f"(markdown table written to {md})")
    return lines
