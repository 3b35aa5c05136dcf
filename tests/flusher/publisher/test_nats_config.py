"""Bus settings: validation of the config table (unknown keys, unsafe
streams) and clear errors for unreachable servers and wrong credentials."""
from __future__ import annotations


import nats
import pytest
from nats.js import api


from conftest_nats import *  # noqa: F401,F403,E402
from conftest_nats import run_async  # noqa: E402

from flusher.publisher import stream as st  # noqa: E402
from flusher.publisher.nats_embedded import free_port  # noqa: E402
from common.errors import ConfigError, PublishError  # noqa: E402


def test_defaults():
    bus = st.parse_config({})
    assert bus.prefix == "prod" and bus.servers == []
    s = bus.stream_for("kraken")
    assert s.name == "PROD_KRAKEN" and s.subjects == ["prod.kraken.>"]
    assert s.storage == "file" and s.discard == "old"
    assert s.duplicate_window_s >= bus.horizon_s


def test_stream_settings_parsed():
    bus = st.parse_config({"servers": "nats://a:4222,nats://b:4222", "prefix": "test.x",
                           "streams": {"kraken": {"name": "K", "replicas": 3,
                                                  "max_bytes": "10GiB", "max_age": "7d",
                                                  "duplicate_window": "10m"}}})
    assert bus.servers == ["nats://a:4222", "nats://b:4222"]
    s = bus.stream_for("kraken")
    assert (s.name, s.replicas, s.max_bytes, s.max_age_s, s.duplicate_window_s) == \
        ("K", 3, 10 << 30, 7 * 86400.0, 600.0)
    assert s.subjects == ["test.x.kraken.>"]


@pytest.mark.parametrize("cfg, key", [
    ({"sever": ["x"]}, "nats.sever"),
    ({"streams": {"kraken": {"replica": 3}}}, "nats.streams.kraken.replica"),
    ({"tls": {"cafile": "x"}}, "nats.tls.cafile"),
])
def test_unknown_keys_are_named(cfg, key):
    with pytest.raises(st.UnknownConfigKey) as ei:
        st.parse_config(cfg, path="capture.toml")
    assert ei.value.key == key
    assert key in str(ei.value) and "capture.toml" in str(ei.value)


@pytest.mark.parametrize("stream, key", [
    ({"duplicate_window": "30s"}, "duplicate_window"),     # shorter than the 2 min horizon
    ({"storage": "memory"}, "storage"),
    ({"discard": "new", "max_bytes": "1GiB"}, "discard"),
    ({"discard": "new", "max_msgs": 1000}, "discard"),
    ({"max_age": "5m", "duplicate_window": "10m"}, "max_age"),
])
def test_settings_that_lose_data_are_refused(stream, key):
    with pytest.raises(st.UnsafeStreamConfig) as ei:
        st.parse_config({"streams": {"kraken": stream}})
    assert ei.value.key == f"nats.streams.kraken.{key}"
    assert isinstance(ei.value, ConfigError)


@pytest.mark.parametrize("cfg, key", [
    ({"streams": {"kraken": {"replicas": 0}}}, "nats.streams.kraken.replicas"),
    ({"streams": {"kraken": {"max_bytes": "lots"}}}, "nats.streams.kraken.max_bytes"),
    ({"streams": {"kraken": {"duplicate_window": "soon"}}}, "nats.streams.kraken.duplicate_window"),
    ({"prefix": "a b"}, "nats.prefix"),
    ({"token": "t", "user": "u"}, "nats.token"),
    ({"horizon": 0}, "nats.horizon"),
])
def test_malformed_values(cfg, key):
    with pytest.raises(ConfigError) as ei:
        st.parse_config(cfg)
    assert ei.value.key == key


def test_unreachable_servers_fail_clearly():
    bus = st.parse_config({"servers": [f"nats://127.0.0.1:{free_port()}"], "connect_timeout": 1})
    with pytest.raises(st.NatsUnreachable) as ei:
        run_async(st.connect(bus))
    assert isinstance(ei.value, PublishError)
    assert "127.0.0.1" in str(ei.value)


@pytest.mark.parametrize("auth", [{"user": "u", "password": "wrong"}, {"token": "nope"}, {}])
def test_wrong_credentials_fail_clearly(nats_server_factory, auth):
    srv = nats_server_factory(user="u", password="right")
    bus = st.parse_config({"servers": [srv.url], **auth})
    with pytest.raises(st.NatsAuthError) as ei:
        run_async(st.connect(bus))
    assert "credentials" in str(ei.value)


def test_right_credentials_connect(nats_server_factory):
    srv = nats_server_factory(token="s3cret")
    bus = st.parse_config({"servers": [srv.url], "token": "s3cret"})

    async def main():
        nc = await st.connect(bus)
        assert nc.max_payload == 8 * 1024 * 1024
        await nc.close()
    run_async(main())


def test_ensure_stream_creates_then_updates(nats_server):
    async def main():
        nc = await st.connect(st.parse_config({"servers": [nats_server.url]}))
        s = st.parse_config({"streams": {"kraken": {"duplicate_window": "5m"}}}).stream_for("kraken")
        info = await st.ensure_stream(nc, s)
        assert info.config.duplicate_window == 300
        s2 = st.parse_config({"streams": {"kraken": {"duplicate_window": "20m"}}}).stream_for("kraken")
        info = await st.ensure_stream(nc, s2)
        assert info.config.duplicate_window == 1200
        assert info.config.storage == api.StorageType.FILE
        await nc.close()
    run_async(main())


def test_existing_stream_that_cannot_match_is_refused(nats_server):
    async def main():
        nc = await nats.connect(nats_server.url)
        await nc.jsm().add_stream(name="PROD_KRAKEN", subjects=["prod.kraken.>"],
                                  storage=api.StorageType.MEMORY)
        with pytest.raises(st.StreamMismatch) as ei:
            await st.ensure_stream(nc, st.parse_config({}).stream_for("kraken"))
        assert ei.value.key == "storage"
        # Another stream already owns the subjects: the server's refusal is reported.
        with pytest.raises(st.StreamMismatch) as ei:
            await st.ensure_stream(nc, st.parse_config(
                {"streams": {"kraken": {"name": "OTHER"}}}).stream_for("kraken"))
        assert "OTHER" in str(ei.value)
        await nc.close()
    run_async(main())


def test_replicas_beyond_the_cluster_are_refused(nats_server):
    async def main():
        nc = await nats.connect(nats_server.url)
        s = st.parse_config({"streams": {"kraken": {"replicas": 3}}}).stream_for("kraken")
        with pytest.raises(st.StreamMismatch):
            await st.ensure_stream(nc, s)
        await nc.close()
    run_async(main())


def test_publisher_bad_ring_is_a_clear_error(tmp_path):
    import subprocess
    import sys as _sys
    r = subprocess.run([_sys.executable, "-m", "capture.publish", "--ring", str(tmp_path / "no.ring"),
                        "--venue", "kraken", "--shard", "0"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "no such ring file" in r.stderr and "Traceback" not in r.stderr


def test_publisher_without_venue_routing_says_where_it_comes_from(tmp_path):
    """flusher/ does not know the venues: their routing comes from the
    capture-level entry, and the flusher-level one says so instead of guessing."""
    import subprocess
    import sys as _sys
    r = subprocess.run([_sys.executable, "-m", "flusher.publisher.process", "--ring", str(tmp_path / "no.ring"),
                        "--venue", "kraken", "--shard", "0"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "capture.publish" in r.stderr and "Traceback" not in r.stderr
