"""Kalshi WS v2: commands, classify, route, seq, and the handshake signer."""
from __future__ import annotations

import base64
import copy
import logging
import os
import pickle

import orjson
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from capture.venues.kalshi import protocol as kalshi
from capture.venues.base import GapDetector, Kind, RouteKey, SeqInfo
from capture.venues.kalshi.protocol import Kalshi, KalshiSigner, KeyFileError, load_private_key
from common.errors import ConfigError, VenueError

SUBSCRIBED = b'{"id":1,"type":"subscribed","msg":{"channel":"orderbook_delta","sid":1}}'
UNSUBSCRIBED = b'{"id":2,"sid":1,"seq":7,"type":"unsubscribed"}'
OK = b'{"id":3,"sid":1,"seq":8,"type":"ok","msg":{"market_tickers":["A","B"]}}'
ERROR = b'{"id":4,"type":"error","msg":{"code":6,"msg":"Already subscribed"}}'
AUTH_ERROR = b'{"id":5,"type":"error","msg":{"code":9,"msg":"Authentication required"}}'
SNAPSHOT = (b'{"type":"orderbook_snapshot","sid":2,"seq":2,"msg":{"market_ticker":"FED-23DEC-T3.00",'
            b'"market_id":"9b0f6b43","yes_dollars_fp":[["0.0800","300.00"],["0.2200","333.00"]],'
            b'"no_dollars_fp":[["0.5400","20.00"]]}}')
DELTA = (b'{"type":"orderbook_delta","sid":2,"seq":3,"msg":{"market_ticker":"FED-23DEC-T3.00",'
         b'"market_id":"9b0f6b43","price_dollars":"0.960","delta_fp":"-54.00","side":"yes",'
         b'"ts":"2022-11-22T20:44:01Z"}}')
TICKER = (b'{"type":"ticker","sid":11,"msg":{"market_ticker":"FED-23DEC-T3.00","price":48,'
          b'"yes_bid":45,"yes_ask":53,"volume":33896,"open_interest":20422,"ts":1669149841}}')
TRADE = (b'{"type":"trade","sid":11,"msg":{"trade_id":"d91bc706","market_ticker":"HIGHNY-22DEC23-B53.5",'
         b'"yes_price":36,"no_price":64,"count":136,"taker_side":"no","ts":1669149841}}')
LIFECYCLE = (b'{"type":"market_lifecycle_v2","sid":13,"msg":{"market_ticker":"INXD-23SEP14-B4487",'
             b'"event_type":"activated","open_ts":1694700000}}')
EVENT_LIFECYCLE = (b'{"type":"event_lifecycle","sid":5,"msg":{"event_ticker":"KXQUICKSETTLE-25JUL24H1400",'
                   b'"title":"x"}}')


# --------------------------------------------------------------------------- commands

def test_commands():
    k = Kalshi()
    assert orjson.loads(k.subscribe(["orderbook_delta"], ["A", "B"])) == {
        "id": 1, "cmd": "subscribe",
        "params": {"channels": ["orderbook_delta"], "market_tickers": ["A", "B"]}}
    assert orjson.loads(k.subscribe("ticker")) == {"id": 2, "cmd": "subscribe",
                                                    "params": {"channels": ["ticker"]}}
    assert orjson.loads(k.unsubscribe([1, 2])) == {"id": 3, "cmd": "unsubscribe",
                                                    "params": {"sids": [1, 2]}}
    assert orjson.loads(k.update_subscription(1, "add_markets", ["C"])) == {
        "id": 4, "cmd": "update_subscription",
        "params": {"sid": 1, "action": "add_markets", "market_tickers": ["C"]}}
    assert orjson.loads(k.update_subscription(1, "delete_markets", "C"))["params"]["action"] == \
        "delete_markets"
    assert orjson.loads(k.update_subscription(1, "get_snapshot", ["A"], cmd_id=50)) == {
        "id": 50, "cmd": "update_subscription",
        "params": {"sid": 1, "action": "get_snapshot", "market_tickers": ["A"]}}


@pytest.mark.parametrize("call", [
    lambda k: k.subscribe(["orderbook"], ["A"]),
    lambda k: k.subscribe([], ["A"]),
    lambda k: k.subscribe(["trade"], []),
    lambda k: k.unsubscribe([]),
    lambda k: k.update_subscription(1, "replace", ["A"]),
    lambda k: k.update_subscription(1, "add_markets", []),
])
def test_command_refusals(call):
    with pytest.raises(ConfigError):
        call(Kalshi())


def test_urls_and_keepalive():
    assert Kalshi.url == "wss://api.elections.kalshi.com/trade-api/ws/v2"
    assert Kalshi.demo_url == "wss://demo-api.kalshi.co/trade-api/ws/v2"
    assert Kalshi.keepalive.server_heartbeat == 10.0 and not Kalshi.keepalive.app_ping


# --------------------------------------------------------------------------- frames

@pytest.mark.parametrize("raw,kind,channel,symbol,sid,req_id", [
    (SUBSCRIBED, Kind.ACK, "orderbook_delta", None, 1, 1),
    (UNSUBSCRIBED, Kind.UNSUBSCRIBED, None, None, 1, 2),
    (OK, Kind.ACK, None, None, 1, 3),
    (ERROR, Kind.ERROR, None, None, None, 4),
    (SNAPSHOT, Kind.DATA, "orderbook_delta", "FED-23DEC-T3.00", 2, None),
    (DELTA, Kind.DATA, "orderbook_delta", "FED-23DEC-T3.00", 2, None),
    (TICKER, Kind.DATA, "ticker", "FED-23DEC-T3.00", 11, None),
    (TRADE, Kind.DATA, "trade", "HIGHNY-22DEC23-B53.5", 11, None),
    (LIFECYCLE, Kind.DATA, "market_lifecycle_v2", "INXD-23SEP14-B4487", 13, None),
    (EVENT_LIFECYCLE, Kind.DATA, "market_lifecycle_v2", "KXQUICKSETTLE-25JUL24H1400", 5, None),
])
def test_classify(raw, kind, channel, symbol, sid, req_id):
    c = kalshi.classify(raw)
    assert (c.kind, c.channel, c.symbol, c.sid, c.req_id) == (kind, channel, symbol, sid, req_id)


def test_error_code_and_text():
    c = kalshi.classify(ERROR)
    assert (c.code, c.detail) == (6, "Already subscribed")
    assert kalshi.classify(AUTH_ERROR).code == kalshi.AUTH_ERROR_CODE


def test_route():
    assert kalshi.route(SNAPSHOT) == RouteKey("orderbook_delta", "FED-23DEC-T3.00")
    assert kalshi.route(DELTA) == RouteKey("orderbook_delta", "FED-23DEC-T3.00")
    assert kalshi.route(TRADE) == RouteKey("trade", "HIGHNY-22DEC23-B53.5")
    for raw in (SUBSCRIBED, OK, ERROR, UNSUBSCRIBED, b"", b"nope", b'{"type":"ticker"}'):
        assert kalshi.route(raw) is None


def test_type_after_a_big_msg_still_found():
    raw = (b'{"msg":{"market_ticker":"M","yes_dollars_fp":[' + b'["0.0100","1.00"],' * 2000
           + b'["0.0200","1.00"]]},"sid":3,"seq":9,"type":"orderbook_snapshot"}')
    assert len(raw) > 16 * 1024
    assert kalshi.route(raw) == RouteKey("orderbook_delta", "M")
    assert kalshi.classify(raw).kind is Kind.DATA
    assert kalshi.sequence(raw) == SeqInfo(3, 9, True, "M")


def test_sequence_per_sid():
    assert kalshi.sequence(SNAPSHOT) == SeqInfo(2, 2, True, "FED-23DEC-T3.00")
    assert kalshi.sequence(DELTA) == SeqInfo(2, 3, False, "FED-23DEC-T3.00")
    # replies that carry seq take a slot in their sid's numbering (issue 14)
    assert kalshi.sequence(OK) == SeqInfo(1, 8, False, None)
    assert kalshi.sequence(UNSUBSCRIBED) == SeqInfo(1, 7, False, None)
    for raw in (TICKER, TRADE, b'{"id":3,"type":"ok","msg":{}}', b"{", b"\xff"):
        assert kalshi.sequence(raw) is None


def test_gap_detected_once_and_snapshot_resets():
    def delta(sid: int, seq: int) -> bytes:
        return (b'{"type":"orderbook_delta","sid":%d,"seq":%d,"msg":{"market_ticker":"M",'
                b'"price_dollars":"0.5","delta_fp":"1.00","side":"no"}}' % (sid, seq))

    def snap(sid: int, seq: int) -> bytes:
        return b'{"type":"orderbook_snapshot","sid":%d,"seq":%d,"msg":{"market_ticker":"M"}}' % (sid, seq)

    g = GapDetector()
    frames = [snap(1, 1), delta(1, 2), delta(2, 1), delta(1, 5), delta(1, 6), delta(2, 2),
              snap(1, 1), delta(1, 2), delta(2, 3)]
    gaps = [gap for f in frames if (gap := g.feed_info(kalshi.sequence(f)))]
    assert [(x.stream_key, x.expected, x.got, x.missing) for x in gaps] == [(1, 3, 5, 2)]


def test_timestamps():
    assert kalshi.exchange_ts_ns(DELTA) == 1669149841 * 10**9
    assert kalshi.exchange_ts_ns(TICKER) == 1669149841 * 10**9
    assert kalshi.exchange_ts_ns(SNAPSHOT) is None


@pytest.mark.parametrize("raw", [b"", b"x", b"{", b'{"type":', b"[]", b"\x00" * 50])
def test_malformed(raw):
    assert kalshi.classify(raw).kind in (Kind.MALFORMED, Kind.UNKNOWN)
    assert kalshi.route(raw) is None
    assert kalshi.sequence(raw) is None
    kalshi.exchange_ts_ns(raw)


# --------------------------------------------------------------------------- signing

@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write(path, data: bytes, mode: int = 0o600) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)
    return str(path)


def _pem(key, fmt) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


@pytest.mark.parametrize("fmt", [serialization.PrivateFormat.PKCS8,
                                 serialization.PrivateFormat.TraditionalOpenSSL])
def test_signature_verifies(tmp_path, rsa_key, fmt):
    path = _write(tmp_path / "k.pem", _pem(rsa_key, fmt))
    signer = KalshiSigner.from_file("key-id-123", path)
    h = signer.headers(timestamp_ms=1703123456789)
    assert set(h) == {"KALSHI-ACCESS-KEY", "KALSHI-ACCESS-TIMESTAMP", "KALSHI-ACCESS-SIGNATURE"}
    assert h["KALSHI-ACCESS-KEY"] == "key-id-123"
    assert h["KALSHI-ACCESS-TIMESTAMP"] == "1703123456789"
    rsa_key.public_key().verify(
        base64.b64decode(h["KALSHI-ACCESS-SIGNATURE"]),
        b"1703123456789GET/trade-api/ws/v2",
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=hashes.SHA256.digest_size),
        hashes.SHA256())


def test_fresh_timestamp_each_call(rsa_key):
    signer = KalshiSigner("kid", rsa_key)
    h = signer.headers()
    assert h["KALSHI-ACCESS-TIMESTAMP"].isdigit() and len(h["KALSHI-ACCESS-TIMESTAMP"]) == 13
    # PSS is randomised: two signatures of the same message differ.
    assert signer.headers(1)["KALSHI-ACCESS-SIGNATURE"] != signer.headers(1)["KALSHI-ACCESS-SIGNATURE"]


def test_wrong_message_does_not_verify(rsa_key):
    from cryptography.exceptions import InvalidSignature
    sig = base64.b64decode(KalshiSigner("kid", rsa_key).headers(5)["KALSHI-ACCESS-SIGNATURE"])
    with pytest.raises(InvalidSignature):
        rsa_key.public_key().verify(sig, b"6GET/trade-api/ws/v2",
                                    padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                salt_length=32), hashes.SHA256())


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606])
def test_refuses_group_or_other_access(tmp_path, rsa_key, mode):
    path = _write(tmp_path / "k.pem", _pem(rsa_key, serialization.PrivateFormat.PKCS8), mode)
    with pytest.raises(KeyFileError) as ei:
        load_private_key(path)
    assert ei.value.path == path and "group/others" in ei.value.reason
    assert "PRIVATE KEY" not in str(ei.value)


def test_refuses_missing(tmp_path):
    with pytest.raises(KeyFileError) as ei:
        load_private_key(tmp_path / "nope.pem")
    assert "does not exist" in ei.value.reason
    assert isinstance(ei.value, VenueError)


@pytest.mark.parametrize("data", [b"garbage\n", b"",
                                  b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"])
def test_refuses_not_a_key(tmp_path, data):
    with pytest.raises(KeyFileError) as ei:
        load_private_key(_write(tmp_path / "k.pem", data))
    assert "PEM" in ei.value.reason


def test_refuses_non_rsa_and_encrypted(tmp_path, rsa_key):
    eck = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(KeyFileError, match="not an RSA"):
        load_private_key(_write(tmp_path / "ec.pem", _pem(eck, serialization.PrivateFormat.PKCS8)))
    enc = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.BestAvailableEncryption(b"pw"))
    with pytest.raises(KeyFileError, match="encrypted"):
        load_private_key(_write(tmp_path / "enc.pem", enc))


def test_refuses_directory_and_fifo(tmp_path):
    d = tmp_path / "dir"
    d.mkdir(mode=0o700)
    with pytest.raises(KeyFileError, match="regular"):
        load_private_key(d)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(KeyFileError, match="regular"):   # and does not hang
        load_private_key(fifo)


def test_symlink_checked_on_its_target(tmp_path, rsa_key):
    pem = _pem(rsa_key, serialization.PrivateFormat.PKCS8)
    os.symlink(_write(tmp_path / "ok.pem", pem), tmp_path / "link-ok.pem")
    assert isinstance(load_private_key(tmp_path / "link-ok.pem"), rsa.RSAPrivateKey)
    os.symlink(_write(tmp_path / "open.pem", pem, 0o644), tmp_path / "link-open.pem")
    with pytest.raises(KeyFileError, match="group/others"):
        load_private_key(tmp_path / "link-open.pem")


def test_no_key_material_in_repr_str_logs_or_pickle(tmp_path, rsa_key, caplog):
    pem = _pem(rsa_key, serialization.PrivateFormat.PKCS8)
    signer = KalshiSigner.from_file("abcdef123456", _write(tmp_path / "k.pem", pem))
    body = b"".join(pem.splitlines()[1:-1]).decode()
    numbers = rsa_key.private_numbers()
    secrets = [body[:40], body[-40:], str(numbers.d)[:30], str(numbers.p)[:30], hex(numbers.d)[2:32]]
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("capture.test").info("signer %r %s", signer, signer)
        logging.getLogger("capture.test").info("%s", f"{signer!r} {signer!s} {signer}")
    texts = [repr(signer), str(signer), f"{signer}", caplog.text]
    for t in texts:
        assert "<redacted>" in t
        assert "abcdef123456" not in t
        for s in secrets:
            assert s not in t
    with pytest.raises(TypeError):
        pickle.dumps(signer)
    with pytest.raises(TypeError):
        copy.copy(signer)
    assert not hasattr(signer, "__dict__")


def test_signer_argument_checks(rsa_key):
    with pytest.raises(ConfigError):
        KalshiSigner("", rsa_key)
    with pytest.raises(ConfigError):
        KalshiSigner("kid", object())  # type: ignore[arg-type]
