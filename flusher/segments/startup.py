"""The flusher's start: recovery of what a previous process left, waiting out the disk.

Recovery.  On start, every ``.seg.open`` of this venue/shard is verified
(recovery.recover_open): a torn tail is truncated and the segment closed; a
damaged region mid-file is replaced by a gap record, the valid records
around it kept (error log, ``repaired_segments``/``damaged_frames``); a bad
file header moves the file aside (``.corrupt``, ``corrupt_segments``).  The newest sequence on disk from the same ring
is remembered, and ring frames up to it are committed without being written.

Waiting.  Recovery that the disk refuses (any OSError: a full or read-only
disk, an unwritable data directory) or a symlink or non-directory planted at
the shard's directory (``UnsafePath``: never followed) is retried with
capped backoff, never turned into an exit (see ``_start``).
"""
from __future__ import annotations

import logging
import os

from common.errors import ConfigError, SegmentError
from common.log import event as log_event
from flusher.segments.counters import describe_error
from flusher.segments.format import read_header
from flusher.segments.index import index_path_for, load_index
from flusher.segments.names import SUFFIX_OPEN, UnsafePath, list_segments, open_dir, parse_name, with_path
from flusher.segments.recovery import last_on_disk, recover_open

log = logging.getLogger("capture.flusher")


class StartupRecovery:
    """The start of :class:`flusher.segments.drain.Flusher` (a mixin: it uses
    the flusher's config, reader, counters and status file)."""

    def _start(self) -> None:
        """Recovery, retried with capped backoff while the disk refuses it.

        A full disk (ENOSPC from recovery's index write), a read-only or
        unwritable data directory, or a symlink/non-directory planted at the
        shard's directory must not turn into an exit: the supervisor would
        count it against the restart limit and stop the shard.  The tethered
        reader is already open, so the ring keeps every frame not yet on disk;
        when the ring fills, the receiver counts its drops and writes them as
        a gap record once this flusher drains again.  Returns with
        ``started`` False only if stopped while waiting.
        """
        delay = self.cfg.backoff_initial
        while True:
            try:
                self._recover()
                break
            except (OSError, UnsafePath) as exc:
                if isinstance(exc, FileNotFoundError) and exc.filename == self.cfg.data_dir:
                    # The configured directory itself is not there: a setting
                    # to fix, not a disk to wait for.
                    raise ConfigError(None, "data_dir", f"{exc.filename}: no such directory") from exc
                self.stats.start_retries += 1
                self.stats.state = "start_blocked"
                self.stats.last_error = f"start: {describe_error(exc)}"
                n = self.stats.start_retries
                if n & (n - 1) == 0:         # retries 1, 2, 4, 8...: not a flood
                    log_event(log, "start_blocked", logging.ERROR, error=describe_error(exc),
                              retry_in_s=delay, retry=n, kept="frames stay in the ring")
                self.write_status()
                # Alive and waiting on purpose, not hung: keep the heartbeat
                # (the supervisor's watchdog pings follow it); /healthz and the
                # metrics say what it waits for.
                self.rd.heartbeat()
                if self._stop.wait(delay):
                    log_event(log, "stopped_before_start", logging.WARNING, kept="the ring keeps every frame")
                    self.stats.state = "stopped"
                    return
                delay = min(delay * 2, self.cfg.backoff_max)
        if self.stats.start_retries:
            log_event(log, "started_after_retries", logging.WARNING, retries=self.stats.start_retries)
        self.started = True

    def _recover(self) -> None:
        cfg = self.cfg
        os.close(open_dir(cfg.data_dir, [cfg.venue, f"shard-{cfg.shard}"]))
        rep = self.recovery
        for dirpath, _dirs, files in os.walk(self.shard_dir, followlinks=False):
            for fn in sorted(files):
                full = os.path.join(dirpath, fn)
                if fn.endswith(".tmp"):
                    os.unlink(full)       # a crash mid-write: the original is still there
                    continue
                if not fn.endswith(SUFFIX_OPEN):
                    continue

                def corrupt(new: str, off: int, why: str) -> None:
                    rep.corrupt.append((new, off, why))
                    self.stats.corrupt_segments += 1

                def hole(seg: str, h) -> None:
                    rep.holes.append((seg, h))
                    self.stats.damaged_regions += 1
                    self.stats.damaged_frames += max(0, h.last_seq - h.first_seq + 1)

                try:
                    outcome, res = recover_open(full, index_every=cfg.index_every, on_corrupt=corrupt,
                                                on_hole=hole)
                except OSError as exc:
                    if exc.filename is None:        # e.g. a copy: name the segment being recovered
                        raise OSError(exc.errno, exc.strerror, full) from exc
                    raise with_path(exc, dirpath) from exc
                if outcome == "repaired":
                    self.stats.repaired_segments += 1
                    outcome = "closed"
                if res is not None and res.valid_end < res.file_size and outcome != "corrupt":
                    rep.truncated.append((full, res.valid_end, res.file_size,
                                          res.tail.reason if res.tail else "trailing bytes"))
                    self.stats.torn_tails += 1
                if outcome == "closed":
                    rep.closed.append(full)
                    self.stats.recovered_segments += 1
                elif outcome == "removed":
                    rep.removed.append(full)
        newest = self._newest_segment_of_this_ring()
        if newest is not None:
            ring_id, last = last_on_disk(newest)
            rep.last_ring_id, rep.last_seq = ring_id, last
            if last >= 0:
                nxt = self.rd.next_seq
                if last >= nxt:
                    self.skip_through = last
                    log_event(log, "already_on_disk", first_seq=nxt, last_seq=last, action="skipping them")
                elif last + 1 < nxt:
                    why = (f"committed from the ring but in no segment: a power loss under "
                           f"fsync={cfg.fsync}, or a segment lost or set aside")
                    if rep.corrupt:
                        why += f" ({', '.join(os.path.basename(c[0]) for c in rep.corrupt)})"
                    log_event(log, "gap", logging.ERROR, first_seq=last + 1, last_seq=nxt - 1,
                              reason=why, action="a gap record will name them")
                    ts = load_index(index_path_for(newest))
                    self._missing = (last + 1, nxt - 1, ts.max_ts if ts is not None else cfg.clock(), why)
        self.stats.last_seq = rep.last_seq

    def _newest_segment_of_this_ring(self, window: int = 64) -> str | None:
        """The recent segment of this ring holding the highest sequences.

        Names sort by creation time; a wall clock stepped back between two
        segments would put them out of order, so look at the last ``window``
        names and pick the highest first sequence among this ring's.
        """
        cfg = self.cfg
        segs = list_segments(self.shard_dir, venue=cfg.venue, shard=cfg.shard, include_open=False)
        best, best_seq = None, -1
        for p in segs[-window:]:
            sn = parse_name(p)
            if sn is None or sn.first_seq <= best_seq:
                continue
            try:
                if read_header(p).ring_id != self.ring_id:
                    continue
            except (SegmentError, OSError) as exc:
                log_event(log, "segment_unreadable", logging.WARNING, path=p, error=str(exc), at="start-up")
                continue
            best, best_seq = p, sn.first_seq
        return best
