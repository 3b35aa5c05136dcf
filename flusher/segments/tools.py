"""``cat``, ``verify`` and ``stats`` over segment files.

Each is a function ``main_*(argv) -> exit status`` so the ``capture`` command
can mount them as subcommands; ``python -m flusher cat|verify|stats ...``
runs them today.

Exit status: 0 clean; 1 corruption (a bad record inside a segment, a bad
header, a torn closed segment, duplicated sequences, ``.corrupt`` files set
aside by recovery) or a hole in the sequence that no record explains (a
segment file missing from the middle, a cursor reset); 2 bad usage or a
path that is not there.  Holes that records explain (gap records written by
recovery over a damaged region, receiver drop records) are listed with
their reasons but are not errors: the capture says what it did not get.
"""
from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import orjson

from flusher.segments.read import records, segment_paths, to_ns
from flusher.segments.names import SUFFIX_CORRUPT, SUFFIX_OPEN
from flusher.segments.format import SegmentHeader, gap_range, scan
from flusher.segments.salvage import scan_damaged
from common.errors import NoData, SegmentError
from flusher.segments.walk import Skipped, find_paths, no_data_in_range, walk
from ring.frame import FrameFlags, FrameType

EXIT_OK, EXIT_CORRUPT, EXIT_USAGE = 0, 1, 2
_TYPE_NAMES = {int(t): t.name.lower() for t in FrameType}
_CONTROL = int(FrameType.CONTROL)
_END = int(FrameType.FRAG_END)
_DATA = int(FrameType.DATA)


@dataclass
class Finding:
    kind: str          # corrupt | torn_tail | bad_header | corrupt_file | duplicate | gap | gap_record
                       # | ring_changed | drop | aborted
    path: str
    offset: int | None
    detail: str
    seq: int | None = None
    error: bool = False

    def as_dict(self) -> dict:
        return {"kind": self.kind, "path": self.path, "offset": self.offset, "seq": self.seq,
                "error": self.error, "detail": self.detail}

    def __str__(self) -> str:
        where = self.path + (f" at offset {self.offset}" if self.offset is not None else "")
        level = "ERROR" if self.error else "note"
        return f"{level} {self.kind}: {where}: {self.detail}"


@dataclass
class SegmentCheck:
    path: str
    header: SegmentHeader | None = None
    frames: int = 0
    bytes: int = 0
    first_seq: int = -1
    last_seq: int = -1
    min_ts: int = 0
    max_ts: int = 0
    drops: int = 0
    dropped_frames: int = 0
    gap_records: int = 0
    gap_frames: int = 0                # sequences lost, each named by a gap record
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.error for f in self.findings)


def check_segment(path: str) -> SegmentCheck:
    """Verify one segment: header, every record (CRC, size, sequence), and
    collect receiver drop records, gap records and aborted fragment chains.

    A damaged region with valid records after it (an open segment after a
    power loss, before recovery rebuilds it) is one error finding per region
    naming the byte and sequence range; the counts come from the scan, which
    reads past it."""
    c = SegmentCheck(path)
    is_open = path.endswith(SUFFIX_OPEN)
    limit = None
    res = None
    start = None
    if not path.endswith(".zst"):
        try:
            res = scan(path)
        except SegmentError as exc:
            # A damaged header: the records are still checked when every
            # header field can be checked another way (salvage.py); the
            # finding stays an error either way.
            try:
                res = scan_damaged(path, exc)
            except SegmentError as why:
                c.findings.append(Finding("bad_header", path, exc.offset, why.reason, error=True))
                return c
            hd = res.header_damage
            start = hd.first_off
            c.findings.append(Finding("bad_header", path, exc.offset,
                                      f"{hd.describe()}; {res.records} records from offset "
                                      f"{hd.first_off} pass their checks", error=True))
        c.header = res.header
        for h in res.holes:
            lost = (f"sequences {h.first_seq}..{h.last_seq}" if h.last_seq >= h.first_seq
                    else "no sequence")
            c.findings.append(Finding("corrupt", path, h.offset,
                                      f"{h.reason}; bytes {h.offset}..{h.end} damaged, {lost} lost, "
                                      f"valid records follow (no gap record yet: recovery of an open "
                                      f"segment writes one)", h.first_seq, error=True))
        if res.tail is not None:
            p = res.tail
            c.findings.append(Finding("torn_tail", path, p.offset,
                                      f"{p.reason}; {res.file_size - p.offset} bytes after the last "
                                      f"good record" + ("" if is_open else " of a CLOSED segment"),
                                      error=not is_open))
        problems = [h.offset for h in res.holes] + ([res.tail.offset] if res.tail else [])
        limit = min((o for o in problems if o >= (start or 0)), default=None)
    try:
        hdrs: list = []
        for off, rec, payload in records(path, header_out=hdrs, from_offset=start,
                                         header=res.header if start is not None else None):
            if limit is not None and off >= limit:
                break
            size, _lo, seq, ts, typ, flags = rec[:6]
            if c.frames == 0:
                c.first_seq, c.min_ts, c.max_ts = seq, ts, ts
            c.min_ts, c.max_ts = min(c.min_ts, ts), max(c.max_ts, ts)
            c.last_seq = seq
            c.frames += 1
            c.bytes += size
            if typ == _CONTROL:
                covered = gap_range(typ, seq, payload)
                if covered is not None:
                    c.last_seq = covered
                    _note_gap(c, path, off, seq, covered, payload)
                elif b'"drop"' in payload or b'"oversize"' in payload:
                    _note_control(c, path, off, seq, payload)
            elif typ == _END and flags & FrameFlags.ABORTED:
                c.findings.append(Finding("aborted", path, off, "a fragmented message was dropped by "
                                          "the receiver (chain ended ABORTED)", seq))
        if hdrs:
            c.header = hdrs[0]
    except SegmentError as exc:
        if limit is None or exc.offset < limit:
            kind = "bad_header" if exc.offset < 256 else "corrupt"
            if is_open and type(exc).__name__ == "TruncatedSegment":
                kind = "torn_tail"
            c.findings.append(Finding(kind, path, exc.offset, exc.reason, error=kind != "torn_tail"))
    except Exception as exc:  # zstd errors and the like
        c.findings.append(Finding("corrupt", path, None, f"cannot decompress: {exc}", error=True))
    if res is not None and res.holes:
        # Past the first hole the stream stopped; the scan read on.
        c.frames, c.first_seq, c.last_seq = res.records, res.first_seq, res.last_seq
        c.min_ts, c.max_ts = res.min_ts, res.max_ts
        if start is not None:
            # Sequences lost with a damaged header are named by the finding
            # above: the file covers them, as its checked name says.
            c.first_seq = res.header.first_seq
    return c


def _note_gap(c: SegmentCheck, path: str, off: int, first: int, last: int, payload: bytes) -> None:
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        obj = {}
    c.gap_records += 1
    c.gap_frames += last - first + 1
    where = ""
    if "offset" in obj and "bytes" in obj:
        where = f" (bytes {obj['offset']}..{obj['offset'] + obj['bytes']} of {obj.get('segment', '?')})"
    c.findings.append(Finding("gap_record", path, off,
                              f"sequences {first}..{last} lost ({last - first + 1} frames): "
                              f"{obj.get('reason', 'no reason given')}{where}, recorded by "
                              f"{obj.get('source', '?')}", first))


def _note_control(c: SegmentCheck, path: str, off: int, seq: int, payload: bytes) -> None:
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return
    kind = obj.get("kind") if isinstance(obj, dict) else None
    if kind == "drop":
        n = int(obj.get("count", 0))
        c.drops += 1
        c.dropped_frames += n
        reasons = ", ".join(f"{k} x{v}" for k, v in (obj.get("reasons") or {}).items()) or "unknown"
        c.findings.append(Finding("drop", path, off,
                                  f"receiver dropped {n} frames ({obj.get('bytes', '?')} bytes; {reasons}) "
                                  f"received {_iso(obj.get('first_ns'))} .. {_iso(obj.get('last_ns'))}", seq))
    elif kind == "oversize":
        c.drops += 1
        c.dropped_frames += 1
        c.findings.append(Finding("drop", path, off, f"receiver refused a {obj.get('size')}-byte message "
                                  f"(limit {obj.get('limit')})", seq))


def _iso(ns) -> str:
    if not isinstance(ns, int) or ns <= 0:
        return "?"
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}Z"


def corrupt_files(target: str) -> list[str]:
    out = []
    if os.path.isdir(target):
        for dirpath, dirs, files in os.walk(target, followlinks=False):
            dirs.sort()
            out += [os.path.join(dirpath, f) for f in sorted(files) if SUFFIX_CORRUPT in f]
    return out


def check_tree(targets: Iterable[str], venue: str | None = None,
               shard: int | None = None) -> tuple[list[SegmentCheck], list[Finding]]:
    """Check every segment, then the sequence between consecutive segments of one shard."""
    checks: list[SegmentCheck] = []
    extra: list[Finding] = []
    for t in targets:
        for cf in corrupt_files(t):
            extra.append(Finding("corrupt_file", cf, None,
                                 "set aside by recovery after mid-file corruption", error=True))
        for p in segment_paths(t, venue, shard):
            checks.append(check_segment(p))
    last: dict[tuple, SegmentCheck] = {}
    for c in checks:
        if c.header is None or c.frames == 0:
            continue
        key = (c.header.venue, c.header.shard)
        prev = last.get(key)
        last[key] = c
        if prev is None:
            continue
        if prev.header.ring_id != c.header.ring_id:
            extra.append(Finding("ring_changed", c.path, None,
                                 f"new ring {c.header.ring_id.hex()} (was {prev.header.ring_id.hex()}): "
                                 "sequence numbers start afresh", c.first_seq))
        elif c.first_seq <= prev.last_seq:
            extra.append(Finding("duplicate", c.path, 256,
                                 f"sequences {c.first_seq}..{min(prev.last_seq, c.last_seq)} are also in "
                                 f"{os.path.basename(prev.path)}", c.first_seq, error=True))
        elif c.first_seq != prev.last_seq + 1:
            # No record explains these sequences: a segment file missing from
            # the middle, a flusher cursor removed or reset, a power loss.
            why = ("a .corrupt file set aside may hold them" if any(f.kind == "corrupt_file" for f in extra)
                   else "no record explains them (a segment file missing, the flusher cursor removed "
                        "or reset, or lost in a power loss under fsync=interval/never)")
            extra.append(Finding("gap", c.path, 256,
                                 f"sequences {prev.last_seq + 1}..{c.first_seq - 1} missing after "
                                 f"{os.path.basename(prev.path)}: {why}", prev.last_seq + 1, error=True))
    return checks, extra


# -- commands ------------------------------------------------------------------------
def _common(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("paths", nargs="+", help="segment files or directories")
    ap.add_argument("--venue", help="only this venue's segments (directories only)")
    ap.add_argument("--shard", type=int, help="only this shard's segments (directories only)")


def main_verify(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="capture verify", description="check segment files: CRC, "
                                 "sequence continuity, gaps (exit 1 on corruption)")
    _common(ap)
    ap.add_argument("--json", action="store_true", help="one JSON object per finding")
    ap.add_argument("-q", "--quiet", action="store_true", help="only errors")
    args = ap.parse_args(argv)
    for p in args.paths:
        if not os.path.exists(p):
            print(f"capture verify: {p}: no such file or directory", file=sys.stderr)
            return EXIT_USAGE
    _warn_unmatched("verify", args.paths, args.venue, args.shard)
    checks, extra = check_tree(args.paths, args.venue, args.shard)
    findings = [f for c in checks for f in c.findings] + extra
    out = sys.stdout
    for f in findings:
        if args.quiet and not f.error:
            continue
        out.write(orjson.dumps(f.as_dict()).decode() + "\n" if args.json else str(f) + "\n")
    bad = any(f.error for f in findings)
    frames = sum(c.frames for c in checks)
    lost = sum(c.gap_frames for c in checks)
    if not args.json:
        out.write(f"{len(checks)} segments, {frames} frames"
                  + (f", {lost} lost frames named by gap records" if lost else "")
                  + f": {'CORRUPTION FOUND' if bad else 'ok'}\n")
    return EXIT_CORRUPT if bad else EXIT_OK


def main_stats(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="capture stats", description="frames, bytes, time span and "
                                 "gaps per segment")
    _common(ap)
    ap.add_argument("--json", action="store_true", help="one JSON object per segment")
    args = ap.parse_args(argv)
    for p in args.paths:
        if not os.path.exists(p):
            print(f"capture stats: {p}: no such file or directory", file=sys.stderr)
            return EXIT_USAGE
    _warn_unmatched("stats", args.paths, args.venue, args.shard)
    checks, extra = check_tree(args.paths, args.venue, args.shard)
    gaps_at: dict[str, int] = {}
    for f in extra:
        if f.kind == "gap":
            gaps_at[f.path] = gaps_at.get(f.path, 0) + 1
    out = sys.stdout
    if not args.json:
        out.write(f"{'segment':<60} {'frames':>10} {'bytes':>13} {'first':>24} {'span_s':>9} "
                  f"{'gaps':>5} {'drops':>6}\n")
    tot_f = tot_b = 0
    for c in checks:
        gaps = gaps_at.get(c.path, 0)
        span = (c.max_ts - c.min_ts) / 1e9 if c.frames else 0.0
        tot_f += c.frames
        tot_b += c.bytes
        if args.json:
            out.write(orjson.dumps({"path": c.path, "frames": c.frames, "bytes": c.bytes,
                                    "first_seq": c.first_seq, "last_seq": c.last_seq,
                                    "min_ts": c.min_ts, "max_ts": c.max_ts, "span_s": span,
                                    "gaps": gaps, "drop_records": c.drops,
                                    "dropped_frames": c.dropped_frames, "ok": c.ok}).decode() + "\n")
        else:
            out.write(f"{os.path.basename(c.path):<60} {c.frames:>10} {c.bytes:>13} "
                      f"{_iso(c.min_ts)[:24]:>24} {span:>9.3f} {gaps:>5} {c.drops:>6}"
                      f"{'' if c.ok else '  CORRUPT'}\n")
    if not args.json:
        out.write(f"{'total':<60} {tot_f:>10} {tot_b:>13}\n")
    return EXIT_OK if all(c.ok for c in checks) and not any(f.error for f in extra) else EXIT_CORRUPT


def main_cat(argv: list[str] | None = None,
             describe_for: Callable[[str], Callable[[bytes], tuple] | None] | None = None) -> int:
    """``capture cat``: one JSON object per message.

    Fields: ``ts`` (receive ns), ``time`` (ISO), ``seq``, ``type``, ``conn``
    (the connection inside the shard; ``65535`` marks a record of the whole
    shard, such as shard start/stop), ``channel`` and ``symbol`` when the
    venue module can tell them (``describe_for``, given by the ``capture``
    command: this layer does not know the venues), and the message: ``msg``
    is the message itself when it is JSON (its original bytes embedded, so
    it parses once), a string when it is other text, ``msg_b64`` when binary.
    With ``--raw``, ``msg`` is always the original text as a string.
    """
    ap = argparse.ArgumentParser(prog="capture cat", description="messages as NDJSON: receive "
                                 "time, sequence, type, connection (65535: the whole shard), "
                                 "channel, symbol, message")
    _common(ap)
    ap.add_argument("--start", help="receive time from (ns or ISO-8601, UTC)")
    ap.add_argument("--end", help="receive time until, inclusive")
    ap.add_argument("--first-seq", type=int, help="from this sequence number")
    ap.add_argument("--last-seq", type=int, help="until this sequence number, inclusive")
    ap.add_argument("--data-only", action="store_true", help="leave out control frames")
    ap.add_argument("--raw", action="store_true",
                    help="msg is the original text as a JSON string, never parsed")
    ap.add_argument("--skip-corrupt", action="store_true",
                    help="go on past a corrupt record (each one is reported on stderr)")
    args = ap.parse_args(argv)
    try:
        start, end = _time_arg(args.start, "--start"), _time_arg(args.end, "--end")
    except ValueError as exc:
        print(f"capture cat: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for p in args.paths:
        if not os.path.exists(p):
            print(f"capture cat: {p}: no such file or directory", file=sys.stderr)
            return EXIT_USAGE
    out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None
    write = out.write if out is not None else (lambda b: sys.stdout.write(b.decode()))
    skipped: list[Skipped] = []

    def on_skip(sk: Skipped) -> None:
        skipped.append(sk)
        sys.stdout.flush()
        print(f"capture cat: skipped a corrupt record: {sk}", file=sys.stderr)

    def on_dropped(path: str, d) -> None:
        sys.stdout.flush()
        print(f"capture cat: note: sequences {d.first_seq}..{d.last_seq} in {path}: a fragmented "
              f"message that did not complete ({d.reason}); not shown", file=sys.stderr)

    describers: dict[str, Callable | None] = {}
    count = 0
    try:
        paths = find_paths(args.paths, args.venue, args.shard)
        for m in walk(args.paths, paths=paths, start=start, end=end,
                      first_seq=args.first_seq, last_seq=args.last_seq,
                      skip_corrupt=args.skip_corrupt, on_skip=on_skip, on_dropped=on_dropped):
            if args.data_only and m.type != _DATA:
                continue
            rec = {"ts": m.ts_ns, "time": _iso(m.ts_ns), "seq": m.seq,
                   "type": _TYPE_NAMES.get(m.type, str(m.type)), "conn": m.conn}
            payload = bytes(m.payload)
            if m.type == _DATA and describe_for is not None:
                v = m.header.venue
                d = describers[v] if v in describers else describers.setdefault(v, describe_for(v))
                if d is not None:
                    channel, symbol, _ex = d(payload)
                    if channel is not None:
                        rec["channel"] = channel
                    if symbol is not None:
                        rec["symbol"] = symbol
            _put_msg(rec, payload, m.flags, args.raw)
            write(orjson.dumps(rec) + b"\n")
            count += 1
        if not count and (args.start or args.end):
            raise no_data_in_range(paths, start, end)
    except BrokenPipeError:
        return EXIT_OK
    except SegmentError as exc:
        sys.stdout.flush()
        print(f"capture cat: {exc} (--skip-corrupt goes on past it)", file=sys.stderr)
        return EXIT_CORRUPT
    except (NoData, ValueError) as exc:
        print(f"capture cat: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_CORRUPT if skipped else EXIT_OK


def _put_msg(rec: dict, payload: bytes, flags: int, raw: bool) -> None:
    """The message into ``rec``: parsed-once JSON, text, or base64 for binary."""
    if flags & FrameFlags.BINARY:
        rec["msg_b64"] = base64.b64encode(payload).decode()
        return
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        rec["msg_b64"] = base64.b64encode(payload).decode()
        return
    if not raw:
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            obj = _NOT_JSON
        if obj is not _NOT_JSON:
            # The original bytes, embedded as they are, unless a line break
            # in them would break the one-object-per-line output.
            rec["msg"] = obj if b"\n" in payload or b"\r" in payload else orjson.Fragment(payload)
            return
    rec["msg"] = text


_NOT_JSON = object()


def _time_arg(s: str | None, flag: str = "time") -> int | None:
    """ns since the epoch from the command line.

    Raises:
        ValueError: one line naming the flag, the text and what is accepted.
    """
    if s is None:
        return None
    if s.isdigit():
        return int(s)
    try:
        return to_ns(s)
    except (ValueError, TypeError):
        raise ValueError(f"{flag} {s!r}: not a time; give ns since the epoch or ISO-8601 "
                         f"(UTC unless it names an offset), e.g. 2026-12-06T07:00:00Z") from None


def _warn_unmatched(tool: str, paths: list[str], venue: str | None, shard: int | None) -> None:
    """A --venue/--shard filter that selects none of the segments there is
    most likely a typo: say so (the command still runs, and finds nothing)."""
    if venue is None and shard is None:
        return
    for p in paths:
        if not os.path.isdir(p):
            continue
        if not segment_paths(p, venue, shard) and segment_paths(p):
            what = " ".join(f for f in (f"--venue {venue}" if venue else "",
                                        f"--shard {shard}" if shard is not None else "") if f)
            print(f"capture {tool}: warning: {what} matches none of the segment files under {p}",
                  file=sys.stderr)


COMMANDS = {"cat": main_cat, "verify": main_verify, "stats": main_stats}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print("usage: python -m flusher {cat|verify|stats} PATH... (see --help of each)", file=sys.stderr)
        return EXIT_USAGE
    return COMMANDS[argv[0]](argv[1:])
