"""Integrity costs: the receive path with sequence checking on vs off, and
the book checksum validator's throughput.

Receive path.  The real hot path, :meth:`capture.receiver.connection.Connection._on_message`
(ring write first, then counters, then - integrity on - the venue's
``sequence`` extractor and the gap check, then the peek/classify step),
is fed directly with frames the simulator's venue sessions build (Kalshi:
one book sid per market plus trade and ticker; Kraken Futures: book, trade
and ticker for five products), in the steady live state (peek limit at its
live value), writing into a 4 MiB ring with no reader.  Off and on run in
the same session on the same frames; each round resets the gap detector so
the sequence runs stay unbroken (the run asserts no gap was found).  The
socket is left out on purpose: it costs the same either way, and what is
measured is the difference.

Validator.  (a) ``Books.feed`` alone over Kraken spot book updates built by
the simulator (10 symbols, exact-digit JSON number literals); (b) the whole
:class:`capture.receiver.integrity.Validator` step: untethered ring read, head filter,
copy, ``Reader.check``, parse with exact digits, book update, CRC32.

Numbers are printed at the end of the run (never asserted).
CAPTURE_BENCH_SCALE scales frame counts.

Run: ``pytest bench/test_integrity_bench.py --benchmark-only -s``.
"""
from __future__ import annotations

import os
import time

import orjson
import pytest

import ring
from capture.receiver.connection import Connection
from capture.receiver.integrity import Validator
from capture.receiver.repair import Integrity
from capture.simulator import Scenario
from capture.simulator.kalshi import KalshiSession
from capture.simulator.kraken import Book as SimBook, _Num
from capture.simulator.kraken_futures import FuturesSession
from capture.simulator.universe import Universe
from capture.venues import Kalshi, KrakenFutures
from capture.venues.kraken.checksum import Books

SCALE = float(os.environ.get("CAPTURE_BENCH_SCALE", "1"))
N_FRAMES = int(50_000 * SCALE)
N_UPDATES = int(20_000 * SCALE)
RESULTS: dict[str, float] = {}


def _kalshi_frames(n: int) -> tuple[list[bytes], list[str]]:
    sc = Scenario(seed=1, instruments=20)
    uni = Universe(1, 20)
    s = KalshiSession(sc, uni, 0)
    tickers = [m.ticker for m in uni.kalshi if m.status == "active"][:5]
    cid = 1
    for t in tickers:
        s.on_message(orjson.dumps({"id": cid, "cmd": "subscribe",
                                   "params": {"channels": ["orderbook_delta"], "market_tickers": [t]}}))
        cid += 1
    s.on_message(orjson.dumps({"id": cid, "cmd": "subscribe",
                               "params": {"channels": ["trade", "ticker"], "market_tickers": tickers}}))
    return [s.next_data() for _ in range(n)], tickers


def _futures_frames(n: int) -> tuple[list[bytes], list[str]]:
    sc = Scenario(seed=1, instruments=20)
    uni = Universe(1, 20)
    s = FuturesSession(sc, uni, 0)
    pids = [p.symbol for p in uni.futures[:5]]
    for feed in ("book", "trade", "ticker"):
        s.on_message(orjson.dumps({"event": "subscribe", "feed": feed, "product_ids": pids}))
    return [s.next_data() for _ in range(n)], pids


FRAMES = {}


def _frames(venue: str):
    if venue not in FRAMES:
        FRAMES[venue] = (_kalshi_frames if venue == "kalshi" else _futures_frames)(N_FRAMES)
    return FRAMES[venue]


@pytest.mark.parametrize("integrity", ["off", "on"])
@pytest.mark.parametrize("venue", ["kalshi", "kraken_futures"])
def test_receive_path(benchmark, make_ring, bench_summary, venue, integrity):
    frames, members = _frames(venue)
    path = make_ring(4 << 20)
    cls = Kalshi if venue == "kalshi" else KrakenFutures
    with ring.Producer(path) as p:
        c = Connection(p, 0, f"{venue}-0", cls, "ws://127.0.0.1:9/", members,
                       integrity=Integrity(venue) if integrity == "on" else None)
        c._peek = c.timing.peek_bytes   # the live steady state
        on = c._on_message
        ts = time.time_ns()

        def reset():
            c.checks.fresh()
            return (), {}

        def run():
            for f in frames:
                on(f, ts, 0)

        benchmark.pedantic(run, setup=reset, rounds=5, iterations=1, warmup_rounds=1)
        assert c.checks.seq_gaps == 0 and c.errors == 0
    rate = len(frames) / benchmark.stats.stats.min
    RESULTS[f"rx {venue} {integrity}"] = rate
    bench_summary.set_renderer("integrity: receive path and validator", _report)


def _kraken_updates(n: int) -> list[bytes]:
    uni = Universe(2, 12)
    books = [SimBook(p, 10, 2, _Num(False), 0) for p in uni.kraken[:10]]
    out = [b.snapshot() for b in books]
    i = 0
    while len(out) < n:
        out.append(books[i % len(books)].update(1_767_225_600_000_000_000 + i))
        i += 1
    return out


def test_checksum_books_feed(benchmark, bench_summary):
    frames = _kraken_updates(N_UPDATES)

    def run():
        b = Books(10)
        for f in frames:
            b.feed(f)
        return b

    b = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    assert all(r.ok for f in frames[:50] for r in Books(10).feed(f))
    assert len(b.books) == 10
    RESULTS["validator Books.feed"] = len(frames) / benchmark.stats.stats.min
    bench_summary.set_renderer("integrity: receive path and validator", _report)


def test_validator_from_ring(benchmark, make_ring, bench_summary, tmp_path):
    frames = _kraken_updates(N_UPDATES)
    path = make_ring(16 << 20)
    state = {}

    def setup():
        if "v" in state:
            state["v"].close()
        with ring.Producer(path) as p:
            v = Validator(path, "kraken", 10, socket_path=str(tmp_path / "none.sock"))
            v.reader.seek(*_head(path))
            for f in frames:
                p.write(f, conn=0)
        state["v"] = v
        return (), {}

    def run():
        v = state["v"]
        while v.step(0.0):
            pass

    benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)
    v = state["v"]
    assert v.counts["mismatches"] == 0 and v.counts["lapped"] == 0
    assert v.counts["updates"] >= len(frames) - 10
    v.close()
    RESULTS["validator step (ring)"] = len(frames) / benchmark.stats.stats.min
    bench_summary.set_renderer("integrity: receive path and validator", _report)


def _head(path: str) -> tuple[int, int]:
    st = ring.stats(path)
    return st["head"], st["next_seq"]


def _report() -> list[str]:
    lines = []
    for venue in ("kalshi", "kraken_futures"):
        off, on = RESULTS.get(f"rx {venue} off"), RESULTS.get(f"rx {venue} on")
        if off and on:
            lines.append(f"receive path {venue:15s} off {off / 1e3:8.0f} k frames/s   "
                         f"on {on / 1e3:8.0f} k frames/s   on/off {on / off:5.2f}   "
                         f"+{(1 / on - 1 / off) * 1e9:5.0f} ns/frame")
    for k in ("validator Books.feed", "validator step (ring)"):
        if k in RESULTS:
            lines.append(f"{k:25s} {RESULTS[k] / 1e3:8.1f} k updates/s")
    return lines
