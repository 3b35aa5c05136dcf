"""The book checksum validator, off the receive path, for venues whose
``checksum_validator`` trait is true (Kraken spot v2 checksums; the venue's
``checksums`` trait, a :class:`capture.venues.base.ChecksumSpec`, says how).

One process per such shard, started by the supervisor beside the drains::

    python -m capture.receiver.integrity --ring PATH --venue VENUE --depth 10 \\
        --status-file PATH [--socket PATH] [--name integrity]

Theory of operation
-------------------
It is an *untethered* reader of the shard's ring (name ``integrity``): it
never holds the receiver back, and may be lapped.  For every data frame whose
head says it is a book frame (the spec's ``is_book_frame``; Kraken:
``"channel":"book"``) it copies the payload, confirms with
``Reader.check`` that the bytes were not overwritten meanwhile, and feeds it
to the spec's books (Kraken: :class:`capture.venues.kraken.checksum.Books`),
which keep one book per symbol from
the exact digits received (a snapshot resets that symbol's book) and compares
the CRC32 of the top 10 levels with the frame's ``checksum``.

A mismatch is reported to the receiver, the ring's only writer, as one
datagram over the integrity channel (:mod:`capture.receiver.repair`); the receiver
records it and resubscribes that symbol.  The symbol's book is dropped until
the resubscription's snapshot arrives, so one corruption is reported once.

Lapped: every book may have missed updates, so all books are reset (each
comes back at the symbol's next snapshot, i.e. after a resubscription or a
reconnect), the reader resumes at the oldest frame still in the ring, and the
lap is counted in the status file and logged.  This process never writes the
ring.

Status file (``write_status`` style, about once a second)::

    {"role": "integrity", "venue": VENUE, "books": N, "updates": checked,
     "updates_per_s": rate over the last interval, "mismatches": N,
     "reported": N, "undelivered": N, "unchecked": N, "unusable": N,
     "lapped": N, "frames": N}

SIGTERM/SIGINT: exit 0.  Bad usage (a venue without checksums, a missing
ring): exit 2 with one line on stderr.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import ring
from common.errors import CaptureError, ConfigError, CorruptFrame, Lapped
from ring.frame import FrameType

from capture.receiver.repair import ChannelClient, channel_path
from common import settings
from common.lifeline import die_with_parent
from common.log import Throttle, event as log_event, setup as setup_logging, shard_of_ring
from common.status import write_status
from capture.venues import checksum_venues, get as get_venue

log = logging.getLogger("capture.receiver.integrity")
#: the validator's lines that can come per frame (or per batch, per status
#: write): a burst per kind, then a count (``suppressed=N``)
_throttle = Throttle()


def _warn(name: str, **fields: Any) -> None:
    """A warning through :data:`_throttle` (per event name)."""
    ok, suppressed = _throttle.allow(name)
    if ok:
        if suppressed:
            fields["suppressed"] = suppressed
        log_event(log, name, logging.WARNING, **fields)


_DATA = int(FrameType.DATA)
_FRAGS = {int(FrameType.FRAG_BEGIN), int(FrameType.FRAG_MIDDLE), int(FrameType.FRAG_END)}
# The validator is not on any data path: its linger after an empty ring
# (ring.Reader.wait) can be long, so it reads book updates in large batches
# and costs little at any rate; 5 ms delays a checksum report by as much.
_LINGER_US = 5000.0
class Validator:
    """The validator's state and one step of its loop (usable in-process).

    Args:
        ring_path: the shard's ring.
        venue: a venue whose ``checksum_validator`` trait is true.
        depth: the subscribed book depth (books are truncated to it).
        socket_path: the receiver's integrity channel (default: next to the ring).
        name: the reader name.
        status_file: where to write the status (None: nowhere).

    Raises:
        ConfigError: a venue without checksums or a bad depth.
        RingError: the ring cannot be attached / the name is held.
    """

    def __init__(self, ring_path: str, venue: str, depth: int = 10, *,
                 socket_path: str | None = None, name: str = "integrity",
                 status_file: str | None = None, max_frames: int = 4096,
                 skip: Sequence[str] = ()) -> None:
        known = checksum_venues()
        spec = get_venue(venue).checksums if venue in known else None
        if spec is None:
            raise ConfigError(None, "venue", f"{venue!r} has no book checksums "
                                             f"(only {', '.join(sorted(known))})")
        if depth not in spec.depths:
            raise ConfigError(None, "depth", f"book depth {depth} not one of {spec.depths}")
        self.venue, self.depth = venue, depth
        # skip: the per-pair opt-out (pairs whose checksums are known to
        # mismatch falsely are not validated, so never reported or repaired)
        self.books = spec.books(depth, skip=skip)
        self._is_book = spec.is_book_frame
        self._format_error = spec.format_error
        self.reader = ring.Reader(ring_path, name, tethered=False, start="oldest",
                                  max_frames=max_frames, spin_us=0, linger_us=_LINGER_US)
        self.asm = ring.Assembler()
        self.client = ChannelClient(socket_path or channel_path(ring_path))
        self.status_file = status_file
        self.counts = {"frames": 0, "updates": 0, "mismatches": 0, "reported": 0,
                       "undelivered": 0, "unchecked": 0, "unusable": 0, "lapped": 0}
        self._last_status = (time.monotonic(), 0)
        self.rate = 0.0

    # -- one batch -----------------------------------------------------------------
    def step(self, timeout: float = 0.2) -> int:
        """Wait up to ``timeout`` for frames, validate one batch; returns the
        number of frames read (0 on a timeout or after a lap)."""
        rd = self.reader
        if not rd.available():
            # Nothing at our position: idle, or lapped (the frame there now
            # carries another sequence, so waiting never sees it): read
            # anyway after the wait, which raises Lapped in that case.
            rd.wait(timeout)
        try:
            batch = rd.read()
            if not len(batch):
                return 0
            books = []
            for f in batch:
                if f.type == _DATA:
                    if self._is_book(f.payload):
                        books.append((f.seq, f.conn, bytes(f.payload)))
                elif f.type in _FRAGS:
                    m = self.asm.feed(f.seq, f.ts, f.type, f.flags, f.conn, f.payload)
                    if m is not None and m.type == _DATA and self._is_book(m.payload):
                        books.append((m.seq, m.conn, bytes(m.payload)))
            rd.check(batch)   # the copies above are what the receiver wrote
        except Lapped as exc:
            self._lapped(exc)
            return 0
        except CorruptFrame as exc:
            _warn("corrupt_frame", error=exc, action="resume_oldest")
            self._reset("corrupt frame")
            return 0
        rd.commit(batch)
        self.counts["frames"] += len(batch)
        for seq, conn, raw in books:
            self.validate(raw, seq, conn)
        return len(batch)

    def validate(self, raw: bytes, frame_seq: int = 0, conn: int = 0) -> int:
        """Feed one book frame; report mismatches.  Returns mismatches found."""
        try:
            results = self.books.feed(raw)
        except self._format_error as exc:
            self.counts["unusable"] += 1
            if getattr(exc, "symbol", None):
                self.books.drop(exc.symbol)   # wrong from here on: wait for a snapshot
            _warn("unusable_book_frame", frame_seq=frame_seq, error=exc,
                  unusable=self.counts["unusable"])
            return 0
        bad = 0
        for r in results:
            if r.computed is None:
                self.counts["unchecked"] += 1
                continue
            if r.expected is None:
                continue
            self.counts["updates"] += 1
            if r.expected != r.computed:
                bad += 1
                self.counts["mismatches"] += 1
                report = {"kind": "checksum_mismatch", "venue": self.venue, "symbol": r.symbol,
                          "expected": r.expected, "computed": r.computed,
                          "frame_seq": frame_seq, "conn": conn}
                if self.client.send(report):
                    self.counts["reported"] += 1
                else:
                    self.counts["undelivered"] += 1
                    _warn("checksum_undelivered", symbol=r.symbol, channel=self.client.path)
        return bad

    def _lapped(self, exc: Lapped) -> None:
        self.counts["lapped"] += 1
        _warn("lapped", error=exc, books_reset=len(self.books.books))
        self._reset("lapped")

    def _reset(self, why: str) -> None:
        self.books.books.clear()
        self.asm = ring.Assembler()
        self.reader.resume_oldest()

    # -- status --------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        t0, n0 = self._last_status
        if now - t0 >= 0.5:
            self.rate = (self.counts["updates"] - n0) / (now - t0)
            self._last_status = (now, self.counts["updates"])
        return {"role": "integrity", "venue": self.venue, "depth": self.depth,
                "books": len(self.books.books), "updates_per_s": round(self.rate, 1),
                "channel": self.client.path, **self.counts}

    def write_status(self) -> None:
        if self.status_file:
            try:
                write_status(self.status_file, self.status())
            except OSError as exc:
                _warn("status_write_failed", path=self.status_file, error=exc)

    def run(self, stop: threading.Event, status_interval: float = 1.0) -> None:
        next_status = 0.0
        while not stop.is_set():
            self.step(0.2)
            if time.monotonic() >= next_status:
                # wait() heartbeats only when idle: keep the supervisor's
                # watchdog informed while frames flow too
                self.reader.heartbeat()
                self.write_status()
                next_status = time.monotonic() + status_interval
        self.write_status()

    def close(self) -> None:
        self.client.close()
        self.reader.close()


@dataclass
class IntegritySettings:
    """What one validator process is told (the one home of its defaults);
    the supervisor hands it over as a settings file (:mod:`common.settings`)."""

    ring: str
    venue: str
    depth: int = 10
    socket: str | None = None
    name: str = "integrity"
    status_file: str | None = None
    status_interval: float = 1.0
    #: pairs whose checksums are not validated (the per-pair opt-out)
    skip: list[str] = field(default_factory=list)


def parse_args(argv: Sequence[str] | None = None) -> IntegritySettings:
    """argv -> :class:`IntegritySettings` (``--settings FILE``, or the options).

    Raises:
        ConfigError: a bad settings file.
    """
    d = IntegritySettings
    p = argparse.ArgumentParser(prog="python -m capture.receiver.integrity",
                                description="Validate the book checksums of a venue that has them, from a ring.")
    p.add_argument("--settings", help="read every setting from this JSON file (what the supervisor does)")
    p.add_argument("--ring", help="the shard's ring file")
    p.add_argument("--venue", help="a venue with book checksums: " + ", ".join(sorted(checksum_venues())))
    p.add_argument("--depth", type=int, default=d.depth, help="subscribed book depth")
    p.add_argument("--socket", default=d.socket, help="integrity channel (default: <ring>.integrity.sock)")
    p.add_argument("--name", default=d.name, help="ring reader name")
    p.add_argument("--status-file", default=d.status_file, help="write counters here about once a second")
    p.add_argument("--status-interval", type=float, default=d.status_interval)
    p.add_argument("--skip-checksum", action="append", default=[], metavar="SYMBOL",
                   help="do not validate this pair's checksums (repeatable): the per-pair opt-out")
    a = p.parse_args(argv)
    read = settings.from_command_line(IntegritySettings, a, alone=("ring", "venue"), required=("ring", "venue"))
    if read is not None:
        return read
    return IntegritySettings(ring=a.ring, venue=a.venue, depth=a.depth, socket=a.socket, name=a.name,
                             status_file=a.status_file, status_interval=a.status_interval,
                             skip=list(a.skip_checksum))


def main(argv: Sequence[str] | None = None) -> int:
    try:
        a = parse_args(argv)
    except CaptureError as exc:
        setup_logging("integrity", None)
        log_event(log, "startup_failed", logging.ERROR, error=str(exc))
        return 2
    setup_logging("integrity", shard_of_ring(a.ring))
    die_with_parent()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        v = Validator(a.ring, a.venue, a.depth, socket_path=a.socket, name=a.name,
                      status_file=a.status_file, skip=a.skip)
    except CaptureError as exc:
        log_event(log, "startup_failed", logging.ERROR, error=str(exc))
        return 2
    try:
        v.run(stop, a.status_interval)
    finally:
        v.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
