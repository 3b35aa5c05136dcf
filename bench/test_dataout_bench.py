"""Getting data out: replay at max speed (msg/s at 256 B, target >= 200,000) and export
(frames/s) against reading with the Python reader into pandas.

Replay: a recording of N 256-byte text messages on one connection is served by
``capture.replay.Replay`` (speed max) in this process; a picows client in
another process (another core) counts them and times the feed from the
upgrade to the close frame.  Export: the same recording to Parquet
(``capture.export.export``, venue columns filled in), to an Arrow table
(``to_arrow``), and the baseline: ``flusher.segments.read.read`` into a
``pandas.DataFrame`` of (seq, ts, type, payload).

Run: ``make bench`` (or ``pytest bench/test_dataout_bench.py --benchmark-only -s``).
``CAPTURE_BENCH_DATAOUT_N`` sets N (default 200,000; a smoke run uses a few
thousand).  Numbers are printed, never asserted.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pandas as pd
import pytest

from capture.export import export, to_arrow
from capture.replay import Replay
from flusher.segments.read import read
from flusher.segments.writer import SegmentWriter, writer_header
from ring.frame import encode

N = int(os.environ.get("CAPTURE_BENCH_DATAOUT_N", "200000"))
SIZE = 256
BASE_NS = 1_800_000_000 * 1_000_000_000
HERE = os.path.dirname(os.path.abspath(__file__))
_results: dict[str, float] = {}


def _message(i: int) -> bytes:
    head = (b'{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[{"price":%d.1,'
            b'"qty":0.5}],"asks":[],"checksum":%d,"timestamp":"2027-01-15T08:00:00.000000Z","pad":"'
            % (100 + i % 1000, i))
    return head + b"x" * (SIZE - len(head) - 4) + b'"}]}'


@pytest.fixture(scope="module")
def recording():
    d = tempfile.mkdtemp(prefix="capture-bench-dataout-")
    os.chmod(d, 0o700)
    frames = [encode(_message(i), i, BASE_NS + i * 1000) for i in range(N)]
    blob = b"".join(frames)
    offs = np.cumsum([0] + [len(f) for f in frames[:-1]]).astype(np.int64)
    w = SegmentWriter(d, writer_header("kraken", 0, b"B" * 16, BASE_NS, 0, "bench"), index_every=1024)
    w.append([blob], len(blob), np.arange(N, dtype=np.uint64),
             BASE_NS + np.arange(N, dtype=np.int64) * 1000, offs)
    w.close()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_replay_max_speed(benchmark, recording, bench_summary):
    replay = Replay(recording, "kraken", speed=None)
    rates: list[float] = []

    def one_feed() -> None:
        async def go():
            server = await replay.serve("127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            proc = await asyncio.create_subprocess_exec(
                sys.executable, os.path.join(HERE, "dataout_bench_client.py"),
                f"ws://127.0.0.1:{port}/kraken/0", stdout=subprocess.PIPE)
            out, _ = await proc.communicate()
            server.close()
            return json.loads(out)
        r = asyncio.run(go())
        assert r["messages"] == N, r          # every message arrived
        rates.append(r["messages"] / r["seconds"])

    benchmark.pedantic(one_feed, rounds=3, iterations=1)
    _results["replay"] = float(np.median(rates))
    bench_summary.set_renderer("data out", _report)


def test_export_parquet(benchmark, recording, bench_summary):
    def run() -> None:
        out = tempfile.mkdtemp(prefix="capture-bench-export-")
        try:
            man = export(recording, os.path.join(out, "x"), "parquet")
            assert man["rows"] == N
        finally:
            shutil.rmtree(out, ignore_errors=True)
    benchmark.pedantic(run, rounds=3, iterations=1)
    _results["export"] = N / benchmark.stats.stats.median
    bench_summary.set_renderer("data out", _report)


def test_to_arrow(benchmark, recording, bench_summary):
    t = benchmark.pedantic(lambda: to_arrow(recording), rounds=3, iterations=1)
    assert t.num_rows == N
    _results["to_arrow"] = N / benchmark.stats.stats.median
    bench_summary.set_renderer("data out", _report)


def test_reader_into_pandas(benchmark, recording, bench_summary):
    def run():
        return pd.DataFrame([(f.seq, f.ts_ns, f.type, f.payload) for f in read(recording)],
                            columns=["seq", "ts", "type", "payload"])
    df = benchmark.pedantic(run, rounds=3, iterations=1)
    assert len(df) == N
    _results["pandas"] = N / benchmark.stats.stats.median
    bench_summary.set_renderer("data out", _report)


def _report() -> list[str]:
    r = _results
    lines = [f"{N} messages of {SIZE} B, medians of 3 rounds"]
    if "replay" in r:
        lines.append(f"replay at max, one feed:      {r['replay']:>12,.0f} msg/s (target >= 200,000)")
    base = r.get("pandas")
    for k, label in (("export", "export to Parquet:"), ("to_arrow", "to_arrow:"),
                     ("pandas", "read() into pandas (baseline):")):
        if k in r:
            ratio = f"  {r[k] / base:.2f}x the baseline" if base and k != "pandas" else ""
            lines.append(f"{label:<30}{r[k]:>12,.0f} frames/s{ratio}")
    return lines
