"""Small JSON status files that children publish for the supervisor.

Counters that live in the ring header (frames, drops, cursors, heartbeats)
are read from the ring itself.  Everything else a child knows - connections,
reconnects, fsync latency, acks - it writes here about once a second:
atomically (temp file + rename), owner-only, never through a symlink.  The
supervisor's /metrics and `capture status` read them at scrape time, so no
prometheus_client multiprocess files are needed.
"""
from __future__ import annotations

import os
import time
from typing import Any

import orjson


#: The exit status of a drain (flusher, publisher) that stopped with frames it
#: did not finish (not written, or not acknowledged): they stay in the ring
#: and on disk for the next start, and the supervisor exits non-zero (75 is
#: EX_TEMPFAIL: try again later).
EXIT_DRAIN_UNFINISHED = 75


def status_path(ring_dir: str, shard: int, role: str) -> str:
    return os.path.join(ring_dir, f"shard-{shard}.{role}.json")


def write_status(path: str, data: dict[str, Any]) -> None:
    data = {**data, "pid": os.getpid(), "updated_ns": time.time_ns()}
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS))
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_status(path: str) -> dict[str, Any] | None:
    """The last status, or None if absent or unreadable (a child mid-start)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            return orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError):
        return None
