"""`config check` fails on what `run` would fail on (key files, cores outside
the allowed set, unknown channels, discovery errors with --discover), and
`run` refuses the same at once with exit 2."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from capture import config, preflight
from timing import timeout

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(*args):
    return subprocess.run([sys.executable, "-m", "capture.cli", *args], capture_output=True, text=True,
                          timeout=timeout(60), cwd=REPO)


def write_key(path, mode=0o600, garbage=False):
    if garbage:
        data = b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, data)
    os.close(fd)
    os.chmod(path, mode)


def kalshi_cfg(tmp_path, key_file) -> str:
    p = tmp_path / "k.toml"
    p.write_text(f"""
[ring]
dir = "{tmp_path}/rings"
[venues.kalshi]
key_id = "abc"
key_file = "{key_file}"
[[shard]]
id = 0
venue = "kalshi"
instruments = ["KXBTC-1"]
""")
    return str(p)


def shard_cfg(tmp_path, extra: str, venue: str = "kraken", venue_extra: str = "") -> str:
    p = tmp_path / "c.toml"
    p.write_text(f"""
[ring]
dir = "{tmp_path}/rings"
[venues.{venue}]
{venue_extra}
[[shard]]
id = 0
venue = "{venue}"
{extra}
""")
    return str(p)


@pytest.mark.parametrize("case", ["missing", "0644", "garbage"])
def test_a_bad_kalshi_key_fails_config_check_and_run(tmp_path, case):
    key = tmp_path / "kalshi.pem"
    if case != "missing":
        write_key(key, 0o644 if case == "0644" else 0o600, garbage=case == "garbage")
    path = kalshi_cfg(tmp_path, key)
    r = run("config", "check", path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "venues.kalshi.key_file" in r.stderr and "OK" not in r.stdout
    assert {"missing": "does not exist", "0644": "mode 0644", "garbage": "not a valid PEM"}[case] in r.stderr
    r = run("run", "--shard", "0", "--config", path)
    assert r.returncode == 2 and "venues.kalshi.key_file" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_good_kalshi_key_passes(tmp_path):
    key = tmp_path / "kalshi.pem"
    write_key(key)
    cfg = config.load(kalshi_cfg(tmp_path, key))
    assert preflight.check(cfg) == []


def test_cores_outside_the_allowed_set(tmp_path):
    path = shard_cfg(tmp_path, 'instruments = ["BTC/USD"]\ncores = [99]')
    r = run("config", "check", path)
    assert r.returncode == 2 and "shard[0].cores" in r.stderr and "[99]" in r.stderr
    # against an explicit allowed set (what CPUAffinity= would leave)
    cfg = config.load(shard_cfg(tmp_path, 'instruments = ["BTC/USD"]\ncores = [1]'))
    assert preflight.check(cfg, cores={2, 3})[0].key == "shard[0].cores"
    assert preflight.check(cfg, cores={1, 2}) == []


def test_unknown_channel(tmp_path):
    path = shard_cfg(tmp_path, 'instruments = ["BTC/USD"]\nchannels = ["book", "candles_9m"]')
    # the config's own validation knows each venue's channels (its trait): the file is refused
    # with the key named, --json or not
    r = run("config", "check", path, "--json")
    assert r.returncode == 2 and "shard[0].channels" in r.stderr and "candles_9m" in r.stderr
    r = run("config", "check", path)
    assert r.returncode == 2 and "shard[0].channels" in r.stderr and "candles_9m" in r.stderr


def test_discover_against_an_unreachable_rest_url_fails(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = shard_cfg(tmp_path, "discovery = true", venue_extra=f'rest_url = "http://127.0.0.1:{port}"')
    r = run("config", "check", path)
    assert r.returncode == 0 and "OK" in r.stdout     # without --discover: nothing fetched
    r = run("config", "check", path, "--discover")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "OK" not in r.stdout and "shard 0" in r.stderr
