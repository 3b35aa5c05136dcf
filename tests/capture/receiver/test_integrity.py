"""Kraken spot book checksums off the receive path: the validator process
(capture.receiver.integrity) reads the ring, reports mismatches over the integrity
channel, and the receiver records them and resubscribes that symbol only,
rate-limited.  Also: agreement with the simulator's own checksum code on the
books it builds (trailing zeros included), the rate limiter, the channel,
and a lapped validator."""
from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys

import orjson
import pytest


import ring  # noqa: E402
from capture.receiver import integrity  # noqa: E402
from capture.receiver.integrity import Validator  # noqa: E402
from common.log import Throttle  # noqa: E402
from capture.venues.kraken.checksum import is_book_frame  # noqa: E402
from capture.receiver.process import ReceiverConfig  # noqa: E402
from capture.receiver.repair import ChannelClient, ChannelServer, RepairLimiter, TokenBucket, channel_path  # noqa: E402
from capture.simulator import Scenario, SimulatorThread  # noqa: E402
from capture.simulator.kraken import Book as SimBook, _Num  # noqa: E402
from capture.simulator.universe import Universe  # noqa: E402
from common.status import read_status  # noqa: E402
from capture.venues.kraken.checksum import Books  # noqa: E402
from integrity_helpers import (TRANSPORTS, cleanup, controls, data_in_ring, data_json,  # noqa: E402
                               new_ring, received, total_sent)
from receiver_helpers import FAST, Collector, ReceiverThread, assert_exactly_sent  # noqa: E402
from timing import timeout, wait_for  # noqa: E402

TRAILING_ZERO = re.compile(rb'"(?:price|qty)":"?[0-9]+\.[0-9]*0[",}]')


# --------------------------------------------------------------------------
# The algorithm against the simulator's books (no I/O)
# --------------------------------------------------------------------------

@pytest.mark.parametrize("as_strings", [False, True])
@pytest.mark.parametrize("depth", [10, 25])
def test_checksums_agree_with_the_simulators_books(as_strings, depth):
    uni = Universe(3, 12)
    books = Books(depth)
    zeros = checked = 0
    for pair in uni.kraken:   # BTC/USD "97000.0", SHIB "0.00002000", generated pairs...
        b = SimBook(pair, depth, 3, _Num(as_strings), 0)
        frames = [b.snapshot()] + [b.update(1_767_225_600_000_000_000 + i) for i in range(300)]
        for raw in frames:
            zeros += bool(TRAILING_ZERO.search(raw))
            res = books.feed(raw)
            assert len(res) == 1 and res[0].computed is not None
            assert res[0].computed == res[0].expected, (pair.symbol, raw)
            checked += 1
    assert checked == len(uni.kraken) * 301 and zeros > 100   # trailing zeros were exercised


def test_a_corrupted_checksum_is_found_once_until_the_next_snapshot():
    pair = Universe(4, 8).kraken_by_symbol["ETH/USD"]
    b = SimBook(pair, 10, 4, _Num(False), 0)
    books = Books(10)
    assert books.feed(b.snapshot())[0].ok
    b.corrupt_next = True
    bad = books.feed(b.update(1))[0]
    assert not bad.ok and bad.expected == bad.computed ^ 0x5A5A5A5A
    assert books.feed(b.update(2))[0].computed is None        # dropped until a snapshot
    assert books.feed(b.snapshot())[0].ok and books.feed(b.update(3))[0].ok


def test_book_frame_filter():
    assert is_book_frame(b'{"channel":"book","type":"update","data":[]}')
    assert is_book_frame(memoryview(b'{ "channel" : "book" }'))
    assert not is_book_frame(b'{"channel":"trade","type":"update","data":[{"symbol":"book"}]}')


# --------------------------------------------------------------------------
# Rate limit and channel
# --------------------------------------------------------------------------

def test_token_bucket_and_per_symbol_limiter():
    now = [0.0]
    clock = lambda: now[0]  # noqa: E731
    tb = TokenBucket(2, 0.5, clock)
    assert [tb.take() for _ in range(3)] == [True, True, False]
    now[0] = 1.0
    assert not tb.take()            # half a token
    now[0] = 2.0
    assert tb.take() and not tb.take()
    lim = RepairLimiter(burst=1, window=10, clock=clock)
    assert lim.allow("A") and not lim.allow("A") and lim.allow("B")
    now[0] = 12.0
    assert lim.allow("A")
    assert not RepairLimiter(burst=0, clock=clock).allow("A")


def test_channel_is_owner_only_and_replaces_a_stale_socket(tmp_path):
    path = channel_path(str(tmp_path / "shard-1.ring"))
    assert path.endswith("shard-1.ring.integrity.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(path)
    stale.close()                   # a dead receiver's socket file
    srv = ChannelServer(path)
    try:
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        cli = ChannelClient(path)
        assert cli.send({"kind": "checksum_mismatch", "symbol": "BTC/USD", "expected": 1})
        cli.sock.sendto(b"not json", path)
        assert srv.receive() == [{"kind": "checksum_mismatch", "symbol": "BTC/USD",
                                  "expected": 1}, None]
        assert srv.receive() == []
        cli.close()
    finally:
        srv.close()
    assert not os.path.exists(path)
    assert not ChannelClient(path).send({"kind": "x"})    # no receiver: not delivered
    regular = tmp_path / "file.sock"
    regular.write_bytes(b"")
    with pytest.raises(OSError):
        ChannelServer(str(regular))


# --------------------------------------------------------------------------
# End to end: simulator -> receiver -> ring -> validator -> receiver
# --------------------------------------------------------------------------

def _validator(ring_path, status):
    proc = subprocess.Popen([sys.executable, "-m", "capture.receiver.integrity", "--ring", ring_path,
                             "--venue", "kraken", "--depth", "10", "--status-file", status,
                             "--status-interval", "0.05"], stderr=subprocess.PIPE)
    wait_for(lambda: read_status(status) is not None or proc.poll() is not None, 20,
             "the validator to attach")
    assert proc.poll() is None, proc.stderr.read().decode()
    return proc


def _book_snapshots(msgs, sym):
    return [d for d in data_json(msgs) if d.get("channel") == "book"
            and d.get("type") == "snapshot" and d["data"][0]["symbol"] == sym]


def _book_cmds(records, method, sym):
    return [m for m in received(records) if m.get("method") == method
            and m["params"]["channel"] == "book" and sym in m["params"]["symbol"]]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_checksum_mismatch_repaired_for_that_symbol_only_and_rate_limited(ring_path, tmp_path,
                                                                          transport):
    status = str(tmp_path / "integrity.json")
    sc = Scenario(rate=0, heartbeat_interval=3600, seed=31)
    val = _validator(ring_path, status)
    try:
        with SimulatorThread(["kraken"], sc) as st:
            syms = st.sim.symbols("kraken")[:3]
            cfg = ReceiverConfig(ring=ring_path, venue="kraken", url=st.url("kraken"),
                                 symbols=syms, transport=transport, timing=FAST, seed=1,
                                 channels=["book", "trade"], repair_burst=1, repair_window=3600)
            col = Collector(ring_path)
            rt = ReceiverThread(cfg)
            try:
                col.wait_control("live")
                assert col.wait_control("integrity_channel")[0]["path"] == channel_path(ring_path)
                st.inject("kraken", "data", count=60)
                st.inject("kraken", "corrupt_checksum", symbol=syms[1])
                st.inject("kraken", "data", count=60)
                col.wait_control("repair")
                wait_for(lambda: len(_book_snapshots(col.snapshot(), syms[1])) == 2, 10,
                         "the resubscription's snapshot")
                st.inject("kraken", "data", count=60)
                st.inject("kraken", "corrupt_checksum", symbol=syms[1])   # fails again
                st.inject("kraken", "data", count=60)
                col.wait_control("repair_suppressed")
                wait_for(lambda: data_in_ring(col) == total_sent(st.sim.connections("kraken")),
                         10, "every frame in the ring")
                wait_for(lambda: _caught_up(status, ring_path), 10, "the validator to catch up")
                rx_status = rt.call(rt.rx.status)
            finally:
                rt.stop()
                msgs = col.stop()
            records = st.sim.connections("kraken")
    finally:
        val.send_signal(signal.SIGTERM)
        _, err = val.communicate(timeout=timeout(20))
    assert val.returncode == 0, err.decode()
    assert_exactly_sent(msgs, records, [0])
    mism = controls(msgs, "checksum_mismatch")
    assert len(mism) == 2 and all(m["symbol"] == syms[1] and m["venue"] == "kraken" for m in mism)
    assert all(m["expected"] == m["computed"] ^ 0x5A5A5A5A for m in mism)
    # the reported frame really carried that checksum
    by_seq = {m.seq: m for m in msgs}
    for m in mism:
        frame = orjson.loads(by_seq[m["frame_seq"]].payload)
        assert frame["data"][0]["symbol"] == syms[1] and frame["data"][0]["checksum"] == m["expected"]
    assert [(r["symbol"], r["action"], r["reason"]) for r in controls(msgs, "repair")] == \
        [(syms[1], "resubscribe", "checksum_mismatch")]
    sup = controls(msgs, "repair_suppressed")
    assert [(s["symbol"], s["reason"]) for s in sup] == [(syms[1], "checksum_mismatch")]
    # the venue: one unsubscribe + one extra subscribe of that book, nothing else
    assert len(_book_cmds(records, "unsubscribe", syms[1])) == 1
    assert len(_book_cmds(records, "subscribe", syms[1])) == 2
    for s in (syms[0], syms[2]):
        assert len(_book_cmds(records, "subscribe", s)) == 1
        assert not _book_cmds(records, "unsubscribe", s)
        assert len(_book_snapshots(msgs, s)) == 1
    assert not [m for m in received(records) if m.get("method") == "unsubscribe"
                and m["params"]["channel"] != "book"]
    assert not controls(msgs, "reconnect")
    assert rx_status["gaps"]["checksum_mismatch"] == 2
    assert rx_status["integrity"]["repairs"] == 1
    assert rx_status["integrity"]["repairs_suppressed"] == 1
    vs = read_status(status)
    assert vs["mismatches"] == 2 and vs["reported"] == 2 and vs["undelivered"] == 0
    assert vs["lapped"] == 0 and vs["books"] == 2 and vs["updates"] > 100


def _caught_up(status, ring_path):
    vs = read_status(status) or {}
    st = ring.stats(ring_path)
    me = [r for r in st["readers"] if r["name"] == "integrity"]
    return bool(me) and me[0]["lag_frames"] == 0 and vs.get("frames", 0) > 0


def test_a_lapped_validator_resets_its_books_and_never_writes(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(integrity, "_throttle", Throttle())   # a burst of its own
    d, _ = new_ring()
    try:
        path = os.path.join(d, "small.ring")
        ring.create(path, 64 * 1024).close()
        pair = Universe(5, 8).kraken_by_symbol["BTC/USD"]
        b = SimBook(pair, 10, 5, _Num(False), 0)
        with ring.Producer(path) as p:
            v = Validator(path, "kraken", 10, status_file=str(tmp_path / "v.json"))
            try:
                p.write(b.snapshot(), conn=0)
                assert v.step(1.0) == 1 and len(v.books.books) == 1
                written = 0
                while written < 3 * 64 * 1024:          # more than a ring ahead of it
                    raw = b.update(written)
                    p.write(raw, conn=0)
                    written += len(raw)
                seq_before = p.last_seq
                assert v.step(0.05) == 0
                assert v.counts["lapped"] == 1 and v.books.books == {}
                lapped = [r for r in caplog.records if getattr(r, "event", None) == "lapped"]
                assert len(lapped) == 1 and lapped[0].kv["books_reset"] == 1
                assert 'error="Lapped: ' in lapped[0].getMessage()
                while v.step(0.01):                      # the rest: no book, nothing checked
                    pass
                assert v.counts["mismatches"] == 0
                p.write(b.snapshot(), conn=0)
                p.write(b.update(1), conn=0)
                while v.step(0.01):
                    pass
                assert len(v.books.books) == 1 and v.counts["mismatches"] == 0
                v.write_status()
                vs = read_status(str(tmp_path / "v.json"))
                assert vs["lapped"] == 1 and vs["role"] == "integrity"
                assert p.last_seq == seq_before + 2        # only the producer wrote
            finally:
                v.close()
    finally:
        cleanup(d)


def test_a_storm_of_unusable_book_frames_is_counted_and_logged_in_bursts(tmp_path, caplog,
                                                                          monkeypatch):
    # a clock the test moves: one window of the throttle, then the next
    now = [0.0]
    monkeypatch.setattr(integrity, "_throttle", Throttle(burst=10, window=10.0, clock=lambda: now[0]))
    d, _ = new_ring()
    try:
        path = os.path.join(d, "v.ring")
        ring.create(path, 64 * 1024).close()
        v = Validator(path, "kraken", 10)
        try:
            bad = orjson.dumps({"channel": "book", "type": "update", "data": [
                {"symbol": "BTC/USD", "bids": [{"price": "x"}], "checksum": 1}]})
            for seq in range(1, 51):
                assert v.validate(bad, seq) == 0
            now[0] = 10.0
            v.validate(bad, 51)
        finally:
            v.close()
    finally:
        cleanup(d)
    assert v.counts["unusable"] == 51
    lines = [r.kv for r in caplog.records if getattr(r, "event", None) == "unusable_book_frame"]
    assert [k["frame_seq"] for k in lines] == [*range(1, 11), 51]
    assert lines[-1]["suppressed"] == 40 and lines[-1]["unusable"] == 51
    assert "bad level" in str(lines[0]["error"])


def test_validator_refuses_a_venue_without_checksums(ring_path):
    r = subprocess.run([sys.executable, "-m", "capture.receiver.integrity", "--ring", ring_path,
                        "--venue", "polymarket"], capture_output=True, timeout=timeout(30))
    assert r.returncode == 2 and b"no book checksums" in r.stderr


# --------------------------------------------------------------------------
# The receive path's sequence scanner agrees with the venue modules
# --------------------------------------------------------------------------

def _session_frames(venue: str, n: int = 3000) -> list[bytes]:
    from capture.simulator.kalshi import KalshiSession
    from capture.simulator.kraken_futures import FuturesSession
    uni = Universe(6, 12)
    sc = Scenario(seed=6, instruments=12, gap_every=7)
    if venue == "kalshi":
        s = KalshiSession(sc, uni, 0)
        ts = [m.ticker for m in uni.kalshi if m.status == "active"][:4]
        out = [o.payload for t in ts for o in s.on_message(orjson.dumps(
            {"id": 1, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"],
                                                     "market_tickers": [t]}}))]
        out += [o.payload for o in s.on_message(orjson.dumps(
            {"id": 2, "cmd": "subscribe", "params": {"channels": ["trade", "ticker",
                                                                  "market_lifecycle_v2"],
                                                     "market_tickers": ts}}))]
    else:
        s = FuturesSession(sc, uni, 0)
        pids = [p.symbol for p in uni.futures[:4]]
        out = [o.payload for f in ("book", "trade", "ticker", "heartbeat")
               for o in s.on_message(orjson.dumps({"event": "subscribe", "feed": f,
                                                   "product_ids": pids}))]
    return out + [s.next_data() for _ in range(n)]


def _odd_layouts(frames: list[bytes]) -> list[bytes]:
    """The same frames re-serialised: spaces, keys in reverse order."""
    out = []
    for f in frames[:400]:
        obj = orjson.loads(f)
        if isinstance(obj, dict):
            out.append(orjson.dumps(dict(reversed(list(obj.items())))))
            out.append(orjson.dumps(obj).replace(b'":', b'" : ').replace(b",", b", "))
    return out


@pytest.mark.parametrize("venue", ["kalshi", "kraken_futures"])
def test_seq_scanner_agrees_with_the_venue_module(venue):
    from capture.receiver.repair import SeqScanner
    from capture.venues import get
    cls = get(venue)
    scan = SeqScanner(cls)
    frames = _session_frames(venue)
    fast = 0
    for raw in frames + _odd_layouts(frames):
        ref = cls.sequence(raw)
        got = scan(raw)
        if ref is None:
            assert got is None, raw
            continue
        assert got is not None, raw
        key, seq, snap = got
        assert (scan.canonical(key), seq, snap) == (ref.stream_key, ref.seq, ref.snapshot), raw
        m = scan.match(raw)
        fast += m is not None and m.group(3) is not None
    assert fast > 500          # the documented layout takes the fast path
    assert scan.fallback(b'{"id":1,"type":"subscribed","msg":{"channel":"ticker","sid":3}}') is None
