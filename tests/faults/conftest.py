"""The fault suite (`make faults`): each scenario of issue 13 with real
processes, real signals, a real nats-server and the bundled simulator.
Each test prints its figures; run with -s to see them."""
import pytest

from capture.simulator import Scenario
from capture.simulator.runner import SimulatorThread
from shard import Shard, nats_srv, shards  # noqa: F401 - nats_srv: a fixture


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
def make_shard(tmp_path, sim):
    """``make_shard(nats_table, **kw)``: a shard whose ``[nats]`` table is
    ``nats_table`` (servers, credentials)."""
    with shards(str(tmp_path), sim) as make:
        def make_one(nats: str, **kw) -> Shard:
            return make(nats_table=nats, **kw)
        yield make_one
