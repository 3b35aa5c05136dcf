"""Recorded messages as Arrow tables, Parquet or CSV files, with a manifest.

::

    table = to_arrow("data", venue="kraken", start="2026-11-22T10:00Z")   # pyarrow.Table
    manifest = export("data", "out", fmt="parquet")

Columns (one row per whole message; fragments are reassembled)::

    recv_ns      int64    receive time, ns since the Unix epoch (UTC)
    seq          uint64   ring sequence (of the first fragment)
    venue        string
    shard        uint32
    conn         uint16   connection inside the shard; 65535: a record of the whole shard
    frame_type   string   "text" | "binary" (a WebSocket message) or "control" (our record)
    channel      string   when the venue module can tell it, else null
    symbol       string   when the venue module can tell it, else null
    exchange_ns  int64    the venue's own timestamp when the message carries one, else null
    msg          string   the message when it is text (valid UTF-8), else null
    msg_binary   binary   the message when it is binary, else null (CSV: msg_b64, base64)

The exact bytes received are ``msg.encode()`` or ``msg_binary``, whichever is
not null.  channel, symbol and exchange_ns come from a *describer factory*
(``describe_for(venue) -> fn(raw) -> (channel, symbol, exchange_ns)``) that
the application layer passes in: ``capture.export`` does so with the venue
registry; this layer does not know the venues.

Files.  ``{out}/{venue}/{YYYY-MM-DD}/shard-{N}.parquet`` (or ``.csv``): one
file per venue, UTC date of receipt and shard, so a file's sequences are one
shard's.  Files are created owner-only, under a ``.part`` name renamed when
complete; ``{out}/_manifest.json`` is written last (the leading ``_`` makes
dataset readers skip it: ``pyarrow.parquet.read_table(out)`` reads every file) and lists, per file, the
segment files it was read from with the sequence range taken from each, and
the gaps inside it: sequences missing between messages (with the reason when
known: a corrupt region skipped, a fragmented message that did not complete,
a hole between segment files) and the receiver's own drop records.

Errors.  No segments, or no message in the range: :class:`NoData`.  A corrupt
record stops the export with the reader's SegmentError (file and offset)
unless ``skip_corrupt``; the files written up to there are complete and the
manifest says ``"complete": false`` and why.
"""
from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from common.errors import ExportError, NoData, SegmentError
from common.log import event as log_event
from flusher.segments.read import TimeLike, to_ns
from flusher.segments.walk import Msg, Skipped, find_paths, no_data_in_range, walk
from ring.assemble import Dropped
from ring.frame import FrameFlags, FrameType

log = logging.getLogger("capture.export")

_CONTROL = int(FrameType.CONTROL)
_BINARY = int(FrameFlags.BINARY)
_DAY_NS = 86_400 * 1_000_000_000
FORMATS = ("parquet", "csv")
MANIFEST = "_manifest.json"  # "_": dataset readers skip it, so the folder reads as one table
_BATCH_ROWS = 65_536

DescribeFor = Callable[[str], "Callable[[bytes], tuple] | None"]

SCHEMA = pa.schema([
    ("recv_ns", pa.int64()), ("seq", pa.uint64()), ("venue", pa.string()),
    ("shard", pa.uint32()), ("conn", pa.uint16()), ("frame_type", pa.string()),
    ("channel", pa.string()), ("symbol", pa.string()), ("exchange_ns", pa.int64()),
    ("msg", pa.large_string()), ("msg_binary", pa.large_binary()),
])
_NAMES = SCHEMA.names


class _Columns:
    """Rows collected as they come (the message and its description), turned
    into a RecordBatch column by column when full: one comprehension per
    column over the batch instead of eleven appends per message."""

    __slots__ = ("msgs", "descs", "n")

    def __init__(self) -> None:
        self.msgs: list[Msg] = []
        self.descs: list[tuple] = []
        self.n = 0

    def add(self, m: Msg, describe: Callable[[bytes], tuple] | None) -> None:
        self.msgs.append(m)
        self.descs.append(_NO_DESC if describe is None or m.type == _CONTROL
                          else describe(m.payload))
        self.n += 1

    def batch(self) -> pa.RecordBatch:
        ms, ds = self.msgs, self.descs
        kinds: list[str] = []
        texts: list[str | None] = []
        blobs: list[bytes | None] = []
        for m in ms:
            payload = bytes(m.payload)
            if m.type == _CONTROL:
                kind, text = "control", _text(payload)
            elif m.flags & _BINARY:
                kind, text = "binary", None
            else:
                kind, text = "text", _text(payload)
            kinds.append(kind)
            texts.append(text)
            # Binary messages, and text or control records that are not UTF-8:
            # the bytes, so nothing is lost.
            blobs.append(payload if text is None else None)
        cols = [[m.ts_ns for m in ms], [m.seq for m in ms], [m.header.venue for m in ms],
                [m.header.shard for m in ms], [m.conn for m in ms], kinds,
                [d[0] for d in ds], [d[1] for d in ds], [d[2] for d in ds], texts, blobs]
        arrays = [pa.array(col, type=f.type) for col, f in zip(cols, SCHEMA)]
        self.msgs, self.descs, self.n = [], [], 0
        return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)


_NO_DESC = (None, None, None)


def _text(payload: bytes) -> str | None:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return None


class _Describers:
    def __init__(self, describe_for: DescribeFor | None) -> None:
        self.fn = describe_for
        self.cache: dict[str, Callable | None] = {}

    def get(self, venue: str):
        if self.fn is None:
            return None
        d = self.cache.get(venue, False)
        if d is False:
            d = self.cache[venue] = self.fn(venue)
        return d


def to_arrow(path_or_dir: str | Iterable[str], start: TimeLike = None, end: TimeLike = None,
             venue: str | None = None, *, shard: int | None = None,
             describe_for: DescribeFor | None = None, skip_corrupt: bool = False,
             on_skip: Callable[[Skipped], None] | None = None) -> pa.Table:
    """Every message (data and control) in the range as one Arrow table (columns above).

    Raises:
        NoData: no segment files, or no message in the range.
        SegmentError: a corrupt record (without ``skip_corrupt``).
    """
    paths = find_paths(path_or_dir, venue, shard)
    cols = _Columns()
    desc = _Describers(describe_for)
    batches = []
    for m in walk(path_or_dir, paths=paths, start=start, end=end, skip_corrupt=skip_corrupt,
                  on_skip=on_skip, on_dropped=_log_dropped):
        cols.add(m, desc.get(m.header.venue))
        if cols.n >= _BATCH_ROWS:
            batches.append(cols.batch())
    if cols.n:
        batches.append(cols.batch())
    if not batches:
        raise no_data_in_range(paths, start, end)
    return pa.Table.from_batches(batches, schema=SCHEMA)


def _log_dropped(path: str, d: Dropped) -> None:
    log_event(log, "incomplete_message", logging.WARNING, segment=path, first_seq=d.first_seq,
              last_seq=d.last_seq, reason=d.reason)


# -- files and the manifest -----------------------------------------------------------------

@dataclass
class _Source:
    segment: str
    ring_id: str
    first_seq: int
    last_seq: int
    rows: int = 0


@dataclass
class _OutFile:
    rel: str
    venue: str
    date: str
    shard: int
    path: str
    fmt: str
    writer: object = None
    fh: object = None
    cols: _Columns = field(default_factory=_Columns)
    rows: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    sources: list[_Source] = field(default_factory=list)
    gaps: list[dict] = field(default_factory=list)

    def open(self) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        part = self.path + ".part"
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        self.fh = os.fdopen(fd, "wb")
        if self.fmt == "parquet":
            self.writer = pq.ParquetWriter(self.fh, SCHEMA, compression="zstd")
        else:
            self.writer = pacsv.CSVWriter(self.fh, _csv_schema())

    def flush(self) -> None:
        if not self.cols.n:
            return
        b = self.cols.batch()
        self.writer.write_batch(b if self.fmt == "parquet" else _csv_batch(b))

    def close(self) -> None:
        self.flush()
        self.writer.close()
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        os.rename(self.path + ".part", self.path)

    def manifest(self) -> dict:
        return {"file": self.rel, "venue": self.venue, "date": self.date, "shard": self.shard,
                "rows": self.rows, "first_recv_ns": self.first_ns, "last_recv_ns": self.last_ns,
                "sources": [s.__dict__ for s in self.sources], "gaps": self.gaps}


def _csv_schema() -> pa.Schema:
    return pa.schema([f if f.name != "msg_binary" else pa.field("msg_b64", pa.large_string())
                      for f in SCHEMA])


def _csv_batch(b: pa.RecordBatch) -> pa.RecordBatch:
    blobs = b.column(len(_NAMES) - 1).to_pylist()
    b64 = pa.array([None if x is None else base64.b64encode(x).decode() for x in blobs],
                   pa.large_string())
    return pa.RecordBatch.from_arrays([*b.columns[:-1], b64], schema=_csv_schema())


def export(path_or_dir: str | Iterable[str], out: str, fmt: str = "parquet", *,
           start: TimeLike = None, end: TimeLike = None, venue: str | None = None,
           shard: int | None = None, describe_for: DescribeFor | None = None,
           skip_corrupt: bool = False,
           on_skip: Callable[[Skipped], None] | None = None) -> dict:
    """Write the messages in the range to ``out`` (see the module docstring); returns the manifest.

    Raises:
        NoData: no segment files, or no message in the range.
        SegmentError: a corrupt record (without ``skip_corrupt``); the files
            written so far are complete and the manifest says where it stopped.
        ExportError: ``out`` already holds an export, or is not a directory.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    paths = find_paths(path_or_dir, venue, shard)
    if os.path.lexists(out) and not os.path.isdir(out):
        raise ExportError(out, "exists and is not a directory")
    if os.path.lexists(os.path.join(out, MANIFEST)):
        raise ExportError(out, "already holds an export (_manifest.json); choose another --out")
    if os.path.isdir(out) and os.listdir(out):
        # Everything below out is then ours: no planted symlink is followed.
        raise ExportError(out, "is not empty; export into a new or empty directory")
    made_out = not os.path.lexists(out)
    os.makedirs(out, mode=0o700, exist_ok=True)
    files: dict[tuple, _OutFile] = {}
    desc = _Describers(describe_for)
    skipped: list[Skipped] = []
    dropped: list[tuple[str, Dropped]] = []
    last: dict[tuple, tuple[int, str]] = {}     # (venue, shard, ring) -> (last seq, its segment)

    def note_skip(sk: Skipped) -> None:
        skipped.append(sk)
        if on_skip is not None:
            on_skip(sk)

    error: SegmentError | None = None
    cur_h, cur_day = None, -1
    try:
        for m in walk(path_or_dir, paths=paths, start=start, end=end, skip_corrupt=skip_corrupt,
                      on_skip=note_skip, on_dropped=lambda p, d: (dropped.append((p, d)),
                                                                  _log_dropped(p, d))):
            h, ts = m.header, m.ts_ns
            day = ts // _DAY_NS
            if h is not cur_h or day != cur_day:
                # Once per file and UTC day, not per message: the output file, its
                # ring's continuity key and the describer.
                cur_h, cur_day = h, day
                date = time.strftime("%Y-%m-%d", time.gmtime(day * 86_400))
                key = (h.venue, date, h.shard)
                f = files.get(key)
                if f is None:
                    rel = os.path.join(h.venue, date, f"shard-{h.shard}.{fmt}")
                    f = files[key] = _OutFile(rel, h.venue, date, h.shard, os.path.join(out, rel),
                                              fmt, first_ns=ts, last_ns=ts)
                    f.open()
                ring_key = (h.venue, h.shard, h.ring_id)
                rid = h.ring_id.hex()
                describe = desc.get(h.venue)
                cols = f.cols
            prev = last.get(ring_key)
            if prev is not None and m.seq != prev[0] + 1 and m.seq > prev[0]:
                f.gaps.append(_gap(prev, m, skipped, dropped))
            last[ring_key] = (m.last_seq, m.path)
            src = f.sources[-1] if f.sources else None
            if src is None or src.segment != m.path or src.ring_id != rid:
                src = _Source(m.path, rid, m.seq, m.last_seq)
                f.sources.append(src)
            src.last_seq = m.last_seq
            src.rows += 1
            if m.type == _CONTROL and (b'"drop"' in m.payload or b'"oversize"' in m.payload):
                _note_drop(f, m)
            cols.add(m, describe)
            f.rows += 1
            if ts < f.first_ns:
                f.first_ns = ts
            elif ts > f.last_ns:
                f.last_ns = ts
            if cols.n >= _BATCH_ROWS:
                f.flush()
    except SegmentError as exc:
        error = exc
    for f in files.values():
        f.close()
    if not files and error is None:
        if made_out:
            os.rmdir(out)
        raise no_data_in_range(paths, start, end)
    manifest = {
        "format": fmt, "complete": error is None,
        "error": None if error is None else f"{error} (--skip-corrupt goes on past it)",
        "sources": [os.path.abspath(os.fspath(p)) for p in ([path_or_dir] if isinstance(
            path_or_dir, (str, os.PathLike)) else path_or_dir)],
        "start_ns": to_ns(start), "end_ns": to_ns(end), "venue": venue, "shard": shard,
        "rows": sum(f.rows for f in files.values()),
        "files": [f.manifest() for f in sorted(files.values(), key=lambda f: f.rel)],
        "skipped_corrupt": [{"segment": s.path, "offset": s.offset, "reason": s.reason,
                             "resumed_at": s.resume} for s in skipped],
        "incomplete_messages": [{"segment": p, "first_seq": d.first_seq, "last_seq": d.last_seq,
                                 "reason": d.reason} for p, d in dropped],
        "columns": _NAMES if fmt == "parquet" else _csv_schema().names,
    }
    _write_manifest(out, manifest)
    if error is not None:
        raise error
    return manifest


def _gap(prev: tuple[int, str], m: Msg, skipped: list[Skipped],
         dropped: list[tuple[str, Dropped]]) -> dict:
    first, last = prev[0] + 1, m.seq - 1
    reason = "missing between segment files" if prev[1] != m.path else "missing"
    for sk in skipped:
        if sk.path in (prev[1], m.path):
            reason = f"corrupt region skipped ({sk})"
    for _p, d in dropped:
        if first <= d.first_seq <= last:
            reason = f"a fragmented message did not complete ({d.reason})"
    return {"first_seq": first, "last_seq": last, "count": last - first + 1, "reason": reason}


def _note_drop(f: _OutFile, m: Msg) -> None:
    try:
        obj = orjson.loads(m.payload)
    except orjson.JSONDecodeError:
        return
    if not isinstance(obj, dict) or obj.get("kind") not in ("drop", "oversize"):
        return
    f.gaps.append({"kind": "receiver_" + obj["kind"], "seq": m.seq, "conn": m.conn,
                   "count": int(obj.get("count", 1) or 1), "first_ns": obj.get("first_ns"),
                   "last_ns": obj.get("last_ns"),
                   "reason": "the receiver could not keep these messages (ring full or over "
                             "the size limit); the record says so"})


def _write_manifest(out: str, manifest: dict) -> None:
    path = os.path.join(out, MANIFEST)
    fd = os.open(path + ".part", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(json.dumps(manifest, indent=1).encode() + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(path + ".part", path)


# -- the command ----------------------------------------------------------------------------

def main_export(argv: list[str] | None = None, describe_for: DescribeFor | None = None) -> int:
    """``capture export``: exit 0 done, 1 a corrupt segment (stopped, or skipped with
    --skip-corrupt), 2 bad usage or nothing to export."""
    ap = argparse.ArgumentParser(prog="capture export", description="recorded messages to Parquet "
                                 "or CSV, one file per venue, UTC date and shard, with a manifest")
    ap.add_argument("paths", nargs="+", help="segment files or directories")
    ap.add_argument("--format", choices=FORMATS, default="parquet")
    ap.add_argument("--out", required=True, help="output directory (new or empty)")
    ap.add_argument("--start", help="receive time from (ns or ISO-8601, UTC)")
    ap.add_argument("--end", help="receive time until, inclusive")
    ap.add_argument("--venue")
    ap.add_argument("--shard", type=int)
    ap.add_argument("--skip-corrupt", action="store_true",
                    help="go on past a corrupt record (each one reported on stderr and in the manifest)")
    args = ap.parse_args(argv)
    skipped: list[Skipped] = []

    def on_skip(sk: Skipped) -> None:
        skipped.append(sk)
        print(f"capture export: skipped a corrupt record: {sk}", file=sys.stderr)

    try:
        man = export(args.paths, args.out, args.format, start=to_ns(args.start),
                     end=to_ns(args.end), venue=args.venue, shard=args.shard,
                     describe_for=describe_for, skip_corrupt=args.skip_corrupt, on_skip=on_skip)
    except SegmentError as exc:
        print(f"capture export: corrupt segment {exc}; stopped there (--skip-corrupt goes on past "
              f"it)", file=sys.stderr)
        return 1
    except (NoData, ExportError) as exc:
        print(f"capture export: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:            # a time that does not parse
        print(f"capture export: {exc}", file=sys.stderr)
        return 2
    print(f"capture export: {man['rows']} messages in {len(man['files'])} files under {args.out}",
          file=sys.stderr)
    return 1 if skipped else 0


__all__ = ["to_arrow", "export", "main_export", "SCHEMA", "ExportError", "FORMATS", "MANIFEST"]
