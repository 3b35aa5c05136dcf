"""Prometheus /metrics and /healthz for one shard, built at scrape time.

Nothing is kept in this process: each scrape reads the ring's shared
counters (``ring.stats``) and the small status files the children write
(``common.status``), and turns them into metric families.  So there are no
prometheus_client multiprocess files, and a restarted child's counters
continue from the ring where they live there.

Health: 200 with a JSON body when every connection is live and has received
data recently and every child is alive and fresh; 503 with the reasons
otherwise.
"""
from __future__ import annotations

import os
import platform
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable

import orjson
import psutil
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

import ring
from capture import __version__
from capture.receiver.lifecycle import RECONNECT_REASONS
from common.histogram import log2_buckets, log2_sum
from common.status import read_status, status_path
from common.errors import RingError

CHILD_ROLES = ("receiver", "flusher", "publisher", "integrity")
#: status files read besides the children's: the supervisor's restart counts
STATUS_ROLES = (*CHILD_ROLES, "supervisor")


class ShardView:
    """Everything known about one shard right now, from shared state only."""

    def __init__(self, ring_path: str, ring_dir: str, shard: int, venue: str,
                 stale_after: float = 10.0, data_dir: str | None = None,
                 restarts: Callable[[], dict[str, int]] | None = None) -> None:
        self.ring_path, self.ring_dir, self.shard, self.venue = ring_path, ring_dir, shard, venue
        self.stale_after = stale_after
        #: the segment files' directory (disk-filling metrics), and the
        #: supervisor's restart counts per child: both optional
        self.data_dir = data_dir
        self.restarts = restarts

    def snapshot(self) -> dict[str, Any]:
        try:
            st = ring.stats(self.ring_path, stale_after=self.stale_after)
        except RingError as e:  # BadRingFile, or RingDamaged: reported, never a hang
            st = {"error": str(e)}
        children = {role: read_status(status_path(self.ring_dir, self.shard, role)) for role in STATUS_ROLES}
        return {"ring": st, "children": children, "now_ns": time.time_ns()}

    def pids(self) -> dict[str, int]:
        """Live processes of the shard by role: this one (the supervisor) and
        every child that holds its ring lock."""
        out = {"supervisor": os.getpid()}
        try:
            st = ring.stats(self.ring_path, stale_after=self.stale_after)
        except RingError:     # BadRingFile, or RingDamaged: the supervisor's own figures only
            return out
        if st["producer"]["alive"] and st["producer"]["pid"]:
            out["receiver"] = st["producer"]["pid"]
        for r in st["readers"]:
            if r["alive"] and r["pid"]:
                out[r["name"]] = r["pid"]
        return out

    def health(self, idle_limit: float | None = None) -> tuple[bool, dict[str, Any]]:
        snap = self.snapshot()
        reasons: list[str] = []
        st = snap["ring"]
        now = snap["now_ns"]
        if "error" in st:
            reasons.append(f"ring: {st['error']}")
        else:
            prod = st["producer"]
            if not prod["alive"]:
                reasons.append("receiver (ring producer) is not running")
            elif not prod["fresh"]:
                reasons.append(f"receiver heartbeat is {prod['heartbeat_age_s']:.1f}s old")
            for r in st["readers"]:
                if not r["alive"]:
                    reasons.append(f"{r['name']} is not running")
                elif not r["fresh"]:
                    reasons.append(f"{r['name']} heartbeat is {r['heartbeat_age_s']:.1f}s old")
        sup = (snap["children"].get("supervisor") or {}).get("children") or {}
        for role, c in sup.items():
            if c.get("over_budget"):
                reasons.append(f"{role} keeps failing ({c.get('restarts_in_window')} restarts in the "
                               f"window, last exit {c.get('last_exit')}); retrying")
        pub = snap["children"].get("publisher") or {}
        if pub.get("nats") not in (None, "connected"):
            reasons.append(f"publisher: NATS {pub['nats']} ({pub.get('nats_error') or 'no detail'}); "
                           f"retrying, disk capture goes on")
        fl = snap["children"].get("flusher") or {}
        if fl.get("state") in ("start_blocked", "io_error"):
            reasons.append(f"flusher waits for the disk: {fl.get('last_error', '?')}")
        rec = snap["children"].get("receiver") or {}
        conns = rec.get("connections") or []
        if not conns:
            reasons.append("no connections reported by the receiver")
        for c in conns:
            limit = idle_limit if idle_limit is not None else c.get("silence_timeout", 60.0)
            if c.get("state") != "live":
                reasons.append(f"connection {c.get('id')} is {c.get('state')}")
            elif c.get("last_data_ns") and (now - c["last_data_ns"]) / 1e9 > limit:
                reasons.append(f"connection {c.get('id')} idle for {(now - c['last_data_ns']) / 1e9:.1f}s")
        body = {"shard": self.shard, "venue": self.venue, "healthy": not reasons, "reasons": reasons,
                "connections": [{k: c.get(k) for k in ("id", "state", "messages", "last_data_ns")}
                                for c in conns]}
        return not reasons, body


def publisher_lag(st: dict[str, Any], pb: dict[str, Any]) -> int | None:
    """Frames written to the ring and not yet acknowledged by JetStream: the
    one publisher-lag figure (the metric and `capture status` both use it)."""
    if "error" not in st and pb.get("acked_seq") is not None:
        return max(0, st["next_seq"] - 1 - pb["acked_seq"])
    if "error" not in st and pb:
        return st["next_seq"]  # nothing acknowledged yet
    return pb.get("lag_frames")


class SupervisorCollector(Collector):
    """What the supervisor knows beyond the ring and the status files:
    ``capture_build_info`` (constant 1, the version in labels); per process of
    the shard, the usual process metrics with a ``child`` label (psutil, read
    at scrape time; pids from the ring's liveness records); child restarts;
    and the data disk's free and total bytes."""

    def __init__(self, view: "ShardView") -> None:
        self.view = view

    def collect(self) -> Iterable[Any]:
        v = self.view
        info = GaugeMetricFamily("capture_build_info", "Version of capture and Python (always 1)",
                                 labels=["version", "python", "venue", "shard"])
        info.add_metric([__version__, platform.python_version(), v.venue, str(v.shard)], 1.0)
        yield info
        labels = ["venue", "shard", "child"]
        cpu = CounterMetricFamily("capture_process_cpu_seconds", "User and system CPU time", labels=labels)
        rss = GaugeMetricFamily("capture_process_resident_memory_bytes", "Resident memory", labels=labels)
        fds = GaugeMetricFamily("capture_process_open_fds", "Open file descriptors", labels=labels)
        start = GaugeMetricFamily("capture_process_start_time_seconds", "Start time (Unix seconds)",
                                  labels=labels)
        for child, pid in self.view.pids().items():
            try:
                p = psutil.Process(pid)
                with p.oneshot():
                    t = p.cpu_times()
                    values = (t.user + t.system, p.memory_info().rss, p.num_fds(), p.create_time())
            except (psutil.Error, OSError):
                continue   # gone between the ring read and now: no sample rather than a wrong one
            lv = [v.venue, str(v.shard), child]
            for fam, val in zip((cpu, rss, fds, start), values):
                fam.add_metric(lv, float(val))
        yield from (cpu, rss, fds, start)
        if v.restarts is not None:
            rs = CounterMetricFamily("capture_child_restarts", "Times the supervisor restarted the child",
                                     labels=labels)
            for child, n in v.restarts().items():
                rs.add_metric([v.venue, str(v.shard), child], float(n))
            yield rs
        if v.data_dir is not None:
            try:
                fs = os.statvfs(v.data_dir)
            except OSError:
                return
            base = [v.venue, str(v.shard)]
            free = GaugeMetricFamily("capture_data_disk_free_bytes",
                                     "Bytes available to the capture user on the data directory's filesystem",
                                     labels=["venue", "shard"])
            free.add_metric(base, float(fs.f_bavail * fs.f_frsize))
            size = GaugeMetricFamily("capture_data_disk_size_bytes", "Size of the data directory's filesystem",
                                     labels=["venue", "shard"])
            size.add_metric(base, float(fs.f_blocks * fs.f_frsize))
            yield from (free, size)


class ShardCollector(Collector):
    def __init__(self, view: ShardView) -> None:
        self.view = view

    def collect(self) -> Iterable[Any]:
        v = self.view
        snap = v.snapshot()
        st, ch, now = snap["ring"], snap["children"], snap["now_ns"]
        base = ["venue", "shard"]
        lv = [v.venue, str(v.shard)]

        def g(name: str, doc: str, labels: list[str] = base) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=labels)

        def c(name: str, doc: str, labels: list[str] = base) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, labels=labels)

        if "error" not in st:
            fill = g("capture_ring_fill_ratio", "Ring bytes not yet committed by the slowest tethered reader / capacity")
            fill.add_metric(lv, st["fill_ratio"])
            yield fill
            hf = g("capture_ring_highest_fill_bytes", "Highest fill the producer observed")
            hf.add_metric(lv, st["highest_fill_bytes"])
            yield hf
            drops = c("capture_ring_dropped", "Frames the ring refused", base + ["reason"])
            for reason, n in st["drops"].items():
                drops.add_metric(lv + [reason], n)
            yield drops
            owed = g("capture_ring_drops_unrecorded",
                     "Refused frames not yet written as a drop record (owed: the producer, or the "
                     "next one to open the ring, writes them first)")
            owed.add_metric(lv, st["drops_unrecorded"])
            yield owed
            frames = c("capture_ring_frames", "Frames written into the ring (data and control)")
            frames.add_metric(lv, st["frames"])
            yield frames
            up = g("capture_child_up", "1 while the child process holds its ring lock", base + ["child"])
            up.add_metric(lv + ["receiver"], 1.0 if st["producer"]["alive"] else 0.0)
            for r in st["readers"]:
                up.add_metric(lv + [r["name"]], 1.0 if r["alive"] else 0.0)
            yield up
            hb = g("capture_child_heartbeat_age_seconds", "Age of the child's heartbeat in the ring", base + ["child"])
            if st["producer"]["heartbeat_age_s"] is not None:
                hb.add_metric(lv + ["receiver"], st["producer"]["heartbeat_age_s"])
            for r in st["readers"]:
                hb.add_metric(lv + [r["name"]], r["heartbeat_age_s"])
            yield hb
            lag = g("capture_reader_lag_frames", "Frames between the producer and a reader's committed "
                    "cursor (the publisher's lag is capture_publisher_lag_frames: what is not yet acknowledged)",
                    base + ["reader"])
            for r in st["readers"]:
                if r["name"] != "publisher":   # one publisher-lag series, not two that disagree
                    lag.add_metric(lv + [r["name"]], r["lag_frames"])
            yield lag

        rec = ch.get("receiver") or {}
        conns = rec.get("connections") or []
        cl = base + ["connection"]
        connected = g("capture_websocket_connected", "1 while the connection is live", cl)
        msgs = c("capture_messages", "WebSocket messages received", cl)
        nbytes = c("capture_bytes", "WebSocket message bytes received", cl)
        idle = g("capture_idle_seconds", "Seconds since the connection last received data", cl)
        markets = g("capture_markets", "Instruments (markets) assigned to the connection", cl)
        subs = g("capture_subscriptions", "Subscriptions (channel x instrument) the venue acknowledged "
                 "(venues without acks: every subscription while live)", cl)
        reconn = c("capture_reconnects", "Reconnects by reason", cl + ["reason"])
        for conn in conns:
            # the same connection name as the logs and the records (kraken-0), not the frame id
            l2 = lv + [str(conn.get("name") or conn.get("id"))]
            connected.add_metric(l2, 1.0 if conn.get("state") == "live" else 0.0)
            msgs.add_metric(l2, conn.get("messages", 0))
            nbytes.add_metric(l2, conn.get("bytes", 0))
            if conn.get("last_data_ns"):
                idle.add_metric(l2, max(0.0, (now - conn["last_data_ns"]) / 1e9))
            markets.add_metric(l2, conn.get("members", 0))
            subs.add_metric(l2, conn.get("subscribed", 0))
            # every reason from 0, so increase() sees the first reconnect
            counts = {**dict.fromkeys(RECONNECT_REASONS, 0), **(conn.get("reconnects") or {})}
            for reason, n in counts.items():
                reconn.add_metric(l2 + [reason], n)
        yield from (connected, msgs, nbytes, idle, markets, subs, reconn)

        gaps = c("capture_gaps", "Gaps detected, by kind (drop, seq_gap, checksum, oversize, ...)", base + ["kind"])
        gap_counts: dict[str, float] = dict((rec.get("gaps") or {}))
        if "error" not in st:
            gap_counts["ring_full"] = gap_counts.get("ring_full", 0) + st["drops"]["full"]
            gap_counts["too_large"] = gap_counts.get("too_large", 0) + st["drops"]["too_large"]
        for kind, n in gap_counts.items():
            gaps.add_metric(lv + [kind], n)
        yield gaps

        def one(family: Any, value: float) -> Any:
            family.add_metric(lv, value)
            return family

        fl = ch.get("flusher") or {}
        yield one(c("capture_flusher_bytes", "Bytes the flusher wrote to segment files"), fl.get("bytes", 0))
        yield one(c("capture_flusher_frames", "Frames the flusher wrote to segment files"), fl.get("frames", 0))
        # A flusher waiting for the disk (full, read-only, a refused path) stays
        # up and says so here; the ring's drop counters show what it costs.
        yield one(g("capture_flusher_blocked", "1 while the flusher waits for the disk (start or writes)"),
                  1.0 if fl.get("state") in ("start_blocked", "io_error") else 0.0)
        yield one(c("capture_flusher_io_retries", "Disk operations the flusher retried (start, write, fsync)"),
                  fl.get("io_retries", 0) + fl.get("start_retries", 0))
        yield one(c("capture_flusher_unsafe_paths", "Segment paths refused: a symlink or non-directory there"),
                  fl.get("unsafe_paths", 0))
        yield one(c("capture_flusher_damaged_frames", "Frames lost in damaged segment regions, each in a gap record"),
                  fl.get("damaged_frames", 0))
        hist = fl.get("fsync_hist_us")
        if hist:
            h = HistogramMetricFamily("capture_flusher_fsync_seconds", "fsync latency", labels=base)
            h.add_metric(lv, log2_buckets(hist), fl.get("fsync_ns_total", 0) / 1e9)
            yield h
        hist = fl.get("recv_to_disk_hist_us")
        if hist:
            h = HistogramMetricFamily("capture_recv_to_disk_seconds",
                                      "Receive stamp to the segment write, per frame", labels=base)
            h.add_metric(lv, log2_buckets(hist), log2_sum(hist))
            yield h

        ig = ch.get("integrity")
        if ig:
            yield one(c("capture_checksum_updates", "Book updates whose checksum the validator checked"),
                      ig.get("updates", 0))
            yield one(c("capture_checksum_mismatches", "Book checksum mismatches found by the validator"),
                      ig.get("mismatches", 0))

        sup = (ch.get("supervisor") or {}).get("children") or {}
        restarts = c("capture_child_restarts", "Restarts of each child since the shard started", base + ["child"])
        over = g("capture_child_over_budget",
                 "1 while a child (publisher, validator) is past its restart budget and retrying",
                 base + ["child"])
        for role, info in sup.items():
            restarts.add_metric(lv + [role], info.get("restarts", 0))
            over.add_metric(lv + [role], 1.0 if info.get("over_budget") else 0.0)
        yield from (restarts, over)

        pb = ch.get("publisher") or {}
        yield one(c("capture_publisher_acked", "Frames acknowledged by JetStream"), pb.get("acked", 0))
        if "nats" in pb:
            yield one(g("capture_publisher_nats_connected", "1 while the publisher is connected to NATS"),
                      1.0 if pb["nats"] == "connected" else 0.0)
        pstats = pb.get("stats") or {}
        yield one(c("capture_publisher_connect_failures",
                    "Failed NATS connects (unreachable or credentials refused)"),
                  pstats.get("connect_failed", 0) + pstats.get("auth_failed", 0))
        plag = g("capture_publisher_lag_frames", "Frames written to the ring and not yet acknowledged")
        lag_now = publisher_lag(st, pb)
        if lag_now is not None:
            plag.add_metric(lv, lag_now)
        yield plag
        hist = pb.get("recv_to_ack_hist_us")
        if hist:
            h = HistogramMetricFamily("capture_recv_to_ack_seconds",
                                      "Receive stamp to the JetStream acknowledgement, per frame", labels=base)
            h.add_metric(lv, log2_buckets(hist), log2_sum(hist))
            yield h
        hist = pb.get("exchange_lag_hist_us")
        if hist:
            h = HistogramMetricFamily("capture_exchange_lag_seconds",
                                      "Receive time minus the exchange's own timestamp (sampled; "
                                      "an exchange clock ahead of ours counts as 0)", labels=base)
            h.add_metric(lv, log2_buckets(hist), pb.get("exchange_lag_sum_s", 0.0))
            yield h


class MetricsServer:
    """HTTP server on (bind, port) serving /metrics and /healthz in a thread."""

    def __init__(self, view: ShardView, bind: str, port: int,
                 extra: Callable[[], dict[str, Any]] | None = None) -> None:
        self.view = view
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ShardCollector(view))
        self.registry.register(SupervisorCollector(view))
        registry, extra_fn = self.registry, extra

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body = generate_latest(registry)
                    self._send(200, body, "text/plain; version=0.0.4; charset=utf-8")
                elif path == "/healthz":
                    ok, doc = view.health()
                    if extra_fn is not None:
                        doc.update(extra_fn())
                    self._send(200 if ok else 503, orjson.dumps(doc), "application/json")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: Any) -> None:
                pass  # no per-request logging

        self.httpd = ThreadingHTTPServer((bind, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)

    def start(self) -> "MetricsServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
