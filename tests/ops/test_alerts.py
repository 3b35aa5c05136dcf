"""The alert rules and the dashboard in ops/: valid for promtool, and every
alert the operations need is there.  (That every metric they name exists on a
running shard is checked in tests/capture/test_operations.py.)"""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from ops_rules import DASHBOARD, RULES, dashboard_exprs, metric_names, rule_exprs
from timing import timeout

PROMTOOL = shutil.which("promtool")

#: what the operators asked to be alerted on -> the alert that does it
NEEDED = {"disconnected": "CaptureDisconnected", "idle": "CaptureIdle", "drops": "CaptureDrops",
          "gaps": "CaptureGaps", "checksum mismatches": "CaptureChecksumMismatch",
          "publisher lag": "CapturePublisherLag", "child restarts": "CaptureChildRestarts",
          "disk filling": "CaptureDiskFilling"}


def test_every_needed_alert_exists():
    with open(RULES) as f:
        names = set(re.findall(r"alert:\s*(\w+)", f.read()))
    missing = {k: v for k, v in NEEDED.items() if v not in names}
    assert not missing, missing


@pytest.mark.skipif(PROMTOOL is None, reason="promtool unavailable (`make test` installs Debian's prometheus)")
def test_promtool_checks_the_rules():
    r = subprocess.run([PROMTOOL, "check", "rules", RULES], capture_output=True, text=True,
                       timeout=timeout(60))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 9 rules found" in r.stdout


@pytest.mark.skipif(PROMTOOL is None, reason="promtool unavailable (`make test` installs Debian's prometheus)")
def test_promtool_parses_every_dashboard_query(tmp_path):
    """Each panel's PromQL (template variables filled in) as a recording rule:
    promtool rejects any that does not parse."""
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:panel{i}", "expr": e.replace("$venue", ".*").replace("$shard", ".*")}
        for i, e in enumerate(dashboard_exprs())]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps(rules))   # JSON is YAML
    r = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True,
                       timeout=timeout(60))
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_broken_rule_is_caught(tmp_path):
    """The checks above could fail: promtool refuses a bad expression."""
    if PROMTOOL is None:
        pytest.skip("promtool unavailable")
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: rate(capture_x[5m]\n")
    r = subprocess.run([PROMTOOL, "check", "rules", str(bad)], capture_output=True, text=True,
                       timeout=timeout(60))
    assert r.returncode != 0


def test_names_are_found_in_rules_and_dashboard():
    names = metric_names(rule_exprs()) | metric_names(dashboard_exprs())
    assert {"capture_websocket_connected", "capture_data_disk_free_bytes",
            "capture_recv_to_ack_seconds_bucket"} <= names
