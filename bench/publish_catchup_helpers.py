"""A lapped publisher catching up from segment files, for the publish bench
and for profiling the catch-up path.

``prepare`` writes ``count`` frames through a small ring with the real
flusher (tethered) while a publisher cursor sits at the start (untethered):
the ring laps it many times, so every frame but the last ring's worth is in
the segment files only.  ``catch_up`` then runs a real
:class:`flusher.publisher.publish.Publisher` against a NATS server until it
has published everything, and returns the frames it took from disk, the wall
time and its own CPU time.

Run as a script to profile one catch-up::

    python -m bench.publish_catchup_helpers [frames] [size] [--no-profile]

(starts an embedded nats-server, prints the publisher's CPU per frame and the
top of a cProfile by own time).
"""
from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time

import ring
from flusher.publisher.publish import Publisher
from flusher.publisher.routing import test_subject_fn
from flusher.publisher.stream import parse_config
from flusher.segments.drain import Flusher, FlusherConfig

VENUE = "catchup"
RING_BYTES = 1 << 20


def prepare(d: str, count: int, size: int) -> str:
    """Ring file and segment files under ``d``; returns the ring path."""
    path = os.path.join(d, "bench.ring")
    ring.create(path, RING_BYTES).close()
    # The publisher's cursor, registered before the first frame: lapped from then on.
    ring.Reader(path, "publisher", tethered=False, start="oldest").close()
    os.makedirs(os.path.join(d, "data"), mode=0o700, exist_ok=True)
    fl = Flusher(FlusherConfig(ring=path, data_dir=os.path.join(d, "data"), venue=VENUE, shard=0))
    body = b"book.BTC|" + b"x" * (size - 9)
    p = ring.Producer(path)
    try:
        for _ in range(count):
            while p.write(body):          # FULL: let the flusher make room
                fl.step()
        while fl.step():
            pass
    finally:
        fl.close()
        p.close()
    return path


def catch_up(url: str, d: str, path: str, stream: str) -> dict:
    """Publish everything from the start; the publisher is lapped at once."""
    bus = parse_config({"servers": [url], "prefix": "cu",
                        "streams": {VENUE: {"name": stream}}})
    out: dict = {}

    async def main() -> None:
        pub = Publisher(path, venue=VENUE, shard=0, bus=bus, segments=os.path.join(d, "data"),
                        subject_fn=test_subject_fn("cu", VENUE))
        c0, t0 = time.process_time(), time.perf_counter()
        pub.stop()        # the producer has stopped: run() returns once all is acked
        pub._deadline = None      # no drain bound: the whole backlog is the measurement
        code = await pub.run()
        out.update(seconds=time.perf_counter() - t0, cpu=time.process_time() - c0, code=code,
                   stats=pub.all_stats())
    asyncio.run(main())
    st = out["stats"]
    out["disk_frames"] = st.get("disk_frames", 0)
    out["frames"] = st.get("disk_frames", 0) + st.get("ring_frames", 0)
    return out


def prepare_live(d: str, count: int, size: int) -> str:
    """The same frames in a ring that holds them all: the publisher is never lapped."""
    path = os.path.join(d, "live.ring")
    ring.create(path, 1 << (max(count * (size + 40), 1 << 20) - 1).bit_length()).close()
    ring.Reader(path, "publisher", tethered=False, start="oldest").close()
    body = b"book.BTC|" + b"x" * (size - 9)
    with ring.Producer(path) as p:
        for _ in range(count):
            if p.write(body):
                raise RuntimeError("the live ring is too small for the run")
    return path


def main(argv: list[str]) -> None:
    import cProfile
    import pstats

    from flusher.publisher.nats_embedded import NatsServer
    profile = "--no-profile" not in argv
    argv = [a for a in argv if a != "--no-profile"]
    count = int(argv[0]) if argv else 100_000
    size = int(argv[1]) if len(argv) > 1 else 256
    with tempfile.TemporaryDirectory() as d:
        srv = NatsServer(os.path.join(d, "nats")).start()
        try:
            path = prepare(d, count, size)
            prof = cProfile.Profile()
            if profile:
                prof.enable()
            r = catch_up(srv.url, d, path, "CATCHUP")
            prof.disable()
        finally:
            srv.stop()
    n = r["frames"]
    print(f"{n} frames ({r['disk_frames']} from disk) in {r['seconds']:.2f} s: "
          f"{n / r['seconds']:.0f}/s; publisher CPU {r['cpu'] / n * 1e6:.2f} us/frame "
          f"{'(under the profiler)' if profile else ''}; exit {r['code']}")
    if profile:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main(sys.argv[1:])
