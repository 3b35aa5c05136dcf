"""A supervisor's child ends when the supervisor does, even by SIGKILL
(the child arms PR_SET_PDEATHSIG itself: no preexec_fn in the supervisor)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil

from common import lifeline
from timing import timeout

CHILD = ("import sys, time; from common.lifeline import die_with_parent; "
         "armed = die_with_parent(); print(armed, flush=True); time.sleep(600)")
PARENT = ("import os, subprocess, sys; "
          "env = dict(os.environ, CAPTURE_SUPERVISOR_PID=str(os.getpid())); "
          "c = subprocess.Popen([sys.executable, '-c', sys.argv[1]], env=env, stdout=subprocess.PIPE, "
          "process_group=0); print(c.pid, c.stdout.readline().decode().strip(), flush=True); "
          "c.wait()")


def test_child_gets_sigterm_when_the_supervisor_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD], stdout=subprocess.PIPE, text=True)
    try:
        pid, armed = parent.stdout.readline().split()
        assert armed == "True"
        child = psutil.Process(int(pid))
        parent.kill()
        parent.wait(timeout(10))
        child.wait(timeout(10))   # raises if it outlives the supervisor
    finally:
        if parent.poll() is None:
            parent.kill()


def test_a_supervisor_already_gone_is_noticed():
    env = dict(os.environ, **{lifeline.ENV: "1"})   # pid 1 is not our parent
    r = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, timeout=timeout(20))
    assert r.returncode == -signal.SIGTERM


def test_outside_a_supervisor_it_does_nothing(monkeypatch):
    monkeypatch.delenv(lifeline.ENV, raising=False)
    assert lifeline.die_with_parent() is False
