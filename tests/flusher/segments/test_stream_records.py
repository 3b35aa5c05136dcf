"""The batched reader (csrc/segscan.c behind ``format.iter_stream_records``) yields and
raises exactly what the record-by-record path does: the same records, offsets and
payloads, and the same error (type, offset, reason) at the same point, for clean files,
gap records, fragments, records larger than a read chunk, bit flips and torn tails."""
from __future__ import annotations

import io
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.errors import SegmentError
from flusher.segments import format as fmt
from flusher.segments.format import FILE_HEADER, SegmentHeader, gap_record, iter_stream_records
from ring.frame import FrameFlags, FrameType, encode

BASE_NS = 1_800_000_000 * 1_000_000_000
HEADER = SegmentHeader("test", 0, "host", b"R" * 16, BASE_NS, 0).encode()


def _read(blob: bytes, fast: bool, tolerate_tail: bool = False):
    """Everything the reader yields, then the error it raised (or None)."""
    old = fmt.FAST_PATH
    fmt.FAST_PATH = fast
    out: list = []
    err = None
    try:
        f = io.BytesIO(blob)
        f.seek(FILE_HEADER)
        for off, rec, payload in iter_stream_records(f, "seg", tolerate_tail=tolerate_tail):
            out.append((off, rec, payload))
    except SegmentError as exc:
        err = (type(exc), exc.offset, exc.reason)
    finally:
        fmt.FAST_PATH = old
    return out, err


def _file(seed: int, n: int, big_every: int = 0) -> tuple[bytes, list[int]]:
    """A segment of n records of every kind; returns it and each record's offset."""
    rng = random.Random(seed)
    recs, seq = [], 0
    for i in range(n):
        ts = BASE_NS + i * 1000
        r = rng.random()
        if big_every and i % big_every == big_every - 1:
            recs.append(encode(rng.randbytes(rng.randrange(1 << 20, 3 << 19)), seq, ts))
        elif r < 0.05:
            lost = rng.randrange(1, 5)            # a gap record: sequences seq..seq+lost-1
            recs.append(gap_record(seq, seq + lost - 1, ts, reason="test"))
            seq += lost
            continue
        elif r < 0.08:                            # looks like a gap record, is not one
            recs.append(encode(b'{"kind":"gap", nonsense', seq, ts, FrameType.CONTROL))
        elif r < 0.12:
            recs.append(encode(b'{"kind":"opened"}', seq, ts, FrameType.CONTROL, conn=0xFFFF))
        elif r < 0.18:
            typ = rng.choice([FrameType.FRAG_BEGIN, FrameType.FRAG_MIDDLE, FrameType.FRAG_END])
            recs.append(encode(rng.randbytes(rng.randrange(1, 300)), seq, ts, typ))
        else:
            flags = FrameFlags.BINARY if r > 0.9 else 0
            recs.append(encode(rng.randbytes(rng.randrange(0, 600)), seq, ts, flags=flags,
                               conn=rng.randrange(4)))
        seq += 1
    offs, o = [], FILE_HEADER
    for r in recs:
        offs.append(o)
        o += len(r)
    return HEADER + b"".join(recs), offs


def test_clean_file_read_the_same_both_ways():
    blob, offs = _file(1, 3000)
    fast, err = _read(blob, True)
    assert err is None
    assert [o for o, _r, _p in fast] == offs          # every record, in order
    assert (fast, err) == _read(blob, False)


def test_records_larger_than_a_read_chunk():
    blob, offs = _file(2, 40, big_every=9)
    fast, err = _read(blob, True)
    assert err is None and [o for o, _r, _p in fast] == offs
    assert (fast, err) == _read(blob, False)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), where=st.floats(0, 1), bit=st.integers(0, 7),
       cut=st.booleans(), tolerate=st.booleans())
def test_damage_is_met_at_the_same_record_with_the_same_error(seed, where, bit, cut, tolerate):
    blob, _offs = _file(seed, 300)
    at = FILE_HEADER + int(where * (len(blob) - FILE_HEADER - 1))
    if cut:
        damaged = blob[:at]                   # a torn tail
    else:
        b = bytearray(blob)
        b[at] ^= 1 << bit                     # a bit flip anywhere in the records
        damaged = bytes(b)
    fast = _read(damaged, True, tolerate)
    slow = _read(damaged, False, tolerate)
    assert fast == slow
    if not cut and not tolerate:
        # A flip is always noticed (the CRC covers the header's first 28 bytes and the
        # payload; a flip in the CRC field itself fails the comparison) unless it lands
        # in padding, which no check covers.
        records, err = fast
        assert err is not None or len(records) == len(_offs)


def test_sequence_break_raises_at_the_record():
    a = encode(b"x" * 40, 0, BASE_NS)
    b = encode(b"y" * 40, 2, BASE_NS + 1)     # 1 is missing and no gap record says so
    blob = HEADER + a + b
    records, err = _read(blob, True)
    assert [r[1][2] for r in records] == [0]
    assert err is not None and err[1] == FILE_HEADER + len(a) and "sequence 2" in err[2]
    assert (records, err) == _read(blob, False)


@pytest.mark.parametrize("fast", [True, False])
def test_gap_record_moves_the_expected_sequence(fast):
    blob = HEADER + encode(b"a", 0, BASE_NS) + gap_record(1, 5, BASE_NS + 1) + encode(
        b"b", 6, BASE_NS + 2)
    records, err = _read(blob, fast)
    assert err is None and [r[1][2] for r in records] == [0, 1, 6]
