"""Pinning: the receiver process's affinity is what the config says (this
machine has cores 0 and 1); a core that does not exist is a clear, typed
error; memory locking says plainly when it is not permitted.  Everything
that changes affinity runs in a child process, never in the test process."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest


import ring  # noqa: E402
from capture.receiver.pinning import NoSuchCore, PinningError, online_cores, pin  # noqa: E402
from capture.simulator import Scenario, SimulatorThread  # noqa: E402
from receiver_helpers import Collector, cleanup, make_ring_dir  # noqa: E402
from common.errors import CaptureError  # noqa: E402
from timing import timeout  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CORES = online_cores()


def _child(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout(30))


def _affinity_of_all_threads(pid: int) -> set[frozenset[int]]:
    return {frozenset(os.sched_getaffinity(int(t))) for t in os.listdir(f"/proc/{pid}/task")}


@pytest.mark.parametrize("cores", [[CORES[-1]], CORES[:2]])
def test_receiver_process_affinity_is_the_configured_cores(cores):
    d = make_ring_dir()
    path = os.path.join(d, "shard-0.ring")
    ring.create(path, 4 << 20).close()
    try:
        with SimulatorThread(["kraken"], Scenario(rate=100, heartbeat_interval=3600)) as st:
            col = Collector(path)
            proc = subprocess.Popen(
                [sys.executable, "-m", "capture.receiver", "--ring", path, "--venue", "kraken",
                 "--symbols", "BTC/USD", "--channels", "trade", "--url", st.url("kraken"),
                 "--cores", ",".join(map(str, cores)), "--timing", "stagger=0"],
                cwd=ROOT, stderr=subprocess.PIPE)
            try:
                start = col.wait_control("shard_start", seconds=20)[0]
                col.wait_control("live", seconds=20)
                # every thread of the process, as the OS reports it
                assert _affinity_of_all_threads(proc.pid) == {frozenset(cores)}
                assert start["cores"] == cores
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout(20)) == 0, proc.stderr.read().decode()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                col.stop()
    finally:
        cleanup(d)


def test_pin_to_a_core_that_does_not_exist_is_a_clear_error():
    missing = max(CORES) + 64
    with pytest.raises(NoSuchCore) as ei:
        pin([missing])          # refused before touching the affinity
    e = ei.value
    assert isinstance(e, PinningError) and isinstance(e, CaptureError)
    assert e.cores == [missing] and e.available == CORES
    assert str(missing) in str(e) and "available cores" in str(e)
    with pytest.raises(NoSuchCore):
        pin([])
    # the process refuses to start, exit status 2, one clear line
    r = subprocess.run([sys.executable, "-m", "capture.receiver", "--ring", "/nonexistent.ring",
                        "--venue", "kraken", "--symbols", "BTC/USD", "--cores", str(missing)],
                       cwd=ROOT, capture_output=True, text=True, timeout=timeout(30))
    assert r.returncode == 2
    assert f"CPU core(s) [{missing}] do not exist" in r.stderr


def test_pin_verifies_with_the_os():
    r = _child(f"""
        import os
        from capture.receiver.pinning import pin
        got = pin([{CORES[0]}])
        print(sorted(got), sorted(os.sched_getaffinity(0)))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [f"[{CORES[0]}]", f"[{CORES[0]}]"]


def test_lock_memory_reports_plainly():
    r = _child("""
        from capture.receiver.pinning import lock_memory, MemoryLockDenied
        ok, msg = lock_memory()
        print(ok)
        print(msg)
        if not ok:
            try:
                lock_memory(required=True)
            except MemoryLockDenied as e:
                print("raised", e.errno)
    """)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    if lines[0] == "True":
        assert lines[1] == "memory locked"
    else:
        assert "RLIMIT_MEMLOCK" in lines[1] and "CAP_IPC_LOCK" in lines[1]
        assert lines[2].startswith("raised")
