"""The publisher: the ring's untethered reader that puts every frame on JetStream once.

Theory of operation
-------------------
Sources.  Normally frames come from the ring (reader ``publisher``,
untethered: the receiver is never slowed).  When the ring laps the publisher
(an outage, a slow server) it switches to the flusher's segment files, which
hold every frame the ring overwrote (the flusher is tethered), and reads them
from ``next_seq`` - the first frame it has not yet handed to the pipeline.
When the files are exhausted it asks the ring for its oldest frame: if that
is at or before ``next_seq`` it goes back to the ring and skips the frames it
already took from disk; otherwise the files are read again (the flusher has
written more meanwhile).  ``next_seq`` always names a message boundary (never
the inside of a fragment chain), so the two sources meet without a gap or a
duplicate.

Frames.  Fragment chains are reassembled (ring.Assembler) and published as
one message keyed by the chain's first sequence.  Data frames go to
``{prefix}.{venue}.{channel}.{symbol}`` from the venue's route extractor,
frames it cannot route to ``{prefix}.{venue}.unrouted`` (counted), control
frames to ``{prefix}.{venue}.control.shard-{N}``.  A frame larger than the
server's max_payload is replaced by a small control message (same Msg-Id,
control subject) saying so; the frame itself stays on disk.

Headers.  ``Nats-Msg-Id: <ring id hex>:<seq>`` (deterministic: every replay is
de-duplicated), ``Capture-Seq``, ``Capture-Recv-Ns``, ``Capture-Shard``.

Split frames.  A data frame that opens with ``[``, on a venue whose routing
has a fan-out function, may be published as one message per event
(flusher/publisher/split.py).

Commit.  The pipeline reports the commit token of the last frame of its
acknowledged prefix; the publisher commits it to its ring cursor once per
loop.  From the ring the token is the frame boundary after the message; from
disk it is (the position where the reader was lapped, next sequence) - a
position already overwritten, so a restarted publisher is lapped at once and
goes to the files from exactly that sequence.

Restart after a crash.  Frames after the committed cursor may already be
stored; the read-back that skips them is in flusher/publisher/session.py.

The pieces, each an object that owns its state and is handed only what it
uses (the counters, the stop event, a few callables), never the publisher:
the catch-up from disk and which source is read (catchup.SegmentCatchup),
``next_seq`` and the assembler both sources share (position.Position), split
frames (split.SplitPublisher), the NATS connection (session.NatsSession) and
the read-back (session.ReadBack), the subjects and their cache
(routing.SubjectRouter); the ack window (pipeline.py), the process's command line
(process.py).

Shutdown.  SIGTERM sets ``stopping``: the publisher keeps reading until the
producer has stopped and everything is read, waits for the acks (bounded by
``drain_timeout``), commits and returns 0.
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

import ring
from common.errors import CorruptFrame, Lapped
from ring.frame import HEADER as _FRAME_HEADER, FrameType

from common import histogram
from common.status import EXIT_DRAIN_UNFINISHED, write_status
from common.log import Throttle, event as log_event
from flusher.publisher.routing import FanoutFn, SubjectFn, SubjectRouter
from flusher.publisher.split import SplitPublisher, key_seq
from flusher.publisher.catchup import SegmentCatchup
from flusher.publisher.pipeline import AckPipeline
from flusher.publisher.position import Position
from flusher.publisher.session import DrainExpired, NatsSession, ReadBack
from flusher.publisher.stream import BusConfig

log = logging.getLogger("capture.publisher")
# Lines said once per frame (oversize, a split refused), capped per kind.
_throttle = Throttle()

_CONTROL = int(FrameType.CONTROL)
_DATA = int(FrameType.DATA)
_PADDING = int(FrameType.PADDING)
_HDR_FMT = (b"NATS/1.0\r\nNats-Msg-Id: %s:%d\r\nCapture-Seq: %d\r\nCapture-Recv-Ns: %d\r\n"
            b"Capture-Shard: %d\r\n\r\n")
# Room kept for the HPUB line and headers when comparing with max_payload.
_OVERHEAD = 256
# How long the publisher lets a batch build once the ring is empty (see
# Publisher._idle_ring).  Each pass costs the same whatever it carries (the
# ring read, a socket write, the acks' reads, nats-server's own per-write
# work), so at moderate rates a pass per frame took a large share of a
# core.  2 ms bounds the passes to 500/s and adds at most 2 ms to
# receive-to-ack.  In 5-second whole-shard runs at 100,000 frames/s, 1 ms
# gave 7.6 us of publisher CPU per frame and a lapped publisher, 2 ms
# 6.3 us and none; 4 ms saved nothing more.
_LINGER_US = 2000.0
# How long the ring may stay empty before the publisher stops polling it and
# sleeps on its futex instead (Publisher._idle_ring).
_POLL_FOR = 0.05


@dataclass
class PublisherSettings:
    """What one publisher process is told (the one home of its defaults).

    The supervisor resolves it from the capture config and hands it over as
    a settings file (:mod:`common.settings`); ``python -m flusher.publisher.process``
    builds it from its options.  ``nats`` is the ``[nats]`` table as
    :func:`flusher.publisher.stream.parse_config` takes it (credentials
    included: the file is owner-only, never a command line).
    ``route``: ``venue`` (the caller's routing from the venue registry, see
    :mod:`capture.publish`) or ``test`` (:func:`routing.test_subject_fn`).
    """

    ring: str
    venue: str
    shard: int
    segments: str | None = None
    nats: dict[str, Any] = field(default_factory=dict)
    route: str = "venue"
    # The publisher's figures (bench/) were measured with this window; the
    # example config names a smaller one explicitly.
    window: int = 8192
    ack_timeout: float = 5.0
    drain_timeout: float = 30.0
    status_file: str | None = None
    log_level: str = "INFO"

    def __repr__(self) -> str:  # the nats table may hold credentials: never print them
        return (f"PublisherSettings(ring={self.ring!r}, venue={self.venue!r}, shard={self.shard}, "
                f"route={self.route!r}, window={self.window})")


class Publisher:
    """One shard's publisher.

    Args:
        ring_path: the shard's ring file.
        venue, shard: identify the shard (subjects, headers, segment files).
        bus: parsed NATS settings (:func:`flusher.publisher.stream.parse_config`).
        segments: root directory of the flusher's segment files (None: no
            catch-up from disk; a lap is then a counted gap).
        subject_fn: raw payload -> subject or None (unrouted): the caller's
            (the venue's route extractor from ``capture.publish``; flusher/
            does not know the venues).
        exchange_ts: raw payload -> the exchange's timestamp (ns) for the
            exchange-lag metric, or None (no such metric).
        fanout_fn: raw array payload -> its events' (subject, bytes), or None
            (not split); None: the venue's frames never split (see
            :mod:`flusher.publisher.split`).
        window, ack_timeout: see :class:`flusher.publisher.pipeline.AckPipeline`.
        drain_timeout: bound on the shutdown drain (seconds).
        disk_wait: how long catch-up may wait for frames the segment files
            should hold before declaring them lost (seconds).
        client_name: the NATS client's name (default
            ``capture-publisher-<venue>-<shard>``).
    """

    def __init__(self, ring_path: str, *, venue: str, shard: int, bus: BusConfig,
                 subject_fn: SubjectFn,
                 exchange_ts: Callable[[bytes], int | None] | None = None,
                 fanout_fn: FanoutFn | None = None,
                 segments: str | None = None,
                 reader_name: str = "publisher", window: int = PublisherSettings.window,
                 window_bytes: int = 64 << 20, ack_timeout: float = PublisherSettings.ack_timeout,
                 drain_timeout: float = PublisherSettings.drain_timeout, disk_wait: float = 5.0,
                 max_frames: int = 4096, status_file: str | None = None,
                 client_name: str | None = None) -> None:
        self.ring_path = ring_path
        self.venue, self.shard = venue, shard
        self.bus = bus
        self.reader_name = reader_name
        self.window, self.window_bytes, self.ack_timeout = window, window_bytes, ack_timeout
        self.drain_timeout = drain_timeout
        self.max_frames = max_frames
        self.control_subject = f"{bus.prefix}.{venue}.control.shard-{shard}".encode()
        self.stats: collections.Counter[str] = collections.Counter()
        self.stopping = asyncio.Event()
        self.pipe: AckPipeline | None = None
        self.rd: ring.Reader | None = None
        self._pending_commit: tuple[int, int] | None = None
        self._committed: tuple[int, int] | None = None
        self.started = asyncio.Event()     # connected, stream ready, reader attached
        self.status_file = status_file
        # The parts.  Each owns its state; what they share is handed over
        # explicitly: the counters, the stop event, and callables into this
        # object (the frame loop, the commit, the size check, the gap notice).
        stream = bus.stream_for(venue)
        self.session = NatsSession(
            bus, stream, client_name or f"capture-publisher-{venue}-{shard}", self.stats, self.stopping,
            check_deadline=self._check_deadline, on_change=self.write_status,
            link_down=self._link_down, link_up=self._link_up)
        self.readback = ReadBack(self.session, stream, bus.horizon_s, self.stats)
        self.router = SubjectRouter(subject_fn, self.control_subject,
                                 f"{bus.prefix}.{venue}.unrouted".encode(), self.stats)
        # None: the venue's frames never split, and no frame pays the check.
        self.splitter = (SplitPublisher(fanout_fn, shard=shard, router=self.router, stats=self.stats,
                                        fit=self._fit, already_stored=self.readback.take)
                         if fanout_fn is not None else None)
        # next_seq and the assembler: shared by the ring pump, the frame loop
        # and the catch-up, owned by this one object (see position.py).
        self.position = Position()
        self.catchup = SegmentCatchup(
            self.position, segments=segments, venue=venue, shard=shard, disk_wait=disk_wait,
            stats=self.stats, stopping=self.stopping, publish_frames=self._publish_frames,
            commit=self._commit, lost=self._lost)
        # receive stamp -> JetStream ack, per frame; bucket i: < 2**i us
        self._ack_hist = histogram.new()
        # receive stamp - the exchange's own timestamp, for a sample of data
        # frames (here, off the receiver's hot path); same buckets; an
        # exchange clock ahead of ours counts in bucket 0 and in _lag_ahead
        self._lag_hist = histogram.new()
        self._lag_sum = 0.0
        self._lag_ahead = 0
        self._lag_n = 0
        self._exchange_ts = exchange_ts

    # -- status for the supervisor ---------------------------------------------------------
    def write_status(self) -> None:
        """Counters and the recv-to-ack histogram as JSON (common.status)."""
        if not self.status_file:
            return
        pipe = self.pipe
        if pipe is not None and pipe.latencies:
            lat, pipe.latencies = pipe.latencies, []
            histogram.add_many(self._ack_hist, lat)
        ps = pipe.stats if pipe is not None else {}
        session = self.session
        try:
            write_status(self.status_file, {
                "venue": self.venue, "shard": self.shard, "mode": self.catchup.mode,
                "nats": session.state, "nats_error": session.error,
                "acked": int(ps.get("acked", 0)), "sent": int(ps.get("sent", 0)),
                "acked_seq": (key_seq(pipe.committed_seq)
                              if pipe is not None and pipe.committed_seq is not None else None),
                "in_flight": pipe.in_flight if pipe is not None else 0,
                "recv_to_ack_hist_us": self._ack_hist,
                "exchange_lag_hist_us": self._lag_hist, "exchange_lag_sum_s": self._lag_sum,
                "exchange_lag_ahead": self._lag_ahead,
                "last_error": session.last_error,
                "stats": {k: int(v) for k, v in self.all_stats().items()},
            })
        except OSError as exc:  # never fatal: the capture matters more than the status
            log_event(log, "status_write_failed", logging.DEBUG, path=self.status_file, error=str(exc))

    async def _status_loop(self) -> None:
        while True:
            self.write_status()
            await asyncio.sleep(1.0)

    # -- the loop -----------------------------------------------------------------------------
    async def run(self) -> int:
        """Publish until stopped and drained.  Returns the exit status: 0, or
        EXIT_DRAIN_UNFINISHED if frames were left unacknowledged at the stop.

        Raises:
            NatsTLSError: the TLS handshake failed (configuration).
            StreamMismatch: the stream cannot be made to match the config.
        """
        # The cursor first: from here on every frame is accounted for, even if
        # NATS is unreachable for longer than the ring holds (catch-up from disk).
        # verify_crc: a bit flip in the shared ring must not reach the bus (catchup.corrupt).
        self.rd = ring.Reader(self.ring_path, self.reader_name, tethered=False, start="oldest",
                              max_frames=self.max_frames, verify_crc=True,
                              spin_us=0, linger_us=_LINGER_US)
        session = self.session
        try:
            await session.connect_forever()
            await session.ensure_stream_forever()
        except DrainExpired:
            log_event(log, "stopped_before_ready", logging.WARNING, waited_for="NATS and the stream",
                      published=0)
            left = self.rd.available() if self.rd is not None else 0
            await self._close()
            return EXIT_DRAIN_UNFINISHED if left else 0
        except BaseException:
            await self._close()
            raise
        try:
            resumed = self.rd.resumed
            self.bind_ring(self.rd.ring_id, resumed=resumed)
            self.position.next_seq = self.rd.next_seq
            self.pipe = await AckPipeline(
                session.nc, window=self.window, window_bytes=self.window_bytes,
                ack_timeout=self.ack_timeout, horizon_s=self.bus.horizon_s,
                verify=self.readback.verify, on_commit=self._on_commit).start()
            if self.status_file:
                self.pipe.latencies = []
                status_task = asyncio.ensure_future(self._status_loop())
            self.started.set()
            log_event(log, "publisher_started", venue=self.venue, ring_id=self.ring_id.decode(),
                      from_seq=self.position.next_seq, reader="resumed" if resumed else "new")
            last_summary = time.monotonic()
            # Which source is read is the catch-up's to say (it owns ``mode``:
            # it leaves the ring on a lap or a corrupt frame and decides when
            # to go back); this loop only asks.
            catchup = self.catchup
            ring_id = self.rd.ring_id
            ok = False
            try:
                while True:
                    if catchup.mode == "ring":
                        done = await self._pump_ring()
                    else:
                        done = await catchup.pump(self.rd, ring_id)
                    self._commit()
                    if done:
                        break
                    self._check_deadline()
                    now = time.monotonic()
                    if now - last_summary > 30:
                        last_summary = now
                        self.pipe.log_summary()
                left = self.drain_timeout if self._deadline is None else \
                    max(0.0, self._deadline - time.monotonic())
                ok = await self.pipe.drain(left)
            except DrainExpired:
                pass
            self._commit()
            if self.status_file:
                status_task.cancel()
                self.write_status()
            if not ok:
                self.stats["drain_timeout"] += 1
                log_event(log, "drain_unfinished", logging.WARNING, unacknowledged=self.pipe.in_flight,
                          kept="on disk and behind the ring cursor for the next start")
            self.pipe.log_summary()
            log_event(log, "publisher_stats", stats=dict(sorted(self.all_stats().items())))
            return 0 if ok else EXIT_DRAIN_UNFINISHED
        finally:
            await self._close()

    def bind_ring(self, ring_id: bytes, *, resumed: bool) -> None:
        """The Msg-Id rule: ``<ring id hex>:<seq>``, for frames of this ring
        (also used by ``capture replay --to-nats``, which republishes segment
        files).  ``resumed``: frames of this ring may be stored already (a
        reader that resumed its cursor, a replay): the read-back's first check."""
        self.ring_id = ring_id.hex().encode()
        # The header block with the constant parts filled in: seq, seq, recv ns.
        self._hdr_fmt = _HDR_FMT.replace(b"%s", self.ring_id, 1).replace(
            b"Capture-Shard: %d", b"Capture-Shard: %d" % self.shard)
        if self.splitter is not None:
            self.splitter.bind_ring(self.ring_id)
        self.readback.bind_ring(self.ring_id.decode() + ":", resumed=resumed)

    async def _close(self) -> None:
        self.session.begin_close()
        if self.pipe:
            await self.pipe.close()
        await self.session.close()
        if self.rd:
            self.rd.close()

    # The session's link callbacks: the pipeline exists only once connected.
    def _link_down(self) -> None:
        if self.pipe:
            self.pipe.on_disconnected()

    def _link_up(self) -> None:
        if self.pipe:
            self.pipe.on_reconnected()

    def _on_commit(self, token: tuple[int, int]) -> None:
        self._pending_commit = token

    def _commit(self) -> None:
        t = self._pending_commit
        if t is not None and t != self._committed:
            self.rd.commit_to(t[0], t[1])
            self._committed = t
            self.stats["commits"] += 1

    def all_stats(self) -> dict[str, int]:
        """The publisher's and the pipeline's counters together."""
        out = dict(self.stats)
        if self.pipe:
            for k, v in self.pipe.stats.items():
                out[f"pipeline.{k}"] = v
        return out

    def stop(self) -> None:
        """Begin the shutdown drain (what SIGTERM does)."""
        if not self.stopping.is_set():
            self._deadline = time.monotonic() + self.drain_timeout
            log_event(log, "stop_requested", drain_timeout_s=self.drain_timeout, action="draining")
        self.stopping.set()

    _deadline: float | None = None

    def _check_deadline(self) -> None:
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise DrainExpired()

    async def _wait_room(self) -> None:
        """Wait for room in the window; gives up when a shutdown drain expires."""
        while not self.pipe.has_room():
            self._check_deadline()
            try:
                await asyncio.wait_for(self.pipe.wait_room(), 0.1)
            except asyncio.TimeoutError:
                pass

    # -- ring ---------------------------------------------------------------------------------
    async def _pump_ring(self) -> bool:
        rd = self.rd
        try:
            b = rd.read()
            n = len(b)
            if n:
                seqs = b.seq.tolist()
                tss = b.ts.tolist()
                types = b.type.tolist()
                flags = b.flags.tolist()
                conns = b.conn.tolist()
                ends = (b.pos + ((_FRAME_HEADER + b.length.astype("uint64") + 7)
                                 & ~np.uint64(7))).tolist()
                payloads = b.payloads()
                rd.check(b)
        except Lapped as lap:
            self.catchup.lapped(lap)
            return False
        except CorruptFrame as bad:
            self.catchup.corrupt(bad)
            return False
        if not n:
            if self.stopping.is_set() and rd.producer_stopped() and rd.drained():
                return True
            await self._idle_ring()
            return False
        self._empty_since = 0.0
        await self._publish_frames(seqs, tss, types, flags, conns, payloads, ends)
        self.stats["ring_frames"] += n
        asm = self.position.asm
        if asm.dropped:       # fragment chains the receiver aborted: not data
            self.stats["aborted_chains"] += len(asm.dropped)
            asm.dropped.clear()
        await asyncio.sleep(0)
        return False

    _empty_since = 0.0

    async def _idle_ring(self) -> None:
        """Wait for the ring to hold a frame again.

        While frames keep coming the loop polls the ring on its own timer,
        every ``_LINGER_US``: a poll is one pass of the event loop, where a
        futex wait costs a hop to a worker thread and back (a pipe write, two
        thread switches) per wake, which at moderate rates was most of the
        publisher's CPU.  After ``_POLL_FOR`` seconds without a frame it
        sleeps on the ring's futex in a worker thread instead, so an idle
        publisher does not wake 500 times a second."""
        now = time.monotonic()
        if not self._empty_since:
            self._empty_since = now
        if now - self._empty_since < _POLL_FOR:
            await asyncio.sleep(_LINGER_US / 1e6)
        else:
            await asyncio.get_running_loop().run_in_executor(None, self.rd.wait, 0.05)

    async def _publish_frames(self, seqs: list[int], tss: list[int], types: list[int],
                              flags: list[int], conns: list[int], payloads: list[bytes],
                              ends: list[int], missing: str | None = None) -> int:
        """Hand a batch of frames, as columns, to the pipeline; both sources
        (the ring, the segment files) come through here.  ``ends[i]``: the
        ring position of frame i's commit token.  ``missing``: a frame after a
        hole in the sequence (segment files only) declares the hole lost with
        this reason.  Returns the messages handed over.

        Whole frames (the common case) are published inline: no Assembler
        round, header from the per-ring template, one put.  Fragments, the
        first frame of a resumed reader, frames already in the stream and
        oversize frames take the general path (_publish)."""
        pipe = self.pipe
        put, has_room = pipe.put, pipe.has_room
        pos = self.position
        asm = pos.asm
        chain_open = asm.open_chain_seq is not None
        hdr_fmt = self._hdr_fmt
        subject_of = self.router.of
        control = self.control_subject
        limit = self.session.nc.max_payload - _OVERHEAD
        sample = self._exchange_ts is not None
        can_split = self.splitter is not None
        # The read-back's state, bound once: ``skip`` is updated in place only
        # (ReadBack), and the first check is made at most once per ring.
        readback = self.readback
        skip = readback.skip
        checked = readback.checked
        next_seq = pos.next_seq
        published = 0
        handed = 0
        try:
            for i in range(len(seqs)):
                seq = seqs[i]
                typ = types[i]
                if seq < next_seq or typ == _PADDING:
                    continue      # already taken from the other source
                if seq > next_seq and missing is not None and not chain_open:
                    self._lost(next_seq, seq - 1, missing)
                    next_seq = seq
                if (typ == _DATA or typ == _CONTROL) and not chain_open:
                    mseq, ts, payload = seq, tss[i], payloads[i]
                    next_seq = seq + 1
                else:
                    msg = asm.feed(seq, tss[i], typ, flags[i], conns[i], payloads[i])
                    chain_open = asm.open_chain_seq is not None
                    if not chain_open:
                        next_seq = seq + 1
                    if msg is None:
                        continue
                    mseq, ts, typ, payload = msg.seq, msg.ts, msg.type, bytes(msg.payload)
                handed += 1
                if not checked:
                    pos.next_seq = next_seq
                    await readback.first_check(mseq, ts)
                    checked = True
                if not has_room():
                    pos.next_seq = next_seq
                    await self._wait_room()
                commit = (ends[i], seq + 1)
                if skip:
                    self._publish(mseq, ts, typ, payload, commit)
                    continue
                if typ == _DATA:
                    if can_split and payload[:1] == b"[":
                        self._publish(mseq, ts, typ, payload, commit)
                        continue
                    if sample:
                        self._lag_n += 1
                        if not self._lag_n & 15:  # every 16th data frame
                            self._sample_lag(payload, ts)
                    subject = subject_of(typ, payload)
                else:
                    subject = control
                if len(payload) + len(subject) > limit:
                    self._publish(mseq, ts, typ, payload, commit, subject)
                    continue
                put(mseq, subject, payload, hdr_fmt % (mseq, mseq, ts), commit, ts)
                published += 1
        finally:
            pos.next_seq = next_seq
            self.stats["published"] += published
        return handed

    # -- publishing ---------------------------------------------------------------------------
    def _publish(self, seq: int, ts: int, typ: int, payload: bytes | memoryview,
                 commit: tuple[int, int], subject: bytes | None = None) -> None:
        """Publish one whole message.  ``subject`` given: the caller routed it
        (and sampled the exchange lag) already."""
        if self.readback.take(seq):
            self.stats["already_stored"] += 1
            self.pipe.ack_local(seq, commit=commit)
            return
        payload = bytes(payload)
        if subject is None:
            if typ == _DATA and self._exchange_ts is not None:
                self._lag_n += 1
                if not self._lag_n & 15:  # every 16th data frame
                    self._sample_lag(payload, ts)
            if (typ == _DATA and self.splitter is not None and payload[:1] == b"["
                    and self.splitter.publish(self.pipe, seq, ts, payload, commit)):
                return
            subject = self.router.of(typ, payload)
        subject, payload = self._fit(seq, subject, payload)
        self._put(seq, subject, payload, ts, commit)

    def _fit(self, seq: int, subject: bytes, payload: bytes, part: str = "") -> tuple[bytes, bytes]:
        """A message larger than the server's max_payload becomes a small
        notice on the control subject (same Msg-Id); the frame stays on disk."""
        max_payload = self.session.nc.max_payload
        if len(payload) + _OVERHEAD + len(subject) <= max_payload:
            return subject, payload
        self.stats["oversize"] += 1
        ok, suppressed = _throttle.allow("oversize")
        if ok:      # one per frame: a storm of them is capped (common.log.Throttle)
            log_event(log, "oversize", logging.WARNING, seq=seq, **({"part": part} if part else {}),
                      bytes=len(payload), max_payload=max_payload,
                      action="published a notice instead; the frame stays on disk",
                      **({"suppressed": suppressed} if suppressed else {}))
        notice = {"kind": "oversize", "seq": seq, "size": len(payload),
                  "max_payload": max_payload, "subject": subject.decode()}
        if part:
            notice["part"] = part
        return self.control_subject, json.dumps(notice).encode()

    def _sample_lag(self, payload: bytes, recv_ns: int) -> None:
        try:
            ex = self._exchange_ts(payload)
        except Exception:  # a venue parser must never stop publishing
            ex = None
        if not ex:
            return
        lag = recv_ns - ex
        histogram.add(self._lag_hist, lag)  # an exchange clock ahead of ours: bucket 0
        if lag < 0:
            self._lag_ahead += 1
        else:
            self._lag_sum += lag / 1e9

    def _lost(self, first: int, last: int, why: str) -> None:
        """Frames that can no longer be published: counted, and said on the bus."""
        n = last - first + 1
        self.stats["lost"] += n
        log_event(log, "gap", logging.ERROR, first_seq=first, last_seq=last, frames=n, reason=why)
        body = json.dumps({"kind": "publisher_gap", "first_seq": first, "last_seq": last,
                           "reason": why}).encode()
        # Keyed like the first lost frame: de-duplicated if this is said twice.
        self._put(first, self.control_subject, body, time.time_ns(), None)

    def _put(self, seq: int, subject: bytes, payload: bytes, ts: int, commit: Any) -> None:
        hdr = self._hdr_fmt % (seq, seq, ts)
        self.pipe.put(seq, subject, payload, hdr, commit, ts)
        self.stats["published"] += 1
