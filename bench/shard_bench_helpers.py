"""One whole shard under ``capture run``, fed by the simulator's paced blast,
measured from outside: the helpers of bench/test_shard_bench.py.

Theory of operation, one *step* (:func:`capture_step`):

1. a fresh simulator process (Kraken spot, one connection) is told to blast
   ``rate x seconds`` pre-framed trade frames of ``size`` bytes at ``rate``
   frames/s once the shard subscribes (``rate`` 0: as fast as the socket
   takes them);
2. a fresh shard (its own ring, data directory and stream prefix, so steps
   never see each other's frames) runs under ``capture run --shard 0`` with
   a generated config: receiver, flusher, publisher and the Kraken book
   checksum validator, against the one real nats-server of the run;
3. a :class:`Sampler` thread reads the ring's counters and cursors (frames
   in, drops, fill, each reader's position), the status files and the
   stream's message count from the server's monitoring endpoint every
   ``SAMPLE_S``; CPU times of every child of the supervisor and of
   nats-server are read with psutil when the first blast frame is in the
   ring and again when the publisher has acked everything the ring holds;
4. the shard is stopped with SIGTERM (the ordered drain), then the segment
   files are read back: data frames, drop records, and the receive stamps
   of the blast frames (their first-to-last span gives the rate the shard
   actually received, whatever the sender managed).

Latency percentiles come from the flusher's and publisher's status-file
histograms (common/histogram.py: log2 microsecond buckets, so a percentile
is the upper bound of its bucket: "p99 <= 8.2 ms"), besides the exact
receive-to-stored figures read back from JetStream.  What is read from
outside the shard (CPU, segments, the stream, verdicts) is in
bench/shard_bench_measure.py.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import psutil

import ring
from capture.simulator import Blast, Scenario, SimulatorProcess
from common.status import read_status, status_path
from flusher.publisher.nats_embedded import NatsServer
from flusher.publisher.stream import stream_name
from shard_bench_measure import VENUE, cpu_snapshot, percentiles_from, read_back, stored_latency

SAMPLE_S = 0.1
WINDOW = 4096          # publisher window (the config default): frames in flight


def env_list(name: str, default: str, conv=float) -> list:
    return [conv(x) for x in os.environ.get(name, default).split(",") if x.strip()]


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


# -- the run's environment --------------------------------------------------------------------
class Run:
    """One benchmark run: a private work directory and the one nats-server
    (file storage) every step publishes to."""

    def __init__(self) -> None:
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self.ring_base = tempfile.mkdtemp(prefix="capture-shard-bench-", dir=shm)
        self.work = tempfile.mkdtemp(prefix="capture-shard-bench-")
        for d in (self.ring_base, self.work):
            os.chmod(d, 0o700)
        self.nats = NatsServer(os.path.join(self.work, "nats")).start()
        self.steps = 0

    def close(self) -> None:
        self.nats.stop()
        shutil.rmtree(self.ring_base, ignore_errors=True)
        shutil.rmtree(self.work, ignore_errors=True)

    def drop_step(self, ring_dir: str, step_dir: str, stream: str) -> None:
        """Free a measured step's disk: its segments, ring and stream (a full
        run writes tens of GB otherwise).  The shard log stays.
        CAPTURE_SHARD_KEEP=1 keeps everything (until the run ends)."""
        if os.environ.get("CAPTURE_SHARD_KEEP") == "1":
            return
        shutil.rmtree(ring_dir, ignore_errors=True)
        shutil.rmtree(os.path.join(step_dir, "data"), ignore_errors=True)
        import asyncio

        import nats

        async def main() -> None:
            nc = await nats.connect(self.nats.url, connect_timeout=5)
            try:
                await nc.jetstream().delete_stream(stream)
            finally:
                await nc.close()
        try:
            asyncio.run(main())
        except Exception as exc:   # space, not a figure: say so and go on
            print(f"note: could not delete stream {stream}: {exc}", file=sys.stderr)

    def new_step_dirs(self) -> tuple[str, str, str, str]:
        """(prefix, ring dir, data dir, step dir) of a fresh step."""
        self.steps += 1
        prefix = f"b{self.steps}"
        ring_dir = os.path.join(self.ring_base, prefix)
        step_dir = os.path.join(self.work, prefix)
        data_dir = os.path.join(step_dir, "data")
        for d in (ring_dir, step_dir, data_dir):
            os.makedirs(d, mode=0o700)
        return prefix, ring_dir, data_dir, step_dir

    # -- the server's view of a stream: no client connection, works during an outage --
    def stream_messages(self, name: str) -> int | None:
        if not self.nats.running:
            return None
        url = f"http://127.0.0.1:{self.nats.http_port}/jsz?accounts=true&streams=true"
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                d = json.load(r)
        except (OSError, ValueError):
            return None
        for acc in d.get("account_details") or []:
            for s in acc.get("stream_detail") or []:
                if s.get("name") == name:
                    return int(s["state"]["messages"])
        return 0


def shard_config(path: str, ring_dir: str, data_dir: str, nats_url: str, sim: SimulatorProcess,
                 prefix: str, capacity: int) -> str:
    lines = [
        "# written by bench/shard_bench_helpers.py",
        "[ring]", f'dir = "{ring_dir}"', f"capacity = {capacity}",
        "[storage]", f'data_dir = "{data_dir}"', 'fsync = "interval"', "compress = false",
        'drain_timeout = "60s"',
        "[nats]", f'servers = ["{nats_url}"]', f'prefix = "{prefix}"', f"window = {WINDOW}",
        "[metrics]", 'bind = "127.0.0.1"', "port_base = 0",
        f"[venues.{VENUE}]", f'url = "{sim.url(VENUE)}"', f'rest_url = "{sim.rest_url(VENUE)}"',
        "[[shard]]", "id = 0", f'venue = "{VENUE}"', "connections = 1",
        'instruments = ["BTC/USD"]', 'channels = ["trade"]',
        # A blast is one per connection: a replaced connection would get a second one.
        'silence_timeout = "1h"',
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


# -- sampling -----------------------------------------------------------------------------------
@dataclass
class Sample:
    t: float                 # seconds since the step's first blast frame was seen (or start)
    ring_frames: int         # frames written into the ring (data + control)
    drops: int               # frames the ring refused (full)
    fill: int                # bytes between the slowest tethered reader and the head
    flusher: int             # frames the flusher has read (and written) from the ring
    publisher_lag: int       # bytes between the publisher's ring cursor and the head
    publisher_lapped: int    # times the publisher found its cursor lapped
    stream: int | None       # messages in the stream (None: server down)
    mode: str | None         # publisher mode from its status file: "ring" (live) or "disk"
    received: int = 0        # WebSocket messages the receiver took (its status file)


class Sampler(threading.Thread):
    def __init__(self, run: Run, ring_path: str, ring_dir: str, stream: str) -> None:
        super().__init__(name="shard-bench-sampler", daemon=True)
        self.run_, self.ring_path, self.ring_dir, self.stream = run, ring_path, ring_dir, stream
        self.t0 = time.monotonic()
        self.samples: list[Sample] = []
        self.stop_ev = threading.Event()
        self.new = threading.Condition()

    def sample(self) -> Sample | None:
        try:
            st = ring.stats(self.ring_path)
        except (ring.RingError, OSError):
            return None
        rd = {r["name"]: r for r in st["readers"]}
        fl, pb = rd.get("flusher", {}), rd.get("publisher", {})
        ps = read_status(status_path(self.ring_dir, 0, "publisher")) or {}
        rx = read_status(status_path(self.ring_dir, 0, "receiver")) or {}
        return Sample(time.monotonic() - self.t0, st["frames"], st["drops"]["full"], st["fill_bytes"],
                      fl.get("frames_read", 0), pb.get("lag_bytes", 0), pb.get("lapped", 0),
                      self.run_.stream_messages(self.stream), ps.get("mode"),
                      sum(int(c.get("messages", 0)) for c in rx.get("connections") or []))

    def run(self) -> None:
        while not self.stop_ev.wait(SAMPLE_S):
            s = self.sample()
            if s is not None:
                with self.new:
                    self.samples.append(s)
                    self.new.notify_all()

    def wait_for(self, pred, timeout: float) -> Sample | None:
        """The first new sample satisfying ``pred``, or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        seen = len(self.samples)
        with self.new:
            while True:
                for s in self.samples[seen:]:
                    if pred(s):
                        return s
                seen = len(self.samples)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.new.wait(left)

    def stop(self) -> None:
        self.stop_ev.set()
        self.join(5)


# -- one capture step -------------------------------------------------------------------------------
@dataclass
class Outage:
    """Stop nats-server ``after_s`` seconds into the blast; bring it back
    (same port, same store) once the ring has lapped the publisher and
    ``min_s`` has passed."""
    after_s: float
    min_s: float


@dataclass
class StepResult:
    kind: str
    rate: float
    size: int
    frames: int
    capacity: int
    sender: dict = field(default_factory=dict)
    ring: dict = field(default_factory=dict)
    disk: dict = field(default_factory=dict)
    stream: int | None = None
    latency: dict = field(default_factory=dict)
    cpu_us: dict = field(default_factory=dict)
    timeline: list = field(default_factory=list)
    events: dict = field(default_factory=dict)
    complete: bool = False

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def capture_step(run: Run, rate: float, size: int, frames: int, capacity: int = 4 << 20,
                 outage: Outage | None = None, keep_timeline: bool = False,
                 timeout: float = 600.0) -> StepResult:
    prefix, ring_dir, data_dir, step_dir = run.new_step_dirs()
    res = StepResult("capture", rate, size, frames, capacity)
    sim = SimulatorProcess([VENUE], Scenario(rate=0, record="count", heartbeat_interval=3600,
                                             blast=Blast(frames=frames, size=size, rate=rate))).start()
    sup = None
    sampler = None
    try:
        cfg = shard_config(os.path.join(step_dir, "shard.toml"), ring_dir, data_dir, run.nats.url,
                           sim, prefix, capacity)
        log = open(os.path.join(step_dir, "shard.log"), "w")
        sup = subprocess.Popen([sys.executable, "-m", "capture.cli", "run", "--shard", "0", "--config", cfg],
                               stderr=log, stdout=subprocess.DEVNULL)
        log.close()
        ring_path = os.path.join(ring_dir, "shard-0.ring")
        sampler = Sampler(run, ring_path, ring_dir, stream_name(prefix, VENUE))
        sampler.start()
        extra = {"nats-server": run.nats.pid, "simulator": sim.pid}
        # The blast has begun once the ring holds more than the start-up's
        # records (about ten: the shard's and connection's control records,
        # the venue's status message, the subscription ack); the receiver's
        # own count comes from a status file written only now and then.
        first = sampler.wait_for(_blast_begun, timeout=60)
        if first is None:
            raise RuntimeError(f"the blast never reached the receiver; see {step_dir}/shard.log")
        cpu0, t_cpu0 = cpu_snapshot(sup.pid, extra), time.monotonic()
        # The histograms so far hold the start-up (control records published
        # while the stream was being set up): the step's figures exclude them.
        hist0 = _hists(ring_dir)
        if outage is not None:
            _outage(run, sampler, outage, res)
            extra["nats-server"] = run.nats.pid
            cpu0["nats-server"] = 0.0        # a new process: its CPU starts at zero
        # Done: the receiver has taken the whole blast (the venue's status
        # message, the subscription ack, the frames and the end marker), and
        # the flusher and the stream have everything the ring holds.
        expect = frames + 3

        def done(s: Sample) -> bool:
            return (s.received >= expect and s.flusher >= s.ring_frames
                    and s.stream is not None and s.stream >= s.ring_frames)
        last = sampler.wait_for(done, timeout=timeout)
        res.complete = last is not None
        cpu1, t_cpu1 = cpu_snapshot(sup.pid, extra), time.monotonic()
        sampler.stop()
        final = sampler.sample()
        try:    # the ring's own high-water mark (every write), besides our samples
            highest_fill = ring.stats(ring_path)["highest_fill_bytes"]
        except (ring.RingError, OSError):
            highest_fill = None
        sup.send_signal(signal.SIGTERM)
        try:
            sup.wait(timeout=120)
        except subprocess.TimeoutExpired:
            sup.kill()
            sup.wait()
        summary = sim.stop()
        sim = None
        disk_hist, ack_hist = (_minus(a, b) for a, b in zip(_hists(ring_dir), hist0))
        res.sender = _sender(summary)
        res.disk = read_back(data_dir)
        res.stream = run.stream_messages(stream_name(prefix, VENUE))
        res.latency["recv_to_stored_exact"] = stored_latency(run.nats.url, stream_name(prefix, VENUE),
                                                             f"{prefix}.>")
        st = final or sampler.samples[-1]
        # Fill over the step: from the first blast frame to the end of the drain.
        fills = [s.fill for s in sampler.samples if first.t <= s.t <= (last.t if last else st.t)] or [0]
        res.ring = {"frames": st.ring_frames, "drops": st.drops, "highest_fill": highest_fill,
                    "fill_max": max(fills), "fill_mean": sum(fills) / len(fills),
                    "publisher_lapped": max(st.publisher_lapped,
                                                int(any(x.publisher_lag > capacity for x in sampler.samples))),
                    "capacity": capacity}
        res.latency = {**res.latency, "recv_to_disk": percentiles_from(disk_hist),
                       "recv_to_ack": percentiles_from(ack_hist),
                       "recv_to_disk_hist_us": disk_hist, "recv_to_ack_hist_us": ack_hist}
        msgs = max(1, res.disk["blast"])
        res.cpu_us = {k: (cpu1.get(k, 0.0) - cpu0.get(k, 0.0)) / msgs * 1e6 for k in cpu1}
        res.cpu_us["capture_total"] = sum(v for k, v in res.cpu_us.items()
                                          if k not in ("nats-server", "simulator"))
        res.events["cpu_window_s"] = t_cpu1 - t_cpu0
        res.events["first_frame_t"] = first.t
        res.events["exit_code"] = sup.returncode
        res.events.update(_rates(sampler.samples, first.t))
        if keep_timeline or outage is not None or rate == 0:
            res.timeline = [s.__dict__ for s in sampler.samples]
        run.drop_step(ring_dir, step_dir, stream_name(prefix, VENUE))
        return res
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        if sup is not None and sup.poll() is None:
            sup.kill()
            sup.wait()
        if sim is not None:
            sim.stop()
        if not run.nats.running:
            run.nats.start()


def _hists(ring_dir: str) -> tuple[list[int], list[int]]:
    """The flusher's receive-to-disk and the publisher's receive-to-ack
    histograms as their status files have them now."""
    fl = read_status(status_path(ring_dir, 0, "flusher")) or {}
    pb = read_status(status_path(ring_dir, 0, "publisher")) or {}
    return list(fl.get("recv_to_disk_hist_us") or []), list(pb.get("recv_to_ack_hist_us") or [])


def _minus(a: list[int], b: list[int]) -> list[int]:
    b = b + [0] * (len(a) - len(b))
    return [x - y for x, y in zip(a, b)]


def _sender(summary: list[dict]) -> dict:
    blast = [s.get("blast") for s in summary if s.get("blast")]
    out = {"sent": sum(int(s.get("count", 0)) for s in summary)}
    if blast:
        b = blast[0]
        out.update(achieved_rate=b["achieved_rate"], seconds=b["seconds"],
                   max_due_frames=b["max_due_frames"], sender_cpu_s=b["sender_cpu_s"])
    return out


def _outage(run: Run, sampler: Sampler, o: Outage, res: StepResult) -> None:
    sampler.wait_for(lambda s: s.t >= o.after_s + res_first(sampler), timeout=o.after_s + 60)
    t_stop = time.monotonic() - sampler.t0
    run.nats.stop()
    # Lapped: the head is more than a ring ahead of the publisher's cursor (a
    # publisher blocked on NATS does not read, so it has not noticed yet).
    lapped = sampler.wait_for(lambda s: s.publisher_lag > res.capacity and s.t - t_stop >= o.min_s,
                              timeout=max(120.0, 4 * o.min_s))
    run.nats.start()
    t_start = time.monotonic() - sampler.t0
    res.events.update(nats_stopped_t=t_stop, nats_started_t=t_start,
                      lapped_during_outage=lapped is not None)


def _blast_begun(s: Sample) -> bool:
    return s.ring_frames >= 32 or s.received > 2


def res_first(sampler: Sampler) -> float:
    for s in sampler.samples:
        if _blast_begun(s):
            return s.t
    return 0.0


def _rates(samples: list[Sample], t_first: float) -> dict[str, Any]:
    """The stream's growth rate while it grew (the live publish rate of a
    step where the publisher was never lapped)."""
    grow = [s for s in samples if s.stream is not None and s.t >= t_first]
    if len(grow) < 2:
        return {}
    lo = next((s for s in grow if s.stream > grow[0].stream), None)
    hi = next((s for s in reversed(grow) if s.stream < grow[-1].stream), None)
    if lo is None or hi is None or hi.t <= lo.t:
        return {}
    return {"stream_rate": (hi.stream - lo.stream) / (hi.t - lo.t)}


# -- catch-up analysis ---------------------------------------------------------------------------
def catchup(res: StepResult) -> dict[str, Any]:
    """Catch-up rate and time until the stream equals the disk.

    Catch-up starts when NATS is back (outage) or when the blast has ended
    (lapping blast: the sender is done, the flusher has it all) and ends at
    the first sample where the stream holds what the flusher has read, less
    one publish window in flight.  The rate is the stream's growth over that
    interval, frames/s."""
    tl = [Sample(**d) for d in res.timeline]
    if not tl:
        return {}
    if "nats_started_t" in res.events:
        t0 = res.events["nats_started_t"]
    else:
        total = res.ring["frames"]
        end = next((s for s in tl if s.ring_frames >= total and s.flusher >= total), None)
        if end is None:
            return {}
        t0 = end.t
    # The stream's count when catch-up starts: during an outage the server
    # cannot be asked, and the count it comes back with is the one it had.
    before = [s for s in tl if s.t <= t0 and s.stream is not None]
    after = [s for s in tl if s.t >= t0]
    if not before or not after:
        return {}
    base, first = before[-1].stream, after[0]
    lag = first.flusher - base
    if lag <= WINDOW:
        return {"t0": t0, "lag_at_start": lag}
    caught = next((s for s in after if s.stream is not None and s.stream >= s.flusher - WINDOW), None)
    if caught is None:
        return {"t0": t0, "lag_at_start": lag, "caught_up": False}
    secs = caught.t - t0
    return {"t0": t0, "lag_at_start": lag, "caught_up": True, "seconds": secs,
            "rate": (caught.stream - base) / secs if secs > 0 else None}


# -- the peer ---------------------------------------------------------------------------------------
def peer_step(run: Run, rate: float, size: int, frames: int, timeout: float = 600.0) -> dict:
    """The same feed into bench/shard_peer.py (websockets -> file -> JetStream
    publish_async), a process of its own so its CPU is its own."""
    prefix, ring_dir, data_dir, step_dir = run.new_step_dirs()
    sim = SimulatorProcess([VENUE], Scenario(rate=0, record="count", heartbeat_interval=3600,
                                             blast=Blast(frames=frames, size=size, rate=rate))).start()
    out = os.path.join(step_dir, "peer.json")
    peer = None
    try:
        peer = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "shard_peer.py"),
                                 "--url", sim.url(VENUE), "--nats", run.nats.url, "--stream", f"PEER_{prefix}",
                                 "--subject", f"peer.{prefix}", "--file", os.path.join(data_dir, "peer.log"),
                                 "--frames", str(frames), "--result", out])
        nats0 = psutil.Process(run.nats.pid).cpu_times()
        peer.wait(timeout=timeout)
        nats1 = psutil.Process(run.nats.pid).cpu_times()
        summary = sim.stop()
        sim = None
        with open(out) as f:
            r = json.load(f)
        n = max(1, r["received"])
        r.update(kind="peer", rate=rate, size=size, frames=frames, sender=_sender(summary),
                 stream=run.stream_messages(f"PEER_{prefix}"))
        r["cpu_us"] = {"peer": r["cpu_s"] / n * 1e6,
                       "nats-server": ((nats1.user + nats1.system) - (nats0.user + nats0.system)) / n * 1e6}
        run.drop_step(ring_dir, step_dir, f"PEER_{prefix}")
        return r
    finally:
        if peer is not None and peer.poll() is None:
            peer.kill()
            peer.wait()
        if sim is not None:
            sim.stop()
