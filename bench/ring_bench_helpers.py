"""Helpers for bench/test_ring_bench.py: child-process bodies, C builds, statistics.

Every measurement runs the producer and the reader in two processes started
with the ``spawn`` method (fresh interpreters, nothing inherited from pytest),
each pinned to its own core when the machine has two or more (see
:func:`cpu_pair`).  A round goes:

1. the parent starts both children; each attaches, pins itself and sets its
   ``ready`` event;
2. the parent sets ``go`` (this is where pytest-benchmark's timer starts);
3. the producer takes ``t0`` (CLOCK_MONOTONIC, shared by all processes) and
   writes its frames; the reader takes ``t_end`` when it has received the
   last one; both send their figures back through a pipe.

frames/s = frames / (t_end - t0); GB/s counts payload bytes only (1e9 B/s).

This module must stay importable by a spawned child, so it imports nothing
from pytest and nothing from the test module.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue
import shutil
import statistics
import struct
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Callable

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
CSRC_DIR = os.path.join(os.path.dirname(BENCH_DIR), "csrc")

_CTX = mp.get_context("spawn")
_TS = struct.Struct("<q")


# -- machine ------------------------------------------------------------------
def cpu_pair() -> tuple[int | None, int | None]:
    """(producer cpu, reader cpu): two distinct cores, or (None, None) if the
    process may use fewer than two.  CAPTURE_BENCH_NO_PIN=1 disables pinning."""
    if os.environ.get("CAPTURE_BENCH_NO_PIN"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return cpus[0], cpus[1]


def pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def scaled(n: int) -> int:
    """Frame counts scale with CAPTURE_BENCH_SCALE (default 1.0)."""
    return max(1000, int(n * float(os.environ.get("CAPTURE_BENCH_SCALE", "1"))))


def percentiles(values: list[int] | Any) -> dict[str, float]:
    import numpy as np

    a = np.asarray(values, dtype=np.float64)
    p50, p90, p99, p999 = np.percentile(a, [50, 90, 99, 99.9])
    # The distribution too, for plots: bucket i counts values in [2**i, 2**(i+1)) ns.
    hist = np.bincount(np.floor(np.log2(np.maximum(a, 1))).astype(np.int64), minlength=40)
    return {"n": int(a.size), "p50_us": p50 / 1e3, "p90_us": p90 / 1e3, "p99_us": p99 / 1e3,
            "p999_us": p999 / 1e3, "max_us": float(a.max()) / 1e3, "mean_us": float(a.mean()) / 1e3,
            "hist_log2_ns": hist.tolist()}


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# -- C programs -----------------------------------------------------------------
def compiler() -> str | None:
    for cc in (os.environ.get("CC"), "gcc", "cc"):
        if cc and shutil.which(cc):
            return cc
    return None


def build_c_programs(out_dir: str) -> dict[str, str]:
    """Compile the plain-C reference and the C-core driver with -O2.

    Returns {"ref": exe, "core": exe}.  Raises RuntimeError (with the
    compiler's output) if there is no compiler or the build fails.
    """
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler (set CC)")
    flags = ["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    jobs = {
        "ref": [cc, *flags, "-pthread", os.path.join(BENCH_DIR, "ref_ring.c"), "-o",
                os.path.join(out_dir, "ref_ring")],
        "core": [cc, *flags, "-I", CSRC_DIR, os.path.join(CSRC_DIR, "ring.c"), os.path.join(CSRC_DIR, "reader.c"), os.path.join(CSRC_DIR, "crc32c.c"),
                 os.path.join(BENCH_DIR, "ring_core_bench.c"), "-o", os.path.join(out_dir, "ring_core_bench")],
    }
    out = {}
    for name, cmd in jobs.items():
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"building {name} failed:\n{' '.join(cmd)}\n{r.stderr}")
        out[name] = cmd[-1]
    return out


def _run_json(cmd: list[str], timeout: float) -> dict:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.strip()} {r.stdout.strip()}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_ref(exe: str, frame_bytes: int, n: int, *, crc: bool = False, stamp: bool = False,
            capacity: int = 4 << 20) -> dict:
    cp, cr = cpu_pair()
    cmd = [exe, "-s", str(frame_bytes), "-n", str(n), "-C", str(capacity)]
    if cp is not None:
        cmd += ["-p", str(cp), "-r", str(cr)]
    if crc:
        cmd.append("-c")
    if stamp:
        cmd.append("-t")
    return _run_json(cmd, timeout=120)


def run_core(exe: str, ring_path: str, frame_bytes: int, n: int) -> dict:
    cp, cr = cpu_pair()
    cmd = [exe, "-f", ring_path, "-s", str(frame_bytes), "-n", str(n)]
    if cp is not None:
        cmd += ["-p", str(cp), "-r", str(cr)]
    return _run_json(cmd, timeout=120)


def run_core_latency(exe: str, ring_path: str, frame_bytes: int, n: int, interval_ns: int,
                     spin_ns: int) -> dict:
    cp, cr = cpu_pair()
    cmd = [exe, "-f", ring_path, "-s", str(frame_bytes), "-n", str(n), "-L", str(interval_ns),
           "-w", str(spin_ns)]
    if cp is not None:
        cmd += ["-p", str(cp), "-r", str(cr)]
    return _run_json(cmd, timeout=120)


# -- a producer/reader pair of processes ----------------------------------------
class PairRun:
    """Two spawned processes, started and made ready outside the timed part."""

    def __init__(self, producer: Callable, producer_args: tuple, reader: Callable,
                 reader_args: tuple, timeout: float = 120.0,
                 producer_kwargs: dict | None = None) -> None:
        self.timeout = timeout
        self.go = _CTX.Event()
        rd_ready, pr_ready = _CTX.Event(), _CTX.Event()
        self._rd_recv, rd_send = _CTX.Pipe(duplex=False)
        self._pr_recv, pr_send = _CTX.Pipe(duplex=False)
        cp, cr = cpu_pair()
        self.reader = _CTX.Process(target=reader, args=(*reader_args, cr, rd_ready, rd_send), daemon=True)
        self.producer = _CTX.Process(target=producer,
                                     args=(*producer_args, cp, pr_ready, self.go, pr_send),
                                     kwargs=producer_kwargs or {}, daemon=True)
        self.reader.start()
        if not rd_ready.wait(60):
            self.kill()
            raise RuntimeError("reader process did not start")
        self.producer.start()
        if not pr_ready.wait(60):
            self.kill()
            raise RuntimeError("producer process did not start")

    def run(self) -> tuple[dict, dict]:
        """Release the producer; wait for both figures."""
        self.go.set()
        try:
            for conn, proc in ((self._pr_recv, self.producer), (self._rd_recv, self.reader)):
                if not conn.poll(self.timeout):
                    raise RuntimeError(f"{proc.name} sent no result in {self.timeout}s")
            prod, rd = self._pr_recv.recv(), self._rd_recv.recv()
        except BaseException:
            self.kill()
            raise
        for p in (self.producer, self.reader):
            p.join(30)
        self.kill()
        for d in (prod, rd):
            if "error" in d:
                raise RuntimeError(d["error"])
        return prod, rd

    def kill(self) -> None:
        for p in (self.producer, self.reader):
            if p.is_alive():
                p.kill()
                p.join(5)


def _guard(body: Callable, conn: Any, *args: Any) -> None:
    try:
        conn.send(body(*args))
    except BaseException as e:  # the parent raises it
        import traceback

        conn.send({"error": f"{type(e).__name__}: {e}\n{traceback.format_exc()}"})


# -- throughput: this ring, from Python ------------------------------------------
def ring_reader_main(path: str, n: int, spin_us: float, cpu, ready, conn) -> None:
    _guard(_ring_reader, conn, path, n, spin_us, cpu, ready)


def _ring_reader(path, n, spin_us, cpu, ready):
    import numpy as np

    import ring

    pin(cpu)
    rd = ring.Reader(path, "bench", tethered=True, spin_us=spin_us)
    ready.set()
    got = batches = other = 0
    wait, read, commit = rd.wait, rd.read, rd.commit
    while got < n:
        if not wait(10.0):
            raise RuntimeError(f"reader timed out after {got} frames")
        b = read()
        k = len(b)
        d = int(np.count_nonzero(b.type == 1))  # DATA; gap records are CONTROL
        got += d
        other += k - d
        batches += 1
        commit(b)
    t_end = time.monotonic_ns()
    rd.close()
    return {"t_end": t_end, "frames": got, "batches": batches, "control_frames": other}


def ring_producer_main(path: str, n: int, frame_bytes: int, mode: str, cpu, ready, go, conn) -> None:
    _guard(_ring_producer, conn, path, n, frame_bytes, mode, cpu, ready, go)


def _ring_producer(path, n, frame_bytes, mode, cpu, ready, go):
    import ring

    pin(cpu)
    payload = os.urandom(frame_bytes)
    full = 0
    if mode == "write":
        # The API the receiver uses: Producer.write, one frame per call.
        p = ring.Producer(path)
        w, OK = p.write, ring.WriteStatus.OK
        ready.set()
        go.wait()
        t0 = time.monotonic_ns()
        for _ in range(n):
            while w(payload) is not OK:  # FULL: the reader lags; count and retry
                full += 1
        t1 = time.monotonic_ns()
        p.close()
    elif mode == "cffi":
        # Diagnostic: the bare cffi call, no Python wrapper around it.
        from ring._ringlib import ffi, lib

        rf = ring.attach(path)
        pp = ffi.new("ring_producer_t *")
        lib.ring_producer_open(pp, rf.base, os.getpid(), time.time_ns())
        w, ln = lib.ring_write, len(payload)
        ready.set()
        go.wait()
        t0 = time.monotonic_ns()
        for _ in range(n):
            while w(pp, payload, ln, 1, 0, 0, 0) < 0:
                full += 1
        t1 = time.monotonic_ns()
        lib.ring_producer_close(pp, time.time_ns())
        rf.close()
    else:
        raise ValueError(mode)
    return {"t0": t0, "t_written": t1, "full_retries": full}


# -- throughput: multiprocessing.Queue -------------------------------------------
def mpq_reader_main(q, n: int, cpu, ready, conn) -> None:
    _guard(_mpq_reader, conn, q, n, cpu, ready)


def _mpq_reader(q, n, cpu, ready):
    pin(cpu)
    ready.set()
    get = q.get
    for _ in range(n):
        get(timeout=30)
    return {"t_end": time.monotonic_ns(), "frames": n}


def mpq_producer_main(q, n: int, frame_bytes: int, cpu, ready, go, conn) -> None:
    _guard(_mpq_producer, conn, q, n, frame_bytes, cpu, ready, go)


def _mpq_producer(q, n, frame_bytes, cpu, ready, go):
    # Each peer is driven with its own plain call (put() here, put(block,
    # timeout) for faster-fifo): a shared helper with a timeout would use
    # mp.Queue's slower timed-semaphore path and understate the peer.
    pin(cpu)
    payload = os.urandom(frame_bytes)
    put = q.put
    ready.set()
    go.wait()
    t0 = time.monotonic_ns()
    for _ in range(n):
        put(payload)
    t1 = time.monotonic_ns()
    return {"t0": t0, "t_written": t1, "full_retries": 0}


# -- throughput: faster-fifo -------------------------------------------------------
def ff_queue(max_bytes: int = 4 << 20):
    """A faster-fifo queue of raw bytes (no pickling: the peer's fastest mode)."""
    import faster_fifo

    return faster_fifo.Queue(max_size_bytes=max_bytes, dumps=_identity, loads=_identity)


def _identity(x):
    return x


def ff_reader_main(q, n: int, cpu, ready, conn) -> None:
    _guard(_ff_reader, conn, q, n, cpu, ready)


def _ff_reader(q, n, cpu, ready):
    pin(cpu)
    ready.set()
    got = batches = 0
    get_many = q.get_many
    while got < n:
        got += len(get_many(block=True, timeout=30, max_messages_to_get=4096))
        batches += 1
    return {"t_end": time.monotonic_ns(), "frames": got, "batches": batches}


def ff_producer_main(q, n: int, frame_bytes: int, cpu, ready, go, conn) -> None:
    _guard(_ff_producer, conn, q, n, frame_bytes, cpu, ready, go)


def _ff_producer(q, n, frame_bytes, cpu, ready, go):
    pin(cpu)
    payload = os.urandom(frame_bytes)
    put = q.put
    ready.set()
    go.wait()
    t0 = time.monotonic_ns()
    for _ in range(n):
        put(payload, block=True, timeout=30)  # waits when the queue is full
    t1 = time.monotonic_ns()
    return {"t0": t0, "t_written": t1, "full_retries": 0}


# -- one-way latency -----------------------------------------------------------------
def _pace(deadline_ns: int) -> None:
    """Sleep most of the way to the deadline, spin the rest (sleep alone
    overshoots by tens of microseconds)."""
    left = deadline_ns - time.perf_counter_ns()
    if left > 150_000:
        time.sleep((left - 100_000) / 1e9)
    while time.perf_counter_ns() < deadline_ns:
        pass


def ring_lat_producer_main(path: str, total: int, interval_ns: int, frame_bytes: int, cpu, ready, go,
                           conn, stamp: str = "core") -> None:
    _guard(_ring_lat_producer, conn, path, total, interval_ns, frame_bytes, cpu, ready, go, stamp)


def _ring_lat_producer(path, total, interval_ns, frame_bytes, cpu, ready, go, stamp="core"):
    """stamp "core": ``write(payload)``, the core stamps inside the call (the
    API's default; the compiled receiver path also stamps in C).  "python":
    ``write(payload, ts=time.time_ns())``, the stamp taken in Python before
    the call, so the caller's own call overhead is part of the figure."""
    import ring

    pin(cpu)
    payload = os.urandom(frame_bytes)
    p = ring.Producer(path)
    w, now = p.write, time.time_ns
    ready.set()
    go.wait()
    wakes0 = ring.stats(path)["wakes"]
    nxt = time.perf_counter_ns()
    py_stamp = stamp == "python"
    for _ in range(total):
        nxt += interval_ns
        _pace(nxt)
        if py_stamp:
            w(payload, ts=now())
        else:
            w(payload)
    wakes = ring.stats(path)["wakes"] - wakes0
    p.close()
    return {"wakes": int(wakes)}


def ring_lat_reader_main(path: str, total: int, warm: int, spin_us: float, cpu, ready, conn) -> None:
    _guard(_ring_lat_reader, conn, path, total, warm, spin_us, cpu, ready)


def _ring_lat_reader(path, total, warm, spin_us, cpu, ready):
    import ring

    pin(cpu)
    rd = ring.Reader(path, "lat", tethered=True, spin_us=spin_us)
    ready.set()
    lat: list[int] = []
    got = 0
    now = time.time_ns
    read = rd.read
    while got < total:
        if spin_us < 0:  # poll read() from Python, no wait() call at all
            b = read()
            if not len(b):
                continue
        else:  # wait and read in one C call: the low-latency way to follow a ring
            b = read(10.0)
            if not len(b):
                raise RuntimeError(f"latency reader timed out after {got} frames")
        t = now()
        for ts in b.ts.tolist():
            lat.append(t - ts)
        got += len(b)
        rd.commit(b)
    rd.close()
    return {"lat": percentiles(lat[warm:]), "frames": got}


def ff_lat_producer_main(q, total: int, interval_ns: int, frame_bytes: int, cpu, ready, go, conn) -> None:
    _guard(_ff_lat_producer, conn, q, total, interval_ns, frame_bytes, cpu, ready, go)


def _ff_lat_producer(q, total, interval_ns, frame_bytes, cpu, ready, go):
    pin(cpu)
    body = bytearray(os.urandom(frame_bytes))
    put, now, pack = q.put, time.time_ns, _TS.pack_into
    ready.set()
    go.wait()
    nxt = time.perf_counter_ns()
    for _ in range(total):
        nxt += interval_ns
        _pace(nxt)
        pack(body, 0, now())
        put(bytes(body), block=True, timeout=10)
    return {}


def ff_lat_reader_main(q, total: int, warm: int, poll: bool, cpu, ready, conn) -> None:
    _guard(_ff_lat_reader, conn, q, total, warm, poll, cpu, ready)


def _ff_lat_reader(q, total, warm, poll, cpu, ready):
    pin(cpu)
    ready.set()
    lat: list[int] = []
    get_many, now, unpack = q.get_many, time.time_ns, _TS.unpack_from
    got = 0
    while got < total:
        if poll:
            try:
                msgs = get_many(block=False, max_messages_to_get=4096)
            except queue.Empty:
                continue
        else:
            msgs = get_many(block=True, timeout=10, max_messages_to_get=4096)
        t = now()
        for m in msgs:
            lat.append(t - unpack(m, 0)[0])
        got += len(msgs)
    return {"lat": percentiles(lat[warm:]), "frames": got}


def mpq_lat_producer_main(q, total: int, interval_ns: int, frame_bytes: int, cpu, ready, go, conn) -> None:
    _guard(_mpq_lat_producer, conn, q, total, interval_ns, frame_bytes, cpu, ready, go)


def _mpq_lat_producer(q, total, interval_ns, frame_bytes, cpu, ready, go):
    pin(cpu)
    body = bytearray(os.urandom(frame_bytes))
    put, now, pack = q.put, time.time_ns, _TS.pack_into
    ready.set()
    go.wait()
    nxt = time.perf_counter_ns()
    for _ in range(total):
        nxt += interval_ns
        _pace(nxt)
        pack(body, 0, now())
        put(bytes(body))
    return {}


def mpq_lat_reader_main(q, total: int, warm: int, poll: bool, cpu, ready, conn) -> None:
    _guard(_mpq_lat_reader, conn, q, total, warm, cpu, ready)


def _mpq_lat_reader(q, total, warm, cpu, ready):
    pin(cpu)
    ready.set()
    lat: list[int] = []
    get, now, unpack = q.get, time.time_ns, _TS.unpack_from
    for _ in range(total):
        m = get(timeout=10)
        lat.append(now() - unpack(m, 0)[0])
    return {"lat": percentiles(lat[warm:]), "frames": total}


# -- results ---------------------------------------------------------------------------
@dataclass
class Series:
    """The per-round figures of one case."""

    fps: list[float] = field(default_factory=list)
    gbps: list[float] = field(default_factory=list)
    extra: list[dict] = field(default_factory=list)

    def add(self, frames: int, frame_bytes: int, seconds: float, **extra: Any) -> None:
        self.fps.append(frames / seconds)
        self.gbps.append(frames * frame_bytes / seconds / 1e9)
        self.extra.append(extra)


def new_queue(kind: str):
    if kind == "mpq":
        return _CTX.Queue()
    if kind == "ff":
        return ff_queue()
    raise ValueError(kind)
