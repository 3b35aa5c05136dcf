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

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

import ring
from common.histogram import log2_buckets, log2_sum
from common.status import read_status, status_path
from common.errors import RingError

CHILD_ROLES = ("receiver", "flusher", "publisher", "integrity")
#: status files read besides the children's: the supervisor's restart counts
STATUS_ROLES = (*CHILD_ROLES, "supervisor")


class ShardView:
    """Everything known about one shard right now, from shared state only."""

    def __init__(self, ring_path: str, ring_dir: str, shard: int, venue: str,
                 stale_after: float = 10.0) -> None:
        self.ring_path, self.ring_dir, self.shard, self.venue = ring_path, ring_dir, shard, venue
        self.stale_after = stale_after

    def snapshot(self) -> dict[str, Any]:
        try:
            st = ring.stats(self.ring_path, stale_after=self.stale_after)
        except RingError as e:  # BadRingFile, or RingDamaged: reported, never a hang
            st = {"error": str(e)}
        children = {role: read_status(status_path(self.ring_dir, self.shard, role)) for role in STATUS_ROLES}
        return {"ring": st, "children": children, "now_ns": time.time_ns()}

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
            lag = g("capture_reader_lag_frames", "Frames between the producer and a reader's committed cursor",
                    base + ["reader"])
            for r in st["readers"]:
                lag.add_metric(lv + [r["name"]], r["lag_frames"])
            yield lag

        rec = ch.get("receiver") or {}
        conns = rec.get("connections") or []
        cl = base + ["connection"]
        connected = g("capture_websocket_connected", "1 while the connection is live", cl)
        msgs = c("capture_messages", "WebSocket messages received", cl)
        nbytes = c("capture_bytes", "WebSocket message bytes received", cl)
        idle = g("capture_idle_seconds", "Seconds since the connection last received data", cl)
        subs = g("capture_markets_subscribed", "Instruments acknowledged by the venue", cl)
        reconn = c("capture_reconnects", "Reconnects by reason", cl + ["reason"])
        for conn in conns:
            l2 = lv + [str(conn.get("id"))]
            connected.add_metric(l2, 1.0 if conn.get("state") == "live" else 0.0)
            msgs.add_metric(l2, conn.get("messages", 0))
            nbytes.add_metric(l2, conn.get("bytes", 0))
            if conn.get("last_data_ns"):
                idle.add_metric(l2, max(0.0, (now - conn["last_data_ns"]) / 1e9))
            subs.add_metric(l2, conn.get("subscribed", 0))
            for reason, n in (conn.get("reconnects") or {}).items():
                reconn.add_metric(l2 + [reason], n)
        yield from (connected, msgs, nbytes, idle, subs, reconn)

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
        if "error" not in st and pb.get("acked_seq") is not None:
            plag.add_metric(lv, max(0, st["next_seq"] - 1 - pb["acked_seq"]))
        elif "error" not in st and pb:
            plag.add_metric(lv, st["next_seq"])  # nothing acknowledged yet
        elif "lag_frames" in pb:
            plag.add_metric(lv, pb["lag_frames"])
        yield plag
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
