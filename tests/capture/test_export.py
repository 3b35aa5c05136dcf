"""``capture export`` and ``to_arrow``: a round trip against the segment files, frame by
frame; partitions, manifest, gaps; one-line errors for bad input."""
from __future__ import annotations

import base64
import json
import os
import stat

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from capture import cli
from capture.describe import describe_for
from capture.export import to_arrow
from capture.venues.base import rfc3339_to_ns
from common.errors import NoData
from dataout_helpers import SHARD_CONN, corrupt_record, kraken_recording
from flusher.segments.read import read
from flusher_helpers import BASE_NS, write_segment
from ring.frame import FrameFlags, FrameType, encode


def _rows(table: pa.Table) -> list[dict]:
    return table.to_pylist()


def _raw(row: dict) -> bytes:
    return row["msg"].encode() if row["msg"] is not None else row["msg_binary"]


def _check_against_segments(rows: list[dict], data_dir: str, venue: str, shard: int) -> None:
    """Every message of the segment files, in order, byte for byte, with its columns."""
    frames = list(read(data_dir))
    assert len(rows) == len(frames)
    for r, f in zip(rows, frames):
        assert (r["seq"], r["recv_ns"], r["conn"], r["venue"], r["shard"]) == (
            f.seq, f.ts_ns, f.conn, venue, shard)
        assert _raw(r) == f.payload
        if f.type == FrameType.CONTROL:
            assert r["frame_type"] == "control" and r["channel"] is None
        elif f.flags & FrameFlags.BINARY:
            assert r["frame_type"] == "binary" and r["msg"] is None
        else:
            assert r["frame_type"] == "text" and r["msg_binary"] is None
            obj = json.loads(f.payload)
            if obj.get("channel") in ("book", "trade"):
                item = obj["data"][0]
                assert (r["channel"], r["symbol"]) == (obj["channel"], item["symbol"])
                assert r["exchange_ns"] == rfc3339_to_ns(item["timestamp"]) is not None
            else:
                assert r["exchange_ns"] is None


def test_parquet_round_trip_partitions_and_manifest(tmp_path):
    data, out = str(tmp_path / "data"), str(tmp_path / "out")
    rec = kraken_recording(data, 40)
    assert cli.main(["export", data, "--format", "parquet", "--out", out]) == 0
    man = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert man["complete"] and man["rows"] == len(rec.messages)
    assert [f["file"] for f in man["files"]] == ["kraken/2027-01-15/shard-2.parquet",
                                                 "kraken/2027-01-16/shard-2.parquet"]
    rows = []
    for f in man["files"]:
        p = os.path.join(out, f["file"])
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
        t = pq.read_table(p)
        assert t.schema.names == man["columns"] and t.num_rows == f["rows"]
        part = _rows(t)
        # the date partition is the UTC date of receipt
        assert {os.path.basename(os.path.dirname(p))} == {
            __import__("time").strftime("%Y-%m-%d", __import__("time").gmtime(r["recv_ns"] // 10**9))
            for r in part}
        # the manifest names each segment and the sequences taken from it
        (src,) = f["sources"]
        assert src["segment"] in rec.paths and src["rows"] == len(part)
        assert (src["first_seq"], src["rows"]) == (part[0]["seq"], len(part))
        assert f["gaps"] == []
        rows += part
    _check_against_segments(rows, data, "kraken", 2)
    assert rows[0]["conn"] == SHARD_CONN and json.loads(rows[0]["msg"])["kind"] == "shard_start"
    # the whole export, read as one dataset, is the same as to_arrow
    assert pq.read_table(out).num_rows == len(rows)
    assert _rows(to_arrow(data)) == rows


def test_csv_round_trip(tmp_path):
    data, out = str(tmp_path / "data"), str(tmp_path / "out")
    kraken_recording(data, 30)
    assert cli.main(["export", data, "--format", "csv", "--out", out, "--venue", "kraken"]) == 0
    man = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    rows = []
    for f in man["files"]:
        t = pacsv.read_csv(os.path.join(out, f["file"]), convert_options=pacsv.ConvertOptions(
            column_types={"msg": pa.string(), "msg_b64": pa.string(), "channel": pa.string(),
                          "symbol": pa.string(), "exchange_ns": pa.int64()},
            strings_can_be_null=True))
        for r in t.to_pylist():
            r["msg_binary"] = None if r["msg_b64"] is None else base64.b64decode(r["msg_b64"])
            rows.append(r)
    _check_against_segments(rows, data, "kraken", 2)


def test_to_arrow_filters_and_pandas(tmp_path):
    data = str(tmp_path / "data")
    rec = kraken_recording(data, 40)
    seqs = list(rec.messages)
    lo, hi = rec.messages[seqs[5]][0], rec.messages[seqs[-5]][0]
    t = to_arrow(data, start=lo, end=hi, venue="kraken", shard=2)
    assert t.column("seq").to_pylist() == [s for s in seqs if lo <= rec.messages[s][0] <= hi]
    df = t.to_pandas()
    assert list(df.columns) == t.schema.names and len(df) == t.num_rows
    # without the venue registry (the flusher layer alone) the venue columns are null
    from flusher.segments.export import to_arrow as bare
    b = bare(data)
    assert b.column("channel").null_count == b.num_rows
    assert _raw(b.to_pylist()[3]) == rec.messages[seqs[3]][4]
    with pytest.raises(NoData):
        to_arrow(data, start="2031-01-01")


def test_manifest_lists_gaps_and_receiver_drops(tmp_path):
    data, out = str(tmp_path / "data"), str(tmp_path / "out")
    os.mkdir(data)
    drop = b'{"kind":"drop","count":3,"bytes":300,"first_ns":1,"last_ns":2,"reasons":{"ring_full":3}}'
    write_segment(data, [encode(b'{"a":1}', 0, BASE_NS), encode(drop, 1, BASE_NS + 1, 2, 0, 0)],
                  venue="kraken", created_ns=BASE_NS)
    write_segment(data, [encode(b'{"a":2}', 5, BASE_NS + 2)], venue="kraken", created_ns=BASE_NS + 10**9)
    assert cli.main(["export", data, "--out", out]) == 0
    (f,) = json.loads((tmp_path / "out" / "_manifest.json").read_text())["files"]
    assert [(s["first_seq"], s["last_seq"]) for s in f["sources"]] == [(0, 1), (5, 5)]
    drops = [g for g in f["gaps"] if g.get("kind") == "receiver_drop"]
    holes = [g for g in f["gaps"] if "first_seq" in g]
    assert [(d["seq"], d["count"]) for d in drops] == [(1, 3)]
    assert [(h["first_seq"], h["last_seq"], h["reason"]) for h in holes] == [
        (2, 4, "missing between segment files")]


def test_corrupt_segment_mid_export(tmp_path, capsys):
    data = str(tmp_path / "data")
    rec = kraken_recording(data, 40)
    bad = next(s for s in rec.messages if s >= 30 and s + 1 in rec.messages)   # one record
    off = corrupt_record(rec.paths[1], bad)
    out1 = str(tmp_path / "out1")
    assert cli.main(["export", data, "--out", out1]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{rec.paths[1]} at offset {off}" in err
    assert "--skip-corrupt" in err
    man = json.loads((tmp_path / "out1" / "_manifest.json").read_text())
    assert not man["complete"] and f"offset {off}" in man["error"]
    assert man["rows"] == len([s for s in rec.messages if s < bad])   # all before it, kept
    out2 = str(tmp_path / "out2")
    assert cli.main(["export", data, "--out", out2, "--skip-corrupt"]) == 1
    err = capsys.readouterr().err
    assert f"skipped a corrupt record: {rec.paths[1]} at offset {off}" in err
    man = json.loads((tmp_path / "out2" / "_manifest.json").read_text())
    assert man["complete"] and man["rows"] == len(rec.messages) - 1
    assert man["skipped_corrupt"][0]["offset"] == off
    gaps = [g for f in man["files"] for g in f["gaps"]]
    assert [(g["first_seq"], g["last_seq"]) for g in gaps] == [(bad, bad)]
    assert gaps[0]["reason"].startswith("corrupt region skipped")


def test_bad_input_is_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["export", str(empty), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no segment files" in err
    data = str(tmp_path / "data")
    kraken_recording(data, 10)
    assert cli.main(["export", data, "--out", str(tmp_path / "o"), "--end", "2020-01-01"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no messages received in" in err and "the files hold" in err
    assert not (tmp_path / "o").exists()
    assert cli.main(["export", data, "--out", str(tmp_path / "o")]) == 0
    capsys.readouterr()
    assert cli.main(["export", data, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds an export" in err
    assert cli.main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "o2")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    assert describe_for("no-such-venue") is None


def test_an_aborted_fragment_chain_is_a_gap_with_its_reason(tmp_path, capsys):
    data, out = str(tmp_path / "data"), str(tmp_path / "out")
    os.mkdir(data)
    begin_flags = int(FrameType.DATA) << 4
    frames = [encode(b'{"a":1}', 0, BASE_NS),
              encode(b"part1", 1, BASE_NS + 1, int(FrameType.FRAG_BEGIN), begin_flags),
              encode(b"part2", 2, BASE_NS + 1, int(FrameType.FRAG_END), int(FrameFlags.ABORTED)),
              encode(b'{"a":2}', 3, BASE_NS + 2)]
    write_segment(data, frames, venue="kraken", created_ns=BASE_NS)
    assert cli.main(["export", data, "--out", out]) == 0
    man = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert [(m["first_seq"], m["last_seq"]) for m in man["incomplete_messages"]] == [(1, 2)]
    (gap,) = man["files"][0]["gaps"]
    assert (gap["first_seq"], gap["last_seq"]) == (1, 2)
    assert gap["reason"].startswith("a fragmented message did not complete (aborted")
    capsys.readouterr()
    assert cli.main(["cat", data]) == 0
    out_err = capsys.readouterr()
    assert [json.loads(x)["seq"] for x in out_err.out.splitlines()] == [0, 3]
    assert "sequences 1..2" in out_err.err and "did not complete" in out_err.err
