"""``capture cat``: JSON that reads as JSON, channel and symbol, --raw, --skip-corrupt,
and one-line errors for bad input."""
from __future__ import annotations

import base64
import json

import pytest

from capture import cli
from dataout_helpers import SHARD_CONN, corrupt_record, kraken_recording
from flusher_helpers import BASE_NS, frames_of, write_segment
from ring.frame import FrameFlags, FrameType


def _lines(capsys) -> tuple[list[dict], str, str]:
    out = capsys.readouterr()
    return [json.loads(x) for x in out.out.splitlines()], out.out, out.err


def test_msg_is_the_json_itself_with_its_original_bytes(tmp_path, capsys):
    odd = b'{"b": 1,  "a":[1.50, "x"]}'           # spacing and 1.50 survive only as the bytes
    pretty = b'{\n  "a": 1\n}'                      # a line break: re-encoded to keep one line
    frames = frames_of([odd, b"PONG", pretty])
    frames += frames_of([b"\x00\xffbin"], first_seq=3)
    frames[-1] = __import__("ring.frame", fromlist=["encode"]).encode(
        b"\x00\xffbin", 3, BASE_NS + 3000, int(FrameType.DATA), int(FrameFlags.BINARY))
    write_segment(str(tmp_path), frames)
    assert cli.main(["cat", str(tmp_path)]) == 0
    lines, raw_out, _ = _lines(capsys)
    assert lines[0]["msg"] == {"b": 1, "a": [1.5, "x"]}
    assert odd in raw_out.encode()                  # embedded as received, not re-encoded
    assert lines[1]["msg"] == "PONG"                 # text that is not JSON stays a string
    assert lines[2]["msg"] == {"a": 1}
    assert base64.b64decode(lines[3]["msg_b64"]) == b"\x00\xffbin" and "msg" not in lines[3]
    assert cli.main(["cat", "--raw", str(tmp_path)]) == 0
    lines, _, _ = _lines(capsys)
    assert [x.get("msg") for x in lines[:3]] == [odd.decode(), "PONG", pretty.decode()]


def test_channel_symbol_and_shard_records(tmp_path, capsys):
    rec = kraken_recording(str(tmp_path), 30)
    assert cli.main(["cat", str(tmp_path)]) == 0
    lines, _, _ = _lines(capsys)
    assert [x["seq"] for x in lines] == list(rec.messages)
    by_seq = {x["seq"]: x for x in lines}
    for seq, (ts, typ, flags, conn, payload) in rec.messages.items():
        x = by_seq[seq]
        assert (x["ts"], x["conn"]) == (ts, conn)
        if typ == int(FrameType.CONTROL):
            assert x["type"] == "control" and "channel" not in x
            continue
        if flags & FrameFlags.BINARY:
            assert base64.b64decode(x["msg_b64"]) == payload
            continue
        obj = json.loads(payload)
        assert x["msg"] == obj
        if obj.get("channel") in ("book", "trade"):
            assert (x["channel"], x["symbol"]) == (obj["channel"], obj["data"][0]["symbol"])
        elif obj.get("channel") == "heartbeat":
            assert x["channel"] == "heartbeat" and "symbol" not in x
    shard_level = [x for x in lines if x["conn"] == SHARD_CONN]
    assert [x["msg"]["kind"] for x in shard_level] == ["shard_start", "shard_stop"]


def test_skip_corrupt_goes_on_and_says_where(tmp_path, capsys):
    rec = kraken_recording(str(tmp_path), 30)
    bad_seq = 8
    off = corrupt_record(rec.paths[0], bad_seq)
    assert cli.main(["cat", str(tmp_path)]) == 1
    lines, _, err = _lines(capsys)
    assert [x["seq"] for x in lines] == list(range(bad_seq))
    assert err.count("\n") == 1 and rec.paths[0] in err and f"offset {off}" in err
    assert cli.main(["cat", "--skip-corrupt", str(tmp_path)]) == 1   # output complete, status says corrupt
    lines, _, err = _lines(capsys)
    assert [x["seq"] for x in lines] == [s for s in rec.messages if s != bad_seq]
    assert err.count("\n") == 1 and "skipped a corrupt record" in err
    assert f"{rec.paths[0]} at offset {off}" in err and "resuming at offset" in err


def test_bad_input_is_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["cat", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no segment files" in err and str(empty) in err
    kraken_recording(str(tmp_path / "d"), 10)
    assert cli.main(["cat", "--start", "2030-01-01T00:00Z", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no messages received in 2030-01-01T00:00:00" in err
    assert "the files hold 2027-01-15T07:00" in err
    assert cli.main(["cat", "--shard", "9", str(tmp_path / "d")]) == 2
    assert "no segment files of shard 9" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["cat", "--bogus", str(tmp_path)])


def test_times_on_the_command_line(tmp_path, capsys):
    from flusher.segments.read import to_ns
    assert to_ns("1800000000000000000") == 1_800_000_000 * 10**9
    assert to_ns("2027-01-15T08:00Z") == 1_800_000_000 * 10**9
    rec = kraken_recording(str(tmp_path), 20)
    ts = [v[0] for v in rec.messages.values()]
    assert cli.main(["cat", "--start", str(ts[3]), "--end", str(ts[5]), str(tmp_path)]) == 0
    lines, _, _ = _lines(capsys)
    assert [x["ts"] for x in lines] == ts[3:6]
    assert cli.main(["cat", "--start", "yesterday", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'yesterday'" in err and "not a time" in err
