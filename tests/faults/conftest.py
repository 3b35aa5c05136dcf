"""The fault suite (`make faults`): each scenario of issue 13 with real
processes, real signals, a real nats-server and the bundled simulator.
Each test prints its figures; run with -s to see them."""
import pytest

from capture.simulator import Scenario
from capture.simulator.runner import SimulatorThread
from faultshard import FaultShard
from flusher.publisher.nats_embedded import NatsServer


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)


@pytest.fixture
def sim():
    # Fast enough to fill a 64 KiB ring in well under a second once its
    # flusher is stopped.
    with SimulatorThread(["kraken"], Scenario(seed=13, rate=2000, clock="wall", instruments=6,
                                              heartbeat_interval=0.5)) as st:
        yield st


@pytest.fixture
def nats_srv(tmp_path):
    s = NatsServer(tmp_path / "nats").start()
    yield s
    s.stop()


@pytest.fixture
def make_shard(tmp_path, sim):
    shards = []

    def make(nats: str, **kw) -> FaultShard:
        s = FaultShard(str(tmp_path), sim.url("kraken"), sim.rest_url("kraken"), nats, **kw)
        shards.append(s)
        return s

    yield make
    for s in shards:
        s.cleanup()
