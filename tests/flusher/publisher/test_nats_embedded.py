"""The embedded nats-server helper: JetStream, loopback only, 8 MiB payloads,
free ports, restart on the same port, a 3-node cluster."""
from __future__ import annotations

import os
import socket

import nats
import psutil
import pytest
from timing import timeout


from conftest_nats import *  # noqa: F401,F403,E402
from conftest_nats import run_async  # noqa: E402

from flusher.publisher.nats_embedded import MAX_PAYLOAD, NatsServer, NatsServerError, find_nats_server  # noqa: E402


def test_binary_is_found():
    assert os.access(find_nats_server(), os.X_OK)


def test_server_serves_jetstream_on_loopback(nats_server):
    assert nats_server.url.startswith("nats://127.0.0.1:")
    assert (nats_server.data_dir / "jetstream").is_dir()
    conns = psutil.Process(nats_server.pid).net_connections(kind="tcp")
    listening = [c.laddr for c in conns if c.status == psutil.CONN_LISTEN]
    assert listening and all(a.ip == "127.0.0.1" for a in listening)

    async def main():
        nc = await nats.connect(nats_server.url)
        assert nc.max_payload == MAX_PAYLOAD
        await nc.jsm().add_stream(name="T", subjects=["t.>"])
        ack = await nc.jetstream().publish("t.x", b"x" * (MAX_PAYLOAD - 1024))
        assert ack.seq == 1
        await nc.close()
    run_async(main())


def test_restart_keeps_port_and_store(nats_server):
    port = nats_server.port

    async def put():
        nc = await nats.connect(nats_server.url)
        await nc.jsm().add_stream(name="T", subjects=["t.>"])
        await nc.jetstream().publish("t.x", b"kept")
        await nc.close()

    async def get():
        nc = await nats.connect(nats_server.url)
        m = await nc.jsm().get_msg("T", 1)
        await nc.close()
        return m.data
    run_async(put())
    assert nats_server.stop() == 0
    assert not nats_server.running
    nats_server.start()
    assert nats_server.port == port
    assert run_async(get()) == b"kept"


def test_configured_port_and_bad_start(tmp_path):
    from flusher.publisher.nats_embedded import free_port
    port = free_port()
    with NatsServer(tmp_path / "a", port=port) as s:
        assert s.port == port
        # A second server on the same port fails with the log in the error.
        with pytest.raises(NatsServerError) as ei:
            NatsServer(tmp_path / "b", port=port).start(timeout=10)
        assert "exited" in str(ei.value) or "ready" in str(ei.value)
    with socket.socket() as sk:      # stopped: the port is free again
        sk.bind(("127.0.0.1", port))


def test_cluster_of_three(nats_cluster):
    async def main():
        nc = await nats.connect(nats_cluster.urls)
        # A replicated stream is created only once its three peers agree,
        # which on a loaded 2-core machine can take longer than the
        # client's default 5 s request timeout.
        info = await nc.jsm(timeout=timeout(30)).add_stream(name="R3", subjects=["r3.>"], num_replicas=3)
        assert info.config.num_replicas == 3
        assert len(info.cluster.replicas or []) == 2
        await nc.close()
    run_async(main())
    assert len({n.port for n in nats_cluster.nodes}) == 3
