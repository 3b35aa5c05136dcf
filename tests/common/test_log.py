"""The one log line format: timestamp, level, shard and role on every line;
values that split cleanly; secrets never written; storms summarised."""
from __future__ import annotations

import io
import logging
import re
import shlex

import pytest

from common.log import Throttle, event, format_value, setup, shard_of_ring

LINE = re.compile(r"^ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=(\w+) shard=(\S+) role=(\S+) event=(\S+)")


@pytest.fixture
def out():
    buf = io.StringIO()
    setup("receiver", 3, "DEBUG", stream=buf)
    yield buf
    logging.getLogger().handlers.clear()


def fields(line: str) -> dict[str, str]:
    return dict(tok.split("=", 1) for tok in shlex.split(line))


def test_event_line_has_every_required_field(out):
    event(logging.getLogger("x"), "closed", logging.WARNING, conn="kraken-0", code=1006,
          reason="going away now", delay=1.5, ok=True, nothing=None)
    line = out.getvalue().strip()
    m = LINE.match(line)
    assert m and m.groups() == ("warning", "3", "receiver", "closed"), line
    f = fields(line)
    assert f["conn"] == "kraken-0" and f["code"] == "1006" and f["delay"] == "1.5"
    assert f["reason"] == "going away now" and f["ok"] == "true" and f["nothing"] == "null"


def test_plain_library_message_keeps_the_shape(out):
    logging.getLogger("nats.aio.client").error("lost %r", {"a": 1})
    line = out.getvalue().strip()
    assert LINE.match(line).group(4) == "log"
    f = fields(line)
    assert f["logger"] == "nats.aio.client" and f["msg"] == "lost {'a': 1}"


def test_secrets_are_never_written(out):
    event(logging.getLogger("x"), "connect", url="nats://alice:hunter2@host:4222",
          password="hunter2", token="tok123", private_key="-----BEGIN", key_file="/etc/k.pem")
    logging.getLogger("y").warning("retry tls://bob:s3cret@h:1 failed")
    text = out.getvalue()
    for secret in ("hunter2", "tok123", "BEGIN", "s3cret"):
        assert secret not in text
    assert "key_file=/etc/k.pem" in text  # a path is not a secret
    # the one redaction rule (common.redact): the password goes, the user name stays to say who
    assert "nats://alice:***@host:4222" in text and "tls://bob:***@h:1" in text


def test_exception_traceback_is_one_line(out):
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        logging.getLogger("x").exception("failed")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and "ValueError" in fields(lines[0])["exc"]


def test_values_split_on_spaces():
    assert format_value("a b") == '"a b"'
    assert format_value('say "hi"') == '"say \\"hi\\""'
    assert format_value("") == '""'
    assert format_value([1, 2]) == "[1,2]"
    assert format_value(ValueError("x y")) == '"ValueError: x y"'


def test_throttle_summarises_a_storm():
    now = [0.0]
    t = Throttle(burst=3, window=10.0, clock=lambda: now[0])
    got = [t.allow("k") for _ in range(10)]
    assert [ok for ok, _ in got] == [True] * 3 + [False] * 7
    assert t.allow("other") == (True, 0)
    now[0] = 10.0
    assert t.allow("k") == (True, 7)  # the next line says how many were left out


def test_shard_of_ring():
    assert shard_of_ring("/dev/shm/capture/shard-12.ring") == "12"
    assert shard_of_ring("/tmp/x.ring") is None
