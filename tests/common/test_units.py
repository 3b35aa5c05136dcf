"""The one size/duration grammar: everything either old parser took keeps
its meaning, anything else is a ConfigError naming the key."""
import pytest

from common import units
from common.errors import ConfigError


@pytest.mark.parametrize("text,want", [
    (4096, 4096), (0, 0), ("4096", 4096), ("4096B", 4096), (" 12 b ", 12),
    # the capture config's units (case as it wrote them)
    ("512KiB", 512 << 10), ("256MiB", 256 << 20), ("2GiB", 2 << 30), ("1TiB", 1 << 40),
    ("10KB", 10_000), ("10MB", 10**7), ("3GB", 3 * 10**9), ("1TB", 10**12),
    # the NATS table's forms: short, lower case, decimal without the i
    ("256m", 256 * 10**6), ("256mi", 256 << 20), ("1k", 1000), ("1g", 10**9), ("5mib", 5 << 20),
])
def test_sizes(text, want):
    assert units.parse_size(text, "k") == want


@pytest.mark.parametrize("text,want", [
    (1.5, 1.5), (0, 0.0), ("1.5", 1.5), ("30s", 30.0), ("250ms", 0.25), ("10m", 600.0),
    ("2h", 7200.0), ("7d", 7 * 86400.0), ("10us", 1e-5), ("5ns", 5e-9), (" 3 S ", 3.0),
])
def test_durations(text, want):
    assert units.parse_duration(text, "k") == pytest.approx(want)


@pytest.mark.parametrize("text", ["", "12 parsecs", "1.5MiB", "-1", "MiB", True, [1], 2.5, -4, "1e3"])
def test_bad_sizes_are_config_errors_naming_the_key(text):
    with pytest.raises(ConfigError) as ei:
        units.parse_size(text, "storage.segment_bytes", "c.toml")
    assert ei.value.key == "storage.segment_bytes" and ei.value.path == "c.toml"
    assert "c.toml: storage.segment_bytes" in str(ei.value)


@pytest.mark.parametrize("text", ["", "soon", "-1s", "1 fortnight", False, None, -0.5, float("nan")])
def test_bad_durations_are_config_errors_naming_the_key(text):
    with pytest.raises(ConfigError) as ei:
        units.parse_duration(text, "nats.horizon")
    assert ei.value.key == "nats.horizon"


def test_the_capture_config_and_the_nats_table_read_the_same_text_alike():
    from capture import config
    from flusher.publisher import stream
    toml = ('[storage]\nsegment_bytes = "64m"\nfsync_interval = "500ms"\n'
            '[nats]\nhorizon = "2m"\n[nats.streams.kraken]\nmax_bytes = "64m"\n'
            '[[shard]]\nid = 0\nvenue = "kraken"\ninstruments = ["BTC/USD"]\n')
    cfg = config.loads(toml)
    assert cfg.storage.segment_bytes == stream.parse_size("64m", "x") == 64 * 10**6
    assert cfg.nats.bus.stream_for("kraken").max_bytes == 64 * 10**6
    assert cfg.storage.fsync_interval == 0.5 and cfg.nats.bus.horizon_s == 120.0
