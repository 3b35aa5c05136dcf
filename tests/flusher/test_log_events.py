"""The drains log only named events (common.log.event), and a line said once
per frame is capped, not repeated for every frame of a storm."""
from __future__ import annotations

import ast
import logging
import os
import shlex

from common.log import KVFormatter, Throttle
from flusher.publisher import publish, split
from flusher.publisher.publish import Publisher
from flusher.publisher.stream import parse_config

FLUSHER = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "flusher")
LEVELS = {"debug", "info", "warning", "error", "exception", "critical", "log"}


def _free_text_calls(root: str = FLUSHER) -> list[str]:
    """``log.info("text %s", x)``-style calls: a method named like a level on
    a name that looks like a logger (``log``, ``logger``, ``_log``...)."""
    bad = []
    for dirpath, _dirs, files in os.walk(root):
        for fn in files:
            if not fn.endswith(".py"):
                continue
            path = os.path.join(dirpath, fn)
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in LEVELS and isinstance(node.func.value, ast.Name)
                        and "log" in node.func.value.id.lower()):
                    bad.append(f"{os.path.relpath(path, root)}:{node.lineno}")
    return bad


def test_no_free_text_log_lines_under_flusher():
    assert not _free_text_calls(), "log through common.log.event instead: " + ", ".join(_free_text_calls())


def test_the_checker_sees_a_free_text_call(tmp_path):
    (tmp_path / "m.py").write_text('import logging\nlog = logging.getLogger("x")\nlog.warning("a %s", 1)\n'
                                   'event(log, "fine", logging.WARNING, n=1)\n')
    assert _free_text_calls(str(tmp_path)) == ["m.py:3"]


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class _Nats:
    max_payload = 1000


def _publisher(**kw) -> Publisher:
    pub = Publisher("unused.ring", venue="kraken", shard=3, bus=parse_config({}),
                    subject_fn=lambda _p: "prod.kraken.trade.X", **kw)
    pub.session.nc = _Nats()
    return pub


def _events(caplog, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == name]


def test_oversize_is_an_event_with_its_facts_and_a_storm_is_capped(caplog, monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(publish, "_throttle", Throttle(clock=clock))
    pub = _publisher()
    big = b"x" * 2000
    with caplog.at_level(logging.WARNING, logger="capture.publisher"):
        for seq in range(15):
            subject, body = pub._fit(seq, b"prod.kraken.trade.X", big)
            assert subject == pub.control_subject and b'"kind": "oversize"' in body
        clock.t = 60.0                                 # a new window: the next line says what was left out
        pub._fit(99, b"prod.kraken.trade.X", big, "2/3")
    lines = _events(caplog, "oversize")
    assert pub.stats["oversize"] == 16                 # every frame counted, ...
    assert len(lines) == 11                            # ... 10 lines in the window, then the next one
    first, last = lines[0].kv, lines[-1].kv
    assert (first["seq"], first["bytes"], first["max_payload"]) == (0, 2000, 1000)
    assert "stays on disk" in first["action"] and "suppressed" not in first
    assert (last["seq"], last["part"], last["suppressed"]) == (99, "2/3", 5)
    # rendered in the one format, and it splits on spaces without ambiguity
    text = KVFormatter(3, "publisher").format(lines[-1])
    fields = dict(t.split("=", 1) for t in shlex.split(text))
    assert (fields["role"], fields["event"], fields["seq"], fields["part"]) == ("publisher", "oversize",
                                                                               "99", "2/3")


def test_a_frame_with_too_many_events_is_published_whole_and_said_capped(caplog, monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(split, "_throttle", Throttle(burst=2, clock=clock))
    monkeypatch.setattr(split, "MAX_PARTS", 2)
    pub = _publisher(fanout_fn=lambda raw: [("prod.kraken.a", b"1"), ("prod.kraken.b", b"2"),
                                            ("prod.kraken.c", b"3")])
    with caplog.at_level(logging.WARNING, logger="capture.publisher"):
        for seq in range(4):
            # the caller publishes it whole
            assert pub.splitter.publish(pub.pipe, seq, 0, b"[1,2,3]", None) is False
    lines = _events(caplog, "split_too_many")
    assert pub.stats["split_too_many"] == 4 and len(lines) == 2
    assert (lines[0].kv["seq"], lines[0].kv["events"], lines[0].kv["max_parts"]) == (0, 3, 2)
    assert lines[0].kv["action"] == "published whole"
