"""The compiled receiver path (capture/receiver/_fastpath.pyx) against the Python one.

Frames are made with picows's own test constructor and handed to each
listener exactly as picows would; the ring must hold the same frames and the
connection the same counts either way."""
from __future__ import annotations

import os

import orjson
import pytest


import ring  # noqa: E402
from capture.receiver import transport as tr  # noqa: E402
from capture.receiver.connection import Connection  # noqa: E402
from capture.receiver.lifecycle import State  # noqa: E402
from capture.venues import Kalshi, KrakenSpot  # noqa: E402
from receiver_helpers import CONTROL, DATA, cleanup, make_ring_dir  # noqa: E402

pw = pytest.importorskip("picows.picows")
TEXT, BINARY, CONT = pw.WSMsgType.TEXT, pw.WSMsgType.BINARY, pw.WSMsgType.CONTINUATION


def frame(kind, payload: bytes, fin: bool = True):
    return pw._make_test_ws_frame(kind, payload, fin, False)


@pytest.fixture
def ring_dir():
    d = make_ring_dir()
    yield d
    cleanup(d)


def _ring(d: str, name: str, cap: int) -> str:
    p = os.path.join(d, name)
    ring.create(p, cap).close()
    return p


def _live(path: str, compiled: bool, venue=KrakenSpot, **kw) -> tuple[Connection, ring.Producer, object]:
    """A live connection and the listener picows would get for it."""
    p = ring.Producer(path)
    c = Connection(p, 3, "kraken-3", venue, "ws://127.0.0.1:9/v2", ["BTC/USD"], **kw)
    if not compiled:
        c._fast = None
    c.state = State.LIVE
    c._set_peek()
    t = tr.make_transport("picows", c._on_message, fast=c._fast)
    made = tr._make_picows_listener()(t)
    listener = made()   # a factory either way: the Python class, or a function
    assert (type(listener).__name__ == "FastListener") == compiled
    return c, p, listener


def _read_all(path: str, name: str) -> list:
    out = []
    with ring.Reader(path, name, tethered=False, start="oldest") as rd:
        while len(b := rd.read()):
            out.extend((f.type, f.flags, f.conn, bytes(f.payload)) for f in b)
    return out


def test_the_compiled_path_is_built():
    # make test builds it; a silent fallback would hide a 5x slower receiver
    assert tr._fastpath is not None, tr.FASTPATH_ERROR


def test_compiled_and_python_paths_write_the_same(ring_dir):
    body = b'{"channel":"trade","type":"update","data":[' + b"7" * 300 + b"]}"
    frames = [
        (TEXT, body, True),
        (BINARY, body, True),
        (TEXT, b'{"channel":"heartbeat"}', True),           # small: classified in Python
        (TEXT, b'{"channel":"trade","data":[' + b"1" * 300, True),   # large, not JSON at its end
        (TEXT, b'{"channel":"book","data":[' + b"2" * 200, False),   # a fragmented message ...
        (CONT, b"3" * 200 + b"]}", True),                    # ... completed
        (TEXT, b"x" * 70_000, True),                         # above the compiled path's size
    ]
    got = {}
    for compiled in (True, False):
        path = _ring(ring_dir, f"r{int(compiled)}.ring", 1 << 20)
        c, p, listener = _live(path, compiled)
        for kind, payload, fin in frames:
            listener.on_ws_frame(None, frame(kind, payload, fin))
        got[compiled] = ([g for g in _read_all(path, "t") if g[0] == DATA],
                         (c.frames, c.nbytes, c.malformed, c.refused, c.last_data_ns > 0))
        if compiled:
            assert c._fast.frames == 3   # the two large frames and the odd one went the C way
        p.close()
    assert got[True] == got[False]
    data, counts = got[True]
    assert [d[3] for d in data] == [body, body, b'{"channel":"heartbeat"}',
                                    b'{"channel":"trade","data":[' + b"1" * 300,
                                    b'{"channel":"book","data":[' + b"2" * 200 + b"3" * 200 + b"]}",
                                    b"x" * 70_000]
    assert [d[1] for d in data][:2] == [0, int(ring.FrameFlags.BINARY)]
    assert counts[:4] == (6, sum(len(d[3]) for d in data), 2, 0)


def test_a_full_ring_then_the_gap_record_comes_first(ring_dir):
    """Frames the ring refuses on the compiled path fall to the Python path,
    which counts them; the gap record then precedes the next frame."""
    path = _ring(ring_dir, "small.ring", 1 << 16)
    c, p, listener = _live(path, True)
    body = b'{"channel":"trade","data":[' + b"1" * 1000 + b"]}"
    with ring.Reader(path, "flusher", tethered=True) as rd:
        while not c.refused:
            listener.on_ws_frame(None, frame(TEXT, body))
        assert p._p.hold == 1    # writes are held for the gap record
        fast_before = c._fast.frames
        while len(b := rd.read()):
            rd.commit(b)
        listener.on_ws_frame(None, frame(TEXT, body))
        got = [(f.type, bytes(f.payload)) for f in rd.read()]
    assert [g[0] for g in got] == [CONTROL, DATA]
    assert orjson.loads(got[0][1])["kind"] == "drop"
    assert c._fast.frames == fast_before         # written by the Python path, which released the hold
    assert p._p.hold == 0
    listener.on_ws_frame(None, frame(TEXT, body))
    assert c._fast.frames == fast_before + 1     # and the compiled path takes over again
    p.close()


def test_sequence_checked_venues_stay_on_the_python_path(ring_dir):
    from capture.receiver.repair import Integrity
    path = _ring(ring_dir, "k.ring", 1 << 20)
    p = ring.Producer(path)
    c = Connection(p, 1, "kalshi-1", Kalshi, "ws://127.0.0.1:9/v2", ["KXBTC"], integrity=Integrity("kalshi"))
    assert c._fast is not None and c._fast.enabled is False
    p.close()


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
def test_a_bug_in_the_glue_is_recorded_not_raised_to_picows(ring_dir, compiled):
    """An exception after the ring write must not reach picows (it would drop
    the socket): it is counted and recorded, and the frame is in the ring."""
    path = _ring(ring_dir, "g.ring", 1 << 20)
    c, p, listener = _live(path, compiled)

    def broken(payload, ts):
        raise RuntimeError("glue bug")

    c._odd_large = broken
    odd = b'{"channel":"trade","data":[' + b"1" * 300      # large, and not JSON at its end
    listener.on_ws_frame(None, frame(TEXT, odd))
    assert c.errors == 1
    got = _read_all(path, "t")
    assert [g[3] for g in got if g[0] == DATA] == [odd]
    errs = [orjson.loads(g[3]) for g in got if g[0] == CONTROL and b"receiver_error" in g[3]]
    assert len(errs) == 1 and "glue bug" in errs[0]["error"]
    p.close()
