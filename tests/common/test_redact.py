"""Credentials inside URLs never reach a printed line."""
from __future__ import annotations

import io
import logging
import os
import subprocess
import sys

import pytest

from common.redact import RedactFilter, redact, redact_urls
from flusher.publisher.stream import NatsAuthError, NatsUnreachable
from timing import timeout

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("url,want", [
    ("nats://user:s3cret@h1:4222", "nats://user:***@h1:4222"),
    ("nats://TOKEN123@h1", "nats://***@h1"),
    ("tls://a:b:c@h:1/x", "tls://a:***@h:1/x"),
    ("nats://h1:4222", "nats://h1:4222"),
    ("user@example.com wrote", "user@example.com wrote"),        # not a URL: left alone
])
def test_redact_one_url(url, want):
    assert redact(url) == want


def test_redact_every_url_in_a_text():
    text = "tried ['nats://u:p1@a:4222', 'nats://v:p2@b:4222']: connection refused"
    out = redact(text)
    assert "p1" not in out and "p2" not in out
    assert "nats://u:***@a:4222" in out and "nats://v:***@b:4222" in out
    assert redact_urls(["nats://x:y@h", "nats://h"]) == ["nats://x:***@h", "nats://h"]


def test_nats_errors_do_not_carry_the_password():
    servers = ["nats://capture:hunter2@10.0.0.1:4222"]
    for exc in (NatsUnreachable(servers, "nats://capture:hunter2@10.0.0.1:4222 refused"),
                NatsAuthError(servers, "authorization violation")):
        assert "hunter2" not in str(exc) and "capture:***@10.0.0.1:4222" in str(exc)


def test_log_filter_masks_formatted_messages():
    buf = io.StringIO()
    h = logging.StreamHandler(buf)
    h.addFilter(RedactFilter())
    lg = logging.getLogger("capture.test.redact")
    lg.addHandler(h)
    lg.propagate = False
    try:
        lg.warning("publisher: %s; retrying", ConnectionError("nats://a:topsecret@h:4222: refused"))
    finally:
        lg.removeHandler(h)
    assert "topsecret" not in buf.getvalue() and "nats://a:***@h:4222" in buf.getvalue()


def test_config_check_does_not_print_the_password(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[nats]\nservers = ["nats://capture:hunter2@127.0.0.1:4222"]\n\n'
                   '[[shard]]\nid = 0\nvenue = "kraken"\ninstruments = ["BTC/USD"]\n')
    r = subprocess.run([sys.executable, "-m", "capture.cli", "config", "check", str(cfg)],
                       capture_output=True, text=True, timeout=timeout(60), cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "hunter2" not in r.stdout + r.stderr
    assert "nats://capture:***@127.0.0.1:4222" in r.stdout
