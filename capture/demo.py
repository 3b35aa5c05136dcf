"""`make demo`: a whole capture host in miniature, on this machine only.

Starts an embedded nats-server and the bundled exchange simulator (every venue
it speaks), runs one shard per simulated venue with ``capture run`` for about
20 seconds with a progress line, stops them with SIGTERM as systemd would, and
prints what was captured: frames per venue, bytes on disk and where, messages
in JetStream, gaps, and receive-to-disk / receive-to-ack latency percentiles.
It then checks the capture against what the simulator says it sent.

Everything it writes goes under ./demo-data (replaced on each run) and a
private ring directory on /dev/shm (removed at the end).
"""
from __future__ import annotations

import argparse
import asyncio
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import ring
from common.histogram import log2_percentile
from capture.simulator import Scenario
from capture.simulator.runner import SimulatorProcess
from capture.venues import VENUES as REGISTRY, get as get_venue
from common.status import read_status, status_path
from capture.publish import venue_routing
from flusher.publisher.nats_embedded import NatsServer
from flusher.publisher.stream import stream_name

#: Every registered venue (the simulator speaks each of them).
VENUES = tuple(REGISTRY)


def _config(workdir: str, ring_dir: str, data_dir: str, nats_url: str, sim: SimulatorProcess,
            venues: tuple[str, ...], key_file: str | None) -> str:
    lines = [
        "# written by capture.demo",
        "[ring]", f'dir = "{ring_dir}"', 'capacity = "4MiB"',
        "[storage]", f'data_dir = "{data_dir}"', 'fsync = "interval"', "compress = false",
        'drain_timeout = "20s"',
        "[nats]", f'servers = ["{nats_url}"]', 'prefix = "demo"',
        "[metrics]", 'bind = "127.0.0.1"', "port_base = 0",
    ]
    # Some venues' REST bases include a path prefix (their rest_path trait).
    for v in venues:
        lines += [f"[venues.{v}]", f'url = "{sim.url(v)}"',
                  f'rest_url = "{sim.rest_url(v)}{get_venue(v).rest_path}"']
        if get_venue(v).needs_key:
            lines += ['key_id = "demo-key"', f'key_file = "{key_file}"']
    for i, v in enumerate(venues):
        lines += ["[[shard]]", f"id = {i}", f'venue = "{v}"', "discovery = true",
                  "max_instruments = 40", 'silence_timeout = "30s"']
    path = os.path.join(workdir, "demo.toml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def _shard_up(ring_dir: str, shard: int) -> bool:
    try:
        return bool(ring.stats(os.path.join(ring_dir, f"shard-{shard}.ring"))["producer"]["alive"])
    except ring.RingError:
        return False      # not created yet


def _segments_summary(data_dir: str, venue: str) -> dict[str, Any]:
    from flusher.segments import read as segread
    frames = data = control = 0
    # The publisher's own rule (capture.publish.venue_routing): an array frame
    # of events for several markets is published as one message per event.
    fanout = venue_routing("demo", venue, 0).fanout_fn
    messages = 0    # what the stream should hold
    kinds: dict[str, int] = {}
    if not os.path.isdir(os.path.join(data_dir, venue)):    # the shard never wrote a segment
        return {"frames": 0, "data": 0, "control": 0, "kinds": {}, "bytes": 0, "files": 0,
                "messages": 0}
    files = sorted(glob.glob(os.path.join(data_dir, venue, "**", "*.seg*"), recursive=True))
    nbytes = sum(os.path.getsize(f) for f in files)
    import orjson
    for fr in segread.read(os.path.join(data_dir, venue)):
        frames += 1
        messages += 1
        if fr.type == ring.FrameType.DATA:
            data += 1
            parts = fanout(bytes(fr.payload)) if fanout is not None else None
            if parts and len(parts) > 1:
                messages += len(parts) - 1
        else:
            control += 1
            try:
                k = orjson.loads(fr.payload).get("kind", "?")
            except orjson.JSONDecodeError:
                k = "?"
            kinds[k] = kinds.get(k, 0) + 1
    return {"frames": frames, "data": data, "control": control, "kinds": kinds, "bytes": nbytes,
            "files": len(files), "messages": messages}


async def _stream_counts(url: str, prefix: str = "demo") -> dict[str, int]:
    import nats
    nc = await nats.connect(url, connect_timeout=5)
    try:
        js = nc.jetstream()
        out = {}
        for v in VENUES:
            try:
                info = await js.stream_info(stream_name(prefix, v))
                out[v] = info.state.messages
            except Exception:
                pass
        return out
    finally:
        await nc.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m capture.demo")
    ap.add_argument("--seconds", type=float, default=20.0,
                    help="seconds of capture, counted once every shard is up")
    ap.add_argument("--start-timeout", type=float, default=120.0,
                    help="how long the shards may take to come up")
    ap.add_argument("--rate", type=float, default=200.0, help="simulated messages/s per connection")
    ap.add_argument("--data-dir", default="demo-data")
    ap.add_argument("--venues", default=",".join(VENUES))
    args = ap.parse_args(argv)
    venues = tuple(v for v in args.venues.split(",") if v)

    data_dir = os.path.abspath(args.data_dir)
    if os.path.islink(data_dir):
        print(f"error: {data_dir} is a symlink; refusing", file=sys.stderr)
        return 2
    shutil.rmtree(data_dir, ignore_errors=True)
    os.makedirs(data_dir, mode=0o700)
    ring_dir = tempfile.mkdtemp(prefix="capture-demo-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    workdir = tempfile.mkdtemp(prefix="capture-demo-")
    procs: list[subprocess.Popen] = []
    nats_srv = sim = None
    t_start = time.time()
    try:
        print(f"demo: data in {data_dir}", flush=True)
        nats_srv = NatsServer(os.path.join(data_dir, "nats")).start()
        print(f"demo: embedded nats-server at {nats_srv.url}", flush=True)
        kalshi_pub = kalshi_priv = None
        if any(get_venue(v).needs_key for v in venues):   # the simulator checks Kalshi's signatures
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import rsa
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            kalshi_priv = os.path.join(workdir, "kalshi-demo.pem")
            kalshi_pub = os.path.join(workdir, "kalshi-demo.pub.pem")
            fd = os.open(kalshi_priv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
            with open(kalshi_pub, "wb") as f:
                f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
        sim_kw: dict[str, Any] = {}
        if kalshi_pub:
            sim_kw.update(kalshi_public_key_path=kalshi_pub, kalshi_key_id="demo-key")
        sim = SimulatorProcess(list(venues), Scenario(seed=7, rate=args.rate, clock="wall", instruments=40),
                               **sim_kw).start()
        print("demo: simulator: " + ", ".join(f"{v} {sim.url(v)}" for v in venues), flush=True)
        cfg_path = _config(workdir, ring_dir, data_dir, nats_srv.url, sim, venues, kalshi_priv)
        log_dir = os.path.join(data_dir, "logs")
        os.makedirs(log_dir, mode=0o700, exist_ok=True)
        print(f"demo: each shard's log (supervisor and children) in {log_dir}", flush=True)
        for i, v in enumerate(venues):
            log = open(os.path.join(log_dir, f"shard-{i}-{v}.log"), "w")
            procs.append(subprocess.Popen([sys.executable, "-m", "capture.cli", "run", "--shard", str(i),
                                           "--config", cfg_path], stderr=log))
            log.close()  # the child holds its own descriptor
        # The capture's seconds count from the moment every shard is up (its
        # receiver holds the ring), not from the launch: a loaded machine may
        # take a while to start four supervisors and their children.
        t_launch = time.monotonic()
        while not all(_shard_up(ring_dir, i) for i in range(len(venues))):
            dead = [p for p in procs if p.poll() is not None]
            if dead or time.monotonic() - t_launch > args.start_timeout:
                break
            time.sleep(0.1)
        print(f"demo: shards up in {time.monotonic() - t_launch:.1f} s", flush=True)
        deadline = time.monotonic() + args.seconds
        last: dict[int, int] = {}
        while time.monotonic() < deadline:
            time.sleep(1.0)
            parts = []
            for i, v in enumerate(venues):
                if any(p.poll() is not None for p in procs):
                    break
                try:
                    st = ring.stats(os.path.join(ring_dir, f"shard-{i}.ring"))
                except ring.RingError:
                    parts.append(f"{v}: starting")
                    continue
                rate = st["frames"] - last.get(i, st["frames"])
                last[i] = st["frames"]
                fl = read_status(status_path(ring_dir, i, "flusher")) or {}
                pb = read_status(status_path(ring_dir, i, "publisher")) or {}
                parts.append(f"{v}: {st['frames']} frames ({rate}/s), disk {fl.get('frames', 0)}, "
                             f"acked {pb.get('acked', 0)}")
            left = max(0, deadline - time.monotonic())
            print(f"[{args.seconds - left:4.0f}s] " + " | ".join(parts), flush=True)
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                print(f"demo: a shard exited early with {dead[0].returncode}", file=sys.stderr)
                break
        print("demo: stopping the shards with SIGTERM (ordered drain) ...", flush=True)
        statuses = {}
        for i, p in enumerate(procs):
            statuses[i] = {role: read_status(status_path(ring_dir, i, role)) for role in ("flusher", "publisher")}
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=120) for p in procs]
        for i in range(len(procs)):
            for role in ("flusher", "publisher"):
                s = read_status(status_path(ring_dir, i, role))
                if s:
                    statuses[i][role] = s
        sent = sim.stop()
        sim = None
        in_stream = asyncio.run(_stream_counts(nats_srv.url))
        print()
        print(f"capture demo: {len(venues)} shard(s), {time.time() - t_start:.0f} s, exit codes {codes}")
        ok = all(c == 0 for c in codes)
        sent_by_venue: dict[str, int] = {}
        for rec in sent or []:
            sent_by_venue[rec.get("venue", "?")] = sent_by_venue.get(rec.get("venue", "?"), 0) + int(rec.get("count", 0))
        for i, v in enumerate(venues):
            seg = _segments_summary(data_dir, v)
            fl, pb = statuses[i].get("flusher") or {}, statuses[i].get("publisher") or {}
            d50 = log2_percentile(fl.get("recv_to_disk_hist_us") or [], 0.5)
            d99 = log2_percentile(fl.get("recv_to_disk_hist_us") or [], 0.99)
            a50 = log2_percentile(pb.get("recv_to_ack_hist_us") or [], 0.5)
            a99 = log2_percentile(pb.get("recv_to_ack_hist_us") or [], 0.99)
            gaps = {k: n for k, n in seg["kinds"].items() if k in ("drop", "gap", "oversize", "seq_gap",
                                                                   "checksum_mismatch", "silence_timeout")}
            print(f"  {v:15s} {seg['data']:>8d} messages + {seg['control']} control records on disk, "
                  f"{seg['bytes'] / 1e6:.1f} MB in {seg['files']} segment file(s) under {os.path.join(data_dir, v)}")
            print(f"  {'':15s} JetStream stream {stream_name('demo', v)}: {in_stream.get(v, 0)} messages "
                  f"(every frame on disk{', multi-market arrays one per event' if seg['messages'] != seg['frames'] else ''}); the simulator sent {sent_by_venue.get(v, '?')} WebSocket messages")
            print(f"  {'':15s} gaps: {gaps or 'none'}; receive->disk p50 <= {_us(d50)}, p99 <= {_us(d99)}; "
                  f"receive->ack p50 <= {_us(a50)}, p99 <= {_us(a99)}")
            if in_stream.get(v, 0) != seg["messages"]:
                print(f"  {'':15s} MISMATCH: stream and disk disagree ({in_stream.get(v, 0)} messages, "
                      f"{seg['messages']} expected from {seg['frames']} frames on disk)")
                ok = False
            if sent_by_venue.get(v) != seg["data"]:
                print(f"  {'':15s} MISMATCH: the simulator sent {sent_by_venue.get(v)}, disk holds {seg['data']}")
                ok = False
        print("demo: OK" if ok else "demo: FAILED")
        return 0 if ok else 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if sim is not None:
            sim.stop()
        if nats_srv is not None:
            nats_srv.stop()
        shutil.rmtree(ring_dir, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


def _us(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1e6:.0f} us" if s < 1e-3 else f"{s * 1e3:.1f} ms"


if __name__ == "__main__":
    sys.exit(main())
