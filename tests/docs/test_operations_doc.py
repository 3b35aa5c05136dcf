"""docs/operations.md cannot drift from the code: every `capture` command it
shows parses with the real parser, every metric it names is one the
dashboard, the rules or the collector knows, and every alert it lists is in
the rules."""
from __future__ import annotations

import os
import re
import shlex

from capture.cli import build_parser
from ops_rules import RULES, dashboard_and_rule_metrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(REPO, "docs", "operations.md")


def doc() -> str:
    with open(DOC) as f:
        return f.read()


def commands() -> list[list[str]]:
    out = []
    for block in re.findall(r"```\n(.*?)```", doc(), re.S):
        for line in block.splitlines():
            if line.startswith("capture "):
                out.append(shlex.split(line)[1:])
    return out


def test_every_command_shown_parses():
    cmds = commands()
    assert len(cmds) >= 6
    parser = build_parser()
    for argv in cmds:
        args = parser.parse_args(argv)   # SystemExit (a test error) on an unknown flag
        assert callable(args.fn), argv


def test_every_metric_named_exists_somewhere():
    with open(os.path.join(REPO, "capture", "metrics.py")) as f:
        source = f.read()
    known = dashboard_and_rule_metrics()
    for name in set(re.findall(r"`(capture_[a-z0-9_]+)", doc())):
        base = re.sub(r"_(total|bucket|sum|count)$", "", name)
        assert name in known or f'"{base}"' in source, name


def test_every_alert_listed_is_a_rule():
    with open(RULES) as f:
        rules = set(re.findall(r"alert:\s*(\w+)", f.read()))
    listed = set(re.findall(r"`(Capture[A-Za-z]+)`", doc()))
    assert listed == rules


# -- the log events ---------------------------------------------------------------------------
# capture/ (the application and the receiver) and ring/; the simulator is a test double with
# its own logs, the drains (flusher/) are described in the page's prose.
_LOGGING_TREES = ("capture", "ring")
_NAMED = re.compile(r'(?:\bevent|log_event|_warn)\(\s*(?:[\w.()"]+,\s*)?"([a-z_]+)"')
_FREE_TEXT = re.compile(r"\blog\.(?:debug|info|warning|error|exception|critical)\(")


def _sources():
    for tree in _LOGGING_TREES:
        for root, _dirs, files in os.walk(os.path.join(REPO, tree)):
            if os.path.join("capture", "simulator") in root:
                continue
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(root, name)
                    with open(path) as f:
                        yield os.path.relpath(path, REPO), f.read()


def test_every_logged_event_is_in_the_table():
    from capture.receiver.lifecycle import LOGGED
    logged = set(LOGGED)
    for _path, text in _sources():
        logged.update(_NAMED.findall(text))
    assert len(logged) >= 40, sorted(logged)     # the scan finds the events at all
    listed = set()
    for row in re.findall(r"^\| (`[^|]+)\|", doc(), re.M):
        listed.update(re.findall(r"`([a-z_]+)`", row))
    assert not logged - listed, f"logged but not in docs/operations.md: {sorted(logged - listed)}"


def test_capture_and_ring_log_only_named_events():
    free = [f"{path}:{text.count(chr(10), 0, m.start()) + 1}"
            for path, text in _sources() for m in _FREE_TEXT.finditer(text)]
    assert not free, f"free-text log lines (use common.log.event): {free}"


def test_every_drain_event_listed_is_logged():
    """The flusher's and the publisher's log events the Logs section names
    are event names in flusher/ (a renamed event must not leave the page behind)."""
    text = doc()
    bullets = re.findall(r"^\* The (?:flusher's own events|publisher's):(.*?)(?=^\* |^#)", text, re.S | re.M)
    names = {n for b in bullets for n in re.findall(r"`([a-z][a-z_]+)`", b)} - {"always"}
    assert len(bullets) == 2 and len(names) >= 30, names
    source = ""
    for dirpath, _dirs, files in os.walk(os.path.join(REPO, "flusher")):
        for fn in files:
            if fn.endswith(".py"):
                with open(os.path.join(dirpath, fn), encoding="utf-8") as f:
                    source += f.read()
    missing = sorted(n for n in names if f'"{n}"' not in source)
    assert not missing, f"named in docs/operations.md but logged nowhere under flusher/: {missing}"
