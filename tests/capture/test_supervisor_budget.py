"""Restart budgets per child, without a real shard: children are tiny
processes that exit at once (crashing) or sleep (healthy)."""
import shutil
import sys
import threading

import pytest

from capture import config
from capture.supervisor import EXIT_FAILED, EXIT_OK, Child, Supervisor
from capture.sdnotify import Notifier
from common.status import read_status
from timing import wait_for

CRASH = [sys.executable, "-c", "import sys; sys.exit(3)"]
SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def sup(tmp_path):
    ring_dir = tmp_path / "ring"
    ring_dir.mkdir(mode=0o700)
    cfg = config.loads(f"""
[ring]
dir = "{ring_dir}"
[storage]
data_dir = "{tmp_path / 'data'}"
[[shard]]
id = 0
venue = "kraken"
discovery = true
""")
    s = Supervisor(cfg, 0, notifier=Notifier(), restart_limit=3, restart_window=60.0, tick=0.01)
    yield s
    for c in s.children.values():
        if c.alive():
            c.proc.kill()
            c.proc.wait()
    shutil.rmtree(s.workdir, ignore_errors=True)


def _children(s, crashing: str) -> None:
    for role in ("receiver", "flusher", "publisher"):
        c = Child(role, CRASH if role == crashing else SLEEP)
        c.backoff = 0.001
        s.children[role] = c
        c.start()


def test_an_essential_child_over_budget_stops_the_shard(sup):
    _children(sup, "flusher")
    assert sup._watch() == EXIT_FAILED
    assert sup.children["flusher"].starts == 4       # the first start and 3 restarts
    assert sup.children["receiver"].starts == 1 and sup.children["publisher"].starts == 1


def test_a_downstream_child_over_budget_keeps_retrying_and_the_shard_stays(sup):
    _children(sup, "publisher")
    pub = sup.children["publisher"]
    result = []
    t = threading.Thread(target=lambda: result.append(sup._watch()))
    t.start()
    try:
        def past_budget():
            assert t.is_alive(), "the shard stopped over the publisher"
            pub.next_start = 0.0   # skip the capped backoff: this test is about the budget
            return pub.over_budget and pub.starts >= 5

        # Far past its budget of 3, still restarted, and the shard stays up.
        wait_for(past_budget, 60, "the publisher restarted past its budget")
        st = read_status(sup.status_file("supervisor"))
        assert st["children"]["publisher"]["over_budget"] is True
        assert st["children"]["flusher"]["over_budget"] is False
    finally:
        sup._stop.set()
        t.join(30)
    assert result == [EXIT_OK]
    assert sup.children["receiver"].starts == 1 and sup.children["flusher"].starts == 1
