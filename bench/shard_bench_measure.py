"""What the whole-shard benchmark measures from outside the shard: CPU by
process (psutil), the segment files read back, the exact receive-to-stored
latency read back from JetStream, the sustained-rate verdicts and the host.
Used by bench/shard_bench_helpers.py."""
from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import psutil

import ring
from common.histogram import log2_percentile

VENUE = "kraken"
#: A blast frame on disk starts like this (capture.simulator.kraken.blast_frame).
BLAST_PREFIX = b'{"channel":"trade","type":"update"'
#: Which supervisor child is which, by the module on its command line.
ROLES = (("flusher.segments.drain", "flusher"), ("capture.publish", "publisher"),
         ("flusher.publisher.process", "publisher"),
         ("capture.receiver.integrity", "integrity"), ("capture.receiver", "receiver"))


# -- CPU ------------------------------------------------------------------------------------------
def role_of(p: psutil.Process) -> str:
    try:
        cmd = " ".join(p.cmdline())
    except psutil.Error:
        return "?"
    for module, role in ROLES:
        if module in cmd:
            return role
    return "other"


def cpu_snapshot(sup_pid: int, extra: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) by role: the supervisor, each child, and
    ``extra`` pids (nats-server, the simulator)."""
    out: dict[str, float] = {}
    try:
        sup = psutil.Process(sup_pid)
        procs = [("supervisor", sup)] + [(role_of(c), c) for c in sup.children(recursive=True)]
    except psutil.Error:
        procs = []
    for name, pid in extra.items():
        try:
            procs.append((name, psutil.Process(pid)))
        except psutil.Error:
            pass
    for name, p in procs:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        out[name] = out.get(name, 0.0) + t.user + t.system
    return out


# -- read-back ------------------------------------------------------------------------------------
def read_back(data_dir: str) -> dict[str, Any]:
    """Frames on disk: data frames, blast frames and their receive-stamp span,
    control records by kind, and the frames the drop records account for."""
    import orjson
    from flusher.segments import read as segread
    frames = data = blast = dropped = 0
    kinds: dict[str, int] = {}
    first_ts = last_ts = None
    for fr in segread.read(os.path.join(data_dir, VENUE)):
        frames += 1
        if fr.type == ring.FrameType.DATA:
            data += 1
            if bytes(fr.payload[:len(BLAST_PREFIX)]) == BLAST_PREFIX:
                blast += 1
                if first_ts is None:
                    first_ts = fr.ts_ns
                last_ts = fr.ts_ns
            continue
        try:
            rec = orjson.loads(fr.payload)
        except orjson.JSONDecodeError:
            rec = {}
        k = rec.get("kind", "?")
        kinds[k] = kinds.get(k, 0) + 1
        if k == "drop":
            dropped += int(rec.get("count", 0))
    span = (last_ts - first_ts) / 1e9 if first_ts is not None and last_ts != first_ts else None
    return {"frames": frames, "data": data, "blast": blast, "control": kinds,
            "drop_records": kinds.get("drop", 0), "dropped_in_records": dropped,
            "recv_span_s": span, "recv_rate": blast / span if span else None}


def percentiles_from(hist: list[int] | None) -> dict[str, float | None]:
    h = hist or []
    return {f"p{q}": log2_percentile(h, f) for q, f in (("50", 0.5), ("99", 0.99), ("99.9", 0.999))}


# -- exact receive-to-stored latency --------------------------------------------------------
EXACT_MAX = int(float(os.environ.get("CAPTURE_SHARD_EXACT_MAX", 200_000)))


def stored_latency(url: str, stream: str, subject: str, max_msgs: int = EXACT_MAX) -> dict[str, Any]:
    """Receive stamp to the time JetStream stored the message, exactly, per
    message: every published frame carries its receive stamp in the
    ``Capture-Recv-Ns`` header, and the server's delivery metadata carries
    the time it stored the message (same host, same clock).  The read-back
    takes up to ``max_msgs`` blast frames from the middle of the stream (the
    steady state), through an ordered consumer, after the step."""
    import asyncio

    import nats
    import numpy as np
    from nats.js.api import ConsumerConfig, DeliverPolicy

    async def main() -> list[int]:
        nc = await nats.connect(url, connect_timeout=5)
        try:
            js = nc.jetstream()
            st = (await js.stream_info(stream)).state
            n = st.last_seq - st.first_seq + 1
            start = st.first_seq + max(0, (n - max_msgs) // 2)
            want = min(n, max_msgs)
            out: list[int] = []
            seen = 0
            done = asyncio.Event()

            async def cb(msg) -> None:
                nonlocal seen
                seen += 1
                if msg.data.startswith(BLAST_PREFIX) and msg.headers:
                    stored = msg.metadata.timestamp.timestamp()
                    out.append(int(stored * 1e9) - int(msg.headers["Capture-Recv-Ns"]))
                if seen >= want:
                    done.set()
            sub = await js.subscribe(subject, cb=cb, ordered_consumer=True,
                                     config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                                           opt_start_seq=start))
            try:
                await asyncio.wait_for(done.wait(), 120)
            finally:
                await sub.unsubscribe()
            return out
        finally:
            await nc.close()

    try:
        lat = asyncio.run(main())
    except Exception as exc:      # a figure missing is reported, never fatal to the run
        return {"error": f"{type(exc).__name__}: {exc}"}
    if not lat:
        return {"n": 0}
    a = np.asarray(lat, dtype=np.float64) / 1e9
    p50, p99, p999 = np.percentile(a, [50, 99, 99.9])
    return {"n": len(lat), "p50": float(p50), "p99": float(p99), "p99.9": float(p999), "max": float(a.max())}


# -- verdicts ----------------------------------------------------------------------------------------
P99_LIMIT_S = 0.010
BEHIND = 0.05


def _p99(s: float | None) -> str:
    return "-" if s is None else f"{s * 1e3:.1f} ms"


def capture_sustained(r: dict) -> tuple[bool, str]:
    if not r.get("complete"):
        return False, "did not finish"
    if r["ring"]["drops"] or r["disk"]["dropped_in_records"]:
        return False, f"{r['ring']['drops']} dropped"
    # The exact receive-to-stored p99 when the read-back worked (an ack is
    # that plus the ack's way back over loopback), else the histogram's
    # bucket bound (an upper bound: up to 2x the true value).
    exact = r["latency"].get("recv_to_stored_exact") or {}
    p99 = exact.get("p99") if exact.get("n") else r["latency"]["recv_to_ack"]["p99"]
    if p99 is None or p99 > P99_LIMIT_S:
        return False, f"recv->ack p99 {_p99(p99)}"
    got = r["disk"].get("recv_rate")
    if got is not None and got < (1 - BEHIND) * r["rate"]:
        return False, f"received {got:.0f}/s" + _sender_note(r)
    return True, "ok"


def _sender_note(r: dict) -> str:
    """A receive rate short of the offer: the socket pushed back, or the
    driver itself could not keep its schedule (its CPU says which)."""
    sent = (r.get("sender") or {}).get("achieved_rate")
    if sent is not None and sent < (1 - BEHIND) * r["rate"]:
        return f"; the sender managed {sent:.0f}/s (push-back, or the driver's own limit)"
    return ""


def peer_sustained(r: dict) -> tuple[bool, str]:
    if r.get("failed") or r["acked"] < r["received"] or r["received"] < r["frames"]:
        return False, f"acked {r['acked']} of {r['received']} received of {r['frames']}"
    p99 = r["recv_to_ack"]["p99"]
    if p99 is None or p99 > P99_LIMIT_S:
        return False, f"recv->ack p99 {_p99(p99)}"
    got = r.get("recv_rate")
    if got is not None and got < (1 - BEHIND) * r["rate"]:
        return False, f"received {got:.0f}/s" + _sender_note(r)
    return True, "ok"


def host_info(nats_binary: str) -> dict[str, str]:
    import platform
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        nv = subprocess.run([nats_binary, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        nv = "?"
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                timeout=10, cwd=here).stdout.strip()
        if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                          text=True, timeout=10, cwd=here).stdout.strip():
            commit += " (with uncommitted changes)"
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    return {"cpu": cpu, "cores": str(os.cpu_count()), "kernel": platform.release(),
            "python": platform.python_version(), "nats_server": nv, "commit": commit or "?",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg())}
