"""A small recording for the data-out tests (cat, export, replay): real segment
files written by the segment writer, Kraken spot v2 messages on two
connections, chatter, control records (one of the whole shard, conn 65535),
a binary message and a fragmented one, over two UTC days and two segments.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from flusher_helpers import write_segment
from ring.frame import FrameFlags, FrameType, encode

DAY1 = 1_800_000_000 * 1_000_000_000 - 3_600 * 1_000_000_000    # 2027-01-15T07:00:00Z
SHARD_CONN = 0xFFFF
RING_ID = bytes(range(16))


def kraken_book(symbol: str, i: int, ts_text: str) -> bytes:
    return (b'{"channel":"book","type":"update","data":[{"symbol":"%s","bids":[{"price":%d.1,'
            b'"qty":0.5}],"asks":[],"checksum":%d,"timestamp":"%s"}]}'
            % (symbol.encode(), 100 + i, 1000 + i, ts_text.encode()))


def kraken_trade(symbol: str, i: int, ts_text: str) -> bytes:
    return (b'{"channel":"trade","type":"update","data":[{"symbol":"%s","side":"buy","price":%d,'
            b'"qty":1,"ord_type":"limit","trade_id":%d,"timestamp":"%s"}]}'
            % (symbol.encode(), 50 + i, i, ts_text.encode()))


def iso(ns: int) -> str:
    import time
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + ".%06dZ" % (ns % 10**9 // 1000)


@dataclass
class Recording:
    root: str
    venue: str = "kraken"
    shard: int = 2
    # seq -> (ts, type, flags, conn, payload) of every whole message, in order
    messages: dict = field(default_factory=dict)
    paths: list = field(default_factory=list)

    def data(self, conn: int | None = None) -> list[tuple]:
        return [(s, *v) for s, v in self.messages.items() if v[1] == int(FrameType.DATA)
                and (conn is None or v[3] == conn)]


def kraken_recording(root: str, n: int = 40, *, venue: str = "kraken", shard: int = 2,
                     frag_limit: int = 0, step_ns: int = 7_000_000, t0: int = DAY1) -> Recording:
    """Write the recording: segment 1 on day 1, segment 2 across midnight
    into day 2 (so exports have two date partitions)."""
    os.makedirs(root, exist_ok=True)
    rec = Recording(root, venue, shard)
    frames: list[bytes] = []
    seq = 0
    ts = t0

    def add(payload: bytes, typ: int = int(FrameType.DATA), flags: int = 0, conn: int = 0,
            fragments: int = 0) -> None:
        nonlocal seq, ts
        ts += step_ns
        rec.messages[seq] = (ts, typ, flags, conn, payload)
        if fragments:
            step = -(-len(payload) // fragments)
            parts = [payload[k:k + step] for k in range(0, len(payload), step)]
            for k, part in enumerate(parts):
                t = (FrameType.FRAG_BEGIN if k == 0 else
                     FrameType.FRAG_END if k == len(parts) - 1 else FrameType.FRAG_MIDDLE)
                fl = ((typ << 4) | flags) if k == 0 else 0
                frames.append(encode(part, seq, ts, int(t), fl, conn))
                seq += 1
            return
        frames.append(encode(payload, seq, ts, typ, flags, conn))
        seq += 1

    add(json.dumps({"kind": "shard_start", "venue": venue, "shard": shard}).encode(),
        int(FrameType.CONTROL), conn=SHARD_CONN)
    for c in (0, 1):
        add(json.dumps({"kind": "opened", "conn": c}).encode(), int(FrameType.CONTROL), conn=c)
        add(b'{"method":"subscribe","result":{"channel":"book","symbol":"%s"},"success":true,'
            b'"req_id":1}' % (b"BTC/USD" if c == 0 else b"ETH/USD"), conn=c)
    symbols = ["BTC/USD", "ETH/USD"]
    for i in range(n):
        c = i % 2
        if i == n // 2:
            # segment boundary and a day boundary: the rest is on the next UTC day
            rec.paths.append(write_segment(root, frames, venue=venue, shard=shard, ring_id=RING_ID,
                                           created_ns=t0)[0])
            frames = []
            ts = (t0 // 86_400_000_000_000 + 1) * 86_400_000_000_000 + 1_000_000
        t_text = iso(ts + step_ns)
        if i % 11 == 3:
            add(b'{"channel":"heartbeat"}', conn=c)
        elif i % 13 == 7:
            add(bytes([0, 1, 2, 255, i & 0xFF]) * 20, flags=int(FrameFlags.BINARY), conn=c)
        elif i % 17 == 9:
            add(kraken_book(symbols[c], i, t_text) + b" " * 300, conn=c, fragments=3)
        elif i % 3 == 0:
            add(kraken_trade(symbols[c], i, t_text), conn=c)
        else:
            add(kraken_book(symbols[c], i, t_text), conn=c)
    add(json.dumps({"kind": "shard_stop"}).encode(), int(FrameType.CONTROL), conn=SHARD_CONN)
    rec.paths.append(write_segment(root, frames, venue=venue, shard=shard, ring_id=RING_ID,
                                   created_ns=ts)[0])
    return rec


def corrupt_record(path: str, seq: int) -> int:
    """Flip a payload byte of record ``seq`` in a closed segment; returns its offset."""
    from flusher.segments.read import records
    for off, rec, _payload in records(path):
        if rec[2] == seq:
            with open(path, "r+b") as f:
                f.seek(off + 32)
                b = f.read(1)
                f.seek(off + 32)
                f.write(bytes([b[0] ^ 0x55]))
            return off
    raise AssertionError(f"no record {seq} in {path}")
