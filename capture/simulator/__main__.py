"""``python -m capture.simulator``: the simulator as a process.

Prints one JSON line ``{"urls":{venue: ws url}, "rest":{venue: http base},
"pid":N}`` once every server listens, runs until SIGTERM/SIGINT, then prints
``{"summary":[per-connection counts and digests]}`` and exits 0.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

import orjson
from cryptography.hazmat.primitives import serialization

from common.errors import CaptureError

from capture.simulator.record import write_frames
from capture.simulator.script import VENUES, Blast, Scenario
from capture.simulator.server import Simulator


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m capture.simulator",
                                description="Exchange simulator (WebSocket + REST discovery).")
    p.add_argument("--venues", default=",".join(VENUES),
                   help="comma-separated subset of " + ",".join(VENUES))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0,
                   help="0: a free port per venue; P: venue i gets P+i")
    p.add_argument("--scenario-json", help="a Scenario as JSON (or @file)")
    p.add_argument("--seed", type=int)
    p.add_argument("--rate", type=float, help="data messages/s per connection")
    p.add_argument("--blast", type=int, metavar="N", help="blast N frames after subscribing")
    p.add_argument("--blast-size", type=int, default=256)
    p.add_argument("--blast-rate", type=float, default=0.0,
                   help="blast frames/s per connection (0: as fast as the socket takes them)")
    p.add_argument("--record", choices=("frames", "digest", "count"))
    p.add_argument("--kalshi-public-key", help="PEM file Kalshi handshakes must verify against")
    p.add_argument("--kalshi-private-key-out",
                   help="without --kalshi-public-key: write the generated private key here (0600)")
    p.add_argument("--kalshi-key-id", help="required KALSHI-ACCESS-KEY (default: any)")
    p.add_argument("--clock", choices=("wall", "sim"),
                   help="exchange timestamps: wall (real time, the default here, so exchange-lag "
                        "metrics are meaningful) or sim (deterministic, 1 ms per message)")
    p.add_argument("--frames-dir", help="on exit, write <venue>-<index>.frames here")
    return p.parse_args(argv)


def scenario_from(args: argparse.Namespace) -> Scenario:
    sc = Scenario()
    explicit_record = explicit_clock = False
    if args.scenario_json:
        raw = args.scenario_json
        if raw.startswith("@"):
            with open(raw[1:], "rb") as f:
                raw = f.read()
        sc = Scenario.from_json(raw)
        given = orjson.loads(raw)
        explicit_record, explicit_clock = "record" in given, "clock" in given
    changes: dict = {}
    if args.clock:
        changes["clock"] = args.clock
    elif not explicit_clock:
        # Standalone, the simulator stands in for a real exchange: its
        # timestamps are real time, or every exchange-lag sample is +Inf.
        changes["clock"] = "wall"
    if not (explicit_record or args.record or args.frames_dir):
        # A long-running simulator (make demo) must not keep every payload.
        changes["record"] = "digest"
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.rate is not None:
        changes["rate"] = args.rate
    if args.record:
        changes["record"] = args.record
    if args.blast is not None:
        changes["blast"] = Blast(frames=args.blast, size=args.blast_size, rate=args.blast_rate)
    return sc.replace(**changes) if changes else sc


async def amain(args: argparse.Namespace) -> int:
    venues = [v for v in args.venues.split(",") if v]
    pub = None
    if args.kalshi_public_key:
        with open(args.kalshi_public_key, "rb") as f:
            pub = f.read()
    sim = Simulator(venues, scenario_from(args), host=args.host, port=args.port,
                    kalshi_public_key=pub, kalshi_key_id=args.kalshi_key_id)
    if sim.kalshi_private_key is not None and args.kalshi_private_key_out:
        pem = sim.kalshi_private_key.private_bytes(serialization.Encoding.PEM,
                                                   serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption())
        fd = os.open(args.kalshi_private_key_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await sim.start()
    print(orjson.dumps({"urls": sim.urls(),
                        "rest": {v: sim.rest_url(v) for v in venues},
                        "pid": os.getpid()}).decode(), flush=True)
    await stop.wait()
    await sim.stop()
    if args.frames_dir:
        for v in venues:
            for rec in sim.connections(v):
                write_frames(os.path.join(args.frames_dir, f"{v}-{rec.index}.frames"), rec.sent)
    print(orjson.dumps({"summary": sim.summary()}).decode(), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(amain(args))
    except CaptureError as exc:
        print(f"capture.simulator: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
