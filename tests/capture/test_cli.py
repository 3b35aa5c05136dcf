"""The `capture` command: config check, status, systemd install (+ verify)."""
import json
import os
import shutil
import subprocess
import sys

import pytest

import ring
from timing import timeout

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "capture.cli", *args], capture_output=True, text=True,
                          timeout=timeout(60), cwd=REPO, **kw)


def test_config_check_prints_the_plan():
    r = run("config", "check", os.path.join(REPO, "capture.example.toml"))
    assert r.returncode == 0, r.stderr
    assert "connection kraken-0: BTC/USD, ETH/USD" in r.stdout
    assert "discovery at run time" in r.stdout
    r = run("config", "check")  # the built-in default
    assert r.returncode == 0 and "<built-in default>: OK" in r.stdout


def test_config_check_names_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[shard]]\nid = 0\nvenue = "kraken"\ninstruments = ["A"]\ncorse = [1]\n')
    r = run("config", "check", str(bad))
    assert r.returncode == 2
    assert "shard[0].corse" in r.stderr and "unknown key" in r.stderr


def test_status_table(tmp_path):
    d = tmp_path / "rings"
    d.mkdir(mode=0o700)
    path = str(d / "shard-7.ring")
    ring.create(path, 1 << 16).close()
    with ring.Producer(path) as p:
        p.write(b"x")
        r = run("status", "--ring-dir", str(d))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["shard", "venue", "receiver"]
    assert lines[1].split()[0] == "7" and "up" in lines[1]
    r = run("status", "--ring-dir", str(d), "--json")
    assert json.loads(r.stdout)[0]["shard"] == 7  # typed: a number, not a string


def test_segment_tools_help():
    for tool in ("cat", "verify", "stats"):
        r = run(tool, "--help")
        assert r.returncode == 0 and f"capture {tool}" in r.stdout


def test_systemd_install_and_verify(tmp_path):
    root = tmp_path / "root"
    exe = shutil.which("true")
    r = run("systemd", "install", "--prefix", str(root), "--exec", exe)
    assert r.returncode == 0, r.stderr
    unit = root / "etc/systemd/system/capture@.service"
    text = unit.read_text()
    assert f"ExecStart={exe} run --shard %i" in text
    assert (root / "etc/tmpfiles.d/capture.conf").read_text().count("0700") == 2
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed (make test installs it where it can)")
    inst = tmp_path / "units"
    inst.mkdir()
    shutil.copy(unit, inst / "capture@3.service")
    shutil.copy(root / "etc/systemd/system/capture.target", inst / "capture.target")
    v = subprocess.run([analyze, "verify", "--man=no", str(inst / "capture@3.service"),
                        str(inst / "capture.target")], capture_output=True, text=True, timeout=timeout(120))
    assert v.returncode == 0, v.stderr
    assert "Unknown key" not in v.stderr and "Unknown section" not in v.stderr, v.stderr


def test_systemd_install_refuses_an_executable_in_a_home_directory(tmp_path):
    r = run("systemd", "install", "--prefix", str(tmp_path / "root"), "--exec", "/root/venv/bin/capture")
    assert r.returncode == 2
    assert "ProtectHome" in r.stderr and "/root/venv/bin/capture" in r.stderr
    assert not (tmp_path / "root").exists()


def test_systemd_install_makes_the_configs_directories_writable(tmp_path):
    cfg = tmp_path / "capture.toml"
    cfg.write_text('[ring]\ndir = "/dev/shm/capture"\n[storage]\ndata_dir = "/srv/md/data"\n'
                   '[[shard]]\nid = 0\nvenue = "kraken"\ninstruments = ["BTC/USD"]\n')
    root = tmp_path / "root"
    r = run("systemd", "install", "--prefix", str(root), "--exec", shutil.which("true"), "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    unit = (root / "etc/systemd/system/capture@.service").read_text()
    assert f"--config {cfg}" in unit
    dropin = (root / "etc/systemd/system/capture@.service.d/20-paths.conf").read_text()
    assert "ReadWritePaths=/srv/md/data\n" in dropin  # the ring dir is the unit's own: not repeated


def test_systemd_install_refuses_a_relative_data_dir(tmp_path):
    cfg = tmp_path / "capture.toml"
    cfg.write_text('[storage]\ndata_dir = "./data"\n[[shard]]\nid = 0\nvenue = "kraken"\ninstruments = ["BTC/USD"]\n')
    r = run("systemd", "install", "--prefix", str(tmp_path / "root"), "--exec", shutil.which("true"),
            "--config", str(cfg))
    assert r.returncode == 2 and "storage.data_dir" in r.stderr and "relative" in r.stderr


def test_run_refuses_a_world_writable_ring_dir(tmp_path):
    rings = tmp_path / "rings"
    rings.mkdir()
    os.chmod(rings, 0o777)
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[ring]\ndir = "{rings}"\n\n[storage]\ndata_dir = "{data}"\n\n'
                   '[[shard]]\nid = 0\nvenue = "kraken"\ninstruments = ["BTC/USD"]\n')
    r = run("run", "--config", str(cfg), "--shard", "0")
    assert r.returncode == 4, r.stderr
    assert "event=refused" in r.stderr and str(rings) in r.stderr and "mode 0777" in r.stderr
    assert "Traceback" not in r.stderr
    assert os.listdir(rings) == []            # no lock file, no ring: nothing started there
