"""Operator commands: `capture status`, `capture ring stats PATH`, `capture compress DIR`.

`status` reads only shared state - each ring's header counters and the small
status files the children write next to it - so it never disturbs a shard.
msgs/s is real: the ring's frame counter read twice, ``--interval`` apart
(under ``--watch`` each refresh is the second reading of the one before).
``--json`` gives the same rows with numbers as numbers and absent values as
null.  The table fits 120 columns: the last error is cut to what is left.

A ring this user cannot read (the rings belong to the ``capture`` user and
are owner-only by design) is said once, plainly, with what to run instead.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import pwd
import sys
import time
from typing import Any, Callable

import ring
from capture.metrics import publisher_lag
from common.errors import BadRingFile, CaptureError
from common.status import read_status, status_path

WIDTH = 120
ROLES = ("receiver", "flusher", "publisher", "integrity")


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def access_problem(ring_dir: str) -> str | None:
    """A plain sentence if this user cannot read the rings in ``ring_dir``."""
    try:
        st = os.stat(ring_dir)
    except FileNotFoundError:
        return None   # nothing runs here: "no shards found" says it
    except PermissionError:
        return f"cannot look into {os.path.dirname(ring_dir) or '/'} as user {_user(os.geteuid())}"
    me = os.geteuid()
    if st.st_uid != me:
        owner = _user(st.st_uid)
        return (f"the rings in {ring_dir} belong to user {owner} and are readable only by it "
                f"(this is user {_user(me)}); run: sudo -u {owner} capture status")
    return None


def _shards(ring_dir: str) -> list[tuple[str, str]]:
    out = []
    for path in glob.glob(os.path.join(ring_dir, "shard-*.ring")):
        sid = os.path.basename(path)[len("shard-"):-len(".ring")]
        out.append((sid, path))
    return sorted(out, key=lambda t: (not t[0].isdigit(), int(t[0]) if t[0].isdigit() else 0, t[0]))


def _last_error(statuses: dict[str, dict[str, Any]]) -> str | None:
    for role in ROLES:
        err = (statuses.get(role) or {}).get("last_error")
        if err:
            return f"{role}: {err}"
    return None


def read_rows(ring_dir: str, before: dict[str, tuple[float, int]] | None = None,
              interval: float = 1.0, sleep: Callable[[float], None] = time.sleep,
              ) -> tuple[list[dict[str, Any]], dict[str, tuple[float, int]]]:
    """One row per ring in ``ring_dir`` and the frame readings taken.

    ``before`` (shard -> (monotonic time, frames)) is the first reading of
    msgs/s; without it one is taken now and a second ``interval`` later."""
    shards = _shards(ring_dir)
    if before is None:
        before = {}
        for sid, path in shards:
            try:
                before[sid] = (time.monotonic(), ring.stats(path)["frames"])
            except CaptureError:
                pass
        if before:
            sleep(interval)
    rows: list[dict[str, Any]] = []
    readings: dict[str, tuple[float, int]] = {}
    for sid, path in shards:
        shard: int | str = int(sid) if sid.isdigit() else sid
        try:
            st = ring.stats(path)
        except CaptureError as e:
            reason = e.reason if isinstance(e, BadRingFile) else str(e)
            rows.append({**dict.fromkeys(FIELDS), "shard": shard, "error": f"ring unreadable: {reason}"})
            continue
        now = time.monotonic()
        readings[sid] = (now, st["frames"])
        rate = None
        if sid in before and now > before[sid][0]:
            rate = max(0, st["frames"] - before[sid][1]) / (now - before[sid][0])
        statuses = {role: read_status(status_path(ring_dir, shard, role)) or {} for role in ROLES}  # type: ignore[arg-type]
        rec = statuses["receiver"]
        conns = rec.get("connections") or []
        lags = {r["name"]: r["lag_frames"] for r in st["readers"]}
        rows.append({
            "shard": shard,
            "venue": rec.get("venue") or statuses["flusher"].get("venue"),
            "receiver": "up" if st["producer"]["alive"] else st["producer"]["state"],
            "connections_live": sum(c.get("state") == "live" for c in conns),
            "connections": len(conns),
            "msgs_per_s": rate,
            "ring_fill": st["fill_ratio"],
            "flusher_lag": lags.get("flusher"),
            # the same figure as capture_publisher_lag_frames: not yet acknowledged
            "publisher_lag": (publisher_lag(st, statuses["publisher"]) if statuses["publisher"]
                              else lags.get("publisher")),
            "drops": st["drops"]["full"] + st["drops"]["too_large"],
            "gaps": int(sum((rec.get("gaps") or {}).values())) + st["gap_records"],
            "last_error": _last_error(statuses),
            "error": None,
        })
    return rows, readings


#: The keys of a row (``--json``), every row the same.
FIELDS = ("shard", "venue", "receiver", "connections_live", "connections", "msgs_per_s", "ring_fill",
          "flusher_lag", "publisher_lag", "drops", "gaps", "last_error", "error")

COLUMNS = [("shard", 5), ("venue", 14), ("receiver", 8), ("conns", 7), ("msgs/s", 8), ("fill", 6),
           ("flush_lag", 9), ("pub_lag", 9), ("drops", 7), ("gaps", 7)]


def _cell(row: dict[str, Any], col: str) -> str:
    v: Any
    if col == "conns":
        return f"{row['connections_live']}/{row['connections']}"
    if col == "msgs/s":
        v = row["msgs_per_s"]
        return "-" if v is None else f"{v:.0f}"
    if col == "fill":
        return f"{row['ring_fill']:.1%}"
    v = row.get({"flush_lag": "flusher_lag", "pub_lag": "publisher_lag"}.get(col, col))
    return "-" if v is None else str(v)


def render(rows: list[dict[str, Any]], width: int = WIDTH) -> str:
    """The table: every line at most ``width`` columns."""
    head = [name.ljust(w) for name, w in COLUMNS]
    used = sum(w for _, w in COLUMNS) + len(COLUMNS)
    room = max(10, width - used)
    lines = [" ".join(head + ["last_error"])]
    for r in rows:
        first = str(r["shard"]).ljust(COLUMNS[0][1])
        if r.get("error"):   # an unreadable ring: said once, across the row
            lines.append(f"{first} {_fit(r['error'], width - len(first) - 1)}")
            continue
        cells = [_cell(r, name)[:w].ljust(w) for name, w in COLUMNS]
        err = r.get("last_error") or ""
        lines.append(" ".join(cells + [_fit(err, room)]).rstrip())
    return "\n".join(line.rstrip() for line in lines)


def _fit(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def cmd_status(args: argparse.Namespace, ring_dir: str) -> int:
    problem = access_problem(ring_dir)
    if problem:
        print(f"capture status: {problem}", file=sys.stderr)
        return 1
    before = None
    while True:
        rows, before = read_rows(ring_dir, before if args.watch else None, args.interval)
        if rows and all(r.get("error") and "owned by uid" in r["error"] for r in rows):
            owner = _user(os.stat(_shards(ring_dir)[0][1]).st_uid)
            print(f"capture status: the rings in {ring_dir} belong to user {owner} "
                  f"(this is user {_user(os.geteuid())}); run: sudo -u {owner} capture status",
                  file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(rows, indent=None if args.watch else 2), flush=True)
        elif not rows:
            print(f"no shards found in {ring_dir}", flush=True)
        else:
            if args.watch and sys.stdout.isatty():
                print("\x1b[H\x1b[2J", end="")
            print(render(rows), flush=True)
        if not args.watch:
            return 0
        if args.count is not None:
            args.count -= 1
            if args.count <= 0:
                return 0
        time.sleep(args.interval)


# -- ring stats ------------------------------------------------------------------------

def cmd_ring_stats(args: argparse.Namespace) -> int:
    """Every counter of one ring file (what /metrics and status are built from)."""
    try:
        st = ring.stats(args.path)
    except CaptureError as e:
        print(f"capture ring stats: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    p = st["producer"]
    print(f"{st['path']}: ring {st['ring_id']}, capacity {st['capacity']} bytes, "
          f"max frame {st['max_frame']}, fragment limit {st['frag_limit']}")
    print(f"producer: pid {p['pid']} {p['state']}{' (alive)' if p['alive'] else ''}, epoch {p['epoch']}, "
          f"heartbeat {_age(p['heartbeat_age_s'])}")
    print(f"frames {st['frames']} ({st['bytes']} bytes), next sequence {st['next_seq']}, "
          f"fill {st['fill_bytes']} bytes ({st['fill_ratio']:.1%}), highest {st['highest_fill_bytes']}")
    print(f"drops: full {st['drops']['full']}, too large {st['drops']['too_large']} "
          f"({st['dropped_bytes']} bytes); gap records {st['gap_records']}; "
          f"fragmented {st['fragmented_frames']}; wakes {st['wakes']}")
    for r in st["readers"]:
        print(f"reader {r['name']} (slot {r['slot']}, {'tethered' if r['tethered'] else 'untethered'}): "
              f"pid {r['pid']}{' alive' if r['alive'] else ' gone'}, lag {r['lag_frames']} frames "
              f"/ {r['lag_bytes']} bytes, heartbeat {_age(r['heartbeat_age_s'])}, lapped {r['lapped']}")
    return 0


def _age(s: float | None) -> str:
    return "never" if s is None else f"{s:.1f}s ago"


# -- compress ----------------------------------------------------------------------------

def cmd_compress(args: argparse.Namespace) -> int:
    from flusher.segments.compress import compress_tree
    if not os.path.isdir(args.dir):
        print(f"capture compress: {args.dir}: not a directory", file=sys.stderr)
        return 2
    try:
        done = compress_tree(args.dir, args.level)
    except (OSError, CaptureError) as e:
        print(f"capture compress: {e}", file=sys.stderr)
        return 1
    for p in done:
        print(p)
    print(f"compressed {len(done)} segment file(s) under {args.dir}", file=sys.stderr)
    return 0
