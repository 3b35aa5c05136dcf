"""Config validation: every kind of mistake names the file and the key."""
import os

import pytest

from capture import config
from common.errors import ConfigError

GOOD = """
[ring]
capacity = "4MiB"
[storage]
data_dir = "/var/lib/capture"
fsync = "always"
[nats]
servers = ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]
user = "capture"
password = "s3cret"
[nats.streams.kraken]
replicas = 3
duplicate_window = "2h"
[nats.streams.polymarket]
duplicate_window = "10m"
[[shard]]
id = 3
venue = "kraken"
cores = [1]
instruments = ["BTC/USD"]
"""


def test_good_config_resolves():
    cfg = config.loads(GOOD, "c.toml")
    assert cfg.ring.capacity == 4 << 20
    assert cfg.storage.fsync == "always"
    assert cfg.nats.bus.stream_for("kraken").replicas == 3
    assert cfg.nats.bus.stream_for("kraken").duplicate_window_s == 7200.0
    assert cfg.nats.stream_name("kalshi") == "PROD_KALSHI"
    assert cfg.shard(3).cores == (1,)
    assert "s3cret" not in repr(cfg.nats)


@pytest.mark.parametrize("text,key,what", [
    ("[ring]\ncapacity = \"3MiB\"", "ring.capacity", "power of two"),
    ("[ring]\ncapacity = \"lots\"", "ring.capacity", "size"),
    ("[storage]\nfsync = \"sometimes\"", "storage.fsync", "not one of"),
    ("[storage]\nfsyncc = 1", "storage.fsyncc", "unknown key"),
    ("[nats]\nservers = 5", "nats.servers", "list"),
    ("[nats]\npassword = \"a\"", "nats.password", "without user"),
    ("[nats]\nprefix = \"a..b\"", "nats.prefix", "subject prefix"),
    ("[nats]\nwindow = 0", "nats.window", "out of range"),
    ("[nats]\nserverz = []", "nats.serverz", "unknown"),
    ("[nats.streams.nyse]\nreplicas = 3", "nats.streams.nyse", "unknown venue"),
    ("[nats.streams.kraken]\nreplicas = 7", "nats.streams.kraken.replicas", "1..5"),
    ("[nats.streams.kraken]\nstorage = \"memory\"", "nats.streams.kraken.storage", "memory"),
    ("[nats.streams.kraken]\nduplicate_window = \"10s\"", "nats.streams.kraken.duplicate_window", "horizon"),
    ("[metrics]\nport_base = 70000", "metrics.port_base", "out of range"),
    ("[venues.kraken]\nurl = 5", "venues.kraken.url", "string"),
    ("[bogus]\nx = 1", "bogus", "unknown key"),
])
def test_each_mistake_names_its_key(text, key, what):
    shard = "\n[[shard]]\nid = 0\nvenue = \"kraken\"\ninstruments = [\"BTC/USD\"]\n"
    with pytest.raises(ConfigError) as ei:
        config.loads(text + shard, "c.toml")
    e = ei.value
    assert e.path == "c.toml" and e.key == key and what in str(e), str(e)


@pytest.mark.parametrize("shard,key,what", [
    ("id = 0\nvenue = \"nyse\"\ninstruments = [\"A\"]", "shard[0].venue", "not one of"),
    ("venue = \"kraken\"\ninstruments = [\"A\"]", "shard[0].id", "missing"),
    ("id = 0\nvenue = \"kraken\"", "shard[0].instruments", "discovery"),
    ("id = 0\nvenue = \"kraken\"\ninstruments = [\"A\"]\ndiscovery = true", "shard[0].discovery", "exclude"),
    ("id = 0\nvenue = \"kraken\"\ninstruments = [\"A\"]\ncores = [\"one\"]", "shard[0].cores", "integers"),
    ("id = 0\nvenue = \"kraken\"\ninstruments = [\"A\"]\ntransport = \"curl\"", "shard[0].transport", "not one of"),
    ("id = 0\nvenue = \"kraken\"\ninstruments = [\"A\"]\nbook_depth = 7", "shard[0].book_depth", "not one of"),
    ("id = 0\nvenue = \"kalshi\"\ninstruments = [\"A\"]", "venues.kalshi.key_file", "key_id"),
])
def test_shard_mistakes(shard, key, what):
    with pytest.raises(ConfigError) as ei:
        config.loads("[[shard]]\n" + shard, "c.toml")
    assert ei.value.key == key and what in str(ei.value), str(ei.value)


def test_duplicate_shard_and_unknown_shard():
    text = "[[shard]]\nid = 1\nvenue = \"kraken\"\ninstruments = [\"A\"]\n" * 2
    with pytest.raises(ConfigError, match="defined twice"):
        config.loads(text, "c.toml")
    cfg = config.loads(text.split("[[shard]]")[1].join(["[[shard]]", ""]), "c.toml")
    with pytest.raises(ConfigError, match="no shard 9"):
        cfg.shard(9)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        config.load(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[ring\n")
    with pytest.raises(ConfigError, match="not valid TOML") as ei:
        config.load(str(bad))
    assert ei.value.path == str(bad)


def test_builtin_default_and_example_validate():
    cfg = config.default_config()
    assert {s.venue for s in cfg.shards} == {"kraken", "polymarket"}
    assert cfg.nats.embedded
    example = os.path.join(os.path.dirname(__file__), "..", "..", "capture.example.toml")
    config.load(example)
