"""The flusher: the ring's tethered reader, writing segment files.

Theory of operation
-------------------
Drain.  A segment record is a ring frame byte for byte, so a batch never
passes through Python: ``ring.FileDrain`` writes whatever the ring holds
(up to a batch limit, and up to the segment's room), padding left out, and
checks every frame as the reader does, in one C call that returns only a
summary for the index (csrc/drain.c: a backlog is written first and
checked right after, and what fails is cut off before the call returns);
then the reader position is committed.  Nothing waits to fill a batch: data
reaches the OS as soon as it is in the ring.  When the ring is empty the
loop sleeps in ``Reader.wait`` (futex) for at most a fraction of a second,
so fsyncs and hour rotations happen on time even when idle.

Durability.  ``fsync="always"``: write, fsync, then commit; a frame the
ring has released is on stable storage.  ``"interval"`` (default 1 s):
write, commit, fsync at most ``fsync_interval`` later.  ``"never"``: the OS
decides (closing a segment still fsyncs it).  The commit is the tether:
until it, the producer cannot overwrite the frames, so a crash of this
process between write and commit loses nothing; the frames are read again
on restart and those already on disk are skipped by sequence.

Errors.  A failed write (ENOSPC, EIO, ...) truncates the segment back to its
last good size (no partial record is left behind) and is retried with
exponential backoff; the frames stay in the ring meanwhile (not committed),
so the producer sees a full ring and the receiver records the drops as gap
records.  Once space returns the same segment continues.  A failed fsync is
retried the same way; under ``always`` nothing is committed until it
succeeds.  The same wait-and-retry covers the start (any OSError from
recovery, a read-only or full disk: flusher/segments/startup.py) and a symlink or
non-directory at a segment's path (``UnsafePath``: never followed; only the
writes bound there wait): the process never exits into the supervisor's
restart limit because of the disk.

Shutdown.  SIGTERM/SIGINT set a flag; the loop keeps draining until the
producer has stopped and the ring is empty, or ``drain_timeout`` passes; then
the segment is closed (fsync, rename, fsync dir) and the process exits 0
(75 if the timeout left frames in the ring; they are still there, tethered,
for the next start).

Start.  Recovery of the files a previous process left, retried while the
disk refuses it: flusher/segments/startup.py.  The counters and the status
file: flusher/segments/counters.py.

Run: ``python -m flusher.segments.drain --ring R --data-dir D --venue V --shard N`` (or
``--settings FILE``: what the supervisor does).
"""
from __future__ import annotations

import argparse
import collections
import errno
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from common import settings
from common.lifeline import die_with_parent
from common.log import event as log_event, setup as setup_logging
from common.status import EXIT_DRAIN_UNFINISHED, write_status
from flusher.segments.counters import FlusherStats, describe_error
from flusher.segments.recovery import RecoveryReport, recover_open
from flusher.segments.names import UnsafePath, list_segments
from flusher.segments.format import gap_record
from flusher.segments.startup import StartupRecovery
from flusher.segments.writer import SegmentWriter, writer_header
from ring.drain import FileDrain
from common.errors import CaptureError, ConfigError

log = logging.getLogger("capture.flusher")

POLICIES = ("interval", "always", "never")
HOUR_NS = 3600 * 1_000_000_000
EXIT_OK = 0
EXIT_DRAIN_TIMEOUT = EXIT_DRAIN_UNFINISHED

#: The smallest segment size accepted, here and in the capture config (one
#: home).  One page: the writer is correct at any size that holds its header
#: (a record larger than a segment gets a segment of its own), and small
#: segments are how rotation is exercised in tests; a production size is an
#: operator's choice (the default is 256 MiB), not a correctness limit.
MIN_SEGMENT_BYTES = 4096
# After a sleep for an empty ring, let a batch build this long before
# writing it (ring.Reader.wait, "Linger"): the flusher shares two cores with
# the receiver, the publisher and nats-server, and one wake-up per frame at
# moderate rates cost more CPU than the writes themselves.  It adds at most
# this much to receive-to-disk.
_LINGER_US = 500.0


@dataclass
class FlusherConfig:
    ring: str
    data_dir: str
    venue: str
    shard: int
    host: str | None = None
    fsync: str = "interval"
    fsync_interval: float = 1.0
    segment_bytes: int = 256 << 20
    rotate_hourly: bool = True
    drain_timeout: float = 30.0
    reader_name: str = "flusher"
    # Batch limit (file bytes): half the default ring, so a backlog still
    # frees room for the receiver twice per lap.
    max_bytes: int = 2 << 20
    index_every: int = 1024
    compress: bool = False
    compress_level: int = 3
    status_path: str | None = None
    status_interval: float = 1.0
    backoff_initial: float = 0.01
    backoff_max: float = 1.0
    # wall clock (ns) for names and hour rotation; the process's own, never in a settings file
    clock: Callable[[], int] = field(default=time.time_ns, metadata={"settings": False})

    def __post_init__(self) -> None:
        """Raises ConfigError naming the setting that is out of range."""
        if self.fsync not in POLICIES:
            raise ConfigError(None, "fsync", f"must be one of {POLICIES}, not {self.fsync!r}")
        if self.segment_bytes < MIN_SEGMENT_BYTES:
            raise ConfigError(None, "segment_bytes",
                              f"must be at least {MIN_SEGMENT_BYTES}, not {self.segment_bytes}")
        if self.max_bytes < 1:
            raise ConfigError(None, "max_bytes", f"must be at least 1, not {self.max_bytes}")
        if self.index_every < 1:
            raise ConfigError(None, "index_every", f"must be at least 1, not {self.index_every}")


class _DrainTimeout(Exception):
    """Internal: the drain deadline passed while an I/O error persisted."""


class Flusher(StartupRecovery):
    """Drains one ring into segment files.  See the module docstring.

    ``reader`` may be given (tests); otherwise a tethered ``ring.Reader``
    named ``config.reader_name`` is opened.
    """

    def __init__(self, config: FlusherConfig, reader=None, *, stop: threading.Event | None = None) -> None:
        self.cfg = config
        self.stats = FlusherStats(started_ns=time.time_ns())
        self.fsync_recent: collections.deque[int] = collections.deque(maxlen=8192)   # ns, newest last
        # ``stop`` may be set by a signal handler while the start is still
        # waiting for the disk (``_start``).
        self._stop = stop if stop is not None else threading.Event()
        self.started = False
        self._deadline: float | None = None
        self.seg: SegmentWriter | None = None
        self._seg_hour = -1
        self._last_sync = time.monotonic()
        self._last_status = 0.0
        self.skip_through: int | None = None
        self._missing: tuple[int, int, int, str] | None = None    # see _write_missing
        self._outage = 0              # consecutive I/O retries (for the log)
        self.recovery = RecoveryReport()
        self.compressor = None
        self.host = config.host
        if reader is None:
            import ring
            # The drain does not use the reader's batch arrays: keep them small.
            reader = ring.Reader(config.ring, config.reader_name, tethered=True, max_frames=64,
                                 spin_us=0, linger_us=_LINGER_US)
        self.rd = reader
        self.drain = FileDrain(reader, max_bytes=config.max_bytes, index_every=config.index_every)
        self.ring_id: bytes = reader.ring_id
        self.shard_dir = os.path.join(config.data_dir, config.venue, f"shard-{config.shard}")
        self.status_path = config.status_path or os.path.join(self.shard_dir, "flusher.status.json")
        try:
            self._start()
        except BaseException:
            self.rd.close()
            raise
        if not self.started:
            return
        if config.compress:
            from flusher.segments.compress import Compressor
            self.compressor = Compressor(config.compress_level)
            for p in list_segments(self.shard_dir, include_open=False):
                if p.endswith(".seg"):
                    self.compressor.submit(p)
        self.stats.state = "running"

    # -- control -----------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to drain and finish (safe from a signal handler)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> int:
        """Drain until stopped; returns the process exit status."""
        if not self.started:               # stopped while waiting for the disk at start
            self.close()
            return EXIT_DRAIN_TIMEOUT
        drained = False
        try:
            while True:
                if self._stop.is_set() and self._deadline is None:
                    self._deadline = time.monotonic() + self.cfg.drain_timeout
                    self.stats.state = "draining"
                    log_event(log, "stop_requested", drain_timeout_s=self.cfg.drain_timeout, action="draining")
                prod_stopped = self.rd.producer_stopped() if self._deadline is not None else False
                try:
                    n = self.step()
                except _DrainTimeout:
                    break
                if n:
                    if time.monotonic() - self._last_status >= self.cfg.status_interval:
                        self.write_status()
                    continue
                if self._deadline is not None:
                    if prod_stopped:
                        drained = True
                        break
                    if time.monotonic() > self._deadline:
                        break
                self._idle()
        finally:
            self.close()
        if not drained:
            log_event(log, "drain_unfinished", logging.WARNING, committed_seq=self.stats.committed_seq,
                      kept="in the ring for the next start")
            return EXIT_DRAIN_TIMEOUT
        return EXIT_OK

    def step(self) -> int:
        """Write one batch and commit it.

        Returns the number of frames consumed (written, or skipped as
        already on disk), 0 if the ring is empty, or -1 if the batch must be
        written again (a failed fsync under ``always``).
        """
        self._maybe_rotate_hour()
        n = self._write_available()
        if n == 0:
            return 0
        if self.cfg.fsync == "always" and not self._sync_or_rollback():
            return -1
        elif self.cfg.fsync == "interval" and time.monotonic() - self._last_sync >= self.cfg.fsync_interval:
            self._sync_once()
        self.rd.commit()
        self.stats.committed_seq = self.rd.next_seq - 1
        self.stats.batches += 1
        return n

    def _idle(self) -> None:
        now = time.monotonic()
        if self.cfg.fsync == "interval" and self.seg is not None and now - self._last_sync >= self.cfg.fsync_interval:
            self._sync_once()
        self._maybe_rotate_hour()
        if now - self._last_status >= self.cfg.status_interval:
            self.write_status()
        timeout = 0.05 if self._deadline is not None else 0.2
        if self.cfg.fsync == "interval" and self.seg is not None:
            timeout = max(0.001, min(timeout, self.cfg.fsync_interval - (now - self._last_sync)))
        self.rd.wait(timeout)

    # -- writing -----------------------------------------------------------------
    def _write_available(self) -> int:
        """Write one batch of what the ring holds to the open segment (opened
        or rotated as needed), straight from the ring (``ring.FileDrain``);
        no commit.  Returns the frames consumed: written, or skipped because
        a crash between write and commit left them on disk already."""
        consumed = 0
        if self._missing is not None:
            self._write_missing()
        if self.skip_through is not None:
            r = self.drain.write(-1, 0, 0, skip_below=self.skip_through + 1)
            consumed += r.skipped
            self.stats.skipped_frames += r.skipped
            if self.rd.next_seq <= self.skip_through:
                return consumed            # the ring holds nothing newer yet
            self.skip_through = None
        if not self.rd.available():
            return consumed
        limit = self.cfg.segment_bytes
        while True:
            seg = self._segment(self.rd.next_seq)
            r = self._append_retry(seg, limit - seg.size)
            if r.frames or not r.room_full or not seg.records:
                break
            self._close_segment()          # the next frame does not fit: rotate
        self.stats.frames += r.frames
        self.stats.bytes += r.nbytes
        if r.frames:
            self.stats.last_seq = r.last_seq
        if seg.size >= limit:
            self._close_segment()
        return consumed + r.frames

    def _write_missing(self) -> None:
        """The gap record for frames committed from the ring but found in no
        segment at start (see ``_recover``): first in the next segment, so
        the hole is explained where it is."""
        first, last, ts, why = self._missing
        rec = gap_record(first, last, ts, reason=why, source="flusher")
        seg = self._segment(first)
        delay = self.cfg.backoff_initial
        while True:
            try:
                seg.append([rec], len(rec), np.array([first], np.uint64), np.array([ts], np.int64),
                           np.array([0], np.int64))
                break
            except OSError as exc:
                self.stats.write_errors += 1
                delay = self._io_error("writing a gap record", exc, delay)
        seg.last_seq = seg.index.last_seq = last       # the record stands for first..last
        self.stats.missing_frames += last - first + 1
        self._missing = None

    def _segment(self, first_seq: int) -> SegmentWriter:
        if self.seg is not None:
            return self.seg
        delay = self.cfg.backoff_initial
        while True:
            now = self.cfg.clock()
            try:
                self.seg = SegmentWriter(self.cfg.data_dir,
                                         writer_header(self.cfg.venue, self.cfg.shard, self.ring_id, now,
                                                       first_seq, self.host),
                                         index_every=self.cfg.index_every)
            except (UnsafePath, FileExistsError) as exc:
                # A symlink or a non-directory planted at the day directory, or
                # a file already at the new segment's name (same second and
                # first sequence: a leftover, or planted).  Nothing is written
                # through it and it is never reused; only the writes bound for
                # that path wait (the name changes with the clock, the day
                # directory at midnight), the shard goes on.
                self.stats.unsafe_paths += 1
                delay = self._io_error("creating a segment", exc, delay)
                continue
            except OSError as exc:
                self.stats.write_errors += 1
                delay = self._io_error("creating a segment", exc, delay)
                continue
            self._seg_hour = now // HOUR_NS
            self.stats.segments_opened += 1
            self._last_sync = time.monotonic()
            return self.seg

    def _append_retry(self, seg: SegmentWriter, room: int):
        delay = self.cfg.backoff_initial
        while True:
            try:
                r = seg.append_from_ring(self.drain, room)
                if self._outage:
                    log_event(log, "io_recovered", logging.WARNING, retries=self._outage)
                    self._outage = 0
                return r
            except OSError as exc:
                self.stats.write_errors += 1
                delay = self._io_error("writing", exc, delay)

    def _io_error(self, what: str, exc: OSError | UnsafePath, delay: float) -> float:
        """Log, count, back off; raise _DrainTimeout if draining and out of time."""
        self.stats.io_retries += 1
        self._outage += 1
        self.stats.last_error = f"{what}: {describe_error(exc)}"
        if self._outage & (self._outage - 1) == 0:     # retries 1, 2, 4, 8... of an outage: not a flood
            log_event(log, "io_error", logging.ERROR, during=what,
                      path=self.seg.path if self.seg else self.shard_dir, error=str(exc),
                      retry_in_s=delay, retry=self._outage, kept="frames stay in the ring")
        self.stats.state = "io_error"
        self.write_status()
        self.rd.heartbeat()           # waiting on the disk, not hung (see _start)
        if self._deadline is not None and time.monotonic() + delay > self._deadline:
            raise _DrainTimeout()
        if self._stop.is_set():
            if self._deadline is None:
                self._deadline = time.monotonic() + self.cfg.drain_timeout
            time.sleep(delay)
        else:
            self._stop.wait(delay)
        self.stats.state = "draining" if self._deadline is not None else "running"
        return min(delay * 2, self.cfg.backoff_max)

    def _sync_once(self) -> bool:
        seg = self.seg
        self._last_sync = time.monotonic()
        if seg is None or seg.synced_size == seg.size:
            return True
        t0 = time.perf_counter_ns()
        try:
            seg.sync()
        except OSError as exc:
            self.stats.fsync_errors += 1
            self.stats.last_error = f"fsync: {exc}"
            log_event(log, "fsync_failed", logging.ERROR, path=seg.path, error=str(exc))
            return False
        self._record_fsync(time.perf_counter_ns() - t0)
        return True

    def _record_fsync(self, ns: int) -> None:
        self.stats.record_fsync(ns)
        self.fsync_recent.append(ns)

    def _sync_or_rollback(self) -> bool:
        """fsync=always: sync, or undo what was not synced and read it again.

        After a failed fsync the kernel may have thrown the dirty pages away
        and a retried fsync can report success without them, so retrying is
        not enough: the segment is cut back to its last good fsync and closed
        (recovery path), the reader rewinds to its committed position, and the
        frames are written again (those already durable are skipped).
        """
        if self._sync_once():
            return True
        seg = self.seg
        assert seg is not None
        self.seg = None
        self._seg_hour = -1
        path = seg.rollback_unsynced()
        log_event(log, "fsync_rollback", logging.ERROR, path=path, synced_bytes=seg.synced_size,
                  synced_seq=seg.synced_last_seq,
                  action="fsync failed: cut back to its last good fsync; writing the rest again from the ring")
        try:
            recover_open(path, index_every=self.cfg.index_every)
        except OSError as exc:
            log_event(log, "fsync_rollback_unfinished", logging.ERROR, path=path, error=str(exc),
                      action="the next start finishes it")
        self.skip_through = seg.synced_last_seq if seg.synced_last_seq >= 0 else None
        self.rd.rewind()
        self._io_error("syncing", OSError(errno.EIO, "fsync failed"), self.cfg.backoff_initial)
        return False

    def _close_segment(self) -> None:
        seg = self.seg
        if seg is None:
            return
        delay = self.cfg.backoff_initial
        while True:
            t0 = time.perf_counter_ns()
            try:
                path = seg.close()
                break
            except OSError as exc:
                self.stats.fsync_errors += 1
                try:
                    delay = self._io_error("closing a segment", exc, delay)
                except _DrainTimeout:
                    # Leave it open-named: recovery finishes it on the next start.
                    seg.abandon()
                    self.seg = None
                    raise
        if path:
            self.stats.close_ns_max = max(self.stats.close_ns_max, time.perf_counter_ns() - t0)
            self.stats.segments_closed += 1
            if self.compressor is not None:
                self.compressor.submit(path)
        self.seg = None
        self._seg_hour = -1

    def _maybe_rotate_hour(self) -> None:
        if self.seg is not None and self.cfg.rotate_hourly and self.cfg.clock() // HOUR_NS != self._seg_hour:
            self._close_segment()

    # -- status and shutdown -----------------------------------------------------
    def write_status(self) -> None:
        """Write the stats as JSON (temp file + rename) for humans and the supervisor."""
        self._last_status = time.monotonic()
        self.stats.updated_ns = time.time_ns()
        self.stats.recv_to_disk_hist_us = self.drain.latency_hist.tolist()
        if self.compressor is not None:
            self.stats.compressed = self.compressor.compressed
        d = dict(self.stats.as_dict(), venue=self.cfg.venue, shard=self.cfg.shard,
                 fsync_policy=self.cfg.fsync, segment=self.seg.path if self.seg else None)
        try:
            write_status(self.status_path, d)
        except OSError:
            pass      # disk full: the status file is the least of our problems

    def close(self) -> None:
        """Close the open segment (fsync, rename), the compressor and the reader."""
        self._stop.set()
        if self._deadline is None:       # bound the retries of a close on a full disk
            self._deadline = time.monotonic() + self.cfg.drain_timeout
        try:
            if self.seg is not None:
                try:
                    self._close_segment()
                except _DrainTimeout:
                    pass
        finally:
            self.stats.state = "stopped"
            if self.compressor is not None:
                self.compressor.close(wait=False)
            self.write_status()
            self.rd.close()


def build_parser() -> argparse.ArgumentParser:
    """Two ways to say the same thing: ``--settings FILE`` (what the supervisor
    does: the :class:`FlusherConfig` resolved from the capture config, see
    :mod:`common.settings`), or the options below; defaults are the dataclass's."""
    d = FlusherConfig
    ap = argparse.ArgumentParser(prog="python -m flusher.segments.drain", description=__doc__.split("\n")[0])
    ap.add_argument("--settings", help="read every setting from this JSON file (and nothing else)")
    ap.add_argument("--ring", help="ring file (required without --settings)")
    ap.add_argument("--data-dir")
    ap.add_argument("--venue")
    ap.add_argument("--shard", type=int)
    ap.add_argument("--host", default=d.host)
    ap.add_argument("--fsync", choices=POLICIES, default=d.fsync)
    ap.add_argument("--fsync-interval", type=float, default=d.fsync_interval)
    ap.add_argument("--segment-bytes", type=int, default=d.segment_bytes)
    ap.add_argument("--no-hourly", action="store_true", help="do not rotate at UTC hour boundaries")
    ap.add_argument("--drain-timeout", type=float, default=d.drain_timeout)
    ap.add_argument("--reader-name", default=d.reader_name)
    ap.add_argument("--max-bytes", type=int, default=d.max_bytes)
    ap.add_argument("--index-every", type=int, default=d.index_every)
    ap.add_argument("--compress", action=argparse.BooleanOptionalAction, default=d.compress,
                    help="zstd-compress closed segments")
    ap.add_argument("--status-file", default=d.status_path)
    ap.add_argument("--clock-offset-ns", type=int, default=0, help=argparse.SUPPRESS)  # tests
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap


def config_from_args(args: argparse.Namespace) -> FlusherConfig:
    """Raises: ConfigError (a bad settings file, a missing option, a value out of range)."""
    read = settings.from_command_line(FlusherConfig, args, alone=("ring", "data_dir"),
                                      required=("ring", "data_dir", "venue", "shard"))
    if read is not None:
        return read
    clock = time.time_ns
    if args.clock_offset_ns:
        off = args.clock_offset_ns
        clock = lambda: time.time_ns() + off  # noqa: E731
    return FlusherConfig(ring=args.ring, data_dir=args.data_dir, venue=args.venue, shard=args.shard,
                         host=args.host, fsync=args.fsync, fsync_interval=args.fsync_interval,
                         segment_bytes=args.segment_bytes, rotate_hourly=not args.no_hourly,
                         drain_timeout=args.drain_timeout, reader_name=args.reader_name,
                         max_bytes=args.max_bytes,
                         index_every=args.index_every, compress=args.compress,
                         status_path=args.status_file, clock=clock)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO
    setup_logging("flusher", args.shard, level)
    die_with_parent()
    stop = threading.Event()          # set by a signal, also while the start waits for the disk
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        cfg = config_from_args(args)
        setup_logging("flusher", cfg.shard, level)   # the shard a settings file names
        fl = Flusher(cfg, stop=stop)
    except (CaptureError, OSError) as exc:
        # Nothing was read from the ring yet: every frame is still there.
        log_event(log, "startup_failed", logging.ERROR, error=f"cannot start: {exc}")
        return 2
    fl.write_status()
    return fl.run()


if __name__ == "__main__":
    sys.exit(main())
