"""Kalshi end to end: simulator (verifying the RSA-PSS handshake signature
with a generated key) -> receiver (both transports) -> a real ring.

Byte for byte capture; an injected ``seq`` gap detected once, recorded and
repaired with ``get_snapshot`` for that market only; a market that keeps
failing is rate-limited; key-file refusals at start; authentication failures
(HTTP 401 at the handshake, error code 9 on a live connection) recorded,
logged without key material and retried with the auth backoff."""
from __future__ import annotations

import logging
import subprocess
import sys

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa


import ring  # noqa: E402
from capture.receiver.lifecycle import Timing  # noqa: E402
from capture.receiver.process import Receiver, ReceiverConfig  # noqa: E402
from capture.simulator import Scenario, SimulatorThread  # noqa: E402
from capture.venues.kalshi.protocol import KeyFileError  # noqa: E402
from integrity_helpers import (TRANSPORTS, controls, data_in_ring, data_json,  # noqa: E402
                               key_material, received, total_sent, write_key)
from receiver_helpers import FAST, Collector, ReceiverThread, assert_exactly_sent  # noqa: E402
from timing import timeout, wait_for  # noqa: E402

KEY_ID = "kalshi-test-key"


def _cfg(ring_path, st, key_file, transport="picows", n=3, **kw):
    return ReceiverConfig(ring=ring_path, venue="kalshi", url=st.url("kalshi"),
                          symbols=st.sim.symbols("kalshi")[:n], transport=transport,
                          timing=kw.pop("timing", FAST), seed=1, kalshi_key_id=KEY_ID,
                          kalshi_key_file=str(key_file), **kw)


def _snapshots(msgs, ticker):
    return [d for d in data_json(msgs)
            if d.get("type") == "orderbook_snapshot" and d["msg"]["market_ticker"] == ticker]


def _book_seqs(msgs, sid):
    return [d["seq"] for d in data_json(msgs)
            if d.get("type") in ("orderbook_snapshot", "orderbook_delta") and d.get("sid") == sid]


def _updates(records):
    return [m for m in received(records) if m.get("cmd") == "update_subscription"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_kalshi_capture_signed_and_a_gap_repaired_for_that_market_only(ring_path, tmp_path,
                                                                       transport):
    sc = Scenario(rate=0, heartbeat_interval=3600, seed=11)
    with SimulatorThread(["kalshi"], sc, kalshi_key_id=KEY_ID) as st:
        key = tmp_path / "kalshi.pem"
        write_key(key, st.sim.kalshi_private_key)
        syms = st.sim.symbols("kalshi")[:3]
        cfg = _cfg(ring_path, st, key, transport)
        col = Collector(ring_path)
        rt = ReceiverThread(cfg)
        try:
            col.wait_control("live")
            st.inject("kalshi", "data", count=30)
            wait_for(lambda: data_in_ring(col) == total_sent(st.sim.connections("kalshi")), 10,
                     "the first data in the ring")
            st.inject("kalshi", "gap", symbol=syms[0])
            st.inject("kalshi", "data", count=30)
            col.wait_control("repair")
            wait_for(lambda: len(_snapshots(col.snapshot(), syms[0])) == 2, 10,
                     "the repair snapshot in the ring")
            st.inject("kalshi", "data", count=30)
            wait_for(lambda: data_in_ring(col) == total_sent(st.sim.connections("kalshi")), 10,
                     "every frame in the ring")
            status = rt.call(rt.rx.status)
        finally:
            rt.stop()
            msgs = col.stop()
        records = st.sim.connections("kalshi")
        server = st.sim.server("kalshi")
        assert server.rejected_401 == 0 and server.unauthorized == []
    assert len(records) == 1
    h = records[0].headers
    assert h["kalshi-access-key"] == KEY_ID and h["kalshi-access-signature"]
    assert_exactly_sent(msgs, records, [0])

    # one sid per market for the book, so the gap names its market
    subs = [m for m in received(records) if m.get("cmd") == "subscribe"]
    book_subs = [s for s in subs if s["params"]["channels"] == ["orderbook_delta"]]
    assert [s["params"]["market_tickers"] for s in book_subs] == [[s] for s in syms]
    gaps = controls(msgs, "seq_gap")
    assert len(gaps) == 1
    g = gaps[0]
    assert g["venue"] == "kalshi" and g["symbol"] == syms[0] and g["got"] == g["expected"] + 1
    sid0 = g["sid"]
    repairs = controls(msgs, "repair")
    assert [(r["symbol"], r["action"], r["reason"]) for r in repairs] == \
        [(syms[0], "get_snapshot", "seq_gap")]
    # what the venue was asked: exactly one get_snapshot, for that market's sid
    ups = _updates(records)
    assert [(u["params"]["action"], u["params"]["sid"], u["params"]["market_tickers"])
            for u in ups] == [("get_snapshot", sid0, [syms[0]])]
    assert not [m for m in received(records) if m.get("cmd") == "unsubscribe"]
    # the ring: the repaired market has its second snapshot, the others
    # one snapshot and an unbroken seq run
    assert len(_snapshots(msgs, syms[0])) == 2
    for s in syms[1:]:
        snaps = _snapshots(msgs, s)
        assert len(snaps) == 1
        seqs = _book_seqs(msgs, snaps[0]["sid"])
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) and len(seqs) > 1
    assert not controls(msgs, "reconnect") and not controls(msgs, "repair_suppressed")
    assert status["gaps"]["seq_gap"] == 1 and status["integrity"]["repairs"] == 1


def test_a_market_that_keeps_gapping_is_rate_limited(ring_path, tmp_path):
    sc = Scenario(rate=0, heartbeat_interval=3600, seed=12)
    with SimulatorThread(["kalshi"], sc, kalshi_key_id=KEY_ID) as st:
        key = tmp_path / "kalshi.pem"
        write_key(key, st.sim.kalshi_private_key)
        syms = st.sim.symbols("kalshi")[:2]
        cfg = _cfg(ring_path, st, key, n=2, repair_burst=1, repair_window=3600)
        col = Collector(ring_path)
        rt = ReceiverThread(cfg)
        try:
            col.wait_control("live")
            for k in range(3):
                st.inject("kalshi", "gap", symbol=syms[0])
                st.inject("kalshi", "data", count=20)
                col.wait_control("seq_gap", n=k + 1)
                if k == 0:
                    wait_for(lambda: len(_snapshots(col.snapshot(), syms[0])) == 2, 10,
                             "the repair snapshot")
            col.wait_control("repair_suppressed", n=2)
        finally:
            rt.stop()
            msgs = col.stop()
        records = st.sim.connections("kalshi")
    assert len(controls(msgs, "seq_gap")) == 3
    assert len(controls(msgs, "repair")) == 1
    sup = controls(msgs, "repair_suppressed")
    assert len(sup) == 2 and all(s["symbol"] == syms[0] and s["burst"] == 1 for s in sup)
    assert len(_updates(records)) == 1          # the venue was asked once
    assert len(_snapshots(msgs, syms[1])) == 1  # the other market untouched


# --------------------------------------------------------------------------
# Keys and authentication
# --------------------------------------------------------------------------

def _bad_key_cases(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    loose = tmp_path / "loose.pem"
    material = write_key(loose, key, 0o644)
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    garbage.chmod(0o600)
    return material, [(loose, "group/others"), (garbage, "not a valid PEM private key"),
                      (tmp_path / "missing.pem", "does not exist")]


def test_key_file_refusals_are_clear_at_receiver_start(ring_path, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    material, cases = _bad_key_cases(tmp_path)
    for path, why in cases:
        cfg = ReceiverConfig(ring=ring_path, venue="kalshi", url="ws://127.0.0.1:9/trade-api/ws/v2",
                             symbols=["X"], kalshi_key_id=KEY_ID, kalshi_key_file=str(path))
        with ring.Producer(ring_path) as p:
            with pytest.raises(KeyFileError) as ei:
                Receiver(cfg, p)
        assert str(path) in str(ei.value) and why in str(ei.value)
        assert ei.value.__cause__ is None   # no library text (which may quote the input)
        # the process: exit 2, one clear line, no key material
        r = subprocess.run([sys.executable, "-m", "capture.receiver", "--ring", ring_path,
                            "--venue", "kalshi", "--symbols", "X", "--kalshi-key-id", KEY_ID,
                            "--kalshi-key-file", str(path), "--poll-interval", "0.1"],
                           capture_output=True, timeout=timeout(30))
        err = r.stderr.decode()
        assert r.returncode == 2, err
        assert "Kalshi key file" in err and why in err and len(err.strip().splitlines()) == 1
        assert not any(s in err or s in r.stdout.decode() for s in key_material(material))
    assert not any(s in rec.getMessage() for rec in caplog.records for s in key_material(material))


def test_401_at_the_handshake_is_reported_and_backed_off(ring_path, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sc = Scenario(rate=0, heartbeat_interval=3600, seed=13)
    with SimulatorThread(["kalshi"], sc, kalshi_key_id=KEY_ID,
                         kalshi_public_key=other.public_key()) as st:
        key = tmp_path / "kalshi.pem"
        # the receiver signs with a key the venue does not know
        material = write_key(key, rsa.generate_private_key(public_exponent=65537, key_size=2048))
        timing = Timing(**{**FAST.__dict__, "auth_backoff": 0.05, "auth_backoff_cap": 0.2})
        cfg = _cfg(ring_path, st, key, timing=timing)
        col = Collector(ring_path)
        rt = ReceiverThread(cfg)
        try:
            col.wait_control("auth_failed", n=4)
            status = rt.call(rt.rx.status)
        finally:
            rt.stop()
            msgs = col.stop()
        server = st.sim.server("kalshi")
        assert server.rejected_401 >= 4 and set(server.unauthorized) == {"invalid signature"}
    failed = controls(msgs, "connect_failed")
    assert failed and all(f["status"] == 401 for f in failed)
    auth = controls(msgs, "auth_failed")
    assert [a["status"] for a in auth[:4]] == [401] * 4
    assert [a["failures"] for a in auth[:4]] == [1, 2, 3, 4]
    # the auth backoff: never below half its cap, the cap doubling to its limit
    rec = controls(msgs, "reconnect")[:4]
    assert [r["cap"] for r in rec] == [0.05, 0.1, 0.2, 0.2]
    assert all(r["cap"] / 2 <= r["delay"] <= r["cap"] for r in rec)
    assert status["integrity"]["auth_failures"] >= 4
    logged = [r.getMessage() for r in caplog.records if getattr(r, "event", None) == "auth_failed"]
    assert len(logged) >= 4 and all("status=401" in m and "HTTP 401" in m for m in logged)
    everything = "\n".join(r.getMessage() for r in caplog.records) + \
        "\n".join(orjson.dumps(c).decode() for c in controls(msgs))
    assert not any(s in everything for s in key_material(material))


def test_auth_error_code_9_closes_and_backs_off(ring_path, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    sc = Scenario(rate=0, heartbeat_interval=3600, seed=14)
    with SimulatorThread(["kalshi"], sc, kalshi_key_id=KEY_ID) as st:
        key = tmp_path / "kalshi.pem"
        material = write_key(key, st.sim.kalshi_private_key)
        timing = Timing(**{**FAST.__dict__, "auth_backoff": 0.05, "auth_backoff_cap": 0.2})
        cfg = _cfg(ring_path, st, key, timing=timing, n=1)
        col = Collector(ring_path)
        rt = ReceiverThread(cfg)
        try:
            col.wait_control("live")
            st.inject("kalshi", "send", data=False, payload=orjson.dumps(
                {"id": 0, "type": "error", "msg": {"code": 9, "msg": "Authentication required"}}))
            col.wait_control("live", n=2)
        finally:
            rt.stop()
            msgs = col.stop()
    auth = controls(msgs, "auth_failed")
    assert len(auth) == 1 and auth[0]["code"] == 9 and "Authentication required" in auth[0]["error"]
    kinds = [c["kind"] for c in controls(msgs)]
    i = kinds.index("auth_failed")
    assert kinds[i:i + 3] == ["auth_failed", "closed", "reconnect"]
    r = controls(msgs, "reconnect")[0]
    assert r["cap"] == 0.05 and 0.025 <= r["delay"] <= 0.05
    assert not any(s in m.getMessage() for m in caplog.records for s in key_material(material))


def test_receiver_process_logs_auth_failures_without_key_material(ring_path, tmp_path):
    import signal
    from common.status import read_status
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sc = Scenario(rate=0, heartbeat_interval=3600, seed=15)
    with SimulatorThread(["kalshi"], sc, kalshi_key_id=KEY_ID,
                         kalshi_public_key=other.public_key()) as st:
        key = tmp_path / "kalshi.pem"
        material = write_key(key, rsa.generate_private_key(public_exponent=65537, key_size=2048))
        status = str(tmp_path / "rx.json")
        proc = subprocess.Popen(
            [sys.executable, "-m", "capture.receiver", "--ring", ring_path, "--venue", "kalshi",
             "--url", st.url("kalshi"), "--symbols", ",".join(st.sim.symbols("kalshi")[:2]),
             "--kalshi-key-id", KEY_ID, "--kalshi-key-file", str(key), "--status-file", status,
             "--poll-interval", "0.05", "--timing", "auth_backoff=0.05",
             "--timing", "auth_backoff_cap=0.1", "--timing", "stagger=0",
             "--timing", "stagger_jitter=0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_for(lambda: ((read_status(status) or {}).get("integrity") or {})
                     .get("auth_failures", 0) >= 3 or proc.poll() is not None, 20,
                     "three auth failures in the status file")
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=timeout(20))
    text = err.decode() + out.decode()
    assert proc.returncode == 0, text
    assert "event=auth_failed" in text and "status=401" in text and "HTTP 401" in text
    assert not any(s in text for s in key_material(material))
    assert "BEGIN" not in text
