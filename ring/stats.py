"""Read a ring's shared counters from any process, without becoming a reader.

Liveness: a producer or reader is *alive* while its lock byte is held (the
kernel releases it when the process dies, however it dies); *fresh* while its
heartbeat is younger than ``stale_after`` seconds.  Alive but not fresh means
hung; a supervisor restarts it.
"""
from __future__ import annotations

import time
from typing import Any

from ring._ringlib import ffi, lib
from ring.file import MAX_READERS, attach, lock_byte_for_reader

_STATE = {lib.RING_PROD_NONE: "never", lib.RING_PROD_RUNNING: "running", lib.RING_PROD_STOPPED: "stopped"}


def stats(path: str, stale_after: float = 5.0) -> dict[str, Any]:
    """Counters, cursors and liveness of the ring at ``path`` as plain data.

    Raises:
        BadRingFile: as :func:`ring.attach`.
    """
    rf = attach(path, writable=False)
    try:
        now = time.time_ns()
        st = rf.stats_struct()
        hp, hs = ffi.new("uint64_t[1]"), ffi.new("uint64_t[1]")
        rf.head(hp, hs)
        head, next_seq = int(hp[0]), int(hs[0])
        prod_alive = rf.is_locked(0)
        readers = []
        info = ffi.new("ring_reader_info_t *")
        for s in range(MAX_READERS):
            lib.ring_reader_get(rf.base, s, info)
            if info.state != lib.RING_SLOT_ACTIVE:
                continue
            hb_age = (now - info.heartbeat_ns) / 1e9
            readers.append({
                "slot": s,
                "name": ffi.string(info.name).decode(errors="replace"),
                "tethered": bool(info.tethered),
                "pid": info.pid,
                "alive": rf.is_locked(lock_byte_for_reader(s)),
                "heartbeat_age_s": hb_age,
                "fresh": hb_age < stale_after,
                "position": int(info.pos),
                "next_seq": int(info.seq),
                "lag_bytes": head - int(info.pos),
                "lag_frames": next_seq - int(info.seq),
                "frames_read": int(info.frames_read),
                "lapped": int(info.lapped),
            })
        tethered = [r["position"] for r in readers if r["tethered"]]
        fill = head - min(tethered) if tethered else 0
        hb_age = (now - st.producer_heartbeat_ns) / 1e9 if st.producer_heartbeat_ns else None
        return {
            "path": path,
            "ring_id": bytes(ffi.buffer(st.ring_id, 16)).hex(),
            "capacity": int(st.capacity),
            "frag_limit": int(st.frag_limit),
            "max_frame": int(st.max_frame),
            "created_ns": int(st.created_ns),
            "head": head,
            "next_seq": next_seq,
            "fill_bytes": fill,
            "fill_ratio": fill / st.capacity,
            "highest_fill_bytes": int(st.highest_fill),
            "producer": {
                "pid": int(st.producer_pid),
                "epoch": int(st.producer_epoch),
                "state": _STATE.get(st.producer_state, str(st.producer_state)),
                "alive": prod_alive,
                "heartbeat_age_s": hb_age,
                "fresh": hb_age is not None and hb_age < stale_after,
            },
            "frames": int(st.frames),
            "bytes": int(st.bytes),
            "drops": {"full": int(st.drops_full), "too_large": int(st.drops_too_large)},
            "dropped_bytes": int(st.dropped_bytes),
            "gap_records": int(st.gap_records),
            # frames of the drops above already written as records; the rest
            # is owed, and the next producer to open the ring writes it
            "drops_recorded": int(st.drops_recorded),
            "drops_unrecorded": int(st.drops_full + st.drops_too_large - st.drops_recorded),
            "fragmented_frames": int(st.fragmented),
            "wakes": int(st.wakes),
            "readers": readers,
        }
    finally:
        rf.close()


def remove_reader(path: str, name: str) -> bool:
    """Free a reader's slot (e.g. a drain that is retired for good).

    Refuses (returns False) while a live process holds the name."""
    rf = attach(path)
    try:
        info = ffi.new("ring_reader_info_t *")
        for s in range(MAX_READERS):
            lib.ring_reader_get(rf.base, s, info)
            if info.state == lib.RING_SLOT_ACTIVE and ffi.string(info.name).decode() == name:
                if not rf.try_lock(lock_byte_for_reader(s)):
                    return False
                lib.ring_reader_release(rf.base, s)
                return True
        return False
    finally:
        rf.close()
