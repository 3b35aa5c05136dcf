"""The flusher's counters (written as JSON to its status file for the supervisor and /metrics)."""
from __future__ import annotations

import errno
from dataclasses import asdict, dataclass, field

from common import histogram


@dataclass
class FlusherStats:
    """Counters of one flusher process (also written as JSON to the status file)."""
    state: str = "starting"
    frames: int = 0
    bytes: int = 0
    batches: int = 0
    skipped_frames: int = 0          # already on disk after a crash: committed, not rewritten
    segments_opened: int = 0
    segments_closed: int = 0
    fsyncs: int = 0
    fsync_ns_total: int = 0
    fsync_ns_max: int = 0
    fsync_hist_us: list[int] = field(default_factory=lambda: [0] * 24)   # bucket i: < 2**i us
    close_ns_max: int = 0            # segment close: fsync, index, rename, directory fsync
    # receive stamp -> bytes handed to the OS (write returned), sampled (the
    # first 64 frames of a batch, then every 16th); bucket i counts frames
    # with latency < 2**i us (the last bucket: the rest).  Filled in C
    # (ring.FileDrain), copied here for the status file.
    recv_to_disk_hist_us: list[int] = field(default_factory=lambda: [0] * 32)
    write_errors: int = 0
    fsync_errors: int = 0
    io_retries: int = 0
    last_error: str = ""
    torn_tails: int = 0
    start_retries: int = 0           # start-up recovery refused by the disk, retried
    unsafe_paths: int = 0            # segment paths refused (symlink / not a directory / planted)
    corrupt_segments: int = 0        # set aside (a bad file header)
    repaired_segments: int = 0       # damaged mid-file: rebuilt around gap records
    damaged_regions: int = 0
    damaged_frames: int = 0          # sequences lost in damaged regions (each in a gap record)
    missing_frames: int = 0          # committed but in no segment at start (named by a gap record)
    recovered_segments: int = 0
    last_seq: int = -1
    committed_seq: int = -1
    compressed: int = 0
    started_ns: int = 0
    updated_ns: int = 0

    def record_fsync(self, ns: int) -> None:
        self.fsyncs += 1
        self.fsync_ns_total += ns
        self.fsync_ns_max = max(self.fsync_ns_max, ns)
        histogram.add(self.fsync_hist_us, ns)

    def as_dict(self) -> dict:
        return asdict(self)


def describe_error(exc: BaseException) -> str:
    """An error with its full path (OSError's text alone may name only the last component)."""
    if isinstance(exc, OSError):
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        return f"{name}: {exc.strerror or exc}: {exc.filename}" if exc.filename else f"{name}: {exc}"
    return str(exc)
