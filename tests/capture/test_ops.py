"""Operator commands: `capture status` (real msgs/s, last error, typed JSON,
120 columns, an unreadable ring said once, a plain message for a user who
cannot read the rings, --watch), `capture ring stats`, `capture compress`,
`--version` and help for every flag."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import pytest

import ring
from capture import __version__, ops
from capture.cli import build_parser
from common.status import status_path, write_status
from timing import timeout

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "capture.cli", *args], capture_output=True, text=True,
                          timeout=timeout(60), cwd=REPO, **kw)


@pytest.fixture
def ring_dir(tmp_path):
    d = tmp_path / "rings"
    d.mkdir(mode=0o700)
    return str(d)


def test_msgs_per_s_comes_from_two_readings_of_the_ring(ring_dir):
    path = os.path.join(ring_dir, "shard-2.ring")
    ring.create(path, 1 << 16).close()
    with ring.Producer(path) as p:
        p.write(b"before")

        def between(_interval):  # frames written between the two readings
            for _ in range(100):
                p.write(b"x" * 20)
        rows, _ = ops.read_rows(ring_dir, interval=0.0, sleep=between)
    (row,) = rows
    assert row["shard"] == 2 and row["msgs_per_s"] > 0
    # with a first reading the test controls: 100 frames since it, at least 1 s ago
    before = {"2": (time.monotonic() - 1.0, row and ring.stats(path)["frames"] - 100)}
    rows, readings = ops.read_rows(ring_dir, before=before)
    assert 0 < rows[0]["msgs_per_s"] <= 100.0
    assert readings["2"][1] == ring.stats(path)["frames"]


def test_json_is_typed_and_last_error_comes_from_the_status_files(ring_dir):
    path = os.path.join(ring_dir, "shard-3.ring")
    ring.create(path, 1 << 16).close()
    write_status(status_path(ring_dir, 3, "receiver"), {
        "venue": "kraken", "connections": [{"id": 0, "state": "live"}, {"id": 1, "state": "backing_off"}],
        "gaps": {"seq_gap": 2}, "last_error": "kraken-1: connect_failed: refused"})
    write_status(status_path(ring_dir, 3, "publisher"), {"last_error": "nats: disconnected"})
    with ring.Producer(path) as p:
        p.write(b"x")
        r = run("status", "--ring-dir", ring_dir, "--json", "--interval", "0.05")
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)
    assert set(row) == set(ops.FIELDS)
    assert row["shard"] == 3 and row["venue"] == "kraken" and row["receiver"] == "up"
    assert (row["connections_live"], row["connections"]) == (1, 2)
    assert isinstance(row["ring_fill"], float) and isinstance(row["msgs_per_s"], float)
    assert row["drops"] == 0 and row["gaps"] == 2
    assert row["last_error"] == "receiver: kraken-1: connect_failed: refused"  # the receiver's first


def test_table_fits_120_columns_and_an_unreadable_ring_is_said_once(ring_dir):
    path = os.path.join(ring_dir, "shard-0.ring")
    ring.create(path, 1 << 16).close()
    write_status(status_path(ring_dir, 0, "receiver"), {
        "venue": "kraken_futures", "connections": [{"state": "live"}] * 12,
        "last_error": "kraken_futures-11: closed 1011: " + "a very long reason " * 20})
    bad = os.path.join(ring_dir, "shard-1.ring")
    fd = os.open(bad, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"garbage")
    os.close(fd)
    r = run("status", "--ring-dir", ring_dir, "--interval", "0.01")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3 and all(len(line) <= 120 for line in lines), lines
    assert lines[1].split()[:2] == ["0", "kraken_futures"] and "12/12" in lines[1]
    assert "receiver: kraken_futures-11" in lines[1] and lines[1].endswith("...")
    assert lines[2].split()[0] == "1" and r.stdout.count("truncated") == 1  # once, not per column


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the rings to another user")
def test_a_user_who_cannot_read_the_rings_is_told_plainly(ring_dir):
    path = os.path.join(ring_dir, "shard-0.ring")
    ring.create(path, 1 << 16).close()
    os.chown(path, 65534, 65534)
    os.chown(ring_dir, 65534, 65534)
    r = run("status", "--ring-dir", ring_dir)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "belong to user nobody" in r.stderr and "sudo -u nobody capture status" in r.stderr


def test_watch_refreshes_with_the_previous_reading(ring_dir):
    path = os.path.join(ring_dir, "shard-4.ring")
    ring.create(path, 1 << 16).close()
    r = run("status", "--ring-dir", ring_dir, "--watch", "--count", "3", "--interval", "0.01", "--json")
    assert r.returncode == 0, r.stderr
    refreshes = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(refreshes) == 3 and all(x[0]["shard"] == 4 for x in refreshes)


def test_ring_stats_and_compress(ring_dir, tmp_path):
    path = os.path.join(ring_dir, "shard-0.ring")
    ring.create(path, 1 << 16).close()
    with ring.Producer(path) as p:
        for _ in range(5):
            p.write(b"y")
    r = run("ring", "stats", path, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["frames"] == 5
    r = run("ring", "stats", path)
    assert r.returncode == 0 and "frames 5 " in r.stdout and "producer:" in r.stdout
    r = run("ring", "stats", str(tmp_path / "nope.ring"))
    assert r.returncode == 1 and "no such ring file" in r.stderr and "Traceback" not in r.stderr
    r = run("compress", str(tmp_path / "missing"))
    assert r.returncode == 2 and "not a directory" in r.stderr


def test_compress_compresses_closed_segments(tmp_path):
    from flusher.segments import read as segread
    from flusher_helpers import frames_of, payload, write_segment
    root = str(tmp_path / "data")
    os.mkdir(root, 0o700)
    path, _ = write_segment(root, frames_of([payload(i) for i in range(20)]))
    before = [bytes(f.payload) for f in segread.read(root)]
    r = run("compress", root)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith(".seg.zst") and not os.path.exists(path)
    assert [bytes(f.payload) for f in segread.read(root)] == before
    assert "compressed 1 segment" in r.stderr


def test_version_and_help_for_every_flag():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"capture {__version__}"
    r = run("run", "--help")
    assert r.returncode == 0 and "--shard N" in r.stdout and "[[shard]] id" in r.stdout

    def walk(p: argparse.ArgumentParser, where: str):
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sp in a.choices.items():
                    yield from walk(sp, f"{where} {name}")
            elif not isinstance(a, (argparse._HelpAction, argparse._VersionAction)):
                yield where, a
    missing = [f"{w}: {a.dest}" for w, a in walk(build_parser(), "capture") if not a.help]
    assert not missing, f"options without help: {missing}"


def test_segment_tools_say_what_is_wrong_in_one_line(tmp_path):
    from flusher_helpers import frames_of, payload, write_segment
    root = str(tmp_path / "data")
    os.mkdir(root, 0o700)
    write_segment(root, frames_of([payload(i) for i in range(5)]), venue="kraken")
    r = run("cat", root, "--start", "yesterday")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "--start 'yesterday': not a time" in r.stderr
    r = run("cat", str(tmp_path / "nonexistent"))
    assert r.returncode == 2 and "no such file or directory" in r.stderr and "nonexistent" in r.stderr
    r = run("cat", root, "--venue", "binance")   # a filter that matches nothing: one line, not silence
    assert r.returncode == 2 and r.stdout == "" and r.stderr.strip().count("\n") == 0
    assert "binance" in r.stderr and "no segment files" in r.stderr
    r = run("cat", root, "--venue", "kraken", "--start", "2000-01-01T00:00:00Z")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 5 and "warning" not in r.stderr
