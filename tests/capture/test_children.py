"""Config resolved once: each child's settings come from one resolution,
reach the child one way (an owner-only settings file) and read back into the
child's own dataclass; secrets never reach a command line."""
import dataclasses
import json
import os
import stat
import subprocess
import sys

import pytest

import ring
from capture import children, config
from capture.receiver.integrity import IntegritySettings
from capture.receiver.settings import ReceiverConfig
from common import settings
from common.errors import ConfigError
from flusher.publisher.publish import PublisherSettings
from flusher.segments.drain import FlusherConfig

TOML = """
[ring]
dir = "{dir}"
[storage]
data_dir = "{dir}/data"
segment_bytes = "64MiB"
fsync = "always"
compress = true
[nats]
servers = ["nats://10.0.0.1:4222"]
user = "capture"
password = "s3cret-pw"
window = 512
[venues.kraken]
url = "ws://127.0.0.1:1/v2"
[[shard]]
id = 4
venue = "kraken"
instruments = ["BTC/USD", "ETH/USD"]
channels = ["book"]
book_depth = 25
silence_timeout = "45s"
[[shard]]
id = 5
venue = "polymarket"
discovery = true
"""


@pytest.fixture
def conf(tmp_path):
    return config.loads(TOML.format(dir=tmp_path), "c.toml")


def test_each_child_gets_its_own_dataclass_from_one_resolution(conf, tmp_path):
    c = children.resolve(conf, 4, host="h1")
    assert isinstance(c.receiver, ReceiverConfig) and isinstance(c.flusher, FlusherConfig)
    assert isinstance(c.publisher, PublisherSettings) and isinstance(c.integrity, IntegritySettings)
    ring_path = str(tmp_path / "shard-4.ring")
    assert c.receiver.ring == c.flusher.ring == c.publisher.ring == c.integrity.ring == ring_path
    assert (c.flusher.segment_bytes, c.flusher.fsync, c.flusher.compress, c.flusher.host) == \
        (64 << 20, "always", True, "h1")
    assert (c.publisher.window, c.publisher.nats["password"]) == (512, "s3cret-pw")
    assert c.integrity.depth == c.receiver.depth == 25
    assert c.receiver.channels == ["book"] and c.receiver.timing.silence_timeout == 45
    assert list(c.roles()) == ["flusher", "publisher", "integrity", "receiver"]
    # a venue without book checksums has no validator
    p = children.resolve(conf, 5)
    assert p.integrity is None and p.readers() == ("flusher", "publisher")
    assert p.receiver.channels is None  # Polymarket's channel is not configurable


def test_embedded_nats_url_reaches_the_publisher(tmp_path):
    conf = config.loads(f'[ring]\ndir = "{tmp_path}"\n[[shard]]\nid = 0\nvenue = "kraken"\n'
                        'instruments = ["BTC/USD"]\n')
    assert conf.nats.embedded
    assert children.resolve(conf, 0, nats_url="nats://127.0.0.1:4999").publisher.nats["servers"] == \
        ["nats://127.0.0.1:4999"]


def test_settings_files_round_trip_every_child(conf, tmp_path):
    c = children.resolve(conf, 4)
    for role, obj in c.roles().items():
        argv = children.write_settings(str(tmp_path), role, obj)
        path = argv[-1]
        assert argv == ["-m", children.MODULES[role], "--settings", path]
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        back = settings.read(type(obj), path)
        assert settings.to_dict(back) == settings.to_dict(obj)
    assert settings.read(ReceiverConfig, str(tmp_path / "receiver.settings.json")) == c.receiver


def test_secrets_are_in_the_owner_only_file_never_on_the_command_line(conf, tmp_path):
    c = children.resolve(conf, 4)
    for role, obj in c.roles().items():
        argv = children.write_settings(str(tmp_path), role, obj)
        assert not any("s3cret" in a for a in argv)
    with open(tmp_path / "publisher.settings.json") as f:
        assert json.load(f)["nats"]["password"] == "s3cret-pw"
    assert "s3cret" not in repr(c.publisher)


def test_a_settings_file_is_never_overwritten_or_followed(conf, tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    os.symlink(target, tmp_path / "flusher.settings.json")
    with pytest.raises(FileExistsError):
        children.write_settings(str(tmp_path), "flusher", children.resolve(conf, 4).flusher)
    assert target.read_text() == "keep"
    os.unlink(tmp_path / "flusher.settings.json")
    os.symlink(target, tmp_path / "link.json")
    with pytest.raises(ConfigError, match="cannot read"):
        settings.read(FlusherConfig, str(tmp_path / "link.json"))


@pytest.mark.parametrize("change,key,what", [
    ({"bogus": 1}, "bogus", "unknown setting"),
    ({"shard": "four"}, "shard", "integer"),
    ({"compress": "yes"}, "compress", "true or false"),
    ({"venue": None}, "venue", "string"),
])
def test_a_bad_settings_file_is_a_config_error_naming_the_key(conf, tmp_path, change, key, what):
    data = settings.to_dict(children.resolve(conf, 4).flusher)
    data.update(change)
    path = tmp_path / "f.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as ei:
        settings.read(FlusherConfig, str(path))
    assert ei.value.key == key and ei.value.path == str(path) and what in str(ei.value)


def test_nested_settings_name_the_nested_key(conf, tmp_path):
    data = settings.to_dict(children.resolve(conf, 4).receiver)
    data["timing"]["stagger"] = "fast"
    del data["ring"]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as ei:
        settings.read(ReceiverConfig, str(path))
    assert ei.value.key == "ring" and "missing" in str(ei.value)
    data["ring"] = "x"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as ei:
        settings.read(ReceiverConfig, str(path))
    assert ei.value.key == "timing.stagger"


def test_a_child_reads_its_settings_file_and_refuses_a_bad_one(conf, tmp_path):
    """The flusher as the supervisor starts it: from the file; a value out
    of range in it is a clean exit 2 naming the key."""
    c = children.resolve(conf, 4)
    ring.create(c.flusher.ring, 1 << 16).close()
    bad = dataclasses.replace(c.flusher, status_path=None)
    data = settings.to_dict(bad)
    data["max_bytes"] = 0
    (tmp_path / "bad.json").write_text(json.dumps(data))
    r = subprocess.run([sys.executable, "-m", "flusher.segments.drain", "--settings",
                        str(tmp_path / "bad.json")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "cannot start" in r.stderr and "max_bytes" in r.stderr and "Traceback" not in r.stderr


def test_one_default_per_setting():
    """A setting a child takes has its default in the child's dataclass; the
    config's default is that one."""
    cfg = config.loads('[[shard]]\nid = 0\nvenue = "kraken"\ninstruments = ["BTC/USD"]\n')
    fl = FlusherConfig(ring="r", data_dir="d", venue="v", shard=0)
    st = cfg.storage
    assert (st.segment_bytes, st.fsync, st.fsync_interval, st.compress, st.drain_timeout) == \
        (fl.segment_bytes, fl.fsync, fl.fsync_interval, fl.compress, fl.drain_timeout)
    pub = PublisherSettings(ring="r", venue="v", shard=0)
    assert (cfg.nats.window, cfg.nats.ack_timeout) == (pub.window, pub.ack_timeout)
    rx = ReceiverConfig(ring="r", venue="kraken")
    assert (cfg.shards[0].book_depth, cfg.shards[0].max_instruments) == (rx.depth, rx.max_instruments)
    # the segment size floor is the flusher's, in the config too
    from flusher.segments.drain import MIN_SEGMENT_BYTES
    config.loads(f'[storage]\nsegment_bytes = {MIN_SEGMENT_BYTES}\n[[shard]]\nid = 0\nvenue = "kraken"\n'
                 'instruments = ["BTC/USD"]\n')
    with pytest.raises(ConfigError, match="storage.segment_bytes"):
        config.loads(f'[storage]\nsegment_bytes = {MIN_SEGMENT_BYTES - 1}\n[[shard]]\nid = 0\n'
                     'venue = "kraken"\ninstruments = ["BTC/USD"]\n')


def test_a_channel_the_venue_does_not_have_names_the_key():
    with pytest.raises(ConfigError) as ei:
        config.loads('[[shard]]\nid = 0\nvenue = "kraken"\ninstruments = ["BTC/USD"]\n'
                     'channels = ["book", "bok"]\n', "c.toml")
    assert ei.value.key == "shard[0].channels" and "'bok'" in str(ei.value)


def test_the_checksum_opt_out_reaches_the_validator(tmp_path):
    conf = config.loads(f'[ring]\ndir = "{tmp_path}"\n[[shard]]\nid = 0\nvenue = "kraken"\n'
                        'instruments = ["BTC/USD", "MATIC/USD"]\nchecksum_skip = ["MATIC/USD"]\n')
    validator = children.resolve(conf, 0).integrity
    assert validator is not None and validator.skip == ["MATIC/USD"]
    # through the settings file the supervisor writes, into the validator's own dataclass
    argv = children.write_settings(str(tmp_path), "integrity", validator)
    assert settings.read(IntegritySettings, argv[-1]).skip == ["MATIC/USD"]


def test_a_checksum_opt_out_on_a_venue_without_checksums_names_the_key():
    with pytest.raises(ConfigError) as ei:
        config.loads('[[shard]]\nid = 0\nvenue = "polymarket"\ndiscovery = true\n'
                     'checksum_skip = ["x"]\n', "c.toml")
    assert ei.value.key == "shard[0].checksum_skip" and "no checksum" in str(ei.value)


def test_embedded_when_no_servers_are_configured(tmp_path):
    """What capture run does for a config without servers: a server with its
    store under the data dir, its URL in the publisher's settings."""
    from flusher.publisher.nats_embedded import NatsServer
    from flusher.publisher.stream import parse_config
    conf = config.loads(f'[ring]\ndir = "{tmp_path}"\n[storage]\ndata_dir = "{tmp_path}"\n'
                        '[[shard]]\nid = 0\nvenue = "kraken"\ninstruments = ["BTC/USD"]\n')
    assert conf.nats.embedded
    srv = NatsServer(tmp_path / "nats", port=0).start()
    try:
        bus = parse_config(children.resolve(conf, 0, nats_url=srv.url).publisher.nats)
        assert bus.servers == [srv.url]
        assert (tmp_path / "nats" / "jetstream").is_dir()
    finally:
        srv.stop()
    conf2 = config.loads('[nats]\nservers = ["nats://h:4222"]\n'
                         '[[shard]]\nid = 0\nvenue = "kraken"\ninstruments = ["BTC/USD"]\n')
    bus2 = parse_config(children.resolve(conf2, 0, nats_url="nats://ignored:1").publisher.nats)
    assert bus2.servers == ["nats://h:4222"]
